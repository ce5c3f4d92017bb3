//! Follow-up chains end to end on the amoCRM, Wazzup and SMTP emulators, with the shipped
//! `chains.toml` and a clock the test moves: the lead enters «4. Квалификация пройдена» by
//! webhook, and each step is run at the moment the engine planned it, as its job would.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Europe::Moscow;
use sales_robot::adapters::crm::Crm;
use sales_robot::adapters::crm::http::Retries;
use sales_robot::adapters::mail::SmtpMailer;
use sales_robot::adapters::store::{StepRecord, StepState, Store};
use sales_robot::adapters::wazzup::client::WazzupClient;
use sales_robot::config::{chains, scoring};
use sales_robot::domain::event::{EventKind, Source};
use sales_robot::domain::lead::LeadUpdate;
use sales_robot::service::chains::enrol::Enrolled;
use sales_robot::service::chains::step::step_key;
use sales_robot::service::chains::{
    CHECK_LEAD, ChainEngine, Channels, CheckLead, Checked, RUN_STEP, RunStep, StepJobs, StepRun,
};
use sales_robot::service::robot::Robot;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::{
    Backend, SECRET, TestApp, eventually, fresh_store, spawn_app_with, spawn_app_with_steps,
};
use crate::scoring::{amo_client, amo_client_mapping};
use crate::support::amocrm::{
    AmoEmulator, FIELD_PRIORITY, LOSS_NO_CONTACT, NewContact, NewLead, STATUS_LOST,
    STATUS_QUALIFICATION, STATUS_WON, USER_IVAN,
};
use crate::support::smtp::SmtpServer;
use crate::support::wazzup::{CHANNEL_WABA, WazzupEmulator};

const QUALIFIED: i64 = 60_456_947;
const MEETING_SET: i64 = 60_456_948;
const MEETING_HELD: i64 = 60_456_949;
/// The lead's «Дата и время встречи», mapped as `meeting_at`.
const FIELD_MEETING: i64 = 1_278_900;
pub(crate) const PHONE: &str = "79161234567";
pub(crate) const NO_MEETING: &str = "ОП-2. Квалификация пройдена, встреча не назначена";
pub(crate) const TEMPLATES: [(&str, &str); 3] = [
    (
        "a1000000-0000-4000-8000-000000000001",
        "Аудио Михаила Николаевича",
    ),
    ("a1000000-0000-4000-8000-000000000002", "Игнор"),
    ("a1000000-0000-4000-8000-000000000003", "Полный игнор"),
];

pub(crate) fn moscow(s: &str) -> DateTime<Utc> {
    let local = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
    Moscow
        .from_local_datetime(&local)
        .unwrap()
        .with_timezone(&Utc)
}

pub(crate) fn local(t: DateTime<Utc>) -> String {
    t.with_timezone(&Moscow)
        .format("%a %d.%m %H:%M")
        .to_string()
}

/// The shipped chains and templates.
pub(crate) fn shipped() -> chains::ChainRules {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let refusals: Vec<String> = scoring::load(&dir, None)
        .unwrap()
        .unwrap()
        .priority
        .refusals
        .into_iter()
        .map(|r| r.name)
        .collect();
    let known = chains::Known {
        lead_fields: None,
        refusals: Some(&refusals),
        zone: Some(Moscow),
    };
    chains::load(&dir, known).unwrap().unwrap()
}

/// The Wazzup emulator with the three approved templates of ОП-2, the SMTP listener, and
/// the robot's channels to them.
pub(crate) async fn outside() -> (WazzupEmulator, SmtpServer, Channels) {
    let wazzup = WazzupEmulator::start().await;
    for (guid, title) in TEMPLATES {
        wazzup.add_template(guid, title, "Здравствуйте, {{1}}! Это {{2}}.");
    }
    let smtp = SmtpServer::start().await;
    // The sender's rate limit lives in a store of its own here.
    let dir = tempfile::tempdir().unwrap();
    let limits = fresh_store(Backend::Sqlite, dir.path()).await;
    std::mem::forget(dir);
    let whatsapp = WazzupClient::new(
        wazzup.base_url(),
        CHANNEL_WABA,
        SecretString::from(wazzup.api_key()),
        limits,
    )
    .with_retries(Retries {
        attempts: 2,
        base: Duration::from_millis(20),
        max: Duration::from_millis(50),
    });
    let from = "Отдел продаж <sales@robotdemo.ru>";
    let mailer = SmtpMailer::new(
        &SecretString::from(smtp.url()),
        from,
        Duration::from_secs(10),
    )
    .unwrap();
    let channels = Channels {
        whatsapp: Some(Arc::new(whatsapp)),
        mailer: Some(Arc::new(mailer)),
        mail_domain: Channels::domain_of(from),
    };
    (wazzup, smtp, channels)
}

/// The emulators, the robot on them, and the clock the engine reads.
pub(crate) struct World {
    pub(crate) amo: AmoEmulator,
    pub(crate) wazzup: WazzupEmulator,
    pub(crate) smtp: SmtpServer,
    pub(crate) app: TestApp,
    pub(crate) engine: Arc<ChainEngine>,
    pub(crate) clock: Arc<Mutex<DateTime<Utc>>>,
    pub(crate) lead: i64,
}

impl World {
    pub(crate) async fn new(backend: Backend) -> World {
        World::start(backend, false).await
    }

    /// With `worker`, the robot's workers run the steps' jobs themselves.
    async fn start(backend: Backend, worker: bool) -> World {
        let amo = AmoEmulator::start().await;
        amo.add_status(QUALIFIED, "4. Квалификация пройдена");
        amo.add_status(MEETING_SET, "5. Встреча назначена");
        amo.add_status(MEETING_HELD, "6. Встреча проведена");
        amo.add_lead_field(FIELD_MEETING, "Дата и время встречи", "date_time");
        amo.rename_status(STATUS_LOST, "Отказ. Сделка закрыта");
        amo.rename_status(STATUS_QUALIFICATION, "3. Квалификация");
        let contact = amo.seed_contact(
            NewContact::new("Андрей Ковалёв")
                .phone("+7 916 123-45-67")
                .email("kovalev@example.ru"),
        );
        let lead = amo.seed_lead(
            NewLead::new("Компрессор для цеха")
                .status(STATUS_QUALIFICATION)
                .responsible(USER_IVAN)
                .field(FIELD_PRIORITY, json!(3))
                .contact(contact),
        );
        let (wazzup, smtp, channels) = outside().await;
        let crm: Arc<dyn Crm> =
            Arc::new(amo_client_mapping(&amo, &[("meeting_at", "Дата и время встречи")]).await);
        let clock = Arc::new(Mutex::new(moscow("2026-03-03 14:00")));
        let read = clock.clone();
        let engine = Arc::new(
            ChainEngine::new(crm.clone(), shipped(), channels)
                .with_clock(Arc::new(move || *read.lock().unwrap())),
        );
        let robot = Robot::new(crm, Source::Amocrm, "deal", None, None).with_chains(engine.clone());
        let app = if worker {
            spawn_app_with_steps(backend, Arc::new(robot), engine.clone()).await
        } else {
            spawn_app_with(backend, Arc::new(robot), |_| {}).await
        };
        wazzup.set_webhooks(&format!("{}/hooks/wazzup/{SECRET}", app.address), None);
        World {
            amo,
            wazzup,
            smtp,
            app,
            engine,
            clock,
            lead,
        }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.app.store
    }

