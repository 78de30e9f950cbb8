//! Scheduling priority of a task: stored as an integer (1 low, 2 normal, 3 high), the same
//! numbers as `ctp.v1.TaskPriority`, so the store orders by it directly.
use std::fmt;

/// How urgent a task is. Ordered: `Low < Normal < High`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    Low = 1,
    Normal = 2,
    High = 3,
}

impl Priority {
    /// The highest priority: aging never raises a task beyond it.
    pub const MAX: Priority = Priority::High;

    /// From the stored number; an unknown one (a newer binary's) counts as normal.
    pub fn from_stored(n: i64) -> Priority {
        match n {
            1 => Priority::Low,
            3 => Priority::High,
            _ => Priority::Normal,
        }
    }

    pub fn stored(self) -> i64 {
        self as i64
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
        }
    }

    /// `low`, `normal` or `high` (any case).
    pub fn parse(s: &str) -> Option<Priority> {
        match s.to_ascii_lowercase().as_str() {
            "low" => Some(Priority::Low),
            "normal" => Some(Priority::Normal),
            "high" => Some(Priority::High),
            _ => None,
        }
    }

    /// The priority a task waiting `waited_s` seconds is scheduled with: one level higher per
    /// `aging_s` seconds of waiting (0 = no aging), at most [`Priority::MAX`]. This is what
    /// keeps a steady stream of high work from stalling low work forever: a low task waits at
    /// most `2 × aging_s` before it competes as high, and among equals the queue is FIFO.
    pub fn aged(self, waited_s: f64, aging_s: u64) -> Priority {
        if aging_s == 0 || waited_s <= 0.0 {
            return self;
        }
        let levels = (waited_s / aging_s as f64).floor() as i64;
        Priority::from_stored((self.stored() + levels).min(Priority::MAX.stored()))
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_numbers_round_trip_and_order() {
        for p in [Priority::Low, Priority::Normal, Priority::High] {
            assert_eq!(Priority::from_stored(p.stored()), p);
            assert_eq!(Priority::parse(p.as_str()), Some(p));
        }
        assert!(Priority::Low < Priority::Normal && Priority::Normal < Priority::High);
        assert_eq!(Priority::parse("urgent"), None);
    }

    #[test]
    fn waiting_raises_one_level_per_aging_period_up_to_high() {
        assert_eq!(Priority::Low.aged(3599.0, 3600), Priority::Low);
        assert_eq!(Priority::Low.aged(3600.0, 3600), Priority::Normal);
        assert_eq!(Priority::Low.aged(7200.0, 3600), Priority::High);
        assert_eq!(Priority::Low.aged(1e9, 3600), Priority::High);
        assert_eq!(
            Priority::Low.aged(1e9, 0),
            Priority::Low,
            "0 disables aging"
        );
    }
}
