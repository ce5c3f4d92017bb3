//! The chains' engine end to end on the Bitrix24 emulator, with the Wazzup and SMTP
//! emulators, the shipped `chains.toml` and a clock the test moves: a deal the robot has
//! seen is moved to «4. Квалификация пройдена», its event comes, and each step is run at
//! the moment the engine planned it, as its job would. Calls become to-dos
//! (`crm.activity.todo.add`), and the close is the failed stage with the deal's list field
//! of loss reasons set to «Нет контакта».

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sales_robot::adapters::bitrix24::api::{Access, Bitrix24, FieldMapping, RATE};
use sales_robot::adapters::crm::Crm;
use sales_robot::adapters::crm::fields::FieldRef;
use sales_robot::adapters::crm::http::Retries;
use sales_robot::adapters::store::{StepState, Store};
use sales_robot::config::TodoVia;
use sales_robot::domain::chains::Action;
use sales_robot::domain::event::Source;
use sales_robot::domain::task::{EntityRef, NewTask, TaskKind};
use sales_robot::service::chains::step::step_key;
use sales_robot::service::chains::{CHECK_LEAD, ChainEngine, CheckLead, Checked, StepRun};
use sales_robot::service::robot::Robot;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::chains::{
    Days, NO_MEETING, PHONE, claimed_by_a_dead_worker, day_by_day, days, moscow, outside,
    reply_on_thursday, run_due, said_since, shipped,
};
use crate::helpers::{B24_TOKEN, Backend, SECRET, TestApp, fresh_store, spawn_app_with};
use crate::support::bitrix24::B24Emulator;
use crate::support::smtp::SmtpServer;
use crate::support::wazzup::WazzupEmulator;

/// The stages the portal's administrator added for ОП-2.
const QUALIFIED: &str = "UC_QUALIFIED";
const MEETING_SET: &str = "UC_MEETING";
/// «Иван Петров».
const IVAN: &str = "2";
/// The item «Нет контакта» of the deals' list field `UF_CRM_LOSS_REASON`.
const NO_CONTACT: &str = "66";

/// The emulators, the robot on them, and the clock the engine reads.
struct World {
    b24: B24Emulator,
    wazzup: WazzupEmulator,
    smtp: SmtpServer,
    app: TestApp,
    engine: Arc<ChainEngine>,
    clock: Arc<Mutex<DateTime<Utc>>>,
    deal: i64,
    crm: Arc<dyn Crm>,
    events: Mutex<i64>,
}

impl World {
    async fn new(backend: Backend) -> World {
        let b24 = B24Emulator::start().await;
        b24.add_stage("DEAL_STAGE", QUALIFIED, "4. Квалификация пройдена", "WON");
        b24.add_stage("DEAL_STAGE", MEETING_SET, "5. Встреча назначена", "WON");
        b24.rename_stage("DEAL_STAGE", "LOSE", "Отказ. Сделка закрыта");
        let contact = b24.seed_contact(json!({
            "NAME": "Андрей", "LAST_NAME": "Ковалёв",
            "PHONE": [{"VALUE": "+7 916 123-45-67", "VALUE_TYPE": "WORK"}],
            "EMAIL": [{"VALUE": "kovalev@example.ru", "VALUE_TYPE": "WORK"}],
        }));
        let deal = b24.seed_deal(json!({
            "TITLE": "Компрессор для цеха", "STAGE_ID": "PREPARATION",
            "ASSIGNED_BY_ID": IVAN, "CONTACT_IDS": [contact],
            // Scored: priority 3, which lets the robot write to the client and move the deal.
            "UF_CRM_ROBOT_PRIORITY": 3,
        }));
        let (wazzup, smtp, channels) = outside().await;
        let dir = tempfile::tempdir().unwrap();
        let crm_store = fresh_store(Backend::Sqlite, dir.path()).await;
        std::mem::forget(dir);
        let mapping = FieldMapping {
            leads: [
                ("loss_reason", "UF_CRM_LOSS_REASON"),
                ("priority", "UF_CRM_ROBOT_PRIORITY"),
                ("meeting_at", "UF_CRM_MEETING_AT"),
            ]
            .into_iter()
            .map(|(ours, theirs)| (ours.to_owned(), FieldRef::parse(theirs)))
            .collect(),
            ..FieldMapping::default()
        };
        let access = Access::Webhook(SecretString::from(b24.webhook_url()));
        let crm: Arc<dyn Crm> = Arc::new(
            Bitrix24::new(access, crm_store, RATE, mapping, TodoVia::Activity).with_retries(
                Retries {
                    attempts: 2,
                    base: Duration::from_millis(20),
                    max: Duration::from_millis(50),
                },
            ),
        );
        let clock = Arc::new(Mutex::new(moscow("2026-03-03 13:00")));
        let read = clock.clone();
        let engine = Arc::new(
            ChainEngine::new(crm.clone(), shipped(), channels)
                .with_clock(Arc::new(move || *read.lock().unwrap())),
        );
        let robot = Robot::new(crm.clone(), Source::Bitrix24, "deal", None, None)
            .with_chains(engine.clone());
        let app = spawn_app_with(backend, Arc::new(robot), |_| {}).await;
        wazzup.set_webhooks(&format!("{}/hooks/wazzup/{SECRET}", app.address), None);
        let world = World {
            b24,
            wazzup,
            smtp,
            app,
            engine,
            clock,
            deal,
            crm,
            events: Mutex::new(1_772_532_000),
        };
        // The robot sees the new deal first: a deal it never saw enrols on no stage change,
        // since Bitrix24's events do not say which stage a deal left.
        world.event("ONCRMDEALADD").await;
        world
    }