    pub(crate) fn set_clock(&self, at: DateTime<Utc>) {
        *self.clock.lock().unwrap() = at;
    }

    /// A manager moves the lead to «4. Квалификация пройдена»; amoCRM's webhook comes.
    pub(crate) async fn qualify(&self) -> String {
        let crm = amo_client(&self.amo).await;
        crm.update_lead(
            &self.lead.to_string(),
            &LeadUpdate {
                status_id: Some(QUALIFIED.to_string()),
                ..LeadUpdate::default()
            },
        )
        .await
        .unwrap();
        let hook = format!(
            "leads[status][0][id]={}&leads[status][0][status_id]={QUALIFIED}\
             &leads[status][0][old_status_id]={STATUS_QUALIFICATION}&leads[status][0][pipeline_id]=7249526\
             &leads[status][0][last_modified]=1772535600&account[subdomain]=robotdemo&account[id]=29876543",
            self.lead
        );
        assert_eq!(self.app.post_amocrm(hook).await.status(), 200);
        let store = self.store().clone();
        let lead = self.lead.to_string();
        eventually(20, move || {
            let (store, lead) = (store.clone(), lead.clone());
            async move {
                let list = store.enrolments_of(&lead).await.unwrap();
                list.iter().any(|r| r.due_at.is_some())
            }
        })
        .await
        .expect("the lead is enrolled and its first step planned");
        let list = self
            .store()
            .enrolments_of(&self.lead.to_string())
            .await
            .unwrap();
        assert_eq!(list.len(), 1, "{list:?}");
        assert_eq!(list[0].enrolment.chain, NO_MEETING);
        list[0].enrolment.key.clone()
    }

    /// The lead's main contact in the CRM.
    fn contact(&self) -> i64 {
        self.amo.lead(self.lead).unwrap()["_embedded"]["contacts"][0]["id"]
            .as_i64()
            .unwrap()
    }

    /// The key of the lead's enrolment in `chain`, once its first step is planned.
    async fn enrolled_in(&self, chain: &str) -> String {
        let store = self.store().clone();
        let lead = self.lead.to_string();
        let name = chain.to_owned();
        eventually(20, move || {
            let (store, lead, name) = (store.clone(), lead.clone(), name.clone());
            async move {
                let list = store.enrolments_of(&lead).await.unwrap();
                list.iter()
                    .any(|r| r.enrolment.chain == name && r.due_at.is_some())
            }
        })
        .await
        .unwrap_or_else(|()| panic!("the lead is enrolled in «{chain}»"));
        let list = self
            .store()
            .enrolments_of(&self.lead.to_string())
            .await
            .unwrap();
        list.into_iter()
            .find(|r| r.enrolment.chain == chain)
            .unwrap()
            .enrolment
            .key
    }

    /// A manager closes the lead as lost with the refusal reason `reason`; the webhook comes.
    async fn lose(&self, reason: i64) {
        amo_client(&self.amo)
            .await
            .update_lead(
                &self.lead.to_string(),
                &LeadUpdate {
                    status_id: Some(STATUS_LOST.to_string()),
                    loss_reason_id: Some(reason.to_string()),
                    ..LeadUpdate::default()
                },
            )
            .await
            .unwrap();
        let hook = format!(
            "leads[status][0][id]={}&leads[status][0][status_id]={STATUS_LOST}\
             &leads[status][0][old_status_id]={STATUS_QUALIFICATION}&leads[status][0][pipeline_id]=7249526\
             &leads[status][0][last_modified]=1772535600&account[subdomain]=robotdemo&account[id]=29876543",
            self.lead
        );
        assert_eq!(self.app.post_amocrm(hook).await.status(), 200);
    }

    /// Runs the enrolment's next step at the moment it is due; that moment and what the
    /// run did. `None` when nothing is due (finished or stopped).
    pub(crate) async fn run_next(&self, key: &str) -> Option<(DateTime<Utc>, StepRun)> {
        run_due(&self.engine, self.store(), |at| self.set_clock(at), key).await
    }

    pub(crate) fn tasks(&self) -> Vec<Value> {
        self.amo
            .tasks()
            .into_iter()
            .filter(|t| t["entity_id"] == json!(self.lead))
            .collect()
    }

    /// What the client and the manager have seen so far, counted.
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        (
            self.wazzup.sent().len(),
            self.smtp.received().len(),
            self.tasks().len(),
        )
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
        World::counts(self)
    }

    fn what(&self, before: (usize, usize, usize)) -> String {
        let tasks: Vec<String> = self
            .tasks()
            .iter()
            .map(|t| t["text"].as_str().unwrap_or_default().to_owned())
            .collect();
        let mut said = said_since(before, &self.wazzup, &self.smtp, &tasks, "task");
        let lead = self.amo.lead(self.lead).unwrap();
        if lead["status_id"] == json!(STATUS_LOST) && said.is_empty() {
            said.push(format!(
                "lost with reason {}",
                lead["loss_reason_id"].as_i64().unwrap_or_default()
            ));
        }
        said.join(", ")
    }
}

/// What the day-by-day tests read of a world the chains run in, on amoCRM or on Bitrix24.
pub(crate) trait Days {
    /// Runs the enrolment's next step at the moment it is due; that moment and what the
    /// run did. `None` when nothing is due (finished or stopped).
    async fn run_next(&self, key: &str) -> Option<(DateTime<Utc>, StepRun)>;
    /// What the client and the manager have seen so far, counted: messages, letters, tasks.
    fn counts(&self) -> (usize, usize, usize);
    /// What changed since `before`, in words.
    fn what(&self, before: (usize, usize, usize)) -> String;
    /// The Wazzup emulator, the robot's store and engine.
    fn parts(&self) -> (&WazzupEmulator, &Store, &ChainEngine);
    /// Moves the test's clock.
    fn move_clock(&self, at: DateTime<Utc>);
}

/// ОП-2 with a reply: the first three steps (the letter, the call, «Аудио») go, then the
/// client writes in WhatsApp on Thursday 09:30, before «Игнор». The reply stops the chain,
/// the job of «Игнор» still fires at 10:00 and finds it stopped, and nothing more is sent.
pub(crate) async fn reply_on_thursday(w: &impl Days, key: &str) {
    for _ in 0..3 {
        let (at, run) = w.run_next(key).await.unwrap();
        assert_eq!(run, StepRun::Settled(StepState::Done), "at {}", local(at));
    }
    assert_eq!(w.counts(), (1, 1, 1));
    let (wazzup, store, engine) = w.parts();
    w.move_clock(moscow("2026-03-05 09:30"));
    let (_, status) = wazzup
        .client_writes(CHANNEL_WABA, PHONE, "Да, актуально")
        .await;
    assert_eq!(status, Some(200));
    let (watched, k) = (store.clone(), key.to_owned());
    eventually(20, move || {
        let (store, k) = (watched.clone(), k.clone());
        async move { !store.enrolment(&k).await.unwrap().unwrap().is_running() }
    })
    .await
    .expect("the reply stops the chain");
    let record = store.enrolment(key).await.unwrap().unwrap();
    assert_eq!(record.stopped.unwrap().reason, "the client wrote");
    w.move_clock(moscow("2026-03-05 10:00"));
    let run = engine
        .run_step(store, key, 3, moscow("2026-03-05 10:00"))
        .await
        .unwrap();
    assert_eq!(run, StepRun::Stopped("the client wrote".into()));
    assert_eq!(w.counts(), (1, 1, 1), "nothing more was sent");
}

