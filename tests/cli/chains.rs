//! `chains preview` on the shipped chains against the amoCRM emulator: every step of ОП-2
//! with its day and its text, nothing written; `chains list` and `chains stop` on the store.

use serde_json::json;

use crate::process::{Backend, Robot};
use crate::support::amocrm::{
    AmoEmulator, FIELD_PRIORITY, NewContact, NewLead, STATUS_LOST, USER_IVAN,
};

const NO_MEETING: &str = "ОП-2. Квалификация пройдена, встреча не назначена";

fn robot_on(amo: &AmoEmulator) -> Robot {
    let mut robot = Robot::new(Backend::Sqlite);
    robot.env.extend([
        (
            "ROBOT_AMOCRM_BASE_URL".to_owned(),
            amo.base_url().to_owned(),
        ),
        ("ROBOT_AMOCRM_TOKEN".to_owned(), amo.long_lived_token()),
    ]);
    robot
}

async fn run(robot: Robot, args: Vec<String>) -> (Robot, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = robot.run(&args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (robot, stdout)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_shows_every_step_with_its_day_and_text_and_sends_nothing() {
    let amo = AmoEmulator::start().await;
    amo.rename_status(STATUS_LOST, "Отказ. Сделка закрыта");
    let contact = amo.seed_contact(
        NewContact::new("Андрей Ковалёв")
            .phone("+7 916 123-45-67")
            .email("kovalev@example.ru"),
    );
    let lead = amo.seed_lead(
        NewLead::new("Компрессор для цеха")
            .responsible(USER_IVAN)
            .field(FIELD_PRIORITY, json!(3))
            .contact(contact),
    );
    let robot = robot_on(&amo);
    let args = [
        "chains",
        "preview",
        NO_MEETING,
        "--lead",
        &lead.to_string(),
        "--at",
        "2026-03-03T14:00:00+03:00",
    ]
    .map(String::from)
    .to_vec();
    let (_robot, stdout) = run(robot, args).await;
    assert!(
        stdout.contains("«Компрессор для цеха», priority 3"),
        "{stdout}"
    );
    let steps: Vec<&str> = stdout
        .lines()
        .filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(
        steps,
        [
            "1. Tue 2026-03-03 14:30  Шаблон после квалификации — письмо «op2_no_meeting» → kovalev@example.ru",
            "2. Wed 2026-03-04 10:00  Звонок: повторно назначить встречу — задача менеджеру",
            "3. Wed 2026-03-04 13:00  Шаблон «Аудио Михаила Николаевича» — WhatsApp, одобренный шаблон «Аудио Михаила Николаевича» → 79161234567",
            "4. Thu 2026-03-05 10:00  Шаблон «Игнор» — WhatsApp, одобренный шаблон «Игнор» → 79161234567",
            "5. Thu 2026-03-05 11:00  Звонок после шаблона «Игнор» — задача менеджеру",
            "6. Tue 2026-03-10 10:00  Шаблон «Полный игнор» — WhatsApp, одобренный шаблон «Полный игнор» → 79161234567",
            "7. Tue 2026-03-10 11:00  Последний звонок — задача менеджеру",
            "8. Tue 2026-03-10 18:00  Закрыть: нет контакта — перевод на этап «Отказ. Сделка закрыта», причина «Нет контакта»",
        ],
        "{stdout}"
    );
    // The letter's text, rendered for this lead.
    assert!(
        stdout.contains("   Тема: Шаблон после квалификации"),
        "{stdout}"
    );
    assert!(stdout.contains("   | Это Иван Петров."), "{stdout}");
    assert!(
        stdout.contains("   because: the client never wrote in WhatsApp"),
        "{stdout}"
    );
    let writes = amo.requests().iter().filter(|r| r.method != "GET").count();
    assert_eq!(writes, 0, "a preview writes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_stop_show_and_end_a_leads_chains() {
    use chrono::{TimeZone, Utc};
    use sales_robot::domain::chains::Enrolment;

    let amo = AmoEmulator::start().await;
    let robot = robot_on(&amo);
    let store = robot.store().await;
    let enrolled_at = Utc.with_ymd_and_hms(2026, 3, 3, 11, 0, 0).unwrap();
    let e = Enrolment {
        key: format!("{NO_MEETING}:77:stage=4. Квалификация пройдена"),
        chain: NO_MEETING.into(),
        lead_id: "77".into(),
        enrolled_at,
        stage: Some("4. Квалификация пройдена".into()),
        meeting_at: None,
        lost: false,
        next: 0,
        last_step_at: None,
    };
    store.add_enrolment(&e).await.unwrap();
    store
        .save_progress(&e, Some(enrolled_at + chrono::TimeDelta::minutes(30)))
        .await
        .unwrap();
    let list = |lead: &str| {
        ["chains", "list", "--lead", lead]
            .map(String::from)
            .to_vec()
    };
    let (robot, stdout) = run(robot, list("77")).await;
    assert_eq!(
        stdout.trim(),
        format!("lead 77  «{NO_MEETING}»  step 1 of 8 due 2026-03-03 11:30 UTC")
    );
    let stop = ["chains", "stop", "--lead", "77"]
        .map(String::from)
        .to_vec();
    let (robot, stdout) = run(robot, stop.clone()).await;
    assert!(stdout.starts_with("stopped ОП-2"), "{stdout}");
    let (robot, stdout) = run(robot, stop).await;
    assert_eq!(stdout.trim(), "lead 77 has no running chain");
    let (_robot, stdout) = run(robot, list("77")).await;
    assert!(
        stdout.contains("stopped") && stdout.contains("stopped by hand (`chains stop`)"),
        "{stdout}"
    );
    assert!(!store.enrolment(&e.key).await.unwrap().unwrap().is_running());
}