    fn store(&self) -> &Store {
        &self.app.store
    }

    fn set_clock(&self, at: DateTime<Utc>) {
        *self.clock.lock().unwrap() = at;
    }

    /// Bitrix24 posts `event` about the deal; the robot has handled it.
    async fn event(&self, name: &str) {
        let ts = {
            let mut last = self.events.lock().unwrap();
            *last += 60;
            *last
        };
        let body = format!(
            "event={name}&data[FIELDS][ID]={}&ts={ts}&auth[domain]=robotdemo.bitrix24.ru\
             &auth[member_id]=m&auth[application_token]={B24_TOKEN}",
            self.deal
        );
        let handled = self.store().journal_len().await.unwrap();
        assert_eq!(self.app.post_bitrix24(body).await.status(), 200);
        self.app.wait_for_journal(handled + 1, 20).await;
    }

    /// At 14:00 a manager moves the deal to «4. Квалификация пройдена»; Bitrix24's
    /// `ONCRMDEALUPDATE` comes. The enrolment's key.
    async fn qualify(&self) -> String {
        self.set_clock(moscow("2026-03-03 14:00"));
        self.b24
            .edit_deal(self.deal, json!({"STAGE_ID": QUALIFIED}));
        self.event("ONCRMDEALUPDATE").await;
        let list = self
            .store()
            .enrolments_of(&self.deal.to_string())
            .await
            .unwrap();
        assert_eq!(list.len(), 1, "{list:?}");
        assert_eq!(list[0].enrolment.chain, NO_MEETING);
        assert!(list[0].due_at.is_some(), "the first step is planned");
        list[0].enrolment.key.clone()
    }

    /// Runs the enrolment's next step at the moment it is due; that moment and what the
    /// run did. `None` when nothing is due (finished or stopped).
    async fn run_next(&self, key: &str) -> Option<(DateTime<Utc>, StepRun)> {
        run_due(&self.engine, self.store(), |at| self.set_clock(at), key).await
    }

    /// The deal's to-dos.
    fn todos(&self) -> Vec<Value> {
        self.b24
            .activities()
            .into_iter()
            .filter(|a| a["OWNER_ID"] == json!(self.deal.to_string()))
            .collect()
    }
}

impl Days for World {
    async fn run_next(&self, key: &str) -> Option<(DateTime<Utc>, StepRun)> {
        World::run_next(self, key).await
    }

    fn parts(&self) -> (&WazzupEmulator, &Store, &ChainEngine) {
        (&self.wazzup, self.store(), &self.engine)
    }

    fn move_clock(&self, at: DateTime<Utc>) {
        self.set_clock(at);
    }

    fn counts(&self) -> (usize, usize, usize) {
        (
            self.wazzup.sent().len(),
            self.smtp.received().len(),
            self.todos().len(),
        )
    }

