//! A lead's priority, 1 to 5: the number the whole department works by.
//!
//! From the seed interview: priority 1 is a "fat" lead that a person must work, with no
//! robot writing to the client; 2–4 get the robot's tools; 5 is a lead nobody works, mostly
//! the kinds the company refuses itself.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A priority from 1 (the most important) to 5 (no person works it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Priority(u8);

/// A number that is not a priority.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a priority is a whole number from 1 to 5, not {0}")]
pub struct NotAPriority(pub i64);

impl Priority {
    /// The most important leads: a person works them, no robot writes to the client.
    pub const FIRST: Priority = Priority(1);
    /// The middle: what a lead gets when there is no model to score it with.
    pub const UNSCORED: Priority = Priority(3);
    /// Leads nobody works by hand: chains only.
    pub const FIFTH: Priority = Priority(5);
    /// All five, from 1 to 5.
    pub const ALL: [Priority; 5] = [
        Priority(1),
        Priority(2),
        Priority(3),
        Priority(4),
        Priority(5),
    ];

    /// The priority numbered `n`, when `n` is 1 to 5.
    pub fn new(n: u8) -> Result<Priority, NotAPriority> {
        if (1..=5).contains(&n) {
            Ok(Priority(n))
        } else {
            Err(NotAPriority(n.into()))
        }
    }

    /// Its number, 1 to 5.
    pub fn number(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for Priority {
    type Error = NotAPriority;
    fn try_from(n: u8) -> Result<Self, Self::Error> {
        Priority::new(n)
    }
}

impl From<Priority> for u8 {
    fn from(p: Priority) -> u8 {
        p.0
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_to_five_are_priorities() {
        assert!(Priority::new(0).is_err());
        assert!(Priority::new(6).is_err());
        assert_eq!(Priority::new(3).unwrap().number(), 3);
        assert!(Priority::FIRST < Priority::FIFTH);
        let p: Priority = serde_json::from_str("2").unwrap();
        assert_eq!(p.to_string(), "2");
        assert!(serde_json::from_str::<Priority>("7").is_err());
    }
}