/// Runs every step of enrolment `key` at its moment, each to be settled done: when it ran,
/// on the client's clock, and what it did.
pub(crate) async fn day_by_day(w: &impl Days, key: &str) -> Vec<(String, String)> {
    let mut got = Vec::new();
    loop {
        let before = w.counts();
        let Some((at, run)) = w.run_next(key).await else {
            return got;
        };
        assert_eq!(run, StepRun::Settled(StepState::Done), "at {}", local(at));
        got.push((local(at), w.what(before)));
    }
}

/// The days a test expects, as [`day_by_day`] gives them.
pub(crate) fn days(steps: &[(&str, &str)]) -> Vec<(String, String)> {
    steps
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

/// Claims step record `skey`, due at `due`, through `via`, as a worker that claimed it
/// `ago` and died before recording what it did would have left it; the claim.
pub(crate) async fn claimed_by_a_dead_worker(
    store: &Store,
    skey: &str,
    due: DateTime<Utc>,
    via: &str,
    ago: chrono::TimeDelta,
) -> StepRecord {
    let claimed = StepRecord {
        state: StepState::Claimed,
        claimed_at: Utc::now() - ago,
        at: due,
        via: via.into(),
        detail: String::new(),
    };
    assert!(
        store.claim_step(skey, &claimed).await.unwrap().is_none(),
        "nobody had claimed {skey}"
    );
    claimed
}

/// Runs enrolment `key`'s next step at the moment it is due, with the test's clock moved
/// there by `set_clock`.
pub(crate) async fn run_due(
    engine: &ChainEngine,
    store: &Store,
    set_clock: impl Fn(DateTime<Utc>),
    key: &str,
) -> Option<(DateTime<Utc>, StepRun)> {
    let record = store.enrolment(key).await.unwrap().unwrap();
    let at = record.due_at?;
    if !record.is_running() {
        return None;
    }
    set_clock(at);
    let run = engine
        .run_step(store, key, record.enrolment.next, at)
        .await
        .unwrap();
    Some((at, run))
}

/// What came since `before` (counts of messages, letters and tasks), in words: a message by
/// its template's title, a letter by its subject, a manager's task (`task`: «task» or
/// «to-do») by the start of its text.
pub(crate) fn said_since(
    before: (usize, usize, usize),
    wazzup: &WazzupEmulator,
    smtp: &SmtpServer,
    tasks: &[String],
    task: &str,
) -> Vec<String> {
    let mut said = Vec::new();
    for m in &wazzup.sent()[before.0..] {
        let title = TEMPLATES
            .iter()
            .find(|(g, _)| Some(*g) == m.template_id.as_deref())
            .map_or("free text", |(_, t)| *t);
        said.push(format!("whatsapp «{title}»"));
    }
    for r in &smtp.received()[before.1..] {
        said.push(format!("email «{}»", r.subject().unwrap_or_default()));
    }
    for text in &tasks[before.2..] {
        said.push(format!(
            "{task} «{}»",
            text.chars().take(18).collect::<String>()
        ));
    }
    said
}

async fn op2_with_no_answer_runs_day_by_day_and_closes_the_lead(backend: Backend) {
    let w = World::new(backend).await;
    let key = w.qualify().await;
    let got = day_by_day(&w, &key).await;
    let lost = format!("lost with reason {LOSS_NO_CONTACT}");
    let expected = days(&[
        // Day 0: the client never wrote, so the text goes by e-mail.
        ("Tue 03.03 14:30", "email «Шаблон после квалификации»"),
        ("Wed 04.03 10:00", "task «ОП-2, день 1. Позв»"),
        ("Wed 04.03 13:00", "whatsapp «Аудио Михаила Николаевича»"),
        ("Thu 05.03 10:00", "whatsapp «Игнор»"),
        ("Thu 05.03 11:00", "task «ОП-2, день 2. Клие»"),
        // Monday 9 March is a holiday.
        ("Tue 10.03 10:00", "whatsapp «Полный игнор»"),
        ("Tue 10.03 11:00", "task «ОП-2, день 4. Посл»"),
        ("Tue 10.03 18:00", lost.as_str()),
    ]);
    assert_eq!(got, expected);

    // Each message went to the client's number and address, with the step's own ids.
    let sent = w.wazzup.sent();
    assert!(sent.iter().all(|m| m.chat_id == PHONE), "{sent:?}");
    assert!(
        sent.iter()
            .all(|m| m.template_values == ["Андрей", "Иван Петров"])
    );
    let ids: std::collections::HashSet<_> = sent.iter().map(|m| m.crm_message_id.clone()).collect();
    assert_eq!(ids.len(), 3);
    let letter = &w.smtp.received()[0];
    assert_eq!(letter.rcpt_to, ["kovalev@example.ru"]);
    assert!(letter.message_id().unwrap().ends_with("@robotdemo.ru"));
    assert!(
        letter.text().unwrap().contains("Это Иван Петров."),
        "{:?}",
        letter.text()
    );
    let tasks = w.tasks();
    assert!(
        tasks
            .iter()
            .all(|t| t["responsible_user_id"] == json!(USER_IVAN))
    );
    let lead = w.amo.lead(w.lead).unwrap();
    assert_eq!(lead["status_id"], json!(STATUS_LOST));
    assert_eq!(lead["loss_reason_id"], json!(LOSS_NO_CONTACT));
    let record = w.store().enrolment(&key).await.unwrap().unwrap();
    assert_eq!(record.enrolment.next, 8);
    assert_eq!(record.due_at, None, "finished");
    // The three templates are kept as the company's side of the conversation.
    let kept = w
        .store()
        .list(&format!("chains:messages:{PHONE}"))
        .await
        .unwrap();
    assert_eq!(kept.len(), 3, "{kept:?}");
    assert!(kept[0].contains("[шаблон «Аудио Михаила Николаевича»: Андрей, Иван Петров]"));
    assert!(kept.iter().all(|m| m.contains("\"from_client\":false")));
    w.app.stop().await;
}

async fn a_reply_on_day_two_stops_the_chain(backend: Backend) {
    let w = World::new(backend).await;
    let key = w.qualify().await;
    reply_on_thursday(&w, &key).await;
    assert_ne!(w.amo.lead(w.lead).unwrap()["status_id"], json!(STATUS_LOST));
    w.app.stop().await;
}

async fn a_step_delivered_twice_is_carried_out_once(backend: Backend) {
    let w = World::new(backend).await;
    let key = w.qualify().await;
    let (at, run) = w.run_next(&key).await.unwrap();
    assert_eq!(run, StepRun::Settled(StepState::Done));
    // The same job again, and a third time at once from two workers.
    let again = w.engine.run_step(w.store(), &key, 0, at).await.unwrap();
    assert_eq!(again, StepRun::Stale);
    let (a, b) = tokio::join!(
        w.engine
            .run_step(w.store(), &key, 1, moscow("2026-03-04 10:00")),
        w.engine
            .run_step(w.store(), &key, 1, moscow("2026-03-04 10:00")),
    );
    let runs = [a.unwrap(), b.unwrap()];
    assert!(
        runs.contains(&StepRun::Settled(StepState::Done)),
        "{runs:?}"
    );
    assert_eq!(w.counts(), (0, 1, 1), "one letter, one call task");
    w.app.stop().await;
}

async fn a_letter_claimed_but_never_recorded_is_not_sent_again(backend: Backend) {
    let w = World::new(backend).await;
    let key = w.qualify().await;
    let due = w
        .store()
        .enrolment(&key)
        .await
        .unwrap()
        .unwrap()
        .due_at
        .unwrap();
    w.set_clock(due);
    // A worker claimed the letter and died before recording it: the letter may have gone.
    let claimed = |ago: chrono::TimeDelta| StepRecord {
        state: StepState::Claimed,
        claimed_at: Utc::now() - ago,
        at: due,
        via: "email".into(),
        detail: String::new(),
    };
    let skey = step_key(&key, 0);
    assert!(
        w.store()
            .claim_step(&skey, &claimed(chrono::TimeDelta::seconds(5)))
            .await
            .unwrap()
            .is_none()
    );
    // While its worker may still be at it, the step waits.
    let run = w.engine.run_step(w.store(), &key, 0, due).await.unwrap();
    assert!(matches!(run, StepRun::InFlight(_)), "{run:?}");
    assert!(w.smtp.received().is_empty());
    // Past the lease the worker is gone: uncertain, never sent again, the manager told once.
    let old = claimed(chrono::TimeDelta::minutes(10));
    assert!(
        w.store()
            .settle_step(&skey, StepState::Claimed, &old)
            .await
            .unwrap()
    );
    let run = w.engine.run_step(w.store(), &key, 0, due).await.unwrap();
    assert_eq!(run, StepRun::Settled(StepState::Uncertain));
    let again = w.engine.run_step(w.store(), &key, 0, due).await.unwrap();
    assert_eq!(again, StepRun::Stale);
    assert!(w.smtp.received().is_empty(), "the letter is not sent again");
    assert_eq!(
        w.store().step_record(&skey).await.unwrap().unwrap().state,
        StepState::Uncertain
    );
    let notes = w.amo.notes_of(w.lead);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0]["params"]["text"]
            .as_str()
            .unwrap()
            .starts_with("Робот не уверен, что шаг «Шаблон после квалификации»")
    );
    // The chain goes on with the call of day 1.
    let record = w.store().enrolment(&key).await.unwrap().unwrap();
    assert_eq!(record.enrolment.next, 1);
    assert_eq!(record.due_at, Some(moscow("2026-03-04 10:00")));
    w.app.stop().await;
}

