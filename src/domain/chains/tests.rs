//! The decisions of chains on hand-made chains with a controlled clock. The shipped
//! chains of `config/chains.toml` are tested beside their reader, in `config::chains`.

use std::time::Duration;

use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::{Asia, Europe::Moscow};

use super::facts::{LOSS_REASON, LOST, MEETING_AT, OUTCOME, STAGE, WON};
use super::*;
use crate::domain::condition::{Condition, Facts, Operand, TAGS, Test};
use crate::domain::event::{EventKind, TaskAction};
use crate::domain::lead::FieldValue;
use crate::domain::priority::Priority;
use crate::domain::task::TaskKind;

fn moscow(s: &str) -> DateTime<Utc> {
    let local = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
    Moscow
        .from_local_datetime(&local)
        .unwrap()
        .with_timezone(&Utc)
}

fn time(s: &str) -> NaiveTime {
    NaiveTime::parse_from_str(s, "%H:%M").unwrap()
}

fn facts(pairs: &[(&str, &str)]) -> Facts {
    pairs
        .iter()
        .map(|(k, v)| {
            let value = if *k == TAGS {
                FieldValue::Many(v.split(',').map(|t| t.trim().to_owned()).collect())
            } else {
                FieldValue::Text((*v).to_owned())
            };
            ((*k).to_owned(), value)
        })
        .collect()
}

fn hours(n: u64) -> Delay {
    Delay::Calendar(Duration::from_secs(n * 3600))
}

fn message(template: &str, approved: Option<&str>, otherwise: Otherwise) -> Action {
    Action::Message {
        channel: Channel::Wazzup,
        template: template.into(),
        approved: approved.map(Into::into),
        otherwise,
    }
}

fn step(title: &str, after: Delay, at: Option<&str>, action: Action) -> Step {
    Step {
        title: title.into(),
        after,
        at: at.map(time),
        when: None,
        action,
    }
}

fn call(text: &str) -> Action {
    Action::Call {
        text: text.into(),
        within: Duration::from_secs(2 * 3600),
    }
}

fn chain(name: &str, trigger: Trigger, steps: Vec<Step>) -> Chain {
    Chain {
        name: name.into(),
        trigger,
        when: None,
        steps,
        stops: Stop::all(),
        window: None,
    }
}

fn calendar() -> Calendar {
    let mut c = Calendar::weekdays(Moscow);
    c.holidays
        .insert(chrono::NaiveDate::from_ymd_opt(2026, 3, 9).unwrap());
    c.regions
        .insert("новосибирская область".into(), Asia::Novosibirsk);
    c
}

fn chains(list: Vec<Chain>) -> Chains {
    Chains {
        chains: list,
        calendar: calendar(),
        window: SendWindow::new(time("09:00"), time("19:00")).unwrap(),
        gates: Gates::seed(),
        throttle: Throttle::default(),
        session: Duration::from_secs(24 * 3600),
        stop_tag: "стоп робот".into(),
        lease: Duration::from_secs(300),
        analogues: Vec::new(),
    }
}

fn out_of_stock() -> Chain {
    chain(
        "Нет в наличии",
        Trigger::Tag("нет в наличии".into()),
        vec![
            step(
                "Письмо 1",
                hours(0),
                None,
                message("a", None, Otherwise::Email),
            ),
            step(
                "Письмо 2",
                Delay::BusinessDays(3),
                None,
                message("b", None, Otherwise::Email),
            ),
            step(
                "Аналог",
                Delay::BusinessDays(3),
                None,
                message("c", None, Otherwise::Email),
            ),
        ],
    )
}

// Triggers and enrolment.

#[test]
fn entering_a_stage_enrols_once_and_staying_there_does_not() {
    let c = chains(vec![chain(
        "ОП-2",
        Trigger::Enters("4. Квалификация пройдена".into()),
        vec![step(
            "Звонок",
            Delay::BusinessDays(1),
            None,
            call("Позвонить"),
        )],
    )]);
    let now = moscow("2026-03-03 14:00");
    let before = facts(&[(STAGE, "3. Квалификация")]);
    let after = facts(&[(STAGE, "4. квалификация пройдена ")]);
    let got = c.enrol("42", &before, &after, now);
    assert_eq!(got.len(), 1);
    let e = &got[0];
    assert_eq!(e.chain, "ОП-2");
    assert_eq!(e.lead_id, "42");
    assert_eq!(e.key, "ОП-2:42:stage=4. Квалификация пройдена");
    assert_eq!(e.enrolled_at, now);
    assert_eq!(e.stage.as_deref(), Some("4. квалификация пройдена"));
    assert_eq!((e.next, e.last_step_at), (0, None));
    assert!(c.enrol("42", &after, &after, now).is_empty());
    // A new lead created in the stage: nothing before.
    assert_eq!(c.enrol("43", &Facts::new(), &after, now).len(), 1);
}

