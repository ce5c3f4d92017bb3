//! The shipped `chains.toml` day by day with a controlled clock, and the mistakes
//! `check-config` places.

use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Europe::Moscow;

use super::*;
use crate::domain::chains::facts::{LOSS_REASON, LOST, MEETING_AT, OUTCOME, STAGE};
use crate::domain::chains::{Decided, Enrolment, TemplateContext};
use crate::domain::condition::Facts;
use crate::domain::lead::FieldValue;
use crate::domain::task::TaskKind;

fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

fn refusals() -> Vec<String> {
    super::super::scoring::load(&shipped_dir(), None)
        .unwrap()
        .unwrap()
        .priority
        .refusals
        .into_iter()
        .map(|r| r.name)
        .collect()
}

fn lead_fields() -> Vec<String> {
    ["site", "channel", "category", "brand", "score", "priority"]
        .map(String::from)
        .to_vec()
}

fn shipped() -> ChainRules {
    let refusals = refusals();
    let fields = lead_fields();
    let known = Known {
        lead_fields: Some(&fields),
        refusals: Some(&refusals),
        zone: Some(Moscow),
    };
    let (rules, problems) = check(&shipped_dir(), known);
    assert!(problems.is_empty(), "{problems:#?}");
    rules.unwrap()
}

fn moscow(s: &str) -> DateTime<Utc> {
    let local = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
    Moscow
        .from_local_datetime(&local)
        .unwrap()
        .with_timezone(&Utc)
}

fn text(pairs: &[(&str, &str)]) -> Facts {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), FieldValue::Text((*v).to_owned())))
        .collect()
}

