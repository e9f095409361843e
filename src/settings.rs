//! Values read from settings. Numbers carry the range they must be in as part of their type,
//! so a value outside it stops the server at start (the configuration loader names the key)
//! and code that uses a setting never needs to clamp it. Secrets never show in logs.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// A whole number from `MIN` to `MAX`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Count<const MIN: u64, const MAX: u64>(u64);

impl<const MIN: u64, const MAX: u64> Count<MIN, MAX> {
    /// `V`, checked against the range when compiled (for defaults and tests).
    pub const fn of<const V: u64>() -> Self {
        const { assert!(MIN <= V && V <= MAX, "a setting's value outside its range") };
        Count(V)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// As a `usize`: every range used fits one.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }

    /// As a `u32`, saturating (for ranges wider than one).
    pub fn as_u32(self) -> u32 {
        u32::try_from(self.0).unwrap_or(u32::MAX)
    }

    /// As an `i32` (the database's integers), saturating.
    pub fn as_i32(self) -> i32 {
        i32::try_from(self.0).unwrap_or(i32::MAX)
    }
}

impl<const MIN: u64, const MAX: u64> TryFrom<u64> for Count<MIN, MAX> {
    type Error = OutOfRange;

    fn try_from(value: u64) -> Result<Self, OutOfRange> {
        within::<MIN, MAX>(value, "").map(Count)
    }
}

impl<const MIN: u64, const MAX: u64> From<Count<MIN, MAX>> for u64 {
    fn from(count: Count<MIN, MAX>) -> u64 {
        count.0
    }
}

impl<const MIN: u64, const MAX: u64> fmt::Debug for Count<MIN, MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Settings that cannot work as given (together, or where the server listens); the message
/// names the keys and what would work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unworkable(pub String);

impl From<&str> for Unworkable {
    fn from(message: &str) -> Unworkable {
        Unworkable(message.to_owned())
    }
}

impl From<String> for Unworkable {
    fn from(message: String) -> Unworkable {
        Unworkable(message)
    }
}

/// A value outside its setting's range; the loader adds the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutOfRange(String);

impl fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn within<const MIN: u64, const MAX: u64>(value: u64, unit: &str) -> Result<u64, OutOfRange> {
    if (MIN..=MAX).contains(&value) {
        Ok(value)
    } else {
        Err(OutOfRange(format!("{value} is out of range: it must be from {MIN} to {MAX}{unit}")))
    }
}

// A length of time written as a whole number of one unit (`lease_secs = 12`); 0, where the
// range allows it, usually turns the setting's feature off (`nonzero`).
macro_rules! duration_setting {
    ($name:ident, $millis_per_unit:expr, $unit:literal) => {
        #[doc = concat!("A length of time in whole ", $unit, ", from `MIN` to `MAX`.")]
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "u64", into = "u64")]
        pub struct $name<const MIN: u64, const MAX: u64>(u64);

        impl<const MIN: u64, const MAX: u64> $name<MIN, MAX> {
            /// `V`, checked against the range when compiled (for defaults and tests).
            pub const fn of<const V: u64>() -> Self {
                const { assert!(MIN <= V && V <= MAX, "a setting's value outside its range") };
                $name(V)
            }

            pub fn get(self) -> Duration {
                Duration::from_millis(self.0.saturating_mul($millis_per_unit))
            }

            /// As a span of calendar time.
            pub fn time_delta(self) -> chrono::TimeDelta {
                chrono::TimeDelta::from_std(self.get()).unwrap_or(chrono::TimeDelta::MAX)
            }

            /// The duration, or `None` for 0 (which turns the setting's feature off).
            pub fn nonzero(self) -> Option<Duration> {
                (self.0 > 0).then(|| self.get())
            }

            /// The number as written.
            pub const fn count(self) -> u64 {
                self.0
            }
        }

        impl<const MIN: u64, const MAX: u64> TryFrom<u64> for $name<MIN, MAX> {
            type Error = OutOfRange;

            fn try_from(value: u64) -> Result<Self, OutOfRange> {
                // Every range fits a Duration in milliseconds; checked here, not assumed.
                const { assert!(MAX.checked_mul($millis_per_unit).is_some()) };
                within::<MIN, MAX>(value, concat!(" ", $unit)).map($name)
            }
        }

        impl<const MIN: u64, const MAX: u64> From<$name<MIN, MAX>> for u64 {
            fn from(value: $name<MIN, MAX>) -> u64 {
                value.0
            }
        }

        impl<const MIN: u64, const MAX: u64> fmt::Debug for $name<MIN, MAX> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{} {}", self.0, $unit)
            }
        }
    };
}

duration_setting!(Millis, 1, "milliseconds");
duration_setting!(Seconds, 1_000, "seconds");
duration_setting!(Minutes, 60_000, "minutes");
duration_setting!(Hours, 3_600_000, "hours");
duration_setting!(Days, 86_400_000, "days");

/// A value that never appears in logs or `Debug` output. For URLs, only the password is hidden.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url_password(&self.0).unwrap_or_else(|| "[redacted]".to_owned()))
    }
}

/// `scheme://user:password@host/…?password=…` → `scheme://user:[redacted]@host/…?password=[redacted]`;
/// `None` for anything that is not a URL we can show safely. PostgreSQL takes a password in the
/// query too (`password`, and `sslpassword` for a client key).
fn redact_url_password(value: &str) -> Option<String> {
    let (scheme, rest) = value.split_once("://")?;
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let mut shown = match rest.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split_once(':').map_or(credentials, |(user, _)| user);
            format!("{scheme}://{user}:[redacted]@{host}")
        }
        None => format!("{scheme}://{rest}"),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if name.to_ascii_lowercase().contains("password") => format!("{name}=[redacted]"),
                _ => pair.to_owned(),
            })
            .collect();
        shown = format!("{shown}?{}", pairs.join("&"));
    }
    Some(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_outside_the_range_are_refused_with_the_range() {
        assert_eq!(Seconds::<1, 60>::try_from(12).map(Seconds::get), Ok(Duration::from_secs(12)));
        let refused = Seconds::<1, 60>::try_from(0).unwrap_err().to_string();
        assert_eq!(refused, "0 is out of range: it must be from 1 to 60 seconds");
        assert!(Count::<1, 10>::try_from(11).is_err());
        assert_eq!(Minutes::<0, 10>::try_from(0).map(Minutes::nonzero), Ok(None));
        assert_eq!(Hours::<1, 24>::try_from(2).map(Hours::get), Ok(Duration::from_secs(7_200)));
    }

    #[test]
    fn settings_read_and_write_as_plain_numbers() {
        #[derive(Serialize, Deserialize)]
        struct Settings {
            lease_secs: Seconds<1, 600>,
        }
        let read: Settings = serde_json::from_str(r#"{"lease_secs": 12}"#).unwrap();
        assert_eq!(read.lease_secs.get(), Duration::from_secs(12));
        assert_eq!(serde_json::to_string(&read).unwrap(), r#"{"lease_secs":12}"#);
        let error = serde_json::from_str::<Settings>(r#"{"lease_secs": 601}"#).err().unwrap().to_string();
        assert!(error.contains("must be from 1 to 600 seconds"), "{error}");
    }
}