#[test]
fn a_lost_lead_enrols_in_the_chain_of_its_reason_only() {
    let c = chains(vec![
        chain("Спам", Trigger::Lost("Спам".into()), vec![]),
        chain("Дорого", Trigger::Lost("Дорого".into()), vec![]),
    ]);
    let now = moscow("2026-03-03 14:00");
    let open = facts(&[(STAGE, "Квалификация")]);
    let lost = facts(&[
        (STAGE, "Отказ. Сделка закрыта"),
        (OUTCOME, LOST),
        (LOSS_REASON, "Дорого"),
    ]);
    let got = c.enrol("1", &open, &lost, now);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].chain, "Дорого");
    assert!(got[0].lost);
    assert!(c.enrol("1", &lost, &lost, now).is_empty(), "already lost");
    // A reason without the lead being lost is not a refusal.
    let open_with_reason = facts(&[(LOSS_REASON, "Дорого")]);
    assert!(c.enrol("1", &open, &open_with_reason, now).is_empty());
}

#[test]
fn a_tag_or_a_field_set_enrols_and_a_won_or_stopped_lead_does_not() {
    let mut set = chain("Кнопка", Trigger::Set("out_of_stock".into()), vec![]);
    set.when = Some(Condition::Fact {
        field: "budget".into(),
        test: Test::Lt(100_000.0),
    });
    let c = chains(vec![out_of_stock(), set]);
    let now = moscow("2026-03-03 14:00");
    let before = facts(&[(TAGS, "опт"), ("budget", "5000")]);
    let after = facts(&[
        (TAGS, "опт, Нет в наличии"),
        ("budget", "5000"),
        ("out_of_stock", "да"),
    ]);
    let names: Vec<String> = c
        .enrol("7", &before, &after, now)
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(
        names,
        [
            "Нет в наличии:7:tag=нет в наличии",
            "Кнопка:7:out_of_stock=да"
        ]
    );
    // The chain's `when` must hold.
    let mut big = after.clone();
    big.insert("budget".into(), FieldValue::Number(500_000.0));
    assert_eq!(c.enrol("7", &before, &big, now).len(), 1);
    // A won lead, or one the manager stopped, enrols in nothing.
    let mut won = after.clone();
    won.insert(OUTCOME.into(), FieldValue::Text(WON.into()));
    assert!(c.enrol("7", &before, &won, now).is_empty());
    let stopped = facts(&[(TAGS, "Нет в наличии, Стоп робот"), ("out_of_stock", "да")]);
    assert!(c.enrol("7", &before, &stopped, now).is_empty());
}

#[test]
fn a_missed_meeting_enrols_after_the_grace_and_only_that_day() {
    let c = chains(vec![chain(
        "Неявка",
        Trigger::MeetingMissed {
            stage: "5. Встреча назначена".into(),
            grace: Duration::from_secs(30 * 60),
        },
        vec![],
    )]);
    let meeting = moscow("2026-03-03 11:00");
    let lead = facts(&[
        (STAGE, "5. Встреча назначена"),
        (MEETING_AT, &meeting.timestamp().to_string()),
    ]);
    assert!(
        c.enrol("9", &lead, &lead, moscow("2026-03-03 11:20"))
            .is_empty()
    );
    assert_eq!(
        c.check_at(&lead, moscow("2026-03-03 11:20")),
        Some(moscow("2026-03-03 11:30"))
    );
    let got = c.enrol("9", &lead, &lead, moscow("2026-03-03 11:30"));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].meeting_at, Some(meeting));
    assert_eq!(
        got[0].key,
        format!("Неявка:9:meeting={}", meeting.timestamp())
    );
    // A day later the no-show is old news.
    assert!(
        c.enrol("9", &lead, &lead, moscow("2026-03-04 11:30"))
            .is_empty()
    );
    // The visit was marked: the lead left the stage.
    let came = facts(&[
        (STAGE, "6. Встреча проведена"),
        (MEETING_AT, &meeting.timestamp().to_string()),
    ]);
    assert!(
        c.enrol("9", &lead, &came, moscow("2026-03-03 11:30"))
            .is_empty()
    );
    assert_eq!(c.check_at(&came, moscow("2026-03-03 11:20")), None);
}

