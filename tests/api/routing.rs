//! Routing end to end on the amoCRM emulator: a new lead's webhook in, the lead scored and
//! handed to a manager who is online, with a first task and a note that says why; the echo
//! of those writes writes nothing; a lead nobody can take waits and goes out on the next
//! presence change; a lead moved by hand keeps its new manager, and the loads follow. The
//! same on Bitrix24, whose echoes carry no author.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use sales_robot::adapters::crm::Crm;
use sales_robot::config::{managers, routing};
use sales_robot::domain::event::Source;
use sales_robot::domain::lead::LeadUpdate;
use sales_robot::service::robot::Robot;
use sales_robot::service::routing::{RouteLeads, RoutingSetup};
use sales_robot::service::scoring::ScoreLeads;
use serde_json::{Value, json};

use crate::helpers::{Backend, PRESENCE_TOKEN, TestApp, eventually, spawn_app_with};
use crate::scoring::{added, amo_client, setup};
use crate::support::amocrm::{
    AmoEmulator, FIELD_BRAND, NewLead, USER_ELENA, USER_IVAN, USER_MARIA,
};

const MANAGERS: &str = r#"
time_zone = "Europe/Moscow"

[[groups]]
name = "Продажи"
lead = "Иван Петров"

[[managers]]
id = 10091431
name = "Иван Петров"
group = "Продажи"
week = [ { days = "пн-пт", hours = "09:00-18:00", lunch = "13:00-14:00" } ]

[[managers]]
id = 10115308
name = "Мария Смирнова"
group = "Продажи"
week = [ { days = "пн-пт", hours = "09:00-18:00", lunch = "13:00-14:00" } ]
"#;

const ROUTING: &str = r#"
guard = "10m"

[[groups]]
name = "Продажи"
wait = "15m"
overflow = "руководитель"

[priority.1]
task = "Связаться с клиентом"
deadline = "15m"

[priority.2]
task = "Связаться с клиентом"
deadline = "1h"

[priority.3]
task = "Связаться с клиентом"
deadline = "3h"

[priority.4]
task = "Связаться с клиентом"
deadline = "1d"
"#;

/// Monday 23 November 2026, 11:00 in Moscow: both managers are at work.
pub fn eleven() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 8, 0, 0).unwrap()
}

pub fn routing_setup() -> RoutingSetup {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(managers::FILE_NAME), MANAGERS).unwrap();
    std::fs::write(dir.path().join(routing::FILE_NAME), ROUTING).unwrap();
    let roster = managers::load(dir.path()).unwrap().unwrap();
    let rules = routing::load(
        dir.path(),
        routing::Known {
            roster: &roster,
            lead_fields: None,
            fresh_for: std::time::Duration::from_secs(120),
        },
    )
    .unwrap()
    .unwrap();
    RoutingSetup {
        roster: Arc::new(roster),
        rules: Arc::new(rules),
    }
}

/// The robot on the emulator: it scores with the shipped rules and routes with the test's
/// roster, on a clock stopped at 11:00.
async fn robot_on(amo: &AmoEmulator, backend: Backend) -> TestApp {
    robot_with(Arc::new(amo_client(amo).await), backend).await
}

/// The same robot on a given client of the CRM.
pub async fn robot_with(crm: Arc<dyn Crm>, backend: Backend) -> TestApp {
    let scoring = ScoreLeads::new(crm.clone(), setup(), Source::Amocrm, "deal");
    robot_scoring_with(crm, scoring, Source::Amocrm, backend).await
}

async fn robot_scoring_with(
    crm: Arc<dyn Crm>,
    scoring: ScoreLeads,
    source: Source,
    backend: Backend,
) -> TestApp {
    let routing = RouteLeads::new(crm.clone(), routing_setup()).with_clock(Arc::new(eleven));
    let robot = Robot::new(crm, source, "deal", Some(scoring), Some(Arc::new(routing)));
    spawn_app_with(backend, Arc::new(robot), |_| {}).await
}

