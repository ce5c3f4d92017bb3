//! How many messages may go out: at most N a minute per channel (the providers' limits,
//! and no wall of messages at 09:00), and at most one message per client per day across
//! all chains, so that a client in two chains does not get two letters on one day.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;

use super::calendar::{Calendar, SendWindow};
use super::model::Channel;

/// The limits, as the file sets them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttle {
    /// Messages a minute through each channel; a channel not listed has no limit.
    pub per_minute: BTreeMap<Channel, u32>,
    /// Messages to one client in one day of the client's calendar, all chains together;
    /// 0 is no limit.
    pub per_client_per_day: u32,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            per_minute: BTreeMap::new(),
            per_client_per_day: 1,
        }
    }
}

/// What has gone out already, as the engine counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sent {
    /// Messages through the channel in the last minute.
    pub channel_last_minute: u32,
    /// Messages to this client since the start of the client's day.
    pub client_today: u32,
}

/// Why a message waits, and until when.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Hold {
    /// The channel sent its limit in the last minute.
    #[error("{channel} sent its {limit} messages of the minute; try again at {until}")]
    ChannelBusy {
        /// The channel.
        channel: Channel,
        /// Its limit a minute.
        limit: u32,
        /// When to try again.
        until: DateTime<Utc>,
    },
    /// The client got the day's messages already.
    #[error("the client got {limit} message(s) today; the next goes at {until}")]
    ClientHadEnough {
        /// The limit a day.
        limit: u32,
        /// The next opening of the send window on another day.
        until: DateTime<Utc>,
    },
}

impl Hold {
    /// When to try again.
    pub fn until(&self) -> DateTime<Utc> {
        match self {
            Hold::ChannelBusy { until, .. } | Hold::ClientHadEnough { until, .. } => *until,
        }
    }
}

impl Throttle {
    /// Whether a message through `channel` may go at `now`, given what has gone out; when
    /// not, until when it waits (for the client's limit: the send window of the client's
    /// next business day, in `zone`).
    pub fn check(
        &self,
        channel: Channel,
        sent: Sent,
        now: DateTime<Utc>,
        window: SendWindow,
        calendar: &Calendar,
        zone: Tz,
    ) -> Result<(), Hold> {
        let daily = self.per_client_per_day;
        if daily > 0 && sent.client_today >= daily {
            let tomorrow = calendar.next_day(now, zone);
            return Err(Hold::ClientHadEnough {
                limit: daily,
                until: calendar.fit(window, tomorrow, zone),
            });
        }
        if let Some(&limit) = self.per_minute.get(&channel)
            && sent.channel_last_minute >= limit
        {
            return Err(Hold::ChannelBusy {
                channel,
                limit,
                until: now + TimeDelta::minutes(1),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveTime, TimeZone};
    use chrono_tz::Europe::Moscow;

    fn moscow(s: &str) -> DateTime<Utc> {
        let local = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
        Moscow
            .from_local_datetime(&local)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn window() -> SendWindow {
        let t = |s| NaiveTime::parse_from_str(s, "%H:%M").unwrap();
        SendWindow::new(t("09:00"), t("19:00")).unwrap()
    }

    fn throttle() -> Throttle {
        Throttle {
            per_minute: [(Channel::Wazzup, 20)].into_iter().collect(),
            per_client_per_day: 1,
        }
    }

    #[test]
    fn under_the_limits_a_message_goes() {
        let c = Calendar::weekdays(Moscow);
        let now = moscow("2026-03-04 10:00");
        let sent = Sent {
            channel_last_minute: 19,
            client_today: 0,
        };
        assert_eq!(
            throttle().check(Channel::Wazzup, sent, now, window(), &c, Moscow),
            Ok(())
        );
        // E-mail has no limit a minute here.
        let busy = Sent {
            channel_last_minute: 1000,
            client_today: 0,
        };
        assert_eq!(
            throttle().check(Channel::Email, busy, now, window(), &c, Moscow),
            Ok(())
        );
    }

    #[test]
    fn a_busy_channel_waits_a_minute() {
        let c = Calendar::weekdays(Moscow);
        let now = moscow("2026-03-04 10:00");
        let sent = Sent {
            channel_last_minute: 20,
            client_today: 0,
        };
        let hold = throttle()
            .check(Channel::Wazzup, sent, now, window(), &c, Moscow)
            .unwrap_err();
        assert_eq!(hold.until(), moscow("2026-03-04 10:01"));
        assert!(matches!(hold, Hold::ChannelBusy { limit: 20, .. }));
    }

    #[test]
    fn one_message_per_client_per_day_waits_for_the_next_business_morning() {
        let c = Calendar::weekdays(Moscow);
        let sent = Sent {
            channel_last_minute: 0,
            client_today: 1,
        };
        let friday = moscow("2026-03-06 11:00");
        let hold = throttle()
            .check(Channel::Email, sent, friday, window(), &c, Moscow)
            .unwrap_err();
        assert_eq!(
            hold,
            Hold::ClientHadEnough {
                limit: 1,
                until: moscow("2026-03-09 09:00")
            }
        );
        let unlimited = Throttle {
            per_client_per_day: 0,
            ..throttle()
        };
        assert_eq!(
            unlimited.check(Channel::Email, sent, friday, window(), &c, Moscow),
            Ok(())
        );
    }
}