/// Runs an enrolment as an engine would, one step per run, each at its due moment, with
/// no answer from the client: the moments (Moscow time) and what each step became.
fn run(
    rules: &ChainRules,
    mut enrolment: Enrolment,
    facts: &Facts,
    priority: u8,
    last_client_message: Option<DateTime<Utc>>,
) -> Vec<(String, String)> {
    let chains = &rules.chains;
    let chain = chains.chain(&enrolment.chain).unwrap().clone();
    let mut now = enrolment.enrolled_at;
    let mut out = Vec::new();
    while let Some(due) = chains.next_step(&enrolment, now, Moscow) {
        assert!(!due.late);
        now = due.at;
        assert_eq!(chains.should_stop(&enrolment, None, facts), None);
        let step = &chain.steps[due.index];
        let decision = chains.decide_step(
            step,
            facts,
            Priority::new(priority).ok(),
            last_client_message,
            now,
        );
        let what = match decision.action {
            Decided::Send { channel, template } => format!("{channel} {template}"),
            Decided::SendApproved { name } => format!("wazzup approved «{name}»"),
            Decided::Task {
                kind: TaskKind::Call,
                ..
            } => "call task".into(),
            Decided::Task { text, .. } => format!("task: {text}"),
            Decided::Note { text } => format!("note: {text}"),
            Decided::Move { stage, reason } => {
                format!("move to «{stage}», reason «{}»", reason.unwrap_or_default())
            }
            Decided::Skip => format!("skip ({})", decision.because),
        };
        let local = now
            .with_timezone(&Moscow)
            .format("%a %d.%m %H:%M")
            .to_string();
        out.push((local, what));
        enrolment.step_done(due.index, now);
    }
    out
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

const NO_MEETING: &str = "ОП-2. Квалификация пройдена, встреча не назначена";
const NO_SHOW: &str = "ОП-2. Клиент не пришел на встречу";

fn qualified_without_meeting(rules: &ChainRules, at: DateTime<Utc>) -> (Enrolment, Facts) {
    let before = text(&[(STAGE, "3. Квалификация")]);
    let after = text(&[(STAGE, "4. Квалификация пройдена")]);
    let mut got = rules.chains.enrol("31234567", &before, &after, at);
    assert_eq!(got.len(), 1, "{got:?}");
    let e = got.remove(0);
    assert_eq!(e.chain, NO_MEETING);
    (e, after)
}

#[test]
fn op2_qualified_lead_without_a_meeting_day_by_day() {
    let rules = shipped();
    // Qualified on Tuesday 3 March 2026 at 14:00; the client never wrote in WhatsApp, so
    // every WhatsApp step is outside the 24 hours. Monday 9 March is a holiday.
    let (e, facts) = qualified_without_meeting(&rules, moscow("2026-03-03 14:00"));
    assert_eq!(
        run(&rules, e, &facts, 3, None),
        pairs(&[
            // Day 0: the template the seed has yet to write; no approved one, so e-mail.
            ("Tue 03.03 14:30", "email op2_no_meeting"),
            // Day 1: a call, then "Аудио Михаила Николаевича".
            ("Wed 04.03 10:00", "call task"),
            (
                "Wed 04.03 13:00",
                "wazzup approved «Аудио Михаила Николаевича»"
            ),
            // Day 2: "Игнор" and one more call.
            ("Thu 05.03 10:00", "wazzup approved «Игнор»"),
            ("Thu 05.03 11:00", "call task"),
            // Two business days later (past the holiday): "Полный игнор", the last call,
            // then the lead is closed with "Нет контакта".
            ("Tue 10.03 10:00", "wazzup approved «Полный игнор»"),
            ("Tue 10.03 11:00", "call task"),
            (
                "Tue 10.03 18:00",
                "move to «Отказ. Сделка закрыта», reason «Нет контакта»"
            ),
        ])
    );
}

#[test]
fn op2_while_the_client_writes_in_whatsapp_the_texts_go_as_written() {
    let rules = shipped();
    let (e, facts) = qualified_without_meeting(&rules, moscow("2026-03-03 14:00"));
    // The client wrote at 14:10 on day 0: free text until 14:10 on day 1, the approved
    // templates after.
    let got = run(&rules, e, &facts, 3, Some(moscow("2026-03-03 14:10")));
    assert_eq!(got[0].1, "wazzup op2_no_meeting");
    assert_eq!(
        got[2],
        ("Wed 04.03 13:00".into(), "wazzup op2_audio".into())
    );
    assert_eq!(got[3].1, "wazzup approved «Игнор»");
}

#[test]
fn op2_for_a_priority_one_lead_the_robot_writes_nothing_and_closes_nothing() {
    let rules = shipped();
    let (e, facts) = qualified_without_meeting(&rules, moscow("2026-03-03 14:00"));
    let got = run(&rules, e, &facts, 1, None);
    assert_eq!(got.len(), 8);
    assert!(
        got.iter()
            .all(|(_, what)| what == "call task" || what.starts_with("task: ")),
        "{got:#?}"
    );
    assert_eq!(
        got[3].1,
        "task: Написать клиенту (WhatsApp): Шаблон «Игнор»"
    );
    assert!(got[7].1.starts_with(
        "task: Перевести сделку на этап «Отказ. Сделка закрыта», причина отказа «Нет контакта»"
    ));
}

#[test]
fn op2_for_a_priority_five_lead_there_are_no_call_tasks() {
    let rules = shipped();
    let (e, facts) = qualified_without_meeting(&rules, moscow("2026-03-03 14:00"));
    let got = run(&rules, e, &facts, 5, None);
    let skipped: Vec<&str> = got
        .iter()
        .filter(|(_, w)| w.starts_with("skip"))
        .map(|(t, _)| t.as_str())
        .collect();
    assert_eq!(
        skipped,
        ["Wed 04.03 10:00", "Thu 05.03 11:00", "Tue 10.03 11:00"]
    );
    assert!(got.last().unwrap().1.starts_with("move to"));
}

#[test]
fn op2_no_show_day_by_day() {
    let rules = shipped();
    let meeting = moscow("2026-03-16 11:00");
    let facts = {
        let mut f = text(&[(STAGE, "5. Встреча назначена")]);
        f.insert(
            MEETING_AT.into(),
            FieldValue::Number(meeting.timestamp() as f64),
        );
        f
    };
    assert_eq!(
        rules.chains.check_at(&facts, moscow("2026-03-16 09:00")),
        Some(moscow("2026-03-16 11:30"))
    );
    let got = rules
        .chains
        .enrol("31234567", &facts, &facts, moscow("2026-03-16 11:30"));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].chain, NO_SHOW);
    assert_eq!(
        run(&rules, got[0].clone(), &facts, 3, None),
        pairs(&[
            // The same day: two calls, then "Аудио Михаила Николаевича".
            ("Mon 16.03 11:30", "call task"),
            ("Mon 16.03 13:30", "call task"),
            (
                "Mon 16.03 14:30",
                "wazzup approved «Аудио Михаила Николаевича»"
            ),
            // The next day: "Игнор" and a call.
            ("Tue 17.03 10:00", "wazzup approved «Игнор»"),
            ("Tue 17.03 11:00", "call task"),
            // Two days later: "Полный игнор", the last call, "Отказ" with "Нет контакта".
            ("Thu 19.03 10:00", "wazzup approved «Полный игнор»"),
            ("Thu 19.03 11:00", "call task"),
            (
                "Thu 19.03 18:00",
                "move to «Отказ. Сделка закрыта», reason «Нет контакта»"
            ),
        ])
    );
    // Rebooking the meeting stops it.
    let mut rebooked = facts.clone();
    rebooked.insert(
        MEETING_AT.into(),
        FieldValue::Number(moscow("2026-03-17 15:00").timestamp() as f64),
    );
    assert_eq!(
        rules.chains.should_stop(&got[0], None, &rebooked),
        Some(crate::domain::chains::StopReason::MeetingBooked)
    );
}

