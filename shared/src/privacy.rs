//! Privacy controls, applied in the ingest function before a row is encoded: nothing they
//! remove ever leaves AWS. Cookies can be dropped; client addresses (`c_ip` and every address
//! in `x_forwarded_for`) truncated to their network (/24 for IPv4, /48 for IPv6) or replaced
//! by a keyed hash, so rows of one client still group together without revealing it.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::cloudfront::fields::{FieldId, COOKIE, C_IP, X_FORWARDED_FOR};
use crate::cloudfront::Value;

/// What a BigQuery quarantine row holds instead of the raw line when a control is on.
pub const WITHHELD: &[u8] = b"(raw line withheld: privacy controls are on)";

/// What happens to client addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum IpPrivacy {
    /// Stored as logged.
    #[default]
    Keep,
    /// `203.0.113.10` → `203.0.113.0`, `2001:db8:1:2::7` → `2001:db8:1::`. A value that is
    /// not an address is dropped (NULL): it could be anything.
    Truncate,
    /// HMAC-SHA256 with this key, the first 16 bytes in hex: stable for a key, not reversible
    /// without it.
    Hash(Vec<u8>),
}

/// The privacy settings of an ingest (`CF2BQ_DROP_COOKIES`, `CF2BQ_IP_PRIVACY`,
/// `CF2BQ_IP_HASH_KEY`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Privacy {
    pub drop_cookies: bool,
    pub ip: IpPrivacy,
}

impl Privacy {
    /// Whether any control is on.
    pub fn is_on(&self) -> bool {
        self.drop_cookies || self.ip != IpPrivacy::Keep
    }

    /// The value to store for field `id`: `value` itself, or its private form written into
    /// `out`.
    pub fn apply<'v>(&self, id: FieldId, value: Value<'v>, out: &'v mut String) -> Value<'v> {
        let Value::Text(text) = value else {
            return value;
        };
        match id {
            COOKIE if self.drop_cookies => Value::Null,
            C_IP | X_FORWARDED_FOR if self.ip != IpPrivacy::Keep => {
                // x-forwarded-for is a list: `198.51.100.7, 10.0.0.1`.
                for address in text.split(',').map(str::trim) {
                    if let Some(private) = self.address(address) {
                        if !out.is_empty() {
                            out.push(',');
                        }
                        out.push_str(&private);
                    }
                }
                if out.is_empty() {
                    Value::Null
                } else {
                    Value::Text(out)
                }
            }
            _ => value,
        }
    }

    /// Whether a raw log line may be stored outside AWS as it is (rejected lines sent to a
    /// BigQuery quarantine table): not when it may hold what these controls remove.
    pub fn allows_raw_lines(&self) -> bool {
        !self.is_on()
    }

    fn address(&self, text: &str) -> Option<String> {
        match &self.ip {
            IpPrivacy::Keep => Some(text.to_string()),
            IpPrivacy::Truncate => Some(match text.parse::<IpAddr>().ok()? {
                IpAddr::V4(v4) => {
                    let [a, b, c, _] = v4.octets();
                    std::net::Ipv4Addr::new(a, b, c, 0).to_string()
                }
                IpAddr::V6(v6) => {
                    let s = v6.segments();
                    std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0).to_string()
                }
            }),
            IpPrivacy::Hash(key) => {
                if text.is_empty() || text == "-" {
                    return None;
                }
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
                let tag = ring::hmac::sign(&key, text.as_bytes());
                let mut hex = String::with_capacity(32);
                for b in &tag.as_ref()[..16] {
                    let _ = write!(hex, "{b:02x}");
                }
                Some(hex)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(privacy: &Privacy, id: FieldId, text: &str) -> Option<String> {
        let mut out = String::new();
        match privacy.apply(id, Value::Text(text), &mut out) {
            Value::Text(s) => Some(s.to_string()),
            Value::Null => None,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nothing_changes_by_default() {
        let keep = Privacy::default();
        assert!(!keep.is_on());
        assert_eq!(
            apply(&keep, COOKIE, "session=abc").as_deref(),
            Some("session=abc")
        );
        assert_eq!(
            apply(&keep, C_IP, "203.0.113.10").as_deref(),
            Some("203.0.113.10")
        );
    }

    #[test]
    fn cookies_are_dropped_and_addresses_truncated() {
        let privacy = Privacy {
            drop_cookies: true,
            ip: IpPrivacy::Truncate,
        };
        assert_eq!(apply(&privacy, COOKIE, "session=abc"), None);
        assert_eq!(
            apply(&privacy, C_IP, "203.0.113.10").as_deref(),
            Some("203.0.113.0")
        );
        assert_eq!(
            apply(&privacy, C_IP, "2001:db8:85a3:8d3:1319:8a2e:370:7348").as_deref(),
            Some("2001:db8:85a3::")
        );
        assert_eq!(
            apply(&privacy, X_FORWARDED_FOR, "198.51.100.7, 2001:db8::1").as_deref(),
            Some("198.51.100.0,2001:db8::")
        );
        assert_eq!(apply(&privacy, C_IP, "not-an-address"), None);
        // Other fields and non-text values pass through.
        let mut out = String::new();
        assert_eq!(privacy.apply(C_IP, Value::Null, &mut out), Value::Null);
        assert_eq!(
            apply(&privacy, crate::cloudfront::fields::DATE + 2, "ICN1").as_deref(),
            Some("ICN1")
        );
        assert!(!privacy.allows_raw_lines());
    }

    #[test]
    fn keyed_hashes_are_stable_per_key_and_differ_across_keys() {
        let one = Privacy {
            drop_cookies: false,
            ip: IpPrivacy::Hash(b"key one, at least 16 bytes".to_vec()),
        };
        let two = Privacy {
            ip: IpPrivacy::Hash(b"key two, at least 16 bytes".to_vec()),
            ..one.clone()
        };
        let a = apply(&one, C_IP, "203.0.113.10").unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(apply(&one, C_IP, "203.0.113.10").unwrap(), a);
        assert_ne!(apply(&two, C_IP, "203.0.113.10").unwrap(), a);
        assert_ne!(apply(&one, C_IP, "203.0.113.11").unwrap(), a);
        // Each address of a list on its own, so a client's hash is the same in both columns.
        let list = apply(&one, X_FORWARDED_FOR, "203.0.113.10,198.51.100.7").unwrap();
        assert!(list.starts_with(&format!("{a},")), "{list}");
        assert_eq!(
            apply(&one, COOKIE, "session=abc").as_deref(),
            Some("session=abc")
        );
    }
}