async fn a_number_not_on_whatsapp_fails_the_step_and_tasks_the_manager(backend: Backend) {
    let w = World::new(backend).await;
    w.wazzup.add_invalid_number(PHONE);
    let key = w.qualify().await;
    for _ in 0..2 {
        w.run_next(&key).await.unwrap();
    }
    let (at, run) = w.run_next(&key).await.unwrap();
    assert_eq!(at, moscow("2026-03-04 13:00"));
    assert_eq!(run, StepRun::Settled(StepState::Failed));
    let tasks = w.tasks();
    assert_eq!(tasks.len(), 2, "the call, and the task about the failure");
    let text = tasks[1]["text"].as_str().unwrap();
    assert!(
        text.starts_with("Робот не выполнил шаг «Шаблон «Аудио Михаила Николаевича»»"),
        "{text}"
    );
    // No retry loop: the chain goes on to the next day.
    let record = w.store().enrolment(&key).await.unwrap().unwrap();
    assert_eq!(record.enrolment.next, 3);
    assert_eq!(record.due_at, Some(moscow("2026-03-05 10:00")));
    w.app.stop().await;
}

/// The out-of-stock button through the real queue: the first letter's job is due at once
/// and the robot's worker runs it; the second waits three business days on the queue.
async fn the_out_of_stock_letter_goes_through_the_steps_queue(backend: Backend) {
    let w = World::start(backend, true).await;
    w.set_clock(moscow("2026-03-05 16:00"));
    let hook = |at: i64| {
        format!(
            "leads[update][0][id]={}&leads[update][0][status_id]={STATUS_QUALIFICATION}\
             &leads[update][0][pipeline_id]=7249526&leads[update][0][last_modified]={at}\
             &account[subdomain]=robotdemo&account[id]=29876543",
            w.lead
        )
    };
    // The robot sees the lead once; then the manager presses the button (the tag).
    assert_eq!(w.app.post_amocrm(hook(1772715000)).await.status(), 200);
    w.app.wait_for_journal(1, 20).await;
    amo_client(&w.amo)
        .await
        .update_lead(
            &w.lead.to_string(),
            &LeadUpdate {
                add_tags: vec!["Нет в наличии".into()],
                ..LeadUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(w.app.post_amocrm(hook(1772715060)).await.status(), 200);
    eventually(20, || {
        let n = w.smtp.received().len();
        async move { n == 1 }
    })
    .await
    .expect("the worker sent the first letter");
    let letter = &w.smtp.received()[0];
    assert_eq!(
        letter.subject().as_deref(),
        Some("Ваш запрос: товара сейчас нет в наличии")
    );
    let list = w.store().enrolments_of(&w.lead.to_string()).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].enrolment.chain, "Нет в наличии");
    let store = w.store().clone();
    let key = list[0].enrolment.key.clone();
    eventually(20, move || {
        let (store, key) = (store.clone(), key.clone());
        async move {
            let r = store.enrolment(&key).await.unwrap().unwrap();
            r.enrolment.next == 1 && r.due_at == Some(moscow("2026-03-11 16:00"))
        }
    })
    .await
    .expect("the second letter is planned for Wednesday");
    // The worker plans the second letter in the enrolment a moment before it queues its job.
    let queue = w.store().queue_name(RUN_STEP);
    let store = w.store().clone();
    eventually(20, move || {
        let (store, queue) = (store.clone(), queue.clone());
        async move { store.queue_depth(&queue).await.unwrap() == 1 }
    })
    .await
    .expect("one job waits on the steps' queue: the second letter's");
    w.app.stop().await;
}