#[test]
fn out_of_stock_a_letter_now_another_in_three_days_an_analogue_in_three_more() {
    let rules = shipped();
    let before = text(&[(STAGE, "3. Квалификация")]);
    let mut after = before.clone();
    after.insert(
        "tags".into(),
        FieldValue::Many(vec!["Нет в наличии".into()]),
    );
    let got = rules
        .chains
        .enrol("7", &before, &after, moscow("2026-03-05 16:00"));
    assert_eq!(got.len(), 1);
    assert_eq!(
        run(&rules, got[0].clone(), &after, 4, None),
        pairs(&[
            ("Thu 05.03 16:00", "email oos_1"),
            // Friday, (the weekend and the Monday holiday), Tuesday, Wednesday.
            ("Wed 11.03 16:00", "email oos_2"),
            ("Mon 16.03 16:00", "email oos_3_analogue"),
        ])
    );
}

#[test]
fn every_refusal_reason_the_config_knows_has_its_chain() {
    let rules = shipped();
    let mut reasons = refusals();
    reasons.push("Нет контакта".into());
    let open = text(&[(STAGE, "3. Квалификация")]);
    for reason in &reasons {
        let lost = text(&[
            (STAGE, "Отказ. Сделка закрыта"),
            (OUTCOME, LOST),
            (LOSS_REASON, reason),
        ]);
        let got = rules
            .chains
            .enrol("1", &open, &lost, moscow("2026-03-03 12:00"));
        assert_eq!(got.len(), 1, "{reason}: {got:?}");
        let run = run(&rules, got[0].clone(), &lost, 4, None);
        assert!(!run.is_empty(), "{reason}");
    }
}

#[test]
fn refusal_chains_write_a_letter_or_only_a_note() {
    let rules = shipped();
    let open = text(&[(STAGE, "3. Квалификация")]);
    let lost = |reason: &str| {
        text(&[
            (STAGE, "Отказ. Сделка закрыта"),
            (OUTCOME, LOST),
            (LOSS_REASON, reason),
        ])
    };
    let at = moscow("2026-03-03 12:00");
    let repair = lost("Ремонт и сервис чужой техники");
    let e = rules.chains.enrol("1", &open, &repair, at).remove(0);
    assert_eq!(
        run(&rules, e, &repair, 4, None),
        pairs(&[
            ("Tue 03.03 13:00", "email refusal_repair"),
            ("Wed 18.03 11:00", "email refusal_repair_offer"),
        ])
    );
    let spam = lost("Спам");
    let e = rules.chains.enrol("1", &open, &spam, at).remove(0);
    assert_eq!(
        run(&rules, e, &spam, 5, None),
        pairs(&[(
            "Tue 03.03 12:00",
            "note: Спам: клиенту ничего не отправляем."
        )])
    );
    let none = lost("Нет контакта");
    let e = rules.chains.enrol("1", &open, &none, at).remove(0);
    assert_eq!(
        run(&rules, e, &none, 4, None),
        pairs(&[("Wed 04.03 11:00", "email refusal_no_contact")])
    );
}

