//! Keeper alerts with a memory: one alert when a problem starts, a reminder every
//! `CF2BQ_ALERT_REPEAT_HOURS` while it stays, and a message when it is resolved — not the same
//! alert on every scheduled run.
//!
//! The state (the open findings, since when, last alerted) lives between runs in one item of
//! the DynamoDB ledger table under a reserved key (`keeper#alerts#…`, see
//! [`super::state_item`]). [`decide`] is the whole policy and pure; [`notify`] only loads,
//! publishes and saves.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::state_item::StateItem;
use super::KeeperReport;
use crate::route::Layout;

const HOUR: i64 = 3_600_000_000;

/// A scheduled run starts about a whole number of hours after the run that alerted, but its
/// clock is read after the BigQuery checks, which take a variable time: a reminder is due this
/// much before the full period so that it is not put off by a whole schedule period.
const REPEAT_SLACK_MICROS: i64 = 5 * 60 * 1_000_000;

/// Default of `CF2BQ_ALERT_REPEAT_HOURS`.
pub const DEFAULT_REPEAT_HOURS: u32 = 24;

/// One problem that is open, as the state remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenFinding {
    /// One line for people, as of the latest run that found it.
    pub summary: String,
    /// The run that first found it.
    pub since_micros: i64,
    /// The latest alert or reminder that carried it.
    pub last_alerted_micros: i64,
}

/// What the keeper remembers between runs: open findings by stable key
/// (`missing:<table>`, `stale`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertState {
    pub open: BTreeMap<String, OpenFinding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum NoticeKind {
    /// Something new is wrong (the message also lists what is still open and what went away).
    Alert,
    /// Nothing new, but problems are still open after the repeat period.
    Reminder,
    /// Some open problems went away; others are still open (not yet due for a reminder).
    Resolved,
    /// Every open problem went away.
    AllClear,
}

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub kind: NoticeKind,
    /// Keys opened by this run.
    pub new: Vec<String>,
    /// Open after this run (new ones included).
    pub open: BTreeMap<String, OpenFinding>,
    /// Closed by this run, as they were while open.
    pub resolved: BTreeMap<String, OpenFinding>,
}

/// What to send now, and the state to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub notice: Option<Notice>,
    pub state: AlertState,
}

/// The problems in `report`, by stable key → one-line summary.
///
/// A table that was missing stays a problem while it is empty: the keeper creates it so late
/// logs have a home, but the day's rows come back only with a replay (or end of the look-back
/// window), so its creation is not an all-clear.
pub fn findings(report: &KeeperReport, previous: &AlertState) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for table in &report.missing {
        let created = if report.created_missing.contains(table) {
            " (created empty by the keeper)"
        } else {
            ""
        };
        found.insert(
            format!("missing:{table}"),
            format!("missing table {table}{created}"),
        );
    }
    for t in &report.tables {
        let key = format!("missing:{}", t.table);
        if t.rows == Some(0) && previous.open.contains_key(&key) && !found.contains_key(&key) {
            found.insert(
                key,
                format!("table {} was missing and is still empty", t.table),
            );
        }
    }
    if report.stale {
        let summary = match report.hours_since_last_ingest() {
            Some(h) => format!(
                "no new rows for {h:.0} h (threshold {} h)",
                report.stale_hours
            ),
            None => "no rows at all in the checked tables".to_string(),
        };
        found.insert("stale".to_string(), summary);
    }
    found
}