pub async fn online(app: &TestApp, manager: i64) {
    let report = json!({
        "manager_id": manager.to_string(),
        "state": "online",
        "at": "2026-11-23T11:00:00+03:00",
    });
    let answer = app.post_presence(Some(PRESENCE_TOKEN), &report).await;
    assert_eq!(answer.status(), 200);
}

pub fn responsible(amo: &AmoEmulator, lead: i64) -> i64 {
    amo.lead(lead).unwrap()["responsible_user_id"]
        .as_i64()
        .unwrap()
}

pub fn tasks_of(amo: &AmoEmulator, lead: i64) -> Vec<Value> {
    amo.tasks()
        .into_iter()
        .filter(|t| t["entity_id"] == json!(lead))
        .collect()
}

/// Every write the robot made to the emulator: PATCHes and POSTs of the API.
pub fn all_writes(amo: &AmoEmulator) -> usize {
    amo.requests()
        .iter()
        .filter(|r| (r.method == "PATCH" || r.method == "POST") && r.path.starts_with("/api/v4/"))
        .count()
}

fn the_lead(amo: &AmoEmulator) -> i64 {
    amo.seed_lead(
        NewLead::new("Аппараты для цеха")
            .price(900_000)
            .responsible(USER_ELENA)
            .field(FIELD_BRAND, json!("Сварог")),
    )
}

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
}

async fn a_new_lead_goes_to_the_manager_online_with_a_task_and_a_note(backend: Backend) {
    let amo = AmoEmulator::start().await;
    let app = robot_on(&amo, backend).await;
    online(&app, USER_IVAN).await;
    let lead = the_lead(&amo);

    assert_eq!(
        app.post_amocrm(added(lead, 1_763_900_000)).await.status(),
        200
    );
    app.wait_for_journal(2, 20).await;

    assert_eq!(responsible(&amo, lead), USER_IVAN, "the one manager online");
    let tasks = tasks_of(&amo, lead);
    assert_eq!(tasks.len(), 1, "one first task: {tasks:?}");
    assert_eq!(tasks[0]["responsible_user_id"], json!(USER_IVAN));
    assert_eq!(tasks[0]["text"], json!("Связаться с клиентом"));
    let notes = amo.notes_of(lead);
    assert_eq!(notes.len(), 1, "one note: {notes:?}");
    let note = notes[0]["params"]["text"].as_str().unwrap();
    assert!(
        note.starts_with("Робот передал лид менеджеру Иван Петров: группа «Продажи»"),
        "{note}"
    );
    let loads = app.store.loads(today()).await.unwrap();
    assert_eq!(loads.get(&USER_IVAN.to_string()), Some(&1));
    // The score (one PATCH), the responsible user (one PATCH), the task and the note.
    assert_eq!(all_writes(&amo), 4);

    // The CRM's echo of those writes changes nothing.
    let echo = format!(
        "leads[update][0][id]={lead}&leads[update][0][status_id]=60456942\
         &leads[update][0][responsible_user_id]={USER_IVAN}&leads[update][0][last_modified]=1763900060\
         &account[subdomain]=robotdemo&account[id]=29876543"
    );
    assert_eq!(app.post_amocrm(echo).await.status(), 200);
    app.wait_for_journal(3, 20).await;
    assert_eq!(all_writes(&amo), 4, "the echo wrote nothing");
    assert_eq!(tasks_of(&amo, lead).len(), 1);

    // The head of sales gives it to Maria by hand: it stays hers, and the loads follow.
    let crm = amo_client(&amo).await;
    crm.update_lead(
        &lead.to_string(),
        &LeadUpdate {
            responsible_user_id: Some(USER_MARIA.to_string()),
            ..LeadUpdate::default()
        },
    )
    .await
    .unwrap();
    let moved = format!(
        "leads[responsible][0][id]={lead}&leads[responsible][0][responsible_user_id]={USER_MARIA}\
         &leads[responsible][0][old_responsible_user_id]={USER_IVAN}&leads[responsible][0][last_modified]=1763900600\
         &account[subdomain]=robotdemo&account[id]=29876543"
    );
    assert_eq!(app.post_amocrm(moved).await.status(), 200);
    app.wait_for_journal(4, 20).await;
    let loads = app.store.loads(today()).await.unwrap();
    assert_eq!(loads.get(&USER_IVAN.to_string()).copied().unwrap_or(0), 0);
    assert_eq!(loads.get(&USER_MARIA.to_string()), Some(&1));
    assert_eq!(
        responsible(&amo, lead),
        USER_MARIA,
        "the robot did not move it back"
    );
    app.stop().await;
}

