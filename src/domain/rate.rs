//! Staying under an outside API's rate limit: the generic cell rate algorithm (GCRA). One
//! number of state per limit (the theoretical arrival time of the next request) makes it easy
//! to keep in a shared store, so that every replica of the robot draws on one budget.

use std::time::Duration;

/// A rate limit: `per_second` requests a second on average, `burst` of them at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests allowed at once after a quiet spell (at least 1).
    pub burst: u32,
}

impl Rate {
    /// The time between two requests at the sustained rate, in milliseconds.
    pub fn interval_ms(&self) -> f64 {
        1000.0 / self.per_second
    }

    /// How far ahead of now the arrival time may run before a request must wait.
    pub fn tolerance_ms(&self) -> f64 {
        self.interval_ms() * f64::from(self.burst.max(1) - 1)
    }
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    /// Go now; keep `tat_ms` as the new state.
    Go {
        /// The new theoretical arrival time, milliseconds.
        tat_ms: f64,
    },
    /// Wait this long, then ask again.
    Wait(Duration),
}

/// Whether a request at `now_ms` may go, given the stored arrival time `tat_ms` (absent for
/// a limit never used).
pub fn admit(rate: Rate, tat_ms: Option<f64>, now_ms: f64) -> Admission {
    // A request that wakes a little after its turn (a timer's or a busy machine's delay)
    // keeps the turn's place: the next turn is one interval after the turn, not after the
    // late request, so delays of a millisecond or two do not add up to a slower rate. Only
    // lateness is forgiven, and at most a twentieth of an interval: enough for a timer's
    // overshoot, and well inside the adapters' margin under the CRM's limit, so no second
    // holds more requests than the CRM allows unless the network bunches them up.
    let late_forgiven = rate.interval_ms() * 0.05;
    let tat = match tat_ms {
        Some(t) if t >= now_ms - late_forgiven => t,
        _ => now_ms,
    };
    let ahead = tat - now_ms;
    if ahead > rate.tolerance_ms() {
        let wait = ahead - rate.tolerance_ms();
        Admission::Wait(Duration::from_micros((wait * 1000.0).ceil() as u64))
    } else {
        Admission::Go {
            tat_ms: tat + rate.interval_ms(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `n` requests, each as soon as allowed, and returns when each went.
    fn schedule(rate: Rate, n: usize) -> Vec<f64> {
        let (mut tat, mut now, mut times) = (None, 0.0, Vec::new());
        while times.len() < n {
            match admit(rate, tat, now) {
                Admission::Go { tat_ms } => {
                    tat = Some(tat_ms);
                    times.push(now);
                }
                Admission::Wait(d) => now += d.as_secs_f64() * 1000.0,
            }
        }
        times
    }

    #[test]
    fn without_burst_requests_are_evenly_spaced() {
        let times = schedule(
            Rate {
                per_second: 7.0,
                burst: 1,
            },
            8,
        );
        for pair in times.windows(2) {
            assert!((pair[1] - pair[0] - 1000.0 / 7.0).abs() < 0.01, "{times:?}");
        }
        // So no rolling second ever holds more than 7.
        assert!(times[7] - times[0] >= 1000.0 - 0.01);
    }

    #[test]
    fn a_request_a_little_late_keeps_its_turn_and_a_long_pause_does_not_bank_turns() {
        let rate = Rate {
            per_second: 10.0,
            burst: 1,
        };
        let Admission::Go { tat_ms } = admit(rate, None, 0.0) else {
            panic!("the first goes at once")
        };
        assert_eq!(tat_ms, 100.0);
        // Its turn was at 100 ms; it comes at 103: the next turn is still at 200.
        let Admission::Go { tat_ms } = admit(rate, Some(tat_ms), 103.0) else {
            panic!("a late request goes")
        };
        assert_eq!(tat_ms, 200.0);
        // Half a second late is a pause, not a delay: the next turn counts from now.
        let Admission::Go { tat_ms } = admit(rate, Some(tat_ms), 700.0) else {
            panic!("after a pause a request goes")
        };
        assert_eq!(tat_ms, 800.0);
        assert!(matches!(
            admit(rate, Some(tat_ms), 701.0),
            Admission::Wait(_)
        ));
    }

    #[test]
    fn a_burst_goes_at_once_then_the_rate_holds() {
        let times = schedule(
            Rate {
                per_second: 2.0,
                burst: 50,
            },
            60,
        );
        assert!(times[..50].iter().all(|&t| t == 0.0));
        assert!((times[50] - 500.0).abs() < 0.01, "{}", times[50]);
        assert!((times[59] - 5000.0).abs() < 0.01, "{}", times[59]);
    }

    #[test]
    fn a_quiet_spell_refills_the_burst_but_no_more() {
        let rate = Rate {
            per_second: 2.0,
            burst: 3,
        };
        let mut tat = None;
        for _ in 0..3 {
            match admit(rate, tat, 0.0) {
                Admission::Go { tat_ms } => tat = Some(tat_ms),
                Admission::Wait(_) => panic!("the burst goes at once"),
            }
        }
        assert!(matches!(admit(rate, tat, 0.0), Admission::Wait(_)));
        // Ten seconds later the burst is back, three and not twenty.
        let mut went = 0;
        while let Admission::Go { tat_ms } = admit(rate, tat, 10_000.0) {
            tat = Some(tat_ms);
            went += 1;
        }
        assert_eq!(went, 3);
    }
}