/// The alert policy. `found`: this run's problems (see [`findings`]); `previous`: the state
/// the last run kept; `repeat_hours`: reminder period (0 = every run).
///
/// - a problem not open before → an [`NoticeKind::Alert`] now, carrying every open problem;
/// - nothing new, but an open problem last alerted `repeat_hours` ago (less a few minutes of
///   slack) → a [`NoticeKind::Reminder`] carrying every open problem;
/// - otherwise, open problems that went away → [`NoticeKind::Resolved`], or
///   [`NoticeKind::AllClear`] when none is left (an alert or reminder lists them instead);
/// - otherwise nothing.
///
/// Every problem a message carries counts as alerted now.
pub fn decide(
    found: &BTreeMap<String, String>,
    previous: &AlertState,
    now_micros: i64,
    repeat_hours: u32,
) -> Decision {
    let repeat = i64::from(repeat_hours) * HOUR;
    let mut open = BTreeMap::new();
    let mut new = Vec::new();
    let mut due = false;
    for (key, summary) in found {
        let finding = match previous.open.get(key) {
            Some(before) => {
                due |= now_micros - before.last_alerted_micros + REPEAT_SLACK_MICROS >= repeat;
                OpenFinding {
                    summary: summary.clone(),
                    ..before.clone()
                }
            }
            None => {
                new.push(key.clone());
                OpenFinding {
                    summary: summary.clone(),
                    since_micros: now_micros,
                    last_alerted_micros: now_micros,
                }
            }
        };
        open.insert(key.clone(), finding);
    }
    let resolved: BTreeMap<String, OpenFinding> = previous
        .open
        .iter()
        .filter(|(key, _)| !found.contains_key(*key))
        .map(|(key, f)| (key.clone(), f.clone()))
        .collect();
    let kind = if !new.is_empty() {
        Some(NoticeKind::Alert)
    } else if due {
        Some(NoticeKind::Reminder)
    } else if resolved.is_empty() {
        None
    } else if open.is_empty() {
        Some(NoticeKind::AllClear)
    } else {
        Some(NoticeKind::Resolved)
    };
    if matches!(kind, Some(NoticeKind::Alert | NoticeKind::Reminder)) {
        for f in open.values_mut() {
            f.last_alerted_micros = now_micros;
        }
    }
    Decision {
        notice: kind.map(|kind| Notice {
            kind,
            new,
            open: open.clone(),
            resolved,
        }),
        state: AlertState { open },
    }
}

fn utc(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| micros.to_string())
}

fn list(findings: &BTreeMap<String, OpenFinding>, with_since: bool) -> String {
    findings
        .values()
        .map(|f| {
            if with_since {
                format!("- {} (since {})\n", f.summary, utc(f.since_micros))
            } else {
                format!("- {}\n", f.summary)
            }
        })
        .collect()
}

