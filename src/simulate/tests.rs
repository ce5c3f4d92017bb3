//! Properties of routing over random departments and days.

use proptest::prelude::{ProptestConfig, any, prop_assert, prop_assert_eq, proptest};

use super::*;
use crate::domain::condition::{Condition, Operand, Test};
use crate::domain::routing::{Reason, Vacation, Verdict, eligibility};

fn monday() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
}

fn hm(h: u32, m: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(h, m, 0).unwrap()
}

const ZONES: [Tz; 5] = [
    chrono_tz::Europe::Moscow,
    chrono_tz::Europe::Kaliningrad,
    chrono_tz::Europe::Samara,
    chrono_tz::Asia::Yekaterinburg,
    chrono_tz::Asia::Novosibirsk,
];

fn fact(field: &str, test: Test) -> Condition {
    Condition::Fact {
        field: field.into(),
        test,
    }
}

/// A department with anything in it: shifts, lunches and zones of every kind, newcomers,
/// people away on the day, specialists, overflow to groups and leads.
fn random_department(seed: u64) -> (Roster, RoutingRules) {
    let mut rng = StdRng::seed_from_u64(seed);
    let groups = rng.random_range(1..=3);
    let people = rng.random_range(groups..=groups * 4);
    let managers: Vec<Manager> = (0..people)
        .map(|i| {
            let start = rng.random_range(6..=12);
            let length = rng.random_range(4..=10);
            let lunch = (length >= 6).then(|| {
                let at = start + rng.random_range(2..length - 2);
                Window {
                    start: hm(at, 0),
                    end: hm(at, *[30, 45, 59].get(rng.random_range(0..3)).unwrap()),
                }
            });
            let mut week = Week::default();
            for d in 0..7 {
                if rng.random_bool(0.8) {
                    week.0[d] = Some(Shift {
                        hours: Window {
                            start: hm(start, 0),
                            end: hm(start + length, rng.random_range(0..60)),
                        },
                        lunch,
                    });
                }
            }
            let day = monday();
            Manager {
                id: i.to_string(),
                name: format!("М{i}"),
                group: i % groups,
                specialisations: if rng.random_bool(0.25) {
                    vec!["Газовые электростанции".into()]
                } else {
                    vec![]
                },
                zone: ZONES[rng.random_range(0..ZONES.len())],
                week,
                days_off: if rng.random_bool(0.1) {
                    vec![day]
                } else {
                    vec![]
                },
                vacations: if rng.random_bool(0.1) {
                    vec![Vacation {
                        from: day.pred_opt().unwrap(),
                        to: day.succ_opt().unwrap(),
                    }]
                } else {
                    vec![]
                },
                weight: if rng.random_bool(0.2) { 0.5 } else { 1.0 },
                active: rng.random_bool(0.95),
            }
        })
        .collect();
    let roster = Roster {
        groups: (0..groups)
            .map(|g| Group {
                name: format!("Г{g}"),
                lead: (g < people).then_some(g),
            })
            .collect(),
        managers,
        zone: chrono_tz::Europe::Moscow,
    };
    let mut rules = RoutingRules::seed_defaults();
    rules.guard = TimeDelta::minutes(rng.random_range(0..=20));
    rules.pause_margin = rng.random_range(0.0..3.0);
    rules.groups = (0..groups)
        .map(|g| GroupRule {
            group: g,
            when: (g + 1 < groups)
                .then(|| fact("budget", Test::Lt(50_000.0 * 10f64.powi(g as i32)))),
            wait: Some(TimeDelta::minutes(rng.random_range(1..=30))),
            overflow: match rng.random_range(0..3) {
                0 => None,
                1 if g + 1 < groups => Some(Fallback::Group(g + 1)),
                _ => Some(Fallback::GroupLead),
            },
        })
        .collect();
    let specialists: Vec<usize> = (0..people)
        .filter(|&m| !roster.managers[m].specialisations.is_empty())
        .collect();
    rules.specialisations = vec![Specialisation {
        name: "Газовые электростанции".into(),
        when: fact(
            "category",
            Test::Eq(Operand::Text("Газовые электростанции".into())),
        ),
        members: specialists,
        across_groups: rng.random_bool(0.5),
        wait: TimeDelta::minutes(rng.random_range(0..=10)),
    }];
    rules.priorities[0].pause = rng.random_bool(0.5);
    rules.priorities[0].wait = Some(TimeDelta::minutes(5));
    (roster, rules)
}

