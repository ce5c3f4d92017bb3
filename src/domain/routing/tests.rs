//! The decision, rule by rule.

use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, TimeZone, Utc};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;
use crate::domain::condition::{Condition, Facts, Operand, Test};
use crate::domain::lead::FieldValue;
use crate::domain::presence::PresenceState;
use crate::domain::priority::Priority;

fn t(s: &str) -> NaiveTime {
    NaiveTime::parse_from_str(s, "%H:%M").unwrap()
}

fn window(s: &str) -> Window {
    let (a, b) = s.split_once('-').unwrap();
    Window {
        start: t(a),
        end: t(b),
    }
}

/// Monday 23 November 2026, `hh:mm` Moscow time.
fn msk(hm: &str) -> DateTime<Utc> {
    let local = NaiveDate::from_ymd_opt(2026, 11, 23)
        .unwrap()
        .and_time(t(hm));
    chrono_tz::Europe::Moscow
        .from_local_datetime(&local)
        .unwrap()
        .with_timezone(&Utc)
}

fn manager(id: &str, group: usize) -> Manager {
    let shift = Shift {
        hours: window("09:00-18:00"),
        lunch: Some(window("13:00-14:00")),
    };
    let mut week = Week::default();
    for d in 0..5 {
        week.0[d] = Some(shift);
    }
    Manager {
        id: id.into(),
        name: format!("Менеджер {id}"),
        group,
        specialisations: vec![],
        zone: chrono_tz::Europe::Moscow,
        week,
        days_off: vec![],
        vacations: vec![],
        weight: 1.0,
        active: true,
    }
}

fn roster(groups: &[&str], managers: Vec<Manager>) -> Roster {
    Roster {
        groups: groups
            .iter()
            .map(|g| Group {
                name: (*g).into(),
                lead: None,
            })
            .collect(),
        managers,
        zone: chrono_tz::Europe::Moscow,
    }
}

/// One group taking every lead, no overflow.
fn rules_one_group() -> RoutingRules {
    let mut r = RoutingRules::seed_defaults();
    r.groups = vec![GroupRule {
        group: 0,
        when: None,
        wait: None,
        overflow: None,
    }];
    r
}

fn online(at: DateTime<Utc>) -> Option<Heard> {
    Some(Heard {
        state: PresenceState::Online,
        at,
    })
}

fn state(s: PresenceState, at: DateTime<Utc>) -> Option<Heard> {
    Some(Heard { state: s, at })
}

fn request(facts: &Facts, p: u8) -> Request<'_> {
    Request {
        facts,
        priority: Priority::new(p).unwrap(),
        waited: TimeDelta::zero(),
        group: None,
    }
}

fn check_one(m: &Manager, heard: Option<Heard>, now: DateTime<Utc>) -> Result<(), Reason> {
    eligibility::check(m, heard.as_ref(), now, &rules_one_group()).map(|_| ())
}

#[test]
fn each_rule_of_eligibility_is_named() {
    let m = manager("1", 0);
    let now = msk("10:00");
    assert_eq!(check_one(&m, online(now), now), Ok(()));
    let inactive = Manager {
        active: false,
        ..m.clone()
    };
    assert_eq!(
        check_one(&inactive, online(now), now),
        Err(Reason::Inactive)
    );
    let day = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
    let off = Manager {
        days_off: vec![day],
        ..m.clone()
    };
    assert_eq!(check_one(&off, online(now), now), Err(Reason::DayOff));
    let away = Manager {
        vacations: vec![Vacation {
            from: day.pred_opt().unwrap(),
            to: day.succ_opt().unwrap(),
        }],
        ..m.clone()
    };
    assert_eq!(
        check_one(&away, online(now), now),
        Err(Reason::Vacation(day.succ_opt().unwrap()))
    );
    let saturday = msk("10:00") + TimeDelta::days(5);
    assert_eq!(
        check_one(&m, online(saturday), saturday),
        Err(Reason::Weekend)
    );
    let early = msk("08:30");
    assert_eq!(
        check_one(&m, online(early), early),
        Err(Reason::BeforeShift(t("09:00")))
    );
    let late = msk("18:00");
    assert_eq!(check_one(&m, online(late), late), Err(Reason::ShiftOver));
    let lunch = msk("13:20");
    assert_eq!(
        check_one(&m, online(lunch), lunch),
        Err(Reason::AtLunch(t("14:00")))
    );
    assert_eq!(check_one(&m, None, now), Err(Reason::NotHeard));
    let stale = now - TimeDelta::minutes(3);
    assert_eq!(check_one(&m, online(stale), now), Err(Reason::Stale));
    assert_eq!(
        check_one(&m, state(PresenceState::Offline, now), now),
        Err(Reason::Offline)
    );
    assert_eq!(
        check_one(&m, state(PresenceState::Away, now), now),
        Err(Reason::Away)
    );
    assert_eq!(
        check_one(&m, state(PresenceState::OnCall, now), now),
        Err(Reason::OnCall)
    );
    // The schedule is checked first: at lunch and on a call, lunch is the reason.
    assert_eq!(
        check_one(&m, state(PresenceState::OnCall, lunch), lunch),
        Err(Reason::AtLunch(t("14:00")))
    );
}