/// (subject, body) of a notice. Alerts and reminders carry the full report text
/// ([`super::alert_text`]) after a header saying what is new, what is still open and since
/// when; resolved and all-clear messages say what went away and what is left.
pub fn notice_text(
    notice: &Notice,
    report: &KeeperReport,
    dataset: &str,
    repeat_hours: u32,
) -> (String, String) {
    let repeat = if repeat_hours == 0 {
        "on every run".to_string()
    } else {
        format!("every {repeat_hours} h")
    };
    let summaries = |m: &BTreeMap<String, OpenFinding>| {
        m.values()
            .map(|f| f.summary.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (subject, body) = match notice.kind {
        NoticeKind::Alert | NoticeKind::Reminder => {
            let (subject, details) = super::alert_text(report, dataset);
            let mut head = String::new();
            if notice.kind == NoticeKind::Reminder {
                head += &format!("REMINDER: still open (reminders {repeat}):\n");
                head += &list(&notice.open, true);
            } else {
                let (new, old): (BTreeMap<_, _>, BTreeMap<_, _>) = notice
                    .open
                    .iter()
                    .map(|(k, f)| (k.clone(), f.clone()))
                    .partition(|(k, _)| notice.new.contains(k));
                head += "NEW:\n";
                head += &list(&new, false);
                if !old.is_empty() {
                    head += "Still open:\n";
                    head += &list(&old, true);
                }
            }
            if !notice.resolved.is_empty() {
                head += "Resolved since the last message:\n";
                head += &list(&notice.resolved, true);
            }
            head += &format!(
                "A reminder follows {repeat} while a problem stays open, and a message when it \
                 is resolved.\n\n"
            );
            let subject = match notice.kind {
                NoticeKind::Reminder => subject.replacen("cf2bq ALERT", "cf2bq REMINDER", 1),
                _ => subject,
            };
            (subject, head + &details)
        }
        NoticeKind::Resolved | NoticeKind::AllClear => {
            let mut body = String::new();
            if notice.kind == NoticeKind::AllClear {
                body += &format!(
                    "ALL CLEAR in {dataset}: the table keeper finds nothing wrong any more.\n"
                );
            }
            body += "Resolved:\n";
            body += &list(&notice.resolved, true);
            if !notice.open.is_empty() {
                body += &format!("Still open (reminders {repeat}):\n");
                body += &list(&notice.open, true);
            }
            if notice.resolved.keys().any(|k| k.starts_with("missing:")) {
                body += "A table that was missing counts as resolved once rows arrive in it, or \
                          when its day leaves the look-back window.\n";
            }
            body += "\nDetails (JSON):\n";
            body += &serde_json::to_string_pretty(report).expect("reports serialize");
            let word = match notice.kind {
                NoticeKind::AllClear => "ALL CLEAR",
                _ => "RESOLVED",
            };
            (
                format!("cf2bq {word} ({dataset}): {}", summaries(&notice.resolved)),
                body,
            )
        }
    };
    // SNS subjects: at most 100 characters.
    (subject.chars().take(100).collect(), body)
}

/// The state item's key for the tables one keeper checks.
pub fn state_key(project: &str, dataset: &str, layout: &Layout) -> String {
    super::state_item::key("alerts", project, dataset, layout)
}

/// The alert state's item in the ledger table.
pub struct AlertStore(StateItem);

impl AlertStore {
    pub fn new(aws: &aws_config::SdkConfig, table: &str, key: String) -> AlertStore {
        AlertStore(StateItem::new(aws, table, key))
    }

    pub fn key(&self) -> &str {
        self.0.key()
    }

    /// The kept state; empty when there is none yet.
    pub async fn load(&self) -> Result<AlertState, String> {
        self.0.load().await
    }

    pub async fn save(&self, state: &AlertState, now_micros: i64) -> Result<(), String> {
        self.0.save(state, now_micros).await
    }
}

/// One run's alerting: load the state, [`decide`], publish the notice (if any) to `topic_arn`,
/// keep the new state. Returns the kind of message sent.
///
/// Publishing comes before saving, so a failed save repeats a message rather than losing one.
/// If the state cannot be read, the run alerts as if nothing had been open (a problem is not
/// kept quiet by a broken store), does not overwrite the state, and fails.
pub async fn notify(
    sns: &aws_sdk_sns::Client,
    topic_arn: &str,
    store: &AlertStore,
    report: &KeeperReport,
    dataset: &str,
    repeat_hours: u32,
    now_micros: i64,
) -> Result<Option<NoticeKind>, String> {
    let (previous, load_error) = match store.load().await {
        Ok(state) => (state, None),
        Err(e) => {
            tracing::error!(error = %e, "alert state unreadable; alerting as if nothing was open");
            (AlertState::default(), Some(e))
        }
    };
    let decision = decide(
        &findings(report, &previous),
        &previous,
        now_micros,
        repeat_hours,
    );
    if let Some(notice) = &decision.notice {
        let (subject, body) = notice_text(notice, report, dataset, repeat_hours);
        super::publish(sns, topic_arn, subject, body).await?;
    }
    if let Some(e) = load_error {
        return Err(e);
    }
    if decision.state != previous {
        store.save(&decision.state, now_micros).await?;
    }
    Ok(decision.notice.map(|n| n.kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_772_000_000_000_000; // 2026-02-25 06:13:20 UTC

    fn found(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn kind(d: &Decision) -> Option<NoticeKind> {
        d.notice.as_ref().map(|n| n.kind)
    }

    /// Hourly runs: alert once, quiet, reminder after 24 h, quiet again, all-clear, quiet.
    #[test]
    fn one_alert_then_reminders_then_one_all_clear() {
        let stale = found(&[("stale", "no new rows for 4 h (threshold 3 h)")]);
        let first = decide(&stale, &AlertState::default(), T0, 24);
        assert_eq!(kind(&first), Some(NoticeKind::Alert));
        assert_eq!(first.notice.as_ref().unwrap().new, vec!["stale"]);
        let open = &first.state.open["stale"];
        assert_eq!((open.since_micros, open.last_alerted_micros), (T0, T0));

        let mut state = first.state;
        for hour in 1..24 {
            // 23 quiet runs, though the summary changes as the hours go by.
            let d = decide(
                &found(&[("stale", &format!("no new rows for {} h", 4 + hour))]),
                &state,
                T0 + hour * HOUR,
                24,
            );
            assert_eq!(kind(&d), None, "hour {hour}");
            state = d.state;
        }
        assert_eq!(state.open["stale"].summary, "no new rows for 27 h");
        assert_eq!(state.open["stale"].last_alerted_micros, T0);

        // The run 24 h later starts a little early (read the clock before the checks ended).
        let reminder = decide(&stale, &state, T0 + 24 * HOUR - 60_000_000, 24);
        assert_eq!(kind(&reminder), Some(NoticeKind::Reminder));
        let n = reminder.notice.as_ref().unwrap();
        assert!(n.new.is_empty());
        assert_eq!(n.open["stale"].since_micros, T0);
        let state = reminder.state;
        assert_eq!(
            state.open["stale"].last_alerted_micros,
            T0 + 24 * HOUR - 60_000_000
        );
        assert_eq!(kind(&decide(&stale, &state, T0 + 25 * HOUR, 24)), None);

        let clear = decide(&BTreeMap::new(), &state, T0 + 30 * HOUR, 24);
        assert_eq!(kind(&clear), Some(NoticeKind::AllClear));
        assert_eq!(
            clear.notice.as_ref().unwrap().resolved["stale"].since_micros,
            T0
        );
        assert_eq!(clear.state, AlertState::default());
        let after = decide(&BTreeMap::new(), &clear.state, T0 + 31 * HOUR, 24);
        assert_eq!(
            after,
            Decision {
                notice: None,
                state: AlertState::default()
            }
        );
    }

    #[test]
    fn a_new_problem_alerts_at_once_and_carries_the_open_ones() {
        let first = decide(
            &found(&[("stale", "no data")]),
            &AlertState::default(),
            T0,
            24,
        );
        let both = found(&[
            ("stale", "no data"),
            ("missing:t_20260301", "missing table"),
        ]);
        let d = decide(&both, &first.state, T0 + 2 * HOUR, 24);
        assert_eq!(kind(&d), Some(NoticeKind::Alert));
        let n = d.notice.unwrap();
        assert_eq!(n.new, vec!["missing:t_20260301"]);
        assert_eq!(n.open.len(), 2);
        // Both were in the message: both count as alerted now, stale keeps its start.
        assert_eq!(d.state.open["stale"].since_micros, T0);
        for f in d.state.open.values() {
            assert_eq!(f.last_alerted_micros, T0 + 2 * HOUR);
        }
    }

    #[test]
    fn a_partial_resolution_is_told_and_does_not_restart_the_reminders() {
        let both = found(&[
            ("stale", "no data"),
            ("missing:t_20260301", "missing table"),
        ]);
        let first = decide(&both, &AlertState::default(), T0, 24);
        let d = decide(&found(&[("stale", "no data")]), &first.state, T0 + HOUR, 24);
        assert_eq!(kind(&d), Some(NoticeKind::Resolved));
        let n = d.notice.unwrap();
        assert_eq!(
            n.resolved.keys().collect::<Vec<_>>(),
            ["missing:t_20260301"]
        );
        assert_eq!(n.open.keys().collect::<Vec<_>>(), ["stale"]);
        assert_eq!(d.state.open["stale"].last_alerted_micros, T0);
    }

    #[test]
    fn a_resolution_in_an_alert_run_goes_into_the_alert() {
        let first = decide(
            &found(&[("stale", "no data")]),
            &AlertState::default(),
            T0,
            24,
        );
        let d = decide(
            &found(&[("missing:t", "missing table t")]),
            &first.state,
            T0 + HOUR,
            24,
        );
        assert_eq!(kind(&d), Some(NoticeKind::Alert));
        assert_eq!(
            d.notice.unwrap().resolved.keys().collect::<Vec<_>>(),
            ["stale"]
        );
        assert_eq!(d.state.open.keys().collect::<Vec<_>>(), ["missing:t"]);
    }

    #[test]
    fn repeat_zero_reminds_on_every_run() {
        let stale = found(&[("stale", "no data")]);
        let first = decide(&stale, &AlertState::default(), T0, 0);
        let d = decide(&stale, &first.state, T0 + HOUR, 0);
        assert_eq!(kind(&d), Some(NoticeKind::Reminder));
        // And a clock that went backwards is not a reason to remind.
        let d = decide(&stale, &first.state, T0 - HOUR, 24);
        assert_eq!(kind(&d), None);
    }

    fn report() -> KeeperReport {
        KeeperReport {
            checked_at_micros: T0,
            missing: vec!["cloudfront_20260301".into()],
            created_missing: vec!["cloudfront_20260301".into()],
            tables: vec![super::super::TableState {
                date: "2026-03-01".into(),
                table: "cloudfront_20260301".into(),
                rows: None,
                last_ingest_micros: None,
            }],
            stale_hours: 3,
            ..Default::default()
        }
    }

    #[test]
    fn a_created_missing_table_stays_open_until_rows_arrive() {
        let report = report();
        let f = findings(&report, &AlertState::default());
        assert_eq!(
            f,
            found(&[(
                "missing:cloudfront_20260301",
                "missing table cloudfront_20260301 (created empty by the keeper)"
            )])
        );
        let first = decide(&f, &AlertState::default(), T0, 24);

        // Next run: the table exists (the keeper made it) but is empty.
        let mut next = report.clone();
        next.missing.clear();
        next.created_missing.clear();
        next.tables[0].rows = Some(0);
        let f = findings(&next, &first.state);
        assert_eq!(
            f["missing:cloudfront_20260301"],
            "table cloudfront_20260301 was missing and is still empty"
        );
        assert_eq!(kind(&decide(&f, &first.state, T0 + HOUR, 24)), None);
        // An empty table that was never missing is not a finding.
        assert!(findings(&next, &AlertState::default()).is_empty());

        // Replayed: rows arrived, resolved.
        next.tables[0].rows = Some(12);
        let f = findings(&next, &first.state);
        assert!(f.is_empty());
        assert_eq!(
            kind(&decide(&f, &first.state, T0 + 2 * HOUR, 24)),
            Some(NoticeKind::AllClear)
        );
    }

    #[test]
    fn stale_findings_say_how_long() {
        let mut r = report();
        r.missing.clear();
        r.stale = true;
        r.last_ingest_micros = Some(T0 - 5 * HOUR);
        assert_eq!(
            findings(&r, &AlertState::default())["stale"],
            "no new rows for 5 h (threshold 3 h)"
        );
        r.last_ingest_micros = None;
        assert_eq!(
            findings(&r, &AlertState::default())["stale"],
            "no rows at all in the checked tables"
        );
    }

    #[test]
    fn texts_say_what_is_new_open_and_resolved() {
        let report = report();
        let f = findings(&report, &AlertState::default());
        let alert = decide(&f, &AlertState::default(), T0, 24);
        let (subject, body) = notice_text(alert.notice.as_ref().unwrap(), &report, "logs", 24);
        assert_eq!(subject, "cf2bq ALERT (logs): 1 missing table");
        assert!(body.starts_with(
            "NEW:\n- missing table cloudfront_20260301 (created empty by the keeper)\n"
        ));
        assert!(body.contains("A reminder follows every 24 h while a problem stays open"));
        assert!(body.contains("MISSING TABLES in logs: cloudfront_20260301."));

        let reminder = decide(&f, &alert.state, T0 + 24 * HOUR, 24);
        let (subject, body) = notice_text(reminder.notice.as_ref().unwrap(), &report, "logs", 24);
        assert_eq!(subject, "cf2bq REMINDER (logs): 1 missing table");
        assert!(body.starts_with(
            "REMINDER: still open (reminders every 24 h):\n\
             - missing table cloudfront_20260301 (created empty by the keeper) \
             (since 2026-02-25 06:13 UTC)\n"
        ));

        let clear = decide(&BTreeMap::new(), &reminder.state, T0 + 25 * HOUR, 24);
        let (subject, body) = notice_text(clear.notice.as_ref().unwrap(), &report, "logs", 24);
        assert_eq!(
            subject,
            "cf2bq ALL CLEAR (logs): missing table cloudfront_20260301 (created empty by the keeper)"
        );
        assert!(body.starts_with(
            "ALL CLEAR in logs: the table keeper finds nothing wrong any more.\nResolved:\n"
        ));
        assert!(body.contains("once rows arrive in it"));
        assert!(body.contains("Details (JSON):\n{"));
    }

    #[test]
    fn the_state_round_trips_and_has_a_reserved_key() {
        let d = decide(
            &found(&[("stale", "no data")]),
            &AlertState::default(),
            T0,
            24,
        );
        let json = serde_json::to_string(&d.state).unwrap();
        assert_eq!(serde_json::from_str::<AlertState>(&json).unwrap(), d.state);
        let key = state_key(
            "p",
            "d",
            &Layout::Sharded {
                prefix: "cloudfront_".into(),
            },
        );
        assert_eq!(key, "keeper#alerts#p.d.cloudfront_*");
        assert!(!key.starts_with("s3://"));
    }
}
