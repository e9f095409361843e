//! Lengths of time a request asks for: whole hours or whole minutes, never both.

use super::FieldViolation;
use chrono::TimeDelta;

/// A requested length of time, and the request field it came in (for error details).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requested {
    pub minutes: u64,
    pub field: &'static str,
}

impl Requested {
    pub fn hours(field: &'static str, hours: u32) -> Requested {
        // u32 hours in minutes fit in u64 many times over.
        Requested { minutes: u64::from(hours) * 60, field }
    }

    /// As a time span; None beyond what chrono can hold (a request may ask for anything).
    pub fn span(self) -> Option<TimeDelta> {
        TimeDelta::try_minutes(i64::try_from(self.minutes).ok()?)
    }

    /// Whether it is within `max_hours`.
    pub fn within_hours(self, max_hours: u32) -> bool {
        self.minutes <= Requested::hours(self.field, max_hours).minutes
    }
}

/// Reads a pair of exclusive fields, `(name, value)` in hours and in minutes; None when
/// neither is given.
pub fn requested(
    hours: (&'static str, Option<u32>),
    minutes: (&'static str, Option<u32>),
) -> Result<Option<Requested>, FieldViolation> {
    match (hours.1, minutes.1) {
        (Some(_), Some(_)) => Err(FieldViolation {
            field: minutes.0.to_owned(),
            description: format!("cannot be combined with {}; give one of them", hours.0),
        }),
        (Some(value), None) => Ok(Some(Requested::hours(hours.0, value))),
        (None, Some(value)) => Ok(Some(Requested { minutes: u64::from(value), field: minutes.0 })),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_and_minutes_are_exclusive() {
        let pair = |h, m| requested(("duration_hours", h), ("duration_minutes", m));
        assert_eq!(pair(Some(2), None), Ok(Some(Requested { minutes: 120, field: "duration_hours" })));
        assert_eq!(pair(None, Some(15)), Ok(Some(Requested { minutes: 15, field: "duration_minutes" })));
        assert_eq!(pair(None, None), Ok(None));
        assert_eq!(pair(Some(1), Some(1)).unwrap_err().field, "duration_minutes");
        let most = Requested::hours("duration_hours", u32::MAX);
        assert!(most.span().is_some(), "u32::MAX hours is a span chrono holds");
        assert!(!most.within_hours(24));
        assert!(Requested { minutes: 1440, field: "x" }.within_hours(24));
    }
}
