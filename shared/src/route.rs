//! A row's own date → the table it belongs in.

use std::fmt;

use crate::cloudfront::parse::civil_from_days;

/// How log rows are laid out in BigQuery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// One table per UTC log date: `<prefix>YYYYMMDD` (what fluentd setups use).
    Sharded { prefix: String },
    /// One table, DAY-partitioned on `log_date`.
    Partitioned { table: String },
}

impl Layout {
    /// The table a row dated `days` (since 1970-01-01) goes to.
    pub fn table_for(&self, days: i32) -> String {
        match self {
            Layout::Sharded { prefix } => format!("{prefix}{}", Ymd(days)),
            Layout::Partitioned { table } => table.clone(),
        }
    }

    /// The log date a sharded table holds, from its name.
    pub fn date_of_table(&self, table: &str) -> Option<i32> {
        match self {
            Layout::Sharded { prefix } => {
                let ymd = table.strip_prefix(prefix.as_str())?;
                if ymd.len() != 8 {
                    return None;
                }
                let dashed = format!("{}-{}-{}", &ymd[..4], &ymd[4..6], &ymd[6..]);
                crate::cloudfront::parse::parse_date(&dashed)
            }
            Layout::Partitioned { .. } => None,
        }
    }
}

/// The first and last log date (days since the epoch) of an object's rows in one table: the
/// partition filter of every query that looks for those rows again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DaySpan {
    pub first: i32,
    pub last: i32,
}

impl DaySpan {
    pub fn of(day: i32) -> DaySpan {
        DaySpan {
            first: day,
            last: day,
        }
    }

    /// The span covering both.
    pub fn union(self, other: DaySpan) -> DaySpan {
        DaySpan {
            first: self.first.min(other.first),
            last: self.last.max(other.last),
        }
    }
}

/// A date in days since 1970-01-01, displayed as `YYYYMMDD`.
pub struct Ymd(pub i32);

impl fmt::Display for Ymd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = civil_from_days(self.0);
        write!(f, "{y:04}{m:02}{d:02}")
    }
}

/// A date in days since 1970-01-01, displayed and parsed as `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IsoDate(pub i32);

/// A string that is not a `YYYY-MM-DD` calendar date.
#[derive(Debug, thiserror::Error)]
#[error("expected a date as YYYY-MM-DD, e.g. 2026-11-20")]
pub struct NotADate;

impl std::str::FromStr for IsoDate {
    type Err = NotADate;

    fn from_str(text: &str) -> Result<IsoDate, NotADate> {
        crate::cloudfront::parse::parse_date(text)
            .map(IsoDate)
            .ok_or(NotADate)
    }
}

impl fmt::Display for IsoDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = civil_from_days(self.0);
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudfront::parse::parse_date;

    #[test]
    fn rows_route_by_their_own_date() {
        let sharded = Layout::Sharded {
            prefix: "cf_".into(),
        };
        let day = parse_date("2026-02-28").unwrap();
        assert_eq!(sharded.table_for(day), "cf_20260228");
        assert_eq!(sharded.table_for(day + 1), "cf_20260301");
        assert_eq!(sharded.date_of_table("cf_20260301"), Some(day + 1));
        assert_eq!(sharded.date_of_table("other_20260301"), None);
        let partitioned = Layout::Partitioned {
            table: "logs".into(),
        };
        assert_eq!(partitioned.table_for(day), "logs");
        assert_eq!(IsoDate(day).to_string(), "2026-02-28");
    }

    #[test]
    fn iso_dates_parse_back() {
        let day: IsoDate = "2026-02-28".parse().unwrap();
        assert_eq!(day.to_string(), "2026-02-28");
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "20260228",
            "2026-2-28",
            "",
            "yesterday",
        ] {
            assert!(bad.parse::<IsoDate>().is_err(), "{bad:?} parsed");
        }
    }
}