#[test]
fn no_lead_within_ten_minutes_of_lunch_or_the_end_of_the_shift() {
    let m = manager("1", 0);
    for (at, expected) in [
        ("12:49", Ok(())),
        ("12:50", Err(Reason::BeforeLunch(t("13:00")))),
        ("12:59", Err(Reason::BeforeLunch(t("13:00")))),
        ("14:00", Ok(())),
        ("17:49", Ok(())),
        ("17:50", Err(Reason::BeforeEnd(t("18:00")))),
    ] {
        let now = msk(at);
        assert_eq!(check_one(&m, online(now), now), expected, "at {at}");
    }
    let mut rules = rules_one_group();
    rules.guard = TimeDelta::minutes(30);
    let now = msk("12:35");
    assert_eq!(
        eligibility::check(&m, online(now).as_ref(), now, &rules).map(|_| ()),
        Err(Reason::BeforeLunch(t("13:00")))
    );
}

#[test]
fn a_shift_is_read_in_the_manager_s_own_time_zone() {
    let moscow = manager("1", 0);
    let urals = Manager {
        zone: chrono_tz::Asia::Yekaterinburg,
        ..manager("2", 0)
    };
    // 07:30 in Moscow is 09:30 in Yekaterinburg.
    let now = msk("07:30");
    assert_eq!(check_one(&urals, online(now), now), Ok(()));
    assert_eq!(
        check_one(&moscow, online(now), now),
        Err(Reason::BeforeShift(t("09:00")))
    );
    // 15:55 in Moscow is 17:55 there: within the guard of the end of the shift.
    let now = msk("15:55");
    assert_eq!(
        check_one(&urals, online(now), now),
        Err(Reason::BeforeEnd(t("18:00")))
    );
    // Lunch 13:00-14:00 there is 11:00-12:00 in Moscow.
    let now = msk("11:30");
    assert_eq!(
        check_one(&urals, online(now), now),
        Err(Reason::AtLunch(t("14:00")))
    );
    assert_eq!(
        eligibility::back_at(&urals, Reason::AtLunch(t("14:00")), now),
        Some(msk("12:00"))
    );
}