// Stops.

fn enrolled(c: &Chains, name: &str, lead: &Facts) -> Enrolment {
    Enrolment::new(
        c.chain(name).unwrap(),
        "1",
        "x",
        lead,
        moscow("2026-03-03 14:00"),
    )
}

#[test]
fn a_reply_a_call_a_meeting_a_stage_a_win_or_the_manager_stop_a_chain() {
    let c = chains(vec![chain(
        "ОП-2",
        Trigger::Enters("4. Квалификация пройдена".into()),
        vec![],
    )]);
    let lead = facts(&[(STAGE, "4. Квалификация пройдена")]);
    let e = enrolled(&c, "ОП-2", &lead);
    assert_eq!(c.should_stop(&e, None, &lead), None);
    let replied = EventKind::ClientReplied {
        chat_type: "whatsapp".into(),
        channel_id: "c".into(),
        message_id: "m".into(),
        phone: None,
        text: None,
        written_at: None,
    };
    assert_eq!(
        c.should_stop(&e, Some(&replied), &lead),
        Some(StopReason::ClientReplied)
    );
    let called = EventKind::NoteAdded {
        note_id: "1".into(),
        entity_type: "lead".into(),
        note_type: "10".into(),
    };
    assert_eq!(
        c.should_stop(&e, Some(&called), &lead),
        Some(StopReason::ClientCalled)
    );
    let outgoing = EventKind::NoteAdded {
        note_id: "1".into(),
        entity_type: "lead".into(),
        note_type: "11".into(),
    };
    assert_eq!(c.should_stop(&e, Some(&outgoing), &lead), None);
    let task = EventKind::TaskChanged {
        action: TaskAction::Added,
        element_type: None,
        element_id: None,
        responsible_user_id: None,
        complete_till: None,
    };
    assert_eq!(c.should_stop(&e, Some(&task), &lead), None);

    let booked = facts(&[
        (STAGE, "4. Квалификация пройдена"),
        (MEETING_AT, "1772700000"),
    ]);
    assert_eq!(
        c.should_stop(&e, None, &booked),
        Some(StopReason::MeetingBooked)
    );
    let moved = facts(&[(STAGE, "5. Встреча назначена")]);
    assert_eq!(
        c.should_stop(&e, None, &moved),
        Some(StopReason::StageChanged {
            from: Some("4. Квалификация пройдена".into()),
            to: Some("5. Встреча назначена".into()),
        })
    );
    let won = facts(&[(STAGE, "Успешно реализовано"), (OUTCOME, WON)]);
    assert_eq!(c.should_stop(&e, None, &won), Some(StopReason::Won));
    let lost = facts(&[(STAGE, "4. Квалификация пройдена"), (OUTCOME, LOST)]);
    assert_eq!(c.should_stop(&e, None, &lost), Some(StopReason::Lost));
    let tagged = facts(&[(STAGE, "4. Квалификация пройдена"), (TAGS, "Стоп робот")]);
    assert_eq!(
        c.should_stop(&e, None, &tagged),
        Some(StopReason::ManagerStopped)
    );
    // A stage the engine does not know now says nothing.
    assert_eq!(c.should_stop(&e, None, &Facts::new()), None);
    // A chain gone from the file stops its enrolments.
    let mut gone = e.clone();
    gone.chain = "Старая".into();
    assert_eq!(
        c.should_stop(&gone, None, &lead),
        Some(StopReason::ChainRemoved)
    );
}

#[test]
fn a_chain_stops_only_on_what_it_lists() {
    let mut only_reply = out_of_stock();
    only_reply.stops = vec![
        Stop::Reply,
        Stop::When(Condition::Fact {
            field: STAGE.into(),
            test: Test::Eq(Operand::Text("Счёт выставлен".into())),
        }),
    ];
    let c = chains(vec![only_reply]);
    let lead = facts(&[(STAGE, "Квалификация"), (TAGS, "нет в наличии")]);
    let e = enrolled(&c, "Нет в наличии", &lead);
    let won = facts(&[(OUTCOME, WON), (TAGS, "нет в наличии")]);
    assert_eq!(c.should_stop(&e, None, &won), None);
    let untagged = facts(&[(STAGE, "Квалификация")]);
    assert_eq!(c.should_stop(&e, None, &untagged), None);
    let billed = facts(&[(STAGE, "Счёт выставлен"), (TAGS, "нет в наличии")]);
    assert_eq!(
        c.should_stop(&e, None, &billed),
        Some(StopReason::Condition)
    );
}

