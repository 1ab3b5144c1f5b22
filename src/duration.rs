//! Durations written the way operators write them: `500ms`, `180s`, `15m`,
//! `24h`, `7d` (also combined, `1h30m`). Used by config values and CLI flags.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration that parses from and prints as `24h`-style text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }
    pub const fn millis(ms: u64) -> Dur {
        Dur(Duration::from_millis(ms))
    }
    pub fn as_secs(self) -> u64 {
        self.0.as_secs()
    }
}

impl Dur {
    /// Longest duration accepted: far beyond any sensible setting, and short
    /// enough that `now ± d` can never leave the representable range.
    pub const MAX: Dur = Dur::secs(100 * 366 * 86_400);
}

/// Why text is not a duration; the sentence says how to write one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("a duration may not be empty; write it like 180s, 15m, 24h or 7d")]
    Empty,
    #[error("duration \"{0}\" needs a unit: write it like {0}s, {0}m, {0}h or {0}d")]
    NoUnit(String),
    #[error("\"{0}\" is not a duration; write it like 180s, 15m, 24h or 7d")]
    NotADuration(String),
    #[error("duration \"{0}\" is longer than 100 years")]
    TooLong(String),
}

impl FromStr for Dur {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Dur, DurationError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(DurationError::Empty);
        }
        if t.chars().all(|c| c.is_ascii_digit()) {
            return Err(DurationError::NoUnit(t.to_string()));
        }
        let d = humantime::parse_duration(t).map(Dur).map_err(|_| DurationError::NotADuration(t.to_string()))?;
        if d > Dur::MAX {
            return Err(DurationError::TooLong(t.to_string()));
        }
        Ok(d)
    }
}

impl fmt::Display for Dur {
    /// The largest unit that divides the duration exactly, so `7d` prints as `7d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return write!(f, "0s");
        }
        for (unit, size) in [("d", 86_400_000u128), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
            if ms.is_multiple_of(size) {
                return write!(f, "{}{}", ms / size, unit);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_operator_units() {
        assert_eq!("180s".parse::<Dur>().unwrap(), Dur::secs(180));
        assert_eq!("15m".parse::<Dur>().unwrap(), Dur::secs(900));
        assert_eq!("24h".parse::<Dur>().unwrap(), Dur::secs(86_400));
        assert_eq!("7d".parse::<Dur>().unwrap(), Dur::secs(7 * 86_400));
        assert_eq!("250ms".parse::<Dur>().unwrap(), Dur::millis(250));
        assert!("12".parse::<Dur>().unwrap_err().to_string().contains("needs a unit"));
        assert!("soon".parse::<Dur>().is_err());
        assert!("101y".parse::<Dur>().unwrap_err().to_string().contains("100 years"));
        assert!("99999999999999999999d".parse::<Dur>().is_err());
    }

    #[test]
    fn prints_the_largest_exact_unit() {
        assert_eq!(Dur::secs(7 * 86_400).to_string(), "7d");
        assert_eq!(Dur::secs(86_400).to_string(), "1d");
        assert_eq!(Dur::secs(90).to_string(), "90s");
        assert_eq!(Dur::millis(1500).to_string(), "1500ms");
    }
}
