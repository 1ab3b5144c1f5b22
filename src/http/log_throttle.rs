//! One warning line per key per window, for floods of refused webhook deliveries.

/// Rate-limits a repeated warning per key (a channel id, a source address):
/// a flood of refused deliveries costs one log line per key per window, not
/// one per request. Bounded: past `MAX_KEYS` distinct keys in a window, the
/// rest share one line.
#[derive(Debug)]
pub struct LogThrottle {
    seen: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    window: std::time::Duration,
}

impl Default for LogThrottle {
    fn default() -> Self {
        LogThrottle::new(std::time::Duration::from_secs(60))
    }
}

impl LogThrottle {
    const MAX_KEYS: usize = 10_000;
    /// The key every further key shares once the map is full.
    pub const OVERFLOW: &'static str = "\u{0}overflow";

    pub fn new(window: std::time::Duration) -> LogThrottle {
        LogThrottle { seen: Default::default(), window }
    }

    /// True when `key` was not logged within the window (and records it now).
    pub fn should_log(&self, key: &str) -> bool {
        let now = std::time::Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(last) = seen.get(key) {
            if now.duration_since(*last) < self.window {
                return false;
            }
        }
        let key = if seen.len() >= Self::MAX_KEYS && !seen.contains_key(key) {
            let window = self.window;
            seen.retain(|_, at| now.duration_since(*at) < window);
            if seen.len() >= Self::MAX_KEYS {
                if seen.get(Self::OVERFLOW).is_some_and(|at| now.duration_since(*at) < window) {
                    return false;
                }
                Self::OVERFLOW
            } else {
                key
            }
        } else {
            key
        };
        seen.insert(key.to_string(), now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::LogThrottle;

    #[test]
    fn once_per_key_per_window() {
        let t = LogThrottle::new(std::time::Duration::from_millis(40));
        assert!(t.should_log("a"));
        assert!(!t.should_log("a"));
        assert!(t.should_log("b"));
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert!(t.should_log("a"));
    }
}