#[test]
fn taking_the_button_tag_off_stops_the_out_of_stock_chain() {
    let c = chains(vec![out_of_stock()]);
    let lead = facts(&[(TAGS, "нет в наличии")]);
    let e = enrolled(&c, "Нет в наличии", &lead);
    assert_eq!(
        c.should_stop(&e, None, &facts(&[(TAGS, "опт")])),
        Some(StopReason::TriggerUndone)
    );
}

#[test]
fn a_refusal_chain_is_not_stopped_by_the_loss_that_started_it() {
    let c = chains(vec![chain(
        "Дорого",
        Trigger::Lost("Дорого".into()),
        vec![],
    )]);
    let lost = facts(&[
        (STAGE, "Отказ. Сделка закрыта"),
        (OUTCOME, LOST),
        (LOSS_REASON, "Дорого"),
    ]);
    let e = enrolled(&c, "Дорого", &lost);
    assert_eq!(c.should_stop(&e, None, &lost), None);
    let reopened = facts(&[(STAGE, "Квалификация")]);
    assert!(matches!(
        c.should_stop(&e, None, &reopened),
        Some(StopReason::StageChanged { .. })
    ));
}

// Scheduling.

#[test]
fn steps_wait_their_delay_from_the_step_before_inside_the_window() {
    let c = chains(vec![out_of_stock()]);
    let ch = c.chain("Нет в наличии").unwrap();
    // Pressed at 22:00 on Tuesday: the first letter waits for the morning.
    let mut e = Enrolment::new(ch, "1", "x", &Facts::new(), moscow("2026-03-03 22:00"));
    let now = moscow("2026-03-03 22:00");
    let due = c.next_step(&e, now, Moscow).unwrap();
    assert_eq!(
        due,
        Due {
            index: 0,
            at: moscow("2026-03-04 09:00"),
            late: false
        }
    );
    e.step_done(0, due.at);
    // Three business days after Wednesday 09:00: Monday is a holiday, so Tuesday.
    let due = c.next_step(&e, due.at, Moscow).unwrap();
    assert_eq!((due.index, due.at), (1, moscow("2026-03-10 09:00")));
    e.step_done(1, due.at);
    let due = c.next_step(&e, due.at, Moscow).unwrap();
    assert_eq!((due.index, due.at), (2, moscow("2026-03-13 09:00")));
    e.step_done(2, due.at);
    assert_eq!(c.next_step(&e, due.at, Moscow), None);
    assert!(e.is_finished(ch));
}

#[test]
fn a_step_done_twice_advances_once() {
    let c = chains(vec![out_of_stock()]);
    let ch = c.chain("Нет в наличии").unwrap();
    let mut e = Enrolment::new(ch, "1", "x", &Facts::new(), moscow("2026-03-03 10:00"));
    e.step_done(0, moscow("2026-03-03 10:00"));
    e.step_done(0, moscow("2026-03-03 10:05"));
    assert_eq!(e.next, 1);
    assert_eq!(e.last_step_at, Some(moscow("2026-03-03 10:00")));
}

#[test]
fn a_chain_that_fell_behind_sends_one_step_now_and_keeps_the_distance_after() {
    let c = chains(vec![out_of_stock()]);
    let ch = c.chain("Нет в наличии").unwrap();
    let mut e = Enrolment::new(ch, "1", "x", &Facts::new(), moscow("2026-03-02 10:00"));
    e.step_done(0, moscow("2026-03-02 10:00"));
    // The robot was off for two weeks: steps 1 and 2 were both due long ago.
    let back = moscow("2026-03-16 12:00");
    let due = c.next_step(&e, back, Moscow).unwrap();
    assert_eq!(
        due,
        Due {
            index: 1,
            at: back,
            late: true
        }
    );
    e.step_done(1, back);
    // The last one is not sent in the same breath: three business days from now.
    let due = c.next_step(&e, back, Moscow).unwrap();
    assert_eq!((due.index, due.late), (2, false));
    assert_eq!(due.at, moscow("2026-03-19 12:00"));
    // Back at night: the late step waits for the morning too.
    let night = moscow("2026-03-16 23:00");
    let mut e2 = Enrolment::new(ch, "1", "x", &Facts::new(), moscow("2026-03-02 10:00"));
    e2.step_done(0, moscow("2026-03-02 10:00"));
    let due = c.next_step(&e2, night, Moscow).unwrap();
    assert_eq!((due.at, due.late), (moscow("2026-03-17 09:00"), true));
}

