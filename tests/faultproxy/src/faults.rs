//! Fault decisions, and the record of the faults actually injected.
//!
//! Every request (http routes) or connection (tcp routes) gets its own RNG, seeded from
//! (seed, route, index on the route): the same sequence of requests meets the same faults for
//! a given seed, whatever the faults did to the requests before it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{Fault, Kind};

/// Largest byte offset a tcp fault is placed at: deep enough to land inside a gRPC stream,
/// early enough that a short-lived connection still meets it.
pub const TCP_WINDOW: u64 = 256 * 1024;

fn rng_for(seed: u64, route: &str, index: u64) -> ChaCha8Rng {
    // FNV-1a: a hash that stays the same across Rust versions, unlike std's.
    let route_hash = route.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&route_hash.to_le_bytes());
    key[16..24].copy_from_slice(&index.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

/// What happens to one HTTP request. At most one of reset / status / lost_response /
/// truncate: the earliest in the request's life wins.
#[derive(Debug, Default, Clone)]
pub struct HttpPlan {
    pub reset: bool,
    pub status: bool,
    pub lost_response: bool,
    pub truncate: bool,
    pub stall: bool,
    pub not_found_as_403: bool,
    /// Where a truncated body is cut, as a fraction of its length, in [0, 1).
    pub cut: f64,
    /// A BigQuery status fault answers 429 when set, else 503.
    pub rate_limited: bool,
}

impl HttpPlan {
    pub fn draw(faults: &[Fault], subject: &str, rng: &mut ChaCha8Rng) -> HttpPlan {
        let mut plan = HttpPlan::default();
        for f in faults {
            // Roll for every fault, matching or not, so a filter never shifts another's roll.
            let roll: f64 = rng.random();
            if roll >= f.probability || !f.matches(subject) {
                continue;
            }
            match f.kind {
                Kind::Reset => plan.reset = true,
                Kind::Status => plan.status = true,
                Kind::LostResponse => plan.lost_response = true,
                Kind::Truncate => plan.truncate = true,
                Kind::Stall => plan.stall = true,
                Kind::NotFoundAs403 => plan.not_found_as_403 = true,
            }
        }
        plan.cut = rng.random();
        plan.rate_limited = rng.random();
        plan.status &= !plan.reset;
        plan.lost_response &= !(plan.reset || plan.status);
        plan.truncate &= !(plan.reset || plan.status || plan.lost_response);
        // Only a forwarded request can be held up on its way.
        plan.stall &= !(plan.reset || plan.status);
        plan
    }
}

/// What happens to one TCP connection: byte offsets (both directions counted together) at
/// which it is cut or paused.
#[derive(Debug, Default, Clone)]
pub struct TcpPlan {
    pub reset_after: Option<u64>,
    pub stall_after: Option<u64>,
}

impl TcpPlan {
    pub fn draw(faults: &[Fault], rng: &mut ChaCha8Rng) -> TcpPlan {
        let mut plan = TcpPlan::default();
        for f in faults {
            let roll: f64 = rng.random();
            let at = rng.random_range(1..=TCP_WINDOW);
            if roll < f.probability {
                match f.kind {
                    Kind::Reset => plan.reset_after = Some(at),
                    Kind::Stall => plan.stall_after = Some(at),
                    _ => {} // refused by the config check
                }
            }
        }
        plan
    }
}

/// One route's faults, request counter and log.
pub struct RouteFaults {
    pub name: String,
    pub faults: Vec<Fault>,
    pub stall: Duration,
    seed: u64,
    next: AtomicU64,
    recorder: Arc<Recorder>,
}

impl RouteFaults {
    pub fn new(
        name: &str,
        faults: Vec<Fault>,
        seed: u64,
        stall: Duration,
        recorder: Arc<Recorder>,
    ) -> RouteFaults {
        RouteFaults {
            name: name.to_string(),
            faults,
            stall,
            seed,
            next: AtomicU64::new(0),
            recorder,
        }
    }

    /// The index and RNG of the next request (http) or connection (tcp) on this route.
    pub fn next_rng(&self) -> (u64, ChaCha8Rng) {
        let index = self.next.fetch_add(1, Ordering::SeqCst);
        (index, rng_for(self.seed, &self.name, index))
    }

    pub fn record(&self, kind: Kind, what: &str, target: Option<&str>) {
        self.recorder.record(&self.name, kind, what, target);
    }
}

/// Counts injected faults and appends one line per fault to the log: written before the
/// fault takes effect, so whoever sees a fault can already read its line.
pub struct Recorder {
    log: Option<Mutex<File>>,
    counts: [AtomicU64; Kind::ALL.len()],
}

impl Recorder {
    pub fn open(path: Option<&Path>) -> io::Result<Recorder> {
        let log = match path {
            Some(p) => Some(Mutex::new(
                OpenOptions::new().create(true).append(true).open(p)?,
            )),
            None => None,
        };
        Ok(Recorder {
            log,
            counts: Default::default(),
        })
    }

    /// Logs `route kind what target` (target `-` when absent).
    pub fn record(&self, route: &str, kind: Kind, what: &str, target: Option<&str>) {
        self.counts[kind as usize].fetch_add(1, Ordering::SeqCst);
        if let Some(log) = &self.log {
            let line = format!("{route} {} {what} {}\n", kind.name(), target.unwrap_or("-"));
            let mut file = log.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = file.write_all(line.as_bytes()) {
                eprintln!("faultproxy: writing the fault log: {e}");
            }
        }
    }

    pub fn summary(&self) -> String {
        let counts: Vec<String> = Kind::ALL
            .iter()
            .map(|k| {
                let n = self.counts[*k as usize].load(Ordering::SeqCst);
                format!("{}={n}", k.name())
            })
            .collect();
        format!("faultproxy: injected {}", counts.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(kind: Kind, probability: f64, filter: Option<&str>) -> Fault {
        Fault {
            route: "r".into(),
            kind,
            probability,
            filter: filter.map(str::to_string),
        }
    }

    #[test]
    fn plans_depend_only_on_seed_route_and_index() {
        let faults = [
            fault(Kind::Reset, 0.3, None),
            fault(Kind::Status, 0.3, None),
        ];
        let draw = |seed, route, index| {
            let mut rng = rng_for(seed, route, index);
            let p = HttpPlan::draw(&faults, "GET / HTTP/1.1", &mut rng);
            (p.reset, p.status, p.cut.to_bits())
        };
        let run = |seed, route| (0..64).map(|i| draw(seed, route, i)).collect::<Vec<_>>();
        assert_eq!(run(1, "aws"), run(1, "aws"));
        assert_ne!(run(1, "aws"), run(2, "aws"));
        assert_ne!(run(1, "aws"), run(1, "rest"));
        let hits = run(1, "aws").iter().filter(|p| p.0 || p.1).count();
        assert!((15..=50).contains(&hits), "{hits} faults in 64 draws");
    }

    #[test]
    fn filters_and_precedence() {
        let faults = [
            fault(Kind::LostResponse, 1.0, Some("UpdateItem")),
            fault(Kind::Truncate, 1.0, Some("GET")),
            fault(Kind::Stall, 1.0, None),
        ];
        let mut rng = rng_for(0, "r", 0);
        let p = HttpPlan::draw(
            &faults,
            "POST / HTTP/1.1 DynamoDB_20120810.UpdateItem",
            &mut rng,
        );
        assert!(p.lost_response && p.stall && !p.truncate);
        let p = HttpPlan::draw(&faults, "GET /b/k HTTP/1.1", &mut rng);
        assert!(!p.lost_response && p.truncate && p.stall);
        let p = HttpPlan::draw(&[fault(Kind::Reset, 1.0, None)], "GET / HTTP/1.1", &mut rng);
        assert!(p.reset && !p.stall);
    }
}