#[test]
fn every_shipped_template_renders_full_and_empty() {
    let rules = shipped();
    let names: Vec<String> = rules.templates.names().map(str::to_owned).collect();
    assert_eq!(names.len(), 15);
    for name in &names {
        let full = rules
            .templates
            .render(name, &TemplateContext::sample())
            .unwrap();
        let empty = rules
            .templates
            .render(name, &TemplateContext::default())
            .unwrap();
        for r in [&full, &empty] {
            assert!(!r.body.contains("\n\n\n"), "{name}: {}", r.body);
            let greeting = r.body.lines().next().unwrap();
            assert!(greeting.ends_with('!'), "{name}: {greeting}");
            assert!(
                r.body.contains("!\n\n"),
                "{name}: a blank line after the greeting"
            );
            assert!(!r.body.contains("{{"), "{name}");
        }
        assert_eq!(
            full.subject.is_some(),
            !name.starts_with("op2_"),
            "{name}: letters have subjects, WhatsApp texts do not"
        );
    }
    let letter = rules
        .templates
        .render("oos_3_analogue", &TemplateContext::sample())
        .unwrap();
    assert_eq!(letter.subject.as_deref(), Some("Аналог: Инвертор 250 А"));
    assert!(
        letter.body.contains("— Fubag Инвертор 250 А, 45 500 ₽"),
        "{}",
        letter.body
    );
}

// Mistakes.

fn check_in(toml: &str, templates: &[(&str, &str)]) -> Vec<Problem> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FILE_NAME), toml).unwrap();
    let folder = dir.path().join(TEMPLATES_DIR);
    std::fs::create_dir(&folder).unwrap();
    for (name, body) in templates {
        std::fs::write(folder.join(name), body).unwrap();
    }
    let refusals = vec!["Спам".to_owned()];
    let known = Known {
        lead_fields: Some(&[]),
        refusals: Some(&refusals),
        zone: None,
    };
    let (rules, problems) = check(dir.path(), known);
    assert_eq!(rules.is_some(), problems.is_empty());
    problems
}

const ACCOUNT: &str =
    "[account]\nstages = [\"Квалификация\", \"Отказ\"]\nloss_reasons = [\"Нет контакта\"]\n";

fn one(problems: &[Problem]) -> &Problem {
    assert_eq!(problems.len(), 1, "{problems:#?}");
    &problems[0]
}

#[test]
fn a_good_small_file_passes() {
    let toml = format!(
        "{ACCOUNT}[[chains]]\nname = \"a\"\ntrigger = {{ lost = \"спам\" }}\n\
         [[chains.steps]]\nafter = \"1h\"\nemail = \"letter\"\n"
    );
    let p = check_in(
        &toml,
        &[("letter.txt", "Тема: Привет\n\n{{ manager.name }}")],
    );
    assert!(p.is_empty(), "{p:#?}");
}

#[test]
fn a_missing_template_is_placed_with_the_near_name() {
    let toml = format!(
        "{ACCOUNT}[[chains]]\nname = \"a\"\ntrigger = {{ tag = \"x\" }}\n\
         [[chains.steps]]\nafter = \"1h\"\nwazzup = \"ignor\"\n"
    );
    let p = check_in(&toml, &[("ignore.txt", "Добрый день")]);
    let p = one(&p);
    assert_eq!(p.line, Some(9));
    assert!(
        p.message
            .contains("no template `ignor`: expected templates/ignor.txt or templates/ignor.j2"),
        "{}",
        p.message
    );
    assert_eq!(p.hint.as_deref(), Some("did you mean `ignore`?"));
}

#[test]
fn an_unknown_placeholder_is_placed_in_the_template() {
    let toml = format!(
        "{ACCOUNT}[[chains]]\nname = \"a\"\ntrigger = {{ tag = \"x\" }}\n\
         [[chains.steps]]\nafter = \"1h\"\nemail = \"letter\"\n"
    );
    let p = check_in(
        &toml,
        &[(
            "letter.j2",
            "Тема: x\n\nДобрый день,\n{{ contact.frist_name }}!",
        )],
    );
    let p = one(&p);
    assert!(
        p.file.ends_with("templates/letter.j2"),
        "{}",
        p.file.display()
    );
    assert_eq!(p.line, Some(4));
    assert_eq!(p.message, "unknown placeholder `{{ contact.frist_name }}`");
    assert_eq!(
        p.hint.as_deref(),
        Some("did you mean `contact.first_name`?")
    );
}