#[test]
fn a_job_that_fires_a_little_late_is_still_on_time() {
    let c = chains(vec![out_of_stock()]);
    let ch = c.chain("Нет в наличии").unwrap();
    let e = Enrolment::new(ch, "1", "x", &Facts::new(), moscow("2026-03-03 10:00"));
    let due = c.next_step(&e, moscow("2026-03-03 10:10"), Moscow).unwrap();
    assert_eq!((due.at, due.late), (moscow("2026-03-03 10:00"), false));
    let due = c.next_step(&e, moscow("2026-03-03 10:20"), Moscow).unwrap();
    assert_eq!((due.at, due.late), (moscow("2026-03-03 10:20"), true));
}

#[test]
fn a_time_of_day_and_the_clients_zone_are_respected() {
    let ch = chain(
        "x",
        Trigger::Tag("x".into()),
        vec![
            step("Звонок", Delay::BusinessDays(1), Some("10:00"), call("a")),
            step("Сразу", hours(0), Some("08:00"), call("b")),
            step("Вечером", Delay::BusinessDays(0), Some("18:00"), call("c")),
        ],
    );
    let c = chains(vec![ch]);
    let ch = c.chain("x").unwrap();
    let nsk = c.calendar.zone_for(Some("Новосибирская область"));
    let enrolled_at = moscow("2026-03-03 14:00"); // 18:00 in Novosibirsk
    let mut e = Enrolment::new(ch, "1", "x", &Facts::new(), enrolled_at);
    let due = c.next_step(&e, enrolled_at, nsk).unwrap();
    // Wednesday 10:00 in Novosibirsk is 06:00 in Moscow.
    assert_eq!(due.at, moscow("2026-03-04 06:00"));
    e.step_done(0, due.at);
    // 08:00 of the same day is already past: right away, inside the window.
    let due = c.next_step(&e, due.at, nsk).unwrap();
    assert_eq!(due.at, moscow("2026-03-04 06:00"));
    e.step_done(1, due.at);
    let due = c.next_step(&e, due.at, nsk).unwrap();
    assert_eq!(due.at, moscow("2026-03-04 14:00"));
}

#[test]
fn a_chain_may_have_its_own_window() {
    let mut ch = out_of_stock();
    ch.window = SendWindow::new(time("11:00"), time("16:00"));
    let c = chains(vec![ch]);
    let e = Enrolment::new(
        c.chain("Нет в наличии").unwrap(),
        "1",
        "x",
        &Facts::new(),
        moscow("2026-03-03 10:00"),
    );
    let due = c.next_step(&e, moscow("2026-03-03 10:00"), Moscow).unwrap();
    assert_eq!(due.at, moscow("2026-03-03 11:00"));
}

// Gates and WhatsApp's 24 hours.

fn decide(c: &Chains, s: &Step, priority: u8, last: Option<&str>) -> StepDecision {
    let now = moscow("2026-03-04 12:00");
    c.decide_step(
        s,
        &Facts::new(),
        Priority::new(priority).ok(),
        last.map(moscow),
        now,
    )
}