    fn what(&self, before: (usize, usize, usize)) -> String {
        let todos: Vec<String> = self
            .todos()
            .iter()
            .map(|t| t["DESCRIPTION"].as_str().unwrap_or_default().to_owned())
            .collect();
        let mut said = said_since(before, &self.wazzup, &self.smtp, &todos, "to-do");
        let deal = self.b24.deal(self.deal).unwrap();
        if deal["STAGE_ID"] == json!("LOSE") && said.is_empty() {
            said.push(format!(
                "lost with reason {}",
                deal["UF_CRM_LOSS_REASON"].as_str().unwrap_or_default()
            ));
        }
        said.join(", ")
    }
}

/// ОП-2 with no answer, day by day, as on amoCRM: the letter on day 0 (the client never
/// wrote in WhatsApp), a to-do for each call, the three approved templates through Wazzup,
/// and on Tuesday 10.03 at 18:00 the deal in the failed stage «Отказ. Сделка закрыта» with
/// «Нет контакта» in its loss reason field.
async fn op2_on_bitrix24_runs_day_by_day_and_closes_the_deal(backend: Backend) {
    let w = World::new(backend).await;
    let key = w.qualify().await;
    let got = day_by_day(&w, &key).await;
    let lost = format!("lost with reason {NO_CONTACT}");
    let expected = days(&[
        ("Tue 03.03 14:30", "email «Шаблон после квалификации»"),
        ("Wed 04.03 10:00", "to-do «ОП-2, день 1. Позв»"),
        ("Wed 04.03 13:00", "whatsapp «Аудио Михаила Николаевича»"),
        ("Thu 05.03 10:00", "whatsapp «Игнор»"),
        ("Thu 05.03 11:00", "to-do «ОП-2, день 2. Клие»"),
        ("Tue 10.03 10:00", "whatsapp «Полный игнор»"),
        ("Tue 10.03 11:00", "to-do «ОП-2, день 4. Посл»"),
        ("Tue 10.03 18:00", lost.as_str()),
    ]);
    assert_eq!(got, expected);

    let sent = w.wazzup.sent();
    assert!(sent.iter().all(|m| m.chat_id == PHONE), "{sent:?}");
    assert!(
        sent.iter()
            .all(|m| m.template_values == ["Андрей", "Иван Петров"]),
        "{sent:?}"
    );
    let letter = &w.smtp.received()[0];
    assert_eq!(letter.rcpt_to, ["kovalev@example.ru"]);
    assert!(
        letter.text().unwrap().contains("Это Иван Петров."),
        "{:?}",
        letter.text()
    );
    // The to-dos are Ivan's, pending, each with its deadline.
    let todos = w.todos();
    assert!(
        todos.iter().all(|t| t["PROVIDER_ID"] == json!("CRM_TODO")
            && t["RESPONSIBLE_ID"] == json!(IVAN)
            && t["COMPLETED"] == json!("N")),
        "{todos:?}"
    );
    let deal = w.b24.deal(w.deal).unwrap();
    assert_eq!(deal["STAGE_ID"], json!("LOSE"));
    assert_eq!(deal["UF_CRM_LOSS_REASON"], json!(NO_CONTACT));
    assert_eq!(deal["CLOSED"], json!("Y"));
    let record = w.store().enrolment(&key).await.unwrap().unwrap();
    assert_eq!(record.due_at, None, "finished");
    assert_eq!(
        w.b24.query_limit_hits(),
        0,
        "within the portal's 2 requests a second"
    );
    w.app.stop().await;
}

/// The client answers in WhatsApp on Thursday 09:30, before «Игнор»: the chain stops, the
/// job of «Игнор» finds it stopped, and nothing more reaches the client or the deal.
async fn a_reply_stops_the_chain_on_bitrix24(backend: Backend) {
    let w = World::new(backend).await;
    let key = w.qualify().await;
    reply_on_thursday(&w, &key).await;
    assert_ne!(w.b24.deal(w.deal).unwrap()["STAGE_ID"], json!("LOSE"));
    w.app.stop().await;
}

crate::on_both_backends!(op2_on_bitrix24_runs_day_by_day_and_closes_the_deal);
crate::on_both_backends!(a_reply_stops_the_chain_on_bitrix24);