async fn a_lead_nobody_can_take_waits_and_goes_out_on_the_next_presence(backend: Backend) {
    let amo = AmoEmulator::start().await;
    let app = robot_on(&amo, backend).await;
    let lead = the_lead(&amo);

    assert_eq!(
        app.post_amocrm(added(lead, 1_763_900_000)).await.status(),
        200
    );
    app.wait_for_journal(1, 20).await;
    let pending = app.store.pending().await.unwrap();
    assert_eq!(pending.len(), 1, "nobody is online: the lead waits");
    assert_eq!(pending[0].lead_id, lead.to_string());
    assert_eq!(responsible(&amo, lead), USER_ELENA);
    assert!(tasks_of(&amo, lead).is_empty());

    online(&app, USER_MARIA).await;
    eventually(20, || {
        let given = responsible(&amo, lead) == USER_MARIA;
        async move { given }
    })
    .await
    .expect("Maria came online and got the waiting lead");
    app.wait_for_journal(2, 20).await;
    assert!(app.store.pending().await.unwrap().is_empty());
    assert_eq!(tasks_of(&amo, lead).len(), 1);
    assert_eq!(amo.notes_of(lead).len(), 1);
    app.stop().await;
}

async fn a_call_note_in_the_crm_brings_the_manager_back_for_a_waiting_lead(backend: Backend) {
    let amo = AmoEmulator::start().await;
    let app = robot_on(&amo, backend).await;
    let lead = the_lead(&amo);
    assert_eq!(
        app.post_amocrm(added(lead, 1_763_900_000)).await.status(),
        200
    );
    app.wait_for_journal(1, 20).await;
    assert_eq!(
        app.store.pending().await.unwrap().len(),
        1,
        "nobody is online"
    );

    // Maria finishes a call with another client: telephony puts the call note into amoCRM
    // at 10:59:30, and amoCRM's webhook says who made it.
    let other = amo.seed_lead(NewLead::new("Другой клиент").responsible(USER_MARIA));
    let note = format!(
        "leads[note][0][note][id]=286113457&leads[note][0][note][note_type]=10\
         &leads[note][0][note][element_id]={other}&leads[note][0][note][element_type]=2\
         &leads[note][0][note][created_by]={USER_MARIA}&leads[note][0][note][modified_by]={USER_MARIA}\
         &leads[note][0][note][created_at]=1795420770&leads[note][0][note][updated_at]=1795420770\
         &account[subdomain]=robotdemo&account[id]=29876543"
    );
    assert_eq!(app.post_amocrm(note).await.status(), 200);
    eventually(20, || {
        let given = responsible(&amo, lead) == USER_MARIA;
        async move { given }
    })
    .await
    .expect("the call note showed Maria at her desk, and she got the waiting lead");
    app.wait_for_journal(2, 20).await;
    assert!(app.store.pending().await.unwrap().is_empty());
    app.stop().await;
}