/// A department where fairness can be promised: in each group everyone works the same
/// hours in the same zone and nobody goes offline, no specialists and no overflow, and
/// the pause stops anyone who is a whole lead ahead.
fn even_department(seed: u64) -> (Roster, RoutingRules) {
    let (mut roster, mut rules) = random_department(seed);
    let mut rng = StdRng::seed_from_u64(seed ^ 0xEE);
    for g in 0..roster.groups.len() {
        let zone = ZONES[rng.random_range(0..ZONES.len())];
        let start = rng.random_range(7..=11);
        let shift = Shift {
            hours: Window {
                start: hm(start, 0),
                end: hm(start + 8, 0),
            },
            lunch: Some(Window {
                start: hm(start + 4, 0),
                end: hm(start + 4, 45),
            }),
        };
        for m in roster.managers.iter_mut().filter(|m| m.group == g) {
            m.zone = zone;
            m.week = Week([Some(shift); 7]);
            m.days_off.clear();
            m.vacations.clear();
            m.active = true;
            m.specialisations.clear();
        }
    }
    rules.specialisations.clear();
    for g in &mut rules.groups {
        g.overflow = None;
        g.wait = None;
    }
    for p in &mut rules.priorities[..4] {
        p.pause = true;
    }
    rules.pause_margin = 0.5;
    (roster, rules)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn no_lead_goes_to_someone_who_cannot_take_it_and_none_is_dropped(
        department in any::<u64>(),
        day in any::<u64>(),
        leads in 50usize..400,
    ) {
        let (roster, rules) = random_department(department);
        let settings = DaySettings { date: monday(), leads, seed: day };
        let report = super::day(&roster, &rules, settings);
        prop_assert_eq!(report.breaks(), 0, "{:?}", report.breaches);
        prop_assert_eq!(
            report.assigned + report.to_group_lead + report.not_routed + report.pending,
            leads
        );
        prop_assert_eq!(report.fifth_routed, 0);
        let fifth = super::leads(&roster, settings, &mut StdRng::seed_from_u64(day))
            .iter()
            .filter(|l| l.priority == Priority::FIFTH)
            .count();
        prop_assert_eq!(report.not_routed, fifth);
    }

    #[test]
    fn the_day_ends_even_among_equals(
        department in any::<u64>(),
        day in any::<u64>(),
        leads in 50usize..400,
    ) {
        let (roster, rules) = even_department(department);
        let mut rng = StdRng::seed_from_u64(day);
        let settings = DaySettings { date: monday(), leads, seed: day };
        let arrivals = super::leads(&roster, settings, &mut rng);
        let presence = presence(&roster, monday(), 0.0, &mut rng);
        let report = run(&roster, &rules, &arrivals, &presence, monday(), &mut rng);
        prop_assert_eq!(report.breaks(), 0);
        for s in &report.spreads {
            // The load at the end of the day is leads ÷ weight: at most one lead apart.
            prop_assert!(s.load * s.weight <= 1.0 + 1e-9, "{:?} {:?}", s, report.managers);
        }
    }

    #[test]
    fn specialists_get_their_leads_whenever_one_can_take_them(
        department in any::<u64>(),
        moment in 0i64..24 * 60,
        seed in any::<u64>(),
    ) {
        let (roster, rules) = random_department(department);
        let mut rng = StdRng::seed_from_u64(seed);
        let now = at_local(roster.zone, monday().and_time(NaiveTime::MIN)) + TimeDelta::minutes(moment);
        let states = [PresenceState::Online, PresenceState::OnCall, PresenceState::Away, PresenceState::Offline];
        let presence: Vec<Option<Heard>> = roster
            .managers
            .iter()
            .map(|_| {
                rng.random_bool(0.9).then(|| Heard {
                    state: states[rng.random_range(0..states.len())],
                    at: now - TimeDelta::seconds(rng.random_range(0..200)),
                })
            })
            .collect();
        let received: Vec<u32> = roster.managers.iter().map(|_| rng.random_range(0..30)).collect();
        let mut facts = Facts::new();
        facts.insert("category".into(), FieldValue::Text("Газовые электростанции".into()));
        facts.insert("budget".into(), FieldValue::Number(rng.random_range(1_000.0..5_000_000.0)));
        let request = Request {
            facts: &facts,
            priority: Priority::new(rng.random_range(1..=4)).unwrap(),
            waited: TimeDelta::zero(),
            group: None,
        };
        let router = Router { roster: &roster, rules: &rules };
        let board = Board { presence: &presence, received: &received };
        let group = router.group_of(&request).unwrap();
        let spec = &rules.specialisations[0];
        let eligible_specialist = spec.members.iter().any(|&m| {
            (spec.across_groups || roster.managers[m].group == group)
                && eligibility::check(&roster.managers[m], presence[m].as_ref(), now, &rules).is_ok()
        });
        let decision = router.decide(&request, &board, now, &mut rng);
        if eligible_specialist {
            match decision {
                Decision::Assign { manager, .. } => prop_assert!(spec.members.contains(&manager)),
                other => prop_assert!(false, "{:?}", other),
            }
        }
        // The roll call agrees with the eligibility of each manager.
        let call = router.roll_call(&request, &board, now);
        for line in &call.lines {
            let m = &roster.managers[line.manager];
            let ok = eligibility::check(m, presence[line.manager].as_ref(), now, &rules).is_ok();
            prop_assert_eq!(ok, !matches!(line.verdict, Verdict::Excluded(_)));
        }
    }
}