/// A worker made the day-1 call's to-do and died before recording it: past the lease the
/// next worker finds the to-do among the deal's open ones (`crm.activity.list`) and does not
/// make a second.
async fn a_todo_made_before_a_crash_is_found_on_bitrix24(backend: Backend) {
    let w = World::new(backend).await;
    let key = w.qualify().await;
    let (at, run) = w.run_next(&key).await.unwrap();
    assert_eq!(run, StepRun::Settled(StepState::Done), "the letter at {at}");
    let due = w
        .store()
        .enrolment(&key)
        .await
        .unwrap()
        .unwrap()
        .due_at
        .unwrap();
    let text = match &shipped().chains.chain(NO_MEETING).unwrap().steps[1].action {
        Action::Call { text, .. } => text.clone(),
        other => panic!("step 2 of ОП-2 is the day-1 call, not {other:?}"),
    };
    w.crm
        .create_task(&NewTask {
            kind: TaskKind::Call,
            text,
            deadline: (due + chrono::TimeDelta::hours(3)).timestamp(),
            responsible_user_id: IVAN.into(),
            entity: EntityRef::lead(w.deal.to_string()),
        })
        .await
        .unwrap();
    let skey = step_key(&key, 1);
    claimed_by_a_dead_worker(w.store(), &skey, due, "crm", chrono::TimeDelta::minutes(10)).await;
    w.set_clock(due);
    let run = w.engine.run_step(w.store(), &key, 1, due).await.unwrap();
    assert_eq!(run, StepRun::Settled(StepState::Done));
    assert_eq!(w.todos().len(), 1, "the to-do is not made twice");
    let settled = w.store().step_record(&skey).await.unwrap().unwrap();
    assert!(
        settled.detail.contains("found in the CRM"),
        "{}",
        settled.detail
    );
    w.app.stop().await;
}

crate::on_both_backends!(a_todo_made_before_a_crash_is_found_on_bitrix24);

/// The no-show on Bitrix24: at 10:00 a manager books the meeting for 13:00 (the deal's
/// «Дата и время встречи», a `datetime` user field) and moves the deal to «5. Встреча
/// назначена». The wake-up waits on its queue for 13:30; run then, it enrols the deal, and
/// the chain goes on the seed's days to the failed stage with «Нет контакта».
async fn a_no_show_on_bitrix24_is_woken_and_run_to_the_close(backend: Backend) {
    let w = World::new(backend).await;
    w.set_clock(moscow("2026-03-03 10:00"));
    w.b24.edit_deal(
        w.deal,
        json!({"STAGE_ID": MEETING_SET, "UF_CRM_MEETING_AT": "2026-03-03T13:00:00+03:00"}),
    );
    w.event("ONCRMDEALUPDATE").await;
    let queue = w.store().queue_name(CHECK_LEAD);
    let wakes = w.store().waiting(&queue).await.unwrap();
    assert_eq!(wakes.len(), 1, "{wakes:?}");
    let job: CheckLead = serde_json::from_slice(&wakes[0].payload).unwrap();
    assert_eq!(job.at, moscow("2026-03-03 13:30"));
    assert!(
        w.store()
            .enrolments_of(&w.deal.to_string())
            .await
            .unwrap()
            .is_empty()
    );

    w.set_clock(job.at);
    let Checked::Looked(looked) = w
        .engine
        .check_lead(w.store(), &job.lead_id, job.at, job.at)
        .await
        .unwrap()
    else {
        panic!("the deal is there");
    };
    assert_eq!(looked.enrolled.len(), 1, "{looked:?}");
    let key = looked.enrolled[0].clone();
    let record = w.store().enrolment(&key).await.unwrap().unwrap();
    assert_eq!(record.enrolment.chain, "ОП-2. Клиент не пришел на встречу");

    let got = day_by_day(&w, &key).await;
    let lost = format!("lost with reason {NO_CONTACT}");
    let expected = days(&[
        ("Tue 03.03 13:30", "to-do «ОП-2, неявка. Клие»"),
        ("Tue 03.03 15:30", "to-do «ОП-2, неявка. Втор»"),
        ("Tue 03.03 16:30", "whatsapp «Аудио Михаила Николаевича»"),
        ("Wed 04.03 10:00", "whatsapp «Игнор»"),
        ("Wed 04.03 11:00", "to-do «ОП-2, неявка, день»"),
        ("Fri 06.03 10:00", "whatsapp «Полный игнор»"),
        ("Fri 06.03 11:00", "to-do «ОП-2, неявка, день»"),
        ("Fri 06.03 18:00", lost.as_str()),
    ]);
    assert_eq!(got, expected);
    assert!(w.todos().iter().all(|t| t["RESPONSIBLE_ID"] == json!(IVAN)));
    w.app.stop().await;
}

crate::on_both_backends!(a_no_show_on_bitrix24_is_woken_and_run_to_the_close);