#[test]
fn no_robot_writes_to_a_priority_one_client() {
    let c = chains(vec![]);
    let s = step(
        "Шаблон «Игнор»",
        hours(0),
        None,
        message("ignor", Some("Игнор"), Otherwise::Email),
    );
    let d = decide(&c, &s, 1, Some("2026-03-04 11:00"));
    assert_eq!(d.because, Because::Priority(Some(Priority::FIRST)));
    assert_eq!(
        d.action,
        Decided::Task {
            kind: TaskKind::Letter,
            text: "Написать клиенту (WhatsApp): Шаблон «Игнор»".into(),
            within: Duration::from_secs(4 * 3600),
        }
    );
    let mv = step(
        "Закрыть",
        hours(0),
        None,
        Action::Move {
            stage: "Отказ. Сделка закрыта".into(),
            reason: Some("Нет контакта".into()),
        },
    );
    let d = decide(&c, &mv, 1, None);
    assert!(matches!(
        &d.action,
        Decided::Task { text, .. } if text.starts_with("Перевести сделку на этап «Отказ. Сделка закрыта», причина отказа «Нет контакта»")
    ));
    // Calls are the manager's anyway.
    let d = decide(
        &c,
        &step("Звонок", hours(0), None, call("Позвонить")),
        1,
        None,
    );
    assert_eq!(d.because, Because::AsWritten);
    assert!(matches!(
        d.action,
        Decided::Task {
            kind: TaskKind::Call,
            ..
        }
    ));
    // A lead not scored yet is treated as priority 1.
    let d = c.decide_step(&s, &Facts::new(), None, None, moscow("2026-03-04 12:00"));
    assert_eq!(d.because, Because::Priority(None));
    assert!(matches!(d.action, Decided::Task { .. }));
}

#[test]
fn priority_five_gets_messages_and_no_tasks() {
    let c = chains(vec![]);
    let d = decide(
        &c,
        &step("Звонок", hours(0), None, call("Позвонить")),
        5,
        None,
    );
    assert_eq!(
        d,
        StepDecision {
            action: Decided::Skip,
            because: Because::Priority(Some(Priority::FIFTH))
        }
    );
    let letter = step(
        "Письмо",
        hours(0),
        None,
        Action::Message {
            channel: Channel::Email,
            template: "oos".into(),
            approved: None,
            otherwise: Otherwise::Skip,
        },
    );
    let d = decide(&c, &letter, 5, None);
    assert_eq!(
        d.action,
        Decided::Send {
            channel: Channel::Email,
            template: "oos".into()
        }
    );
    let mv = step(
        "Закрыть",
        hours(0),
        None,
        Action::Move {
            stage: "Отказ".into(),
            reason: None,
        },
    );
    assert!(matches!(
        decide(&c, &mv, 5, None).action,
        Decided::Move { .. }
    ));
}

#[test]
fn whatsapp_outside_24_hours_sends_the_approved_template_or_falls_back() {
    let c = chains(vec![]);
    let free = Decided::Send {
        channel: Channel::Wazzup,
        template: "ignor".into(),
    };
    let with_approved = step(
        "Игнор",
        hours(0),
        None,
        message("ignor", Some("Игнор"), Otherwise::Skip),
    );
    // The client wrote an hour ago: free text.
    let d = decide(&c, &with_approved, 3, Some("2026-03-04 11:00"));
    assert_eq!((d.action, d.because), (free.clone(), Because::AsWritten));
    // Two days ago: the approved template.
    let d = decide(&c, &with_approved, 3, Some("2026-03-02 11:00"));
    assert_eq!(
        d.action,
        Decided::SendApproved {
            name: "Игнор".into()
        }
    );
    assert_eq!(
        d.because,
        Because::OutsideWhatsappWindow {
            last_message: Some(moscow("2026-03-02 11:00"))
        }
    );
    // Exactly 24 hours is outside.
    let d = decide(&c, &with_approved, 3, Some("2026-03-03 12:00"));
    assert!(matches!(d.action, Decided::SendApproved { .. }));
    // No approved template: as the file says.
    let email = step(
        "x",
        hours(0),
        None,
        message("ignor", None, Otherwise::Email),
    );
    assert_eq!(
        decide(&c, &email, 3, None).action,
        Decided::Send {
            channel: Channel::Email,
            template: "ignor".into()
        }
    );
    let skip = step("x", hours(0), None, message("ignor", None, Otherwise::Skip));
    assert_eq!(decide(&c, &skip, 3, None).action, Decided::Skip);
    let task = step("x", hours(0), None, message("ignor", None, Otherwise::Task));
    assert!(matches!(
        decide(&c, &task, 3, None).action,
        Decided::Task { .. }
    ));
    // ...but never a task for priority 5.
    assert_eq!(decide(&c, &task, 5, None).action, Decided::Skip);
}

#[test]
fn a_step_whose_condition_fails_is_skipped() {
    let c = chains(vec![]);
    let mut s = step("Звонок", hours(0), None, call("a"));
    s.when = Some(Condition::Fact {
        field: "budget".into(),
        test: Test::Ge(100_000.0),
    });
    let d = decide(&c, &s, 3, None);
    assert_eq!(
        (d.action, d.because),
        (Decided::Skip, Because::StepCondition)
    );
}