#[test]
fn a_manager_in_another_zone_is_judged_by_their_own_clock_in_the_simulation() {
    // A department of one in Novosibirsk working 11:00-20:00 there (07:00-16:00 Moscow):
    // leads from 07:00 Moscow go to them at once.
    let (mut roster, mut rules) = random_department(1);
    roster.groups.truncate(1);
    roster.managers.truncate(1);
    let m = &mut roster.managers[0];
    m.group = 0;
    m.active = true;
    m.zone = chrono_tz::Asia::Novosibirsk;
    m.vacations.clear();
    m.days_off.clear();
    m.week = Week(
        [Some(Shift {
            hours: Window {
                start: hm(11, 0),
                end: hm(20, 0),
            },
            lunch: None,
        }); 7],
    );
    rules.groups = vec![GroupRule {
        group: 0,
        when: None,
        wait: None,
        overflow: None,
    }];
    rules.specialisations.clear();
    rules.guard = TimeDelta::minutes(10);
    let now = at_local(roster.zone, monday().and_time(hm(7, 30)));
    let heard = [Some(Heard {
        state: PresenceState::Online,
        at: now,
    })];
    assert!(eligibility::check(&roster.managers[0], heard[0].as_ref(), now, &rules).is_ok());
    let later = at_local(roster.zone, monday().and_time(hm(15, 55)));
    let heard = [Some(Heard {
        state: PresenceState::Online,
        at: later,
    })];
    assert_eq!(
        eligibility::check(&roster.managers[0], heard[0].as_ref(), later, &rules).map(|_| ()),
        Err(Reason::BeforeEnd(hm(20, 0)))
    );
}

#[test]
fn the_same_seed_gives_the_same_day() {
    let (roster, rules) = synthetic(30, 5);
    let settings = DaySettings {
        date: monday(),
        leads: 300,
        seed: 9,
    };
    assert_eq!(
        day(&roster, &rules, settings),
        day(&roster, &rules, settings)
    );
}
