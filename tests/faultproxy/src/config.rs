//! Command line: which routes to proxy and which faults to inject on them. Parsed by hand so
//! the crate depends on nothing but tokio and rand.

use std::path::PathBuf;

pub const USAGE: &str = "\
usage: faultproxy [--seed N] --route NAME=LISTEN_PORT:UPSTREAM_HOST:UPSTREAM_PORT:MODE ...
                  [--fault ROUTE:KIND=PROBABILITY[@FILTER] ...] [--stall-ms MS] [--log FILE]

  MODE      http (HTTP/1.1, faults per request) or tcp (byte relay, faults per connection)
  KIND      http: reset lost_response status truncate stall not_found_as_403
            tcp:  reset stall
  FILTER    case-sensitive substring of the request line plus the X-Amz-Target value
  LISTEN_PORT 0 picks a free port on 127.0.0.1. Once every route is listening, stdout gets
  one `NAME PORT` line per route, then `ready`. SIGTERM/SIGINT print fault counts to stderr.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Http,
    Tcp,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub listen_port: u16,
    /// `host:port`, as given to connect.
    pub upstream: String,
    pub mode: Mode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Reset,
    LostResponse,
    Status,
    Truncate,
    Stall,
    NotFoundAs403,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Reset,
        Kind::LostResponse,
        Kind::Status,
        Kind::Truncate,
        Kind::Stall,
        Kind::NotFoundAs403,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Reset => "reset",
            Kind::LostResponse => "lost_response",
            Kind::Status => "status",
            Kind::Truncate => "truncate",
            Kind::Stall => "stall",
            Kind::NotFoundAs403 => "not_found_as_403",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub route: String,
    pub kind: Kind,
    pub probability: f64,
    pub filter: Option<String>,
}

impl Fault {
    /// `subject` is the request line, plus " " and the X-Amz-Target value when there is one.
    pub fn matches(&self, subject: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| subject.contains(f))
    }
}

#[derive(Debug)]
pub struct Config {
    pub seed: u64,
    pub routes: Vec<Route>,
    pub faults: Vec<Fault>,
    pub stall_ms: u64,
    pub log: Option<PathBuf>,
}

impl Config {
    /// Parses the arguments after the program name. `Err(None)` asks for the usage text.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Config, Option<String>> {
        let mut cfg = Config {
            seed: 0,
            routes: Vec::new(),
            faults: Vec::new(),
            stall_ms: 1500,
            log: None,
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "-h" || arg == "--help" {
                return Err(None);
            }
            // Both `--flag value` and `--flag=value`.
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg, None),
            };
            let value = inline
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--seed" => cfg.seed = number(&flag, &value)?,
                "--stall-ms" => cfg.stall_ms = number(&flag, &value)?,
                "--log" => cfg.log = Some(PathBuf::from(value)),
                "--route" => cfg.routes.push(parse_route(&value)?),
                "--fault" => cfg.faults.push(parse_fault(&value)?),
                _ => return Err(Some(format!("unknown option {flag}"))),
            }
        }
        cfg.check()?;
        Ok(cfg)
    }

    /// The faults of one route, in command-line order (the order their dice are rolled in).
    pub fn faults_for(&self, route: &str) -> Vec<Fault> {
        self.faults
            .iter()
            .filter(|f| f.route == route)
            .cloned()
            .collect()
    }

    fn check(&self) -> Result<(), String> {
        if self.routes.is_empty() {
            return Err("at least one --route is needed".into());
        }
        for (i, r) in self.routes.iter().enumerate() {
            if self.routes[..i].iter().any(|o| o.name == r.name) {
                return Err(format!("route {} given twice", r.name));
            }
        }
        for f in &self.faults {
            let Some(route) = self.routes.iter().find(|r| r.name == f.route) else {
                return Err(format!("fault on unknown route {}", f.route));
            };
            // A byte relay sees no requests: nothing to filter on, no response to rewrite.
            if route.mode == Mode::Tcp {
                if !matches!(f.kind, Kind::Reset | Kind::Stall) {
                    return Err(format!("{} needs an http route", f.kind.name()));
                }
                if f.filter.is_some() {
                    return Err(format!("filters need an http route ({})", f.route));
                }
            }
        }
        Ok(())
    }
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: not a number: {value}"))
}