#[test]
fn the_seeds_gate_rules_cannot_be_broken() {
    let mut g = Gates::seed();
    let send = Gate {
        messages: Messages::Send,
        tasks: true,
        moves: Moves::Move,
    };
    assert_eq!(g.set(Priority::FIRST, send), Err(GateError::FirstWritten));
    assert_eq!(g.set(Priority::FIFTH, send), Err(GateError::FifthTasked));
    let p4 = Priority::new(4).unwrap();
    let quiet = Gate {
        messages: Messages::Skip,
        tasks: true,
        moves: Moves::Skip,
    };
    assert_eq!(g.set(p4, quiet), Ok(()));
    assert_eq!(g.of(Some(p4)), quiet);
}

// Templates.

fn templates(pairs: &[(&str, &str)]) -> Templates {
    let mut t = Templates::new();
    for (name, text) in pairs {
        t.add(name, (*text).to_owned()).unwrap();
    }
    t
}

#[test]
fn a_letter_renders_with_its_subject_loops_and_money() {
    let t = templates(&[(
        "oos",
        "Тема: {{ lead.name }}\n\nЗдравствуйте, {{ contact.first_name }}!\n\
         {% for p in analogues %}\n- {{ p.brand }} {{ p.name }}: {{ p.price | money }} ₽\n{% endfor %}\n\
         {% if purchases %}Вы брали у нас {{ purchases[0].name }}.{% endif %}\n\n{{ manager.name }}\n",
    )]);
    let r = t.render("oos", &TemplateContext::sample()).unwrap();
    assert_eq!(r.subject.as_deref(), Some("Сварочные аппараты для цеха"));
    assert_eq!(
        r.body,
        "Здравствуйте, Иван Сергеевич!\n- Fubag Инвертор 250 А: 45 500 ₽\n\
         Вы брали у нас Электроды 3 мм, 20 пачек.\nАнна Соколова"
    );
    // (A block tag eats the line break after it, as in Jinja with trim_blocks: the blank
    // line after `{% endif %}` above is the one break that stays.)
    let plain = templates(&[("wa", "Добрый день!")]);
    let r = plain.render("wa", &TemplateContext::default()).unwrap();
    assert_eq!((r.subject, r.body.as_str()), (None, "Добрый день!"));
    assert!(matches!(
        plain.render("none", &TemplateContext::default()),
        Err(TemplateError::Missing(_))
    ));
}

#[test]
fn an_unknown_placeholder_is_an_error_never_a_hole() {
    let t = templates(&[
        ("typo", "Здравствуйте!\n{{ contact.frist_name }}"),
        ("loop", "{% for p in products %}{{ p.colour }}{% endfor %}"),
        ("filter", "{{ lead.budget | roubles }}"),
    ]);
    let unknown = t.unknown_placeholders("typo").unwrap();
    assert_eq!(
        unknown,
        [UnknownPlaceholder {
            path: "contact.frist_name".into(),
            line: Some(2)
        }]
    );
    assert!(matches!(
        t.render("typo", &TemplateContext::sample()),
        Err(TemplateError::Render { line: Some(2), .. })
    ));
    // Inside a loop only rendering tells.
    assert!(t.unknown_placeholders("loop").unwrap().is_empty());
    assert!(t.render("loop", &TemplateContext::sample()).is_err());
    assert!(t.render("filter", &TemplateContext::sample()).is_err());
    let bad = Templates::new().add("x", "{% if %}".into());
    assert!(matches!(bad, Err(TemplateError::Syntax { .. })));
}

#[test]
fn the_known_placeholders_follow_the_context_and_custom_fields_are_open() {
    let known = TemplateContext::known_paths();
    for p in [
        "lead.name",
        "contact.first_name",
        "manager.phone",
        "purchases",
        "analogues",
    ] {
        assert!(known.iter().any(|k| k == p), "{p}");
    }
    let t = templates(&[(
        "f",
        "{{ lead.fields.category }} {{ company.fields.inn }} {{ range(3) | length }}",
    )]);
    assert!(t.unknown_placeholders("f").unwrap().is_empty());
    assert!(
        t.placeholders("f")
            .unwrap()
            .contains("lead.fields.category")
    );
}