/// The same on Bitrix24, whose webhooks do not say who made a change: a new deal goes to the
/// manager online with a to-do and a comment; the echo `ONCRMDEALUPDATE` of those writes is
/// read and writes nothing, because every decision is kept in the store; a deal the head of
/// sales gives to Maria by hand stays hers, and the loads follow.
async fn a_bitrix24_deal_is_routed_and_its_echo_writes_nothing(backend: Backend) {
    use crate::helpers::B24_TOKEN;
    use crate::scoring::{b24_client, b24_setup};
    use crate::support::bitrix24::B24Emulator;

    let b24 = B24Emulator::start().await;
    let deal = b24.seed_deal(json!({
        "TITLE": "Аппараты для цеха", "OPPORTUNITY": "900000", "ASSIGNED_BY_ID": "1",
    }));
    let dir = tempfile::tempdir().unwrap();
    let crm: Arc<dyn Crm> = Arc::new(b24_client(&b24, backend, dir.path()).await);
    let scoring = ScoreLeads::new(crm.clone(), b24_setup(), Source::Bitrix24, "deal");
    let app = robot_scoring_with(crm.clone(), scoring, Source::Bitrix24, backend).await;
    online(&app, USER_IVAN).await;
    let event = |name: &str, ts: i64| {
        format!(
            "event={name}&data[FIELDS][ID]={deal}&ts={ts}&auth[domain]=robotdemo.bitrix24.ru\
             &auth[member_id]=m&auth[application_token]={B24_TOKEN}"
        )
    };
    // Every write of the REST API the robot made: adds and updates, alone or in a batch.
    let writes = |b24: &B24Emulator| {
        b24.requests()
            .iter()
            .filter(|r| {
                let call = format!("{} {}", r.method_name, r.params);
                call.contains(".add") || call.contains(".update")
            })
            .count()
    };
    let assigned = |b24: &B24Emulator| b24.deal(deal).unwrap()["ASSIGNED_BY_ID"].clone();

    assert_eq!(
        app.post_bitrix24(event("ONCRMDEALADD", 1_763_900_000))
            .await
            .status(),
        200
    );
    app.wait_for_journal(2, 20).await;
    assert_eq!(assigned(&b24), json!(USER_IVAN.to_string()));
    let todos: Vec<Value> = b24
        .activities()
        .into_iter()
        .filter(|a| a["OWNER_ID"] == json!(deal.to_string()))
        .collect();
    assert_eq!(todos.len(), 1, "one first to-do: {todos:?}");
    assert_eq!(todos[0]["RESPONSIBLE_ID"], json!(USER_IVAN.to_string()));
    let comments = b24.comments_of(deal);
    assert_eq!(comments.len(), 1, "one comment: {comments:?}");
    // The score, the manager, the to-do and the comment.
    let written = writes(&b24);
    assert_eq!(written, 4);
    let loads = app.store.loads(today()).await.unwrap();
    assert_eq!(loads.get(&USER_IVAN.to_string()), Some(&1));

    // The portal's echo of those writes: read, and nothing written.
    assert_eq!(
        app.post_bitrix24(event("ONCRMDEALUPDATE", 1_763_900_060))
            .await
            .status(),
        200
    );
    app.wait_for_journal(3, 20).await;
    assert_eq!(writes(&b24), written, "the echo wrote nothing");

    // The head of sales gives it to Maria by hand.
    b24.edit_deal(deal, json!({"ASSIGNED_BY_ID": USER_MARIA.to_string()}));
    assert_eq!(
        app.post_bitrix24(event("ONCRMDEALUPDATE", 1_763_900_600))
            .await
            .status(),
        200
    );
    app.wait_for_journal(4, 20).await;
    let loads = app.store.loads(today()).await.unwrap();
    assert_eq!(loads.get(&USER_IVAN.to_string()).copied().unwrap_or(0), 0);
    assert_eq!(loads.get(&USER_MARIA.to_string()), Some(&1));
    assert_eq!(
        assigned(&b24),
        json!(USER_MARIA.to_string()),
        "the robot did not move it back"
    );
    assert_eq!(
        writes(&b24),
        written,
        "following the hand-over wrote nothing"
    );
    app.stop().await;
}