/// `NAME=LISTEN_PORT:HOST:PORT:MODE`; HOST may itself hold colons (a bracketed IPv6 address).
fn parse_route(spec: &str) -> Result<Route, String> {
    let bad = || format!("--route {spec}: expected NAME=LISTEN_PORT:HOST:PORT:MODE");
    let (name, rest) = spec.split_once('=').ok_or_else(bad)?;
    let (listen, rest) = rest.split_once(':').ok_or_else(bad)?;
    let (rest, mode) = rest.rsplit_once(':').ok_or_else(bad)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    if name.is_empty() || host.is_empty() {
        return Err(bad());
    }
    let mode = match mode {
        "http" => Mode::Http,
        "tcp" => Mode::Tcp,
        _ => return Err(format!("--route {spec}: mode must be http or tcp")),
    };
    let port: u16 = number("--route", port)?;
    Ok(Route {
        name: name.to_string(),
        listen_port: number("--route", listen)?,
        upstream: format!("{host}:{port}"),
        mode,
    })
}

/// `ROUTE:KIND=PROBABILITY[@FILTER]`; the filter is everything after the first `@`.
fn parse_fault(spec: &str) -> Result<Fault, String> {
    let bad = || format!("--fault {spec}: expected ROUTE:KIND=PROBABILITY[@FILTER]");
    let (route, rest) = spec.split_once(':').ok_or_else(bad)?;
    let (kind, rest) = rest.split_once('=').ok_or_else(bad)?;
    let (probability, filter) = match rest.split_once('@') {
        Some((_, "")) => return Err(format!("--fault {spec}: empty filter")),
        Some((p, f)) => (p, Some(f.to_string())),
        None => (rest, None),
    };
    let kind = Kind::parse(kind).ok_or_else(|| format!("--fault {spec}: unknown kind {kind}"))?;
    let probability: f64 = number("--fault", probability)?;
    if !(0.0..=1.0).contains(&probability) {
        return Err(format!("--fault {spec}: probability must be in [0, 1]"));
    }
    Ok(Fault {
        route: route.to_string(),
        kind,
        probability,
        filter,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, Option<String>> {
        Config::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_routes_and_faults() {
        let cfg = parse(&[
            "--seed",
            "42",
            "--route",
            "aws=0:127.0.0.1:5055:http",
            "--route=grpc=7000:[::1]:9060:tcp",
            "--fault",
            "aws:lost_response=0.05@UpdateItem",
            "--fault",
            "aws:truncate=1@a=b@c",
            "--fault",
            "grpc:reset=0.02",
            "--stall-ms",
            "10",
        ])
        .unwrap();
        assert_eq!(cfg.seed, 42);
        assert_eq!(cfg.stall_ms, 10);
        assert_eq!(cfg.routes[0].upstream, "127.0.0.1:5055");
        assert_eq!(cfg.routes[1].upstream, "[::1]:9060");
        assert_eq!(cfg.routes[1].listen_port, 7000);
        assert_eq!(cfg.routes[1].mode, Mode::Tcp);
        assert_eq!(cfg.faults[0].kind, Kind::LostResponse);
        assert_eq!(cfg.faults[0].filter.as_deref(), Some("UpdateItem"));
        assert_eq!(cfg.faults[1].filter.as_deref(), Some("a=b@c"));
        assert_eq!(cfg.faults_for("grpc").len(), 1);
    }

    #[test]
    fn rejects_what_cannot_work() {
        let route = ["--route", "g=0:h:1:tcp"];
        for bad in [
            &["--fault", "g:status=0.5"][..],
            &["--fault", "g:reset=0.5@GET"],
            &["--fault", "x:reset=0.5"],
            &["--fault", "g:reset=1.5"],
            &["--fault", "g:explode=0.5"],
            &["--route", "g=0:h:1:udp"],
        ] {
            let args: Vec<&str> = route.iter().chain(bad).copied().collect();
            assert!(parse(&args).is_err(), "{args:?} was accepted");
        }
        assert!(parse(&[]).is_err());
    }
}