#[test]
fn the_least_loaded_wins_counted_to_the_end_of_the_shift() {
    let late = Manager {
        week: {
            let mut w = Week::default();
            w.0[0] = Some(Shift {
                hours: window("11:00-20:00"),
                lunch: Some(window("15:00-16:00")),
            });
            w
        },
        ..manager("late", 0)
    };
    let r = roster(&["Младшая"], vec![manager("early", 0), late]);
    let rules = rules_one_group();
    let router = Router {
        roster: &r,
        rules: &rules,
    };
    let now = msk("12:00");
    let presence = [online(now), online(now)];
    let facts = Facts::new();
    let mut rng = StdRng::seed_from_u64(1);
    // Early: 9 leads in 3 hours (24 to the end); late: 4 in one hour (32): early wins,
    // though it has more leads today.
    let board = Board {
        presence: &presence,
        received: &[9, 4],
    };
    match router.decide(&request(&facts, 3), &board, now, &mut rng) {
        Decision::Assign {
            manager, reasons, ..
        } => {
            assert_eq!(manager, 0);
            assert!(reasons[0].contains("Младшая"), "{reasons:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn exact_ties_are_broken_at_random_and_the_seed_repeats_it() {
    let r = roster(
        &["Младшая"],
        (0..4).map(|i| manager(&i.to_string(), 0)).collect(),
    );
    let rules = rules_one_group();
    let router = Router {
        roster: &r,
        rules: &rules,
    };
    let now = msk("10:00");
    let presence = vec![online(now); 4];
    let board = Board {
        presence: &presence,
        received: &[2, 2, 2, 3],
    };
    let facts = Facts::new();
    let chosen = |seed: u64| match router.decide(
        &request(&facts, 3),
        &board,
        now,
        &mut StdRng::seed_from_u64(seed),
    ) {
        Decision::Assign {
            manager, reasons, ..
        } => {
            assert!(
                reasons.iter().any(|r| r.contains("выбран случайно")),
                "{reasons:?}"
            );
            manager
        }
        other => panic!("{other:?}"),
    };
    let picks: Vec<usize> = (0..60).map(chosen).collect();
    for m in 0..3 {
        assert!(picks.contains(&m), "manager {m} never picked: {picks:?}");
    }
    assert!(!picks.contains(&3), "the one with more leads is never tied");
    assert_eq!(chosen(7), chosen(7));
}

#[test]
fn one_clearly_ahead_is_paused_unless_the_lead_cannot_wait() {
    let r = roster(
        &["Средняя"],
        vec![manager("ahead", 0), manager("calling", 0)],
    );
    let rules = rules_one_group();
    let router = Router {
        roster: &r,
        rules: &rules,
    };
    let now = msk("13:00") + TimeDelta::hours(4); // 17:00: 7 of 8 hours worked
    let presence = [online(now), state(PresenceState::OnCall, now)];
    let facts = Facts::new();
    let mut rng = StdRng::seed_from_u64(3);
    // 7 leads in 7 of 8 hours: 8 to the end, against 4 for the colleague on a call.
    let board = Board {
        presence: &presence,
        received: &[7, 3],
    };
    match router.decide(&request(&facts, 3), &board, now, &mut rng) {
        Decision::Wait { why, .. } => assert!(why.contains("на паузе"), "{why}"),
        other => panic!("{other:?}"),
    }
    let mut rules_p1 = rules.clone();
    rules_p1.priorities[0].pause = false;
    rules_p1.priorities[0].task = Some(TaskRule {
        text: "Позвонить клиенту".into(),
        deadline: TimeDelta::minutes(15),
    });
    let router = Router {
        roster: &r,
        rules: &rules_p1,
    };
    match router.decide(&request(&facts, 1), &board, now, &mut rng) {
        Decision::Assign { manager, task, .. } => {
            assert_eq!(manager, 0);
            assert_eq!(task.unwrap().due, now + TimeDelta::minutes(15));
        }
        other => panic!("{other:?}"),
    }
    // With a margin of two leads, one lead ahead (1.1 counted to the end) is not paused.
    let board = Board {
        presence: &presence,
        received: &[4, 3],
    };
    let mut rules = rules;
    rules.pause_margin = 2.0;
    let router = Router {
        roster: &r,
        rules: &rules,
    };
    assert!(matches!(
        router.decide(&request(&facts, 3), &board, now, &mut rng),
        Decision::Assign { manager: 0, .. }
    ));
}

#[test]
fn priority_five_is_not_routed() {
    let r = roster(&["Младшая"], vec![manager("1", 0)]);
    let rules = rules_one_group();
    let router = Router {
        roster: &r,
        rules: &rules,
    };
    let now = msk("10:00");
    let facts = Facts::new();
    let d = router.decide(
        &request(&facts, 5),
        &Board {
            presence: &[online(now)],
            received: &[0],
        },
        now,
        &mut StdRng::seed_from_u64(1),
    );
    assert!(matches!(d, Decision::NotRouted { .. }), "{d:?}");
}

fn category(c: &str) -> Condition {
    Condition::Fact {
        field: "category".into(),
        test: Test::Eq(Operand::Text(c.into())),
    }
}

#[test]
fn specialists_come_first_across_groups_and_the_group_after_their_wait() {
    let mut gas = manager("gas", 1);
    gas.specialisations = vec!["Газовые электростанции".into()];
    let r = roster(&["Младшая", "Старшая"], vec![manager("junior", 0), gas]);
    let mut rules = rules_one_group();
    rules.specialisations = vec![Specialisation {
        name: "Газовые электростанции".into(),
        when: category("Газовые электростанции"),
        members: vec![1],
        across_groups: true,
        wait: TimeDelta::minutes(10),
    }];
    let router = Router {
        roster: &r,
        rules: &rules,
    };
    let now = msk("10:00");
    let facts: Facts = [(
        "category".to_owned(),
        FieldValue::Text("Газовые электростанции".into()),
    )]
    .into();
    let mut rng = StdRng::seed_from_u64(1);
    let presence = [online(now), online(now)];
    // The specialist is busier but takes it.
    let board = Board {
        presence: &presence,
        received: &[0, 10],
    };
    match router.decide(&request(&facts, 3), &board, now, &mut rng) {
        Decision::Assign {
            manager, reasons, ..
        } => {
            assert_eq!(manager, 1);
            assert!(reasons.iter().any(|r| r.contains("специализация")));
        }
        other => panic!("{other:?}"),
    }
    // On a call: the lead waits for them, then goes to the group.
    let presence = [online(now), state(PresenceState::OnCall, now)];
    let board = Board {
        presence: &presence,
        received: &[0, 10],
    };
    match router.decide(&request(&facts, 3), &board, now, &mut rng) {
        Decision::Wait { until, why } => {
            assert_eq!(until, Some(now + TimeDelta::minutes(10)));
            assert!(why.contains("специалиста"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    let waited = Request {
        waited: TimeDelta::minutes(10),
        ..request(&facts, 3)
    };
    assert!(matches!(
        router.decide(&waited, &board, now, &mut rng),
        Decision::Assign { manager: 0, .. }
    ));
    // The roll call lists both, with their scope.
    let call = router.roll_call(&request(&facts, 3), &board, now);
    assert_eq!(call.lines.len(), 2);
    assert_eq!(call.lines[1].scope, Scope::Specialist(0));
    assert_eq!(call.lines[1].verdict, Verdict::Excluded(Reason::OnCall));
    assert_eq!(call.lines[0].scope, Scope::Group);
    assert!(matches!(call.lines[0].verdict, Verdict::Free(_)));
}

#[test]
fn a_lead_waits_until_lunch_ends_then_overflows_at_the_limit() {
    let mut r = roster(
        &["Младшая", "Средняя"],
        vec![manager("junior", 0), manager("middle", 1)],
    );
    r.groups[0].lead = Some(0);
    r.groups[1].lead = Some(1);
    let budget_lt = |n: f64| Condition::Fact {
        field: "budget".into(),
        test: Test::Lt(n),
    };
    let mut rules = rules_one_group();
    rules.groups = vec![
        GroupRule {
            group: 0,
            when: Some(budget_lt(100_000.0)),
            wait: Some(TimeDelta::minutes(90)),
            overflow: Some(Fallback::Group(1)),
        },
        GroupRule {
            group: 1,
            when: None,
            wait: Some(TimeDelta::minutes(15)),
            overflow: Some(Fallback::GroupLead),
        },
    ];
    rules.priorities[0].wait = Some(TimeDelta::minutes(5));
    let router = Router {
        roster: &r,
        rules: &rules,
    };
    let now = msk("13:10");
    let presence = [online(now), online(now)];
    let board = Board {
        presence: &presence,
        received: &[0, 0],
    };
    let facts: Facts = [("budget".to_owned(), FieldValue::Number(5_000.0))].into();
    let mut rng = StdRng::seed_from_u64(1);
    match router.decide(&request(&facts, 3), &board, now, &mut rng) {
        Decision::Wait { until, why } => {
            assert_eq!(until, Some(msk("14:00")), "{why}");
            assert!(why.contains("на обеде до 14:00"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    // Priority 1 waits 5 minutes at most, then goes to the next group.
    let waited = Request {
        waited: TimeDelta::minutes(5),
        ..request(&facts, 1)
    };
    match router.decide(&waited, &board, now, &mut rng) {
        Decision::Overflow { to, why } => {
            assert_eq!(to, OverflowTo::Group(1));
            assert!(why.contains("Средняя"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    // In the middle group after its wait: to the group lead, but not while the lead is at
    // lunch: then it waits for the lead to come back.
    let there = Request {
        waited: TimeDelta::minutes(15),
        group: Some(1),
        ..request(&facts, 3)
    };
    match router.decide(&there, &board, now, &mut rng) {
        Decision::Wait { until, why } => {
            assert_eq!(until, Some(msk("14:00")));
            assert!(why.contains("руководитель группы"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    let later = msk("15:00");
    let busy = [
        state(PresenceState::OnCall, later),
        state(PresenceState::OnCall, later),
    ];
    let board = Board {
        presence: &busy,
        received: &[0, 0],
    };
    assert!(matches!(
        router.decide(&there, &board, later, &mut rng),
        Decision::Overflow {
            to: OverflowTo::Manager(1),
            ..
        }
    ));
}