/// A WhatsApp step claimed but not recorded: within Wazzup's guard it is sent again with the
/// same `crmMessageId` (so at most once in Wazzup); past the lease it is left uncertain.
async fn a_whatsapp_step_claimed_but_never_recorded_is_resent_only_within_the_guard(
    backend: Backend,
) {
    let w = World::new(backend).await;
    let key = w.qualify().await;
    for _ in 0..2 {
        w.run_next(&key).await.unwrap();
    }
    let due = w
        .store()
        .enrolment(&key)
        .await
        .unwrap()
        .unwrap()
        .due_at
        .unwrap();
    assert_eq!(due, moscow("2026-03-04 13:00"));
    w.set_clock(due);
    let skey = step_key(&key, 2);
    claimed_by_a_dead_worker(
        w.store(),
        &skey,
        due,
        "wazzup",
        chrono::TimeDelta::seconds(5),
    )
    .await;
    let run = w.engine.run_step(w.store(), &key, 2, due).await.unwrap();
    assert_eq!(run, StepRun::Settled(StepState::Done));
    let sent = w.wazzup.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].crm_message_id.as_deref(),
        Some(sales_robot::service::chains::step::crm_message_id(&skey).as_str())
    );

    // The next WhatsApp step, claimed ten minutes ago by a worker that died: not sent.
    let record = w.store().enrolment(&key).await.unwrap().unwrap();
    let due = record.due_at.unwrap();
    assert_eq!(due, moscow("2026-03-05 10:00"));
    let skey = step_key(&key, 3);
    claimed_by_a_dead_worker(
        w.store(),
        &skey,
        due,
        "wazzup",
        chrono::TimeDelta::minutes(10),
    )
    .await;
    let run = w.engine.run_step(w.store(), &key, 3, due).await.unwrap();
    assert_eq!(run, StepRun::Settled(StepState::Uncertain));
    assert_eq!(w.wazzup.sent().len(), 1, "not sent again");
    w.app.stop().await;
}

crate::on_both_backends!(the_out_of_stock_letter_goes_through_the_steps_queue);
crate::on_both_backends!(
    a_whatsapp_step_claimed_but_never_recorded_is_resent_only_within_the_guard
);
crate::on_both_backends!(op2_with_no_answer_runs_day_by_day_and_closes_the_lead);
crate::on_both_backends!(a_reply_on_day_two_stops_the_chain);
crate::on_both_backends!(a_step_delivered_twice_is_carried_out_once);
crate::on_both_backends!(a_letter_claimed_but_never_recorded_is_not_sent_again);
crate::on_both_backends!(a_number_not_on_whatsapp_fails_the_step_and_tasks_the_manager);

/// A worker made the day-1 call task and died before recording it; past the lease the next
/// worker finds the task in the CRM and does not make a second one. Had the task not got
/// there, it is made once.
async fn a_task_claimed_but_never_recorded_is_made_once(backend: Backend) {
    let w = World::new(backend).await;
    let key = w.qualify().await;
    let (at, run) = w.run_next(&key).await.unwrap();
    assert_eq!(run, StepRun::Settled(StepState::Done), "the letter at {at}");

    // The task got there: a worker made it and died before recording it, so the step is
    // "claimed ten minutes ago" and the enrolment still at it.
    let record = w.store().enrolment(&key).await.unwrap().unwrap();
    let due = record.due_at.unwrap();
    let rules = shipped();
    let text = match &rules.chains.chain(NO_MEETING).unwrap().steps[1].action {
        sales_robot::domain::chains::Action::Call { text, .. } => text.clone(),
        other => panic!("step 2 of ОП-2 is the day-1 call, not {other:?}"),
    };
    amo_client(&w.amo)
        .await
        .create_task(&sales_robot::domain::task::NewTask {
            kind: sales_robot::domain::task::TaskKind::Call,
            text,
            deadline: (due + chrono::TimeDelta::hours(3)).timestamp(),
            responsible_user_id: USER_IVAN.to_string(),
            entity: sales_robot::domain::task::EntityRef::lead(w.lead.to_string()),
        })
        .await
        .unwrap();
    let skey = step_key(&key, 1);
    let claimed =
        claimed_by_a_dead_worker(w.store(), &skey, due, "crm", chrono::TimeDelta::minutes(10))
            .await;
    w.set_clock(due);
    let run = w.engine.run_step(w.store(), &key, 1, due).await.unwrap();
    assert_eq!(run, StepRun::Settled(StepState::Done));
    assert_eq!(w.tasks().len(), 1, "the task is not made twice");
    let settled = w.store().step_record(&skey).await.unwrap().unwrap();
    assert!(
        settled.detail.contains("found in the CRM"),
        "{}",
        settled.detail
    );

    // The task did not get there: the next task step, claimed ten minutes ago and never
    // made, is made once.
    let _ = w.run_next(&key).await.unwrap(); // «Аудио»
    let _ = w.run_next(&key).await.unwrap(); // «Игнор»
    let record = w.store().enrolment(&key).await.unwrap().unwrap();
    let due = record.due_at.unwrap();
    assert_eq!(record.enrolment.next, 4);
    let skey = step_key(&key, 4);
    let never = StepRecord { at: due, ..claimed };
    assert!(w.store().claim_step(&skey, &never).await.unwrap().is_none());
    w.set_clock(due);
    let run = w.engine.run_step(w.store(), &key, 4, due).await.unwrap();
    assert_eq!(run, StepRun::Settled(StepState::Done));
    assert_eq!(w.tasks().len(), 2, "made once");
    w.app.stop().await;
}

crate::on_both_backends!(a_task_claimed_but_never_recorded_is_made_once);

/// A worker died after recording the plan of an enrolment's first step and before its job
/// reached the queue. The event is handled again after the restart: the job is queued,
/// once however often the event comes.
async fn a_first_step_whose_job_was_lost_in_a_crash_is_queued_on_the_events_retry(
    backend: Backend,
) {
    let w = World::new(backend).await;
    let key = w.qualify().await;
    let record = w.store().enrolment(&key).await.unwrap().unwrap();
    let due = record.due_at.expect("the first step is planned");
    // What the crash left in a store: the enrolment and its plan, and no job.
    let dir = tempfile::tempdir().unwrap();
    let crashed = fresh_store(backend, dir.path()).await;
    assert!(crashed.add_enrolment(&record.enrolment).await.unwrap());
    assert!(
        crashed
            .save_progress(&record.enrolment, Some(due))
            .await
            .unwrap()
    );
    let queue = crashed.queue_name(RUN_STEP);
    assert!(crashed.waiting(&queue).await.unwrap().is_empty());

    let lead = amo_client(&w.amo)
        .await
        .lead(&w.lead.to_string())
        .await
        .unwrap()
        .unwrap();
    let qualified = EventKind::LeadStatusChanged {
        status_id: QUALIFIED.to_string(),
        old_status_id: Some(STATUS_QUALIFICATION.to_string()),
        pipeline_id: Some("7249526".into()),
        old_pipeline_id: None,
    };
    for _ in 0..2 {
        w.engine.on_lead(&qualified, &lead, &crashed).await.unwrap();
    }
    let waiting = crashed.waiting(&queue).await.unwrap();
    assert_eq!(waiting.len(), 1, "the first step's job, once");
    let job: RunStep = serde_json::from_slice(&waiting[0].payload).unwrap();
    assert_eq!((job.enrolment.as_str(), job.index), (key.as_str(), 0));
    w.app.stop().await;
}