#[test]
fn a_letter_without_a_subject_or_with_a_bad_filter_is_refused() {
    let toml = format!(
        "{ACCOUNT}[[chains]]\nname = \"a\"\ntrigger = {{ tag = \"x\" }}\n\
         [[chains.steps]]\nafter = \"1h\"\nemail = \"letter\"\n\
         [[chains.steps]]\nafter = \"1h\"\nemail = \"other\"\n"
    );
    let p = check_in(
        &toml,
        &[
            ("letter.txt", "Добрый день"),
            ("other.txt", "Тема: x\n\n{{ lead.budget | roubles }}"),
        ],
    );
    assert_eq!(p.len(), 2, "{p:#?}");
    assert!(p[0].message.contains("starts with its subject"));
    assert!(p[1].file.ends_with("templates/other.txt"));
    assert_eq!(p[1].line, Some(3));
    assert!(p[1].message.contains("roubles"), "{}", p[1].message);
}

#[test]
fn a_stage_or_reason_the_account_does_not_have_is_refused() {
    let toml = format!(
        "{ACCOUNT}[[chains]]\nname = \"a\"\ntrigger = {{ enters = \"Квалификацыя\" }}\n\
         [[chains.steps]]\nafter = \"1h\"\nmove = \"Отказ\"\nreason = \"Дорого\"\n"
    );
    let p = check_in(&toml, &[]);
    assert_eq!(p.len(), 2, "{p:#?}");
    assert_eq!(p[0].line, Some(6));
    assert_eq!(p[0].message, "the account has no stage `Квалификацыя`");
    assert_eq!(p[0].hint.as_deref(), Some("did you mean `Квалификация`?"));
    assert_eq!(p[1].line, Some(10));
    assert_eq!(p[1].message, "the account has no refusal reason `Дорого`");
    assert!(p[1].hint.as_deref().unwrap().contains("scoring.toml"));
}

#[test]
fn without_the_accounts_lists_names_are_not_checked() {
    let toml = "[[chains]]\nname = \"a\"\ntrigger = { enters = \"Любой\" }\n\
         [[chains.steps]]\nafter = \"1h\"\nmove = \"Другой\"\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FILE_NAME), toml).unwrap();
    let (rules, p) = check(dir.path(), Known::default());
    assert!(p.is_empty(), "{p:#?}");
    assert_eq!(rules.unwrap().chains.chains.len(), 1);
}

#[test]
fn the_seeds_priority_rules_cannot_be_written_away() {
    let toml = "[priority]\n1 = { messages = \"send\", tasks = true, moves = \"move\" }\n\
                5 = { messages = \"send\", tasks = true, moves = \"move\" }\n\
                3 = { messages = \"shout\", tasks = true, moves = \"move\" }\n";
    let p = check_in(toml, &[]);
    assert_eq!(p.len(), 3, "{p:#?}");
    assert_eq!(p[0].line, Some(2));
    assert!(
        p[0].message
            .contains("no robot writes to a priority-1 client")
    );
    assert_eq!(p[1].line, Some(3));
    assert!(p[1].message.contains("priority 5 gets messages only"));
    assert!(p[2].message.contains("not \"shout\""));
}

#[test]
fn steps_triggers_and_stops_are_checked() {
    let toml = format!(
        "{ACCOUNT}[[chains]]\nname = \"a\"\ntrigger = {{ tag = \"x\", lost = \"Спам\" }}\n\
         stop = [\"reply\", \"wn\"]\n\
         [[chains.steps]]\nafter = \"1h\"\ncall = \"a\"\nnote = \"b\"\n\
         [[chains.steps]]\nafter = \"1h\"\nnote = \"b\"\nreason = \"Спам\"\n\
         [[chains.steps]]\nafter = \"1bd\"\nat = \"25:00\"\ncall = \"c\"\n\
         [[chains]]\nname = \"a\"\ntrigger = {{ tag = \"x\" }}\n"
    );
    let p = check_in(&toml, &[]);
    let messages: Vec<(Option<usize>, &str)> =
        p.iter().map(|p| (p.line, p.message.as_str())).collect();
    assert_eq!(messages.len(), 6, "{messages:#?}");
    assert!(messages[0].1.contains("exactly one of `enters`"));
    assert!(messages[1].1.contains("`wn` is not a stop condition"));
    assert_eq!(p[1].hint.as_deref(), Some("did you mean `won`?"));
    assert!(messages[2].1.contains("a step does one thing"));
    assert!(messages[3].1.contains("`reason` goes with `move` only"));
    assert!(messages[4].1.contains("`at` is a time of day"));
    assert!(messages[5].1.contains("chain `a` is declared twice"));
}