crate::on_both_backends!(a_bitrix24_deal_is_routed_and_its_echo_writes_nothing);
crate::on_both_backends!(a_call_note_in_the_crm_brings_the_manager_back_for_a_waiting_lead);
crate::on_both_backends!(a_new_lead_goes_to_the_manager_online_with_a_task_and_a_note);
crate::on_both_backends!(a_lead_nobody_can_take_waits_and_goes_out_on_the_next_presence);

/// Eight workers hand out 100 new leads at once on one Redis: every lead goes to one
/// manager once, with one task, and the day stays even.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_routing_at_once_give_each_lead_once_and_keep_the_day_even() {
    use sales_robot::domain::event::EventKind;
    use sales_robot::domain::presence::{Presence, PresenceState};
    use sales_robot::domain::priority::Priority;

    let amo = AmoEmulator::start().await;
    amo.disable_rate_limit();
    let crm: Arc<dyn Crm> = Arc::new(amo_client(&amo).await.with_rate(
        sales_robot::domain::rate::Rate {
            per_second: 1000.0,
            burst: 100,
        },
    ));
    let dir = tempfile::tempdir().unwrap();
    let store = crate::helpers::fresh_store(Backend::Redis, dir.path()).await;
    let heard = chrono::DateTime::parse_from_rfc3339("2026-11-23T11:00:00+03:00").unwrap();
    for manager in [USER_IVAN, USER_MARIA] {
        store
            .set_presence(&Presence {
                manager_id: manager.to_string(),
                state: PresenceState::Online,
                at: heard,
            })
            .await
            .unwrap();
    }
    let router =
        Arc::new(RouteLeads::new(crm.clone(), routing_setup()).with_clock(Arc::new(eleven)));
    let leads: Vec<i64> = (0..100).map(|_| the_lead(&amo)).collect();
    let created = EventKind::LeadCreated {
        status_id: None,
        pipeline_id: None,
        responsible_user_id: None,
    };
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..8 {
        let (router, crm, store, created) =
            (router.clone(), crm.clone(), store.clone(), created.clone());
        // Every worker sees every lead, as when a job is delivered twice.
        let mine: Vec<i64> = leads
            .iter()
            .copied()
            .cycle()
            .skip(w * 13)
            .take(100)
            .collect();
        workers.spawn(async move {
            for id in mine {
                let lead = crm.lead(&id.to_string()).await.unwrap().unwrap();
                router
                    .on_lead(&created, &lead, Some(Priority::UNSCORED), &store)
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.unwrap();
    }
    let loads = store.loads(today()).await.unwrap();
    let ivan = loads.get(&USER_IVAN.to_string()).copied().unwrap_or(0);
    let maria = loads.get(&USER_MARIA.to_string()).copied().unwrap_or(0);
    assert_eq!(ivan + maria, 100, "each lead counted once: {loads:?}");
    assert!(ivan.abs_diff(maria) <= 1, "an even day: {loads:?}");
    for lead in &leads {
        let given = responsible(&amo, *lead);
        assert!(given == USER_IVAN || given == USER_MARIA);
        assert_eq!(tasks_of(&amo, *lead).len(), 1, "lead {lead}: one task");
        let patches = amo
            .requests()
            .iter()
            .filter(|r| r.method == "PATCH" && r.path == format!("/api/v4/leads/{lead}"))
            .count();
        assert_eq!(patches, 1, "lead {lead}: its manager written once");
    }
}

/// Nobody takes a waiting lead for the group's 15 minutes: at the limit it goes to the group
/// lead, whatever their presence, with the reason in the note.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_waiting_past_the_groups_limit_goes_to_the_group_lead() {
    use std::sync::atomic::{AtomicI64, Ordering};

    let amo = AmoEmulator::start().await;
    let crm: Arc<dyn Crm> = Arc::new(amo_client(&amo).await);
    let minutes = Arc::new(AtomicI64::new(0));
    let clock = {
        let minutes = minutes.clone();
        Arc::new(move || eleven() + chrono::TimeDelta::minutes(minutes.load(Ordering::SeqCst)))
    };
    let router = Arc::new(RouteLeads::new(crm.clone(), routing_setup()).with_clock(clock));
    let robot = Robot::new(crm, Source::Amocrm, "deal", None, Some(router.clone()));
    let app = spawn_app_with(Backend::Sqlite, Arc::new(robot), |_| {}).await;
    let lead = the_lead(&amo);
    assert_eq!(
        app.post_amocrm(added(lead, 1_763_900_000)).await.status(),
        200
    );
    app.wait_for_journal(1, 20).await;
    assert_eq!(app.store.pending().await.unwrap().len(), 1);

    minutes.store(10, Ordering::SeqCst);
    let drained = router.drain(&app.store).await.unwrap();
    assert!(drained.assigned.is_empty(), "10 minutes: it still waits");
    minutes.store(15, Ordering::SeqCst);
    let drained = router.drain(&app.store).await.unwrap();
    assert_eq!(
        drained.assigned,
        [USER_IVAN.to_string()],
        "the group lead gets it"
    );
    assert_eq!(responsible(&amo, lead), USER_IVAN);
    let note = amo.notes_of(lead)[0]["params"]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        note.contains("не взяла лид за 15 мин: передан руководителю группы, Иван Петров"),
        "{note}"
    );
    assert!(app.store.pending().await.unwrap().is_empty());
    app.stop().await;
}