crate::on_both_backends!(a_first_step_whose_job_was_lost_in_a_crash_is_queued_on_the_events_retry);

/// The out-of-stock letters name the products of the request (the catalog elements linked
/// to the lead), and the third offers the analogues `[[analogues]]` gives for them.
async fn the_out_of_stock_letters_name_the_products_and_offer_their_analogues(backend: Backend) {
    let w = World::new(backend).await;
    let inverter = w
        .amo
        .seed_product("Инвертор САИ-250 ПРОФ", Some("Ресанта"), 18_900.0);
    w.amo.link_product(w.lead, inverter, 2.0);
    w.set_clock(moscow("2026-03-05 16:00"));
    let hook = |at: i64| {
        format!(
            "leads[update][0][id]={}&leads[update][0][status_id]={STATUS_QUALIFICATION}\
             &leads[update][0][pipeline_id]=7249526&leads[update][0][last_modified]={at}\
             &account[subdomain]=robotdemo&account[id]=29876543",
            w.lead
        )
    };
    assert_eq!(w.app.post_amocrm(hook(1772715000)).await.status(), 200);
    w.app.wait_for_journal(1, 20).await;
    amo_client(&w.amo)
        .await
        .update_lead(
            &w.lead.to_string(),
            &LeadUpdate {
                add_tags: vec!["Нет в наличии".into()],
                ..LeadUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(w.app.post_amocrm(hook(1772715060)).await.status(), 200);
    let key = w.enrolled_in("Нет в наличии").await;
    for _ in 0..3 {
        let (at, run) = w.run_next(&key).await.unwrap();
        assert_eq!(run, StepRun::Settled(StepState::Done), "at {}", local(at));
    }
    let letters = w.smtp.received();
    assert_eq!(letters.len(), 3);
    assert_eq!(
        letters[0].subject().as_deref(),
        Some("Инвертор САИ-250 ПРОФ: сейчас нет в наличии")
    );
    let first = letters[0].text().unwrap();
    assert!(
        first.contains("позиции «Ресанта Инвертор САИ-250 ПРОФ» сейчас нет на складе"),
        "{first}"
    );
    assert_eq!(
        letters[1].subject().as_deref(),
        Some("Re: Инвертор САИ-250 ПРОФ")
    );
    assert_eq!(
        letters[2].subject().as_deref(),
        Some("Аналог: Инвертор САИ-250 ПРОФ")
    );
    let third = letters[2].text().unwrap();
    assert!(
        third.contains("— Fubag ТИГ-200 Inverter, 45 500 ₽"),
        "{third}"
    );
    assert!(
        third.contains("— Сварог ARC 250 (R112), 38 900 ₽"),
        "{third}"
    );
    w.app.stop().await;
}

crate::on_both_backends!(the_out_of_stock_letters_name_the_products_and_offer_their_analogues);

const LOSS_REPAIR: i64 = 13_384_771;
const LOSS_DUPLICATE: i64 = 13_384_773;

/// A lead lost as «Ремонт и сервис чужой техники»: two weeks on, the letter offers a
/// replacement for the products asked about and names the client's last purchase, read
/// from the client's won leads in the CRM.
async fn a_refusal_letter_names_the_clients_previous_purchase(backend: Backend) {
    let w = World::new(backend).await;
    w.amo
        .add_loss_reason(LOSS_REPAIR, "Ремонт и сервис чужой техники");
    w.amo.seed_lead(
        NewLead::new("Аппарат Сварог ARC 200")
            .status(STATUS_WON)
            .price(42_000)
            .contact(w.contact()),
    );
    let inverter = w
        .amo
        .seed_product("Инвертор САИ-250 ПРОФ", Some("Ресанта"), 18_900.0);
    w.amo.link_product(w.lead, inverter, 1.0);
    w.set_clock(moscow("2026-03-03 14:00"));
    w.lose(LOSS_REPAIR).await;
    let key = w.enrolled_in("Отказ: ремонт и сервис чужой техники").await;
    for _ in 0..2 {
        let (at, run) = w.run_next(&key).await.unwrap();
        assert_eq!(run, StepRun::Settled(StepState::Done), "at {}", local(at));
    }
    let letters = w.smtp.received();
    assert_eq!(letters.len(), 2);
    assert_eq!(
        letters[1].subject().as_deref(),
        Some("Замена сварочного аппарата")
    );
    let first = letters[0].text().unwrap();
    assert!(
        first.contains("Андрей, здравствуйте!"),
        "the client by the first name the CRM keeps: {first}"
    );
    let offer = letters[1].text().unwrap();
    assert!(
        offer.contains("— Fubag ТИГ-200 Inverter, 45 500 ₽"),
        "{offer}"
    );
    assert!(
        offer.contains("Для постоянных клиентов — как вы (Аппарат Сварог ARC 200, "),
        "{offer}"
    );
    w.app.stop().await;
}

crate::on_both_backends!(a_refusal_letter_names_the_clients_previous_purchase);

/// The client's WhatsApp messages are kept: a lead then closed as a duplicate gets a letter
/// that quotes what the client wrote last (the robot's own messages are kept beside them:
/// see the ОП-2 test).
async fn a_letter_quotes_the_clients_last_whatsapp_message(backend: Backend) {
    let w = World::new(backend).await;
    w.amo
        .add_loss_reason(LOSS_DUPLICATE, "Повтор уже открытой заявки");
    w.set_clock(moscow("2026-03-03 10:00"));
    // One after the other: both carry the same second, and two workers handling them at
    // once could keep them in either order.
    for (n, text) in [
        "Здравствуйте, нужен компрессор",
        "На 500 литров, для покрасочной",
    ]
    .into_iter()
    .enumerate()
    {
        let (_, status) = w.wazzup.client_writes(CHANNEL_WABA, PHONE, text).await;
        assert_eq!(status, Some(200));
        w.app.wait_for_journal(n as u64 + 1, 20).await;
    }
    w.lose(LOSS_DUPLICATE).await;
    let key = w.enrolled_in("Отказ: повтор уже открытой заявки").await;
    let (at, run) = w.run_next(&key).await.unwrap();
    assert_eq!(run, StepRun::Settled(StepState::Done), "at {}", local(at));
    let letter = w.smtp.received()[0].text().unwrap();
    assert!(
        letter.contains("): «На 500 литров, для покрасочной»"),
        "{letter}"
    );
    assert!(
        !letter.contains("нужен компрессор"),
        "only the last: {letter}"
    );
    w.app.stop().await;
}

crate::on_both_backends!(a_letter_quotes_the_clients_last_whatsapp_message);

// ─── The no-show: a wake-up at the meeting time plus the grace ───────────────────────────

const NO_SHOW: &str = "ОП-2. Клиент не пришел на встречу";

impl World {
    /// A manager sets «Дата и время встречи» to `meeting` and moves the lead to «5. Встреча
    /// назначена»; amoCRM's webhook comes and the robot has handled it.
    async fn book_meeting(&self, meeting: DateTime<Utc>) {
        self.amo.edit_lead_field(
            self.lead,
            FIELD_MEETING,
            json!(meeting.timestamp()),
            USER_IVAN,
        );
        self.move_to(MEETING_SET, STATUS_QUALIFICATION).await;
    }

    /// A manager moves the lead from stage `old` to `status`; the webhook comes and the
    /// robot has handled it.
    async fn move_to(&self, status: i64, old: i64) {
        amo_client(&self.amo)
            .await
            .update_lead(
                &self.lead.to_string(),
                &LeadUpdate {
                    status_id: Some(status.to_string()),
                    ..LeadUpdate::default()
                },
            )
            .await
            .unwrap();
        let hook = format!(
            "leads[status][0][id]={}&leads[status][0][status_id]={status}\
             &leads[status][0][old_status_id]={old}&leads[status][0][pipeline_id]=7249526\
             &leads[status][0][last_modified]={}&account[subdomain]=robotdemo&account[id]=29876543",
            self.lead,
            self.now().timestamp()
        );
        self.post_and_wait(hook).await;
    }

    /// A manager moves the meeting to `meeting`; amoCRM's `leads[update]` webhook comes.
    async fn move_meeting(&self, meeting: DateTime<Utc>) {
        self.amo.edit_lead_field(
            self.lead,
            FIELD_MEETING,
            json!(meeting.timestamp()),
            USER_IVAN,
        );
        self.edited().await;
    }

    /// A `leads[update]` webhook about the lead (something was edited), handled.
    async fn edited(&self) {
        let hook = format!(
            "leads[update][0][id]={}&leads[update][0][status_id]={MEETING_SET}\
             &leads[update][0][pipeline_id]=7249526&leads[update][0][last_modified]={}\
             &account[subdomain]=robotdemo&account[id]=29876543",
            self.lead,
            self.now().timestamp()
        );
        self.post_and_wait(hook).await;
    }

    async fn post_and_wait(&self, hook: String) {
        let handled = self.store().journal_len().await.unwrap();
        assert_eq!(self.app.post_amocrm(hook).await.status(), 200);
        self.app.wait_for_journal(handled + 1, 20).await;
    }

    fn now(&self) -> DateTime<Utc> {
        *self.clock.lock().unwrap()
    }

    /// The wake-ups waiting on their queue: when the queue will run each (by the wall
    /// clock), and the job.
    async fn wake_ups(&self) -> Vec<(DateTime<Utc>, CheckLead)> {
        let queue = self.store().queue_name(CHECK_LEAD);
        self.store()
            .waiting(&queue)
            .await
            .unwrap()
            .into_iter()
            .map(|w| (w.due, serde_json::from_slice(&w.payload).unwrap()))
            .collect()
    }

    /// Runs a wake-up at its moment, as its job would.
    async fn wake(&self, job: &CheckLead) -> Checked {
        self.set_clock(job.at);
        self.engine
            .check_lead(self.store(), &job.lead_id, job.at, job.at)
            .await
            .unwrap()
    }

    async fn enrolments(&self) -> Vec<String> {
        self.store()
            .enrolments_of(&self.lead.to_string())
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.enrolment.key)
            .collect()
    }
}

/// The lead enters «5. Встреча назначена» with its meeting at 13:00, and no other event
/// about it ever comes. A wake-up waits on its queue for 13:30 (the meeting plus the
/// chain's grace of 30 minutes); run then, it enrols the lead in the no-show chain, and the
/// chain goes as the seed says: two calls that day, «Аудио Михаила Николаевича», the next
/// day «Игнор» and a call, two business days on «Полный игнор», the last call, and the move
/// to «Отказ. Сделка закрыта» with «Нет контакта».
async fn a_no_show_is_woken_at_the_meeting_time_plus_the_grace(backend: Backend) {
    let w = World::new(backend).await;
    w.set_clock(moscow("2026-03-03 10:00"));
    w.book_meeting(moscow("2026-03-03 13:00")).await;
    let wakes = w.wake_ups().await;
    assert_eq!(wakes.len(), 1, "{wakes:?}");
    let (due, job) = wakes[0].clone();
    assert_eq!(job.lead_id, w.lead.to_string());
    assert_eq!(job.at, moscow("2026-03-03 13:30"));
    // On the queue it waits the three and a half hours from the robot's now.
    let wait = due - Utc::now();
    assert!(
        (wait - chrono::TimeDelta::minutes(210)).num_seconds().abs() < 60,
        "due in {wait}"
    );
    assert!(w.enrolments().await.is_empty());

    // The robot sees the lead again: no second wake-up.
    w.set_clock(moscow("2026-03-03 11:00"));
    w.edited().await;
    assert_eq!(w.wake_ups().await.len(), 1);
    // Delivered two minutes early (a clock that jumped), it is planned again for 13:30.
    let early = job.at - chrono::TimeDelta::minutes(2);
    let checked = w
        .engine
        .check_lead(w.store(), &job.lead_id, job.at, early)
        .await
        .unwrap();
    assert_eq!(checked, Checked::NotYet(job.at));
    let moments: Vec<_> = w.wake_ups().await.iter().map(|(_, j)| j.at).collect();
    assert_eq!(moments, [job.at, job.at]);
    assert!(w.enrolments().await.is_empty());

    // 13:30: the wake-up runs and enrols the lead; delivered again, it enrols nothing more.
    let Checked::Looked(looked) = w.wake(&job).await else {
        panic!("the lead is there");
    };
    let key = w.enrolled_in(NO_SHOW).await;
    assert_eq!(looked.enrolled, std::slice::from_ref(&key));
    assert_eq!(w.wake(&job).await, Checked::Looked(Enrolled::default()));
    assert_eq!(w.enrolments().await, std::slice::from_ref(&key));

    let got = day_by_day(&w, &key).await;
    let lost = format!("lost with reason {LOSS_NO_CONTACT}");
    let expected = days(&[
        ("Tue 03.03 13:30", "task «ОП-2, неявка. Клие»"),
        ("Tue 03.03 15:30", "task «ОП-2, неявка. Втор»"),
        ("Tue 03.03 16:30", "whatsapp «Аудио Михаила Николаевича»"),
        ("Wed 04.03 10:00", "whatsapp «Игнор»"),
        ("Wed 04.03 11:00", "task «ОП-2, неявка, день»"),
        ("Fri 06.03 10:00", "whatsapp «Полный игнор»"),
        ("Fri 06.03 11:00", "task «ОП-2, неявка, день»"),
        ("Fri 06.03 18:00", lost.as_str()),
    ]);
    assert_eq!(got, expected);
    let tasks = w.tasks();
    assert!(
        tasks
            .iter()
            .all(|t| t["responsible_user_id"] == json!(USER_IVAN))
    );
    assert!(
        tasks[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("ОП-2, неявка. Клиент не пришел на встречу"),
        "{tasks:?}"
    );
    assert!(w.wazzup.sent().iter().all(|m| m.chat_id == PHONE));
    let lead = w.amo.lead(w.lead).unwrap();
    assert_eq!(lead["status_id"], json!(STATUS_LOST));
    assert_eq!(lead["loss_reason_id"], json!(LOSS_NO_CONTACT));
    // Delivered a day late (the robot was down), it does nothing.
    let late = job.at + chrono::TimeDelta::days(1);
    let checked = w
        .engine
        .check_lead(w.store(), &job.lead_id, job.at, late)
        .await
        .unwrap();
    assert_eq!(checked, Checked::Outdated);
    w.app.stop().await;
}

/// The meeting is moved from 13:00 to 16:00 before the first wake-up: the robot queues a
/// second one for 16:30. At 13:30 the first finds the meeting ahead and enrols nothing; the
/// second enrols the lead and its first call is set at 16:30.
async fn a_meeting_moved_later_is_woken_at_its_new_time(backend: Backend) {
    let w = World::new(backend).await;
    w.set_clock(moscow("2026-03-03 10:00"));
    w.book_meeting(moscow("2026-03-03 13:00")).await;
    w.set_clock(moscow("2026-03-03 12:00"));
    w.move_meeting(moscow("2026-03-03 16:00")).await;
    let wakes = w.wake_ups().await;
    let moments: Vec<_> = wakes.iter().map(|(_, job)| job.at).collect();
    assert_eq!(
        moments,
        [moscow("2026-03-03 13:30"), moscow("2026-03-03 16:30")]
    );

    assert_eq!(
        w.wake(&wakes[0].1).await,
        Checked::Looked(Enrolled::default())
    );
    assert!(w.enrolments().await.is_empty());
    assert_eq!(w.counts(), (0, 0, 0));

    let Checked::Looked(looked) = w.wake(&wakes[1].1).await else {
        panic!("the lead is there");
    };
    assert_eq!(looked.enrolled.len(), 1, "{looked:?}");
    let key = w.enrolled_in(NO_SHOW).await;
    let record = w.store().enrolment(&key).await.unwrap().unwrap();
    assert_eq!(
        record.enrolment.meeting_at,
        Some(moscow("2026-03-03 16:00"))
    );
    let (at, run) = w.run_next(&key).await.unwrap();
    assert_eq!(
        (at, run),
        (
            moscow("2026-03-03 16:30"),
            StepRun::Settled(StepState::Done)
        )
    );
    assert_eq!(w.counts(), (0, 0, 1), "the first call");
    w.app.stop().await;
}

/// The meeting was held: at 13:10 the manager moves the lead on to «6. Встреча проведена».
/// The wake-up of 13:30 enrols nothing and nothing is sent. Delivered again after the lead
/// was deleted, it finds the lead gone and does nothing, with no error.
async fn a_lead_that_left_the_stage_is_not_woken_into_the_chain(backend: Backend) {
    let w = World::new(backend).await;
    w.set_clock(moscow("2026-03-03 10:00"));
    w.book_meeting(moscow("2026-03-03 13:00")).await;
    w.set_clock(moscow("2026-03-03 13:10"));
    w.move_to(MEETING_HELD, MEETING_SET).await;
    let wakes = w.wake_ups().await;
    assert_eq!(wakes.len(), 1, "no wake-up for a lead past the stage");
    let job = &wakes[0].1;
    assert_eq!(w.wake(job).await, Checked::Looked(Enrolled::default()));
    assert!(w.enrolments().await.is_empty());
    assert_eq!(w.counts(), (0, 0, 0));

    w.amo.delete_lead(w.lead);
    assert_eq!(w.wake(job).await, Checked::Gone);
    assert!(w.enrolments().await.is_empty());
    w.app.stop().await;
}

/// Through the real queue: the lead enters the stage fifteen seconds before its meeting
/// time plus the grace (real seconds too: room for a loaded machine to read what waits). The wake-up waits on its queue, and nothing happens before its moment;
/// then the robot's worker runs it, the lead is enrolled, and the step's worker sets the
/// first call.
async fn the_no_show_wake_up_waits_on_its_queue_for_the_worker(backend: Backend) {
    let w = World::start(backend, true).await;
    w.set_clock(moscow("2026-03-03 13:29") + chrono::TimeDelta::seconds(45));
    w.book_meeting(moscow("2026-03-03 13:00")).await;
    let wakes = w.wake_ups().await;
    assert_eq!(wakes.len(), 1, "{wakes:?}");
    assert_eq!(wakes[0].1.at, moscow("2026-03-03 13:30"));
    assert!(wakes[0].0 > Utc::now(), "it waits for its moment");
    assert!(w.enrolments().await.is_empty());
    assert_eq!(w.counts(), (0, 0, 0));

    w.set_clock(moscow("2026-03-03 13:30"));
    eventually(40, || {
        let n = w.tasks().len();
        async move { n == 1 }
    })
    .await
    .expect("the worker ran the wake-up and the first step");
    let text = w.tasks()[0]["text"].as_str().unwrap().to_owned();
    assert!(text.starts_with("ОП-2, неявка. Клиент не пришел"), "{text}");
    w.enrolled_in(NO_SHOW).await;
    let queue = w.store().queue_name(CHECK_LEAD);
    let store = w.store().clone();
    eventually(10, move || {
        let (store, queue) = (store.clone(), queue.clone());
        async move { store.queue_depth(&queue).await.unwrap() == 0 }
    })
    .await
    .expect("the wake-up is done");
    w.app.stop().await;
}

crate::on_both_backends!(a_no_show_is_woken_at_the_meeting_time_plus_the_grace);
crate::on_both_backends!(a_meeting_moved_later_is_woken_at_its_new_time);
crate::on_both_backends!(a_lead_that_left_the_stage_is_not_woken_into_the_chain);
crate::on_both_backends!(the_no_show_wake_up_waits_on_its_queue_for_the_worker);

/// amoCRM answers 503 when the wake-up of 13:30 reads the lead: the job is queued again
/// for a few seconds later (its second try), and that one enrols the lead.
async fn a_wake_up_that_cannot_reach_the_crm_is_tried_again(backend: Backend) {
    let w = World::new(backend).await;
    w.set_clock(moscow("2026-03-03 10:00"));
    w.book_meeting(moscow("2026-03-03 13:00")).await;
    let job = w.wake_ups().await[0].1.clone();
    w.set_clock(job.at);
    w.amo.fail_next(2, 503);
    let jobs = StepJobs::new(w.store().clone(), w.engine.clone());
    jobs.check(job.clone()).await.unwrap();
    assert!(w.enrolments().await.is_empty());
    let wakes = w.wake_ups().await;
    assert_eq!(wakes.len(), 2, "{wakes:?}");
    // The retry comes first: seconds away on the queue, where the first waits for 13:30.
    let (due, retry) = wakes[0].clone();
    assert_eq!(
        retry,
        CheckLead {
            attempt: 2,
            ..job.clone()
        }
    );
    let wait = (due - Utc::now()).num_seconds();
    assert!((3..=7).contains(&wait), "due in {wait} s");
    jobs.check(retry).await.unwrap();
    w.enrolled_in(NO_SHOW).await;
    w.app.stop().await;
}

crate::on_both_backends!(a_wake_up_that_cannot_reach_the_crm_is_tried_again);