#[test]
fn the_calendar_and_limits_are_checked() {
    let toml = "[calendar]\ntime_zone = \"Europe/Moskow\"\ndays = \"пн-пя\"\n\
                window = \"19:00-09:00\"\nholidays = [\"2026-13-01\"]\n\
                [limits]\nper_minute = { wazup = 5 }\n";
    let p = check_in(toml, &[]);
    assert_eq!(p.len(), 5, "{p:#?}");
    assert_eq!(p[0].hint.as_deref(), Some("did you mean `Europe/Moscow`?"));
    assert!(p[1].message.contains("`пя`"));
    assert!(p[2].message.contains("not a send window"));
    assert!(p[3].message.contains("not a date"));
    assert_eq!(p[4].hint.as_deref(), Some("did you mean `wazzup`?"));
}

#[test]
fn the_lease_is_wall_clock_time() {
    let p = check_in("[limits]\nlease = \"1bd\"\n", &[]);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(p[0].message.contains("`lease` in [limits]"), "{p:#?}");
    assert_eq!(p[0].line, Some(2));
}

#[test]
fn a_misspelt_key_is_placed_with_the_near_one() {
    let toml = "[[chains]]\nname = \"a\"\ntriger = { tag = \"x\" }\n";
    let p = check_in(toml, &[]);
    let p = one(&p);
    assert_eq!(p.line, Some(3));
    assert_eq!(p.hint.as_deref(), Some("did you mean `trigger`?"));
}

#[test]
fn a_condition_reads_only_known_facts() {
    let toml = "[[chains]]\nname = \"a\"\ntrigger = { tag = \"x\" }\n\
                when = { field = \"prioritty\", ge = 2 }\n\
                [[chains.steps]]\nafter = \"1h\"\nnote = \"b\"\n";
    let p = check_in(toml, &[]);
    let p = one(&p);
    assert_eq!(p.line, Some(4));
    assert_eq!(p.hint.as_deref(), Some("did you mean `priority`?"));
}

#[test]
fn the_shipped_analogues_are_read() {
    let rules = shipped();
    let table = &rules.chains.analogues;
    assert_eq!(table.len(), 3);
    assert_eq!(table[0].product, "САИ-250");
    assert_eq!(table[0].brand.as_deref(), Some("Ресанта"));
    assert_eq!(table[0].offer[0].name, "ТИГ-200 Inverter");
    assert_eq!(table[0].offer[0].price, Some(45_500.0));
}

#[test]
fn an_analogue_row_without_a_product_or_an_offer_is_refused_at_its_line() {
    let toml = format!(
        "{ACCOUNT}[[analogues]]\nproduct = \" \"\noffer = [{{ name = \"a\" }}]\n\n\
         [[analogues]]\nproduct = \"САИ\"\noffer = []\n\n\
         [[analogues]]\nproduct = \"MIG\"\noffer = [{{ name = \"b\", price = -5 }}]\n"
    );
    let p = check_in(&toml, &[]);
    let lines: Vec<(Option<usize>, &str)> =
        p.iter().map(|p| (p.line, p.message.as_str())).collect();
    assert_eq!(p.len(), 3, "{lines:#?}");
    assert!(
        p[0].message.contains("`product` of [[analogues]] is empty"),
        "{lines:#?}"
    );
    assert_eq!(p[0].line, Some(5));
    assert!(p[1].message.contains("offers nothing"), "{lines:#?}");
    assert!(
        p[2].message.contains("`price` is a sum in roubles"),
        "{lines:#?}"
    );
    assert_eq!(p[2].line, Some(14));

    let toml = format!(
        "{ACCOUNT}[[analogues]]\nproduct = \"TIG\"\noffer = [{{ name = \"c\", cost = 5 }}]\n"
    );
    let p = check_in(&toml, &[]);
    let p = one(&p);
    assert_eq!(p.line, Some(6));
    assert!(p.message.contains("cost"), "{}", p.message);
}