/// With the robot's own CRM user configured, the echo of its write is recognised by who
/// made it and the lead is not even read again; a person's change still is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_of_the_robots_own_user_is_not_read_again() {
    let amo = AmoEmulator::start().await;
    let crm: Arc<dyn Crm> = Arc::new(amo_client(&amo).await);
    let routing = RouteLeads::new(crm.clone(), routing_setup()).with_clock(Arc::new(eleven));
    let robot = Robot::new(crm, Source::Amocrm, "deal", None, Some(Arc::new(routing)))
        .with_own_user(Some("8100001".into()));
    let app = spawn_app_with(Backend::Sqlite, Arc::new(robot), |_| {}).await;
    online(&app, USER_IVAN).await;
    let lead = the_lead(&amo);
    assert_eq!(
        app.post_amocrm(added(lead, 1_763_900_000)).await.status(),
        200
    );
    app.wait_for_journal(2, 20).await;
    assert_eq!(responsible(&amo, lead), USER_IVAN);
    let reads = |amo: &AmoEmulator| {
        amo.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path == format!("/api/v4/leads/{lead}"))
            .count()
    };
    let before = reads(&amo);
    let echo = |by: i64, at: i64| {
        format!(
            "leads[update][0][id]={lead}&leads[update][0][status_id]=60456942\
             &leads[update][0][responsible_user_id]={USER_IVAN}&leads[update][0][last_modified]={at}\
             &leads[update][0][modified_user_id]={by}&account[subdomain]=robotdemo&account[id]=29876543"
        )
    };
    assert_eq!(
        app.post_amocrm(echo(8_100_001, 1_763_900_060))
            .await
            .status(),
        200
    );
    app.wait_for_journal(3, 20).await;
    assert_eq!(reads(&amo), before, "its own echo is not read");
    assert!(app.metrics().await.contains("robot_echoes_total 1"));
    assert_eq!(
        app.post_amocrm(echo(USER_MARIA, 1_763_900_120))
            .await
            .status(),
        200
    );
    app.wait_for_journal(4, 20).await;
    assert_eq!(reads(&amo), before + 1, "a person's change is read");
    app.stop().await;
}
