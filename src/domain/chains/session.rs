//! WhatsApp's free-form session as the robot knows it: opened by the client's last message,
//! and closed early when the messenger said so (a `24_HOURS_EXCEEDED` status) after it.

use chrono::{DateTime, Utc};

/// The client's last message that still opens a session: `last_client_message`, unless
/// the messenger reported the session closed at `closed_at` or later (the robot's record
/// of the client's message may be wrong: another channel, a clock, a lost webhook). A
/// message the client writes after the close opens a new session. The result goes to
/// [`super::Chains::decide_step`] as the client's last message.
pub fn last_open_message(
    last_client_message: Option<DateTime<Utc>>,
    closed_at: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    match (last_client_message, closed_at) {
        (Some(wrote), Some(closed)) if closed >= wrote => None,
        (wrote, _) => wrote,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 3, h, 0, 0).unwrap()
    }

    #[test]
    fn a_close_after_the_clients_message_ends_the_session() {
        assert_eq!(last_open_message(Some(at(10)), Some(at(11))), None);
        assert_eq!(last_open_message(Some(at(10)), Some(at(10))), None);
    }

    #[test]
    fn a_message_after_the_close_opens_a_new_one() {
        assert_eq!(last_open_message(Some(at(12)), Some(at(11))), Some(at(12)));
        assert_eq!(last_open_message(Some(at(12)), None), Some(at(12)));
        assert_eq!(last_open_message(None, Some(at(11))), None);
    }
}
