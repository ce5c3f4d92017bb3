//! `serve` killed with SIGKILL in the middle of 1,000 leads' chains, on Redis, and started
//! again: every step is carried out once, none twice, as the amoCRM emulator sees it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::{Backend, Robot, SECRET, lead_add};
use crate::support::amocrm::{AmoEmulator, NewLead, USER_IVAN};

const LEADS: usize = 1_000;
const STEPS: usize = 4;
const TAG: &str = "Перезапуск";

/// One chain on the tag, of notes and tasks due one after the other, on a 24×7 calendar,
/// with a short lease so that the steps in flight at the kill are looked at again soon.
fn chains_toml() -> String {
    let mut toml = format!(
        "[calendar]\ntime_zone = \"UTC\"\ndays = \"пн-вс\"\nwindow = \"00:00-23:59\"\n\n\
         [limits]\nper_client_per_day = 0\nlease = \"15s\"\n\n\
         [[chains]]\nname = \"{TAG}\"\ntrigger = {{ tag = \"{TAG}\" }}\n"
    );
    for i in 0..STEPS {
        let what = if i % 2 == 0 { "note" } else { "task" };
        toml.push_str(&format!(
            "\n[[chains.steps]]\ntitle = \"Шаг {n}\"\nafter = \"0m\"\n{what} = \"{}\"\n",
            text(i),
            n = i + 1
        ));
    }
    toml
}

fn text(step: usize) -> String {
    format!("Шаг {} цепочки «{TAG}»", step + 1)
}

/// How many times each (lead, step text) was written, as notes and tasks of the chain.
fn writes(amo: &AmoEmulator) -> HashMap<(i64, String), usize> {
    let mut out = HashMap::new();
    let notes = amo
        .notes()
        .into_iter()
        .map(|n| (n["entity_id"].clone(), n["params"]["text"].clone()));
    let tasks = amo
        .tasks()
        .into_iter()
        .map(|t| (t["entity_id"].clone(), t["text"].clone()));
    for (lead, text) in notes.chain(tasks) {
        if let (Some(lead), Value::String(text)) = (lead.as_i64(), text)
            && text.ends_with(&format!("«{TAG}»"))
        {
            *out.entry((lead, text)).or_insert(0) += 1;
        }
    }
    out
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_in_the_middle_of_a_thousand_chains_every_step_runs_once() {
    let started = Instant::now();
    let amo = AmoEmulator::start().await;
    // The test is about once and only once across a crash, not amoCRM's 7 requests a
    // second: at that pace 1,000 leads × 4 steps would take a quarter of an hour.
    amo.disable_rate_limit();
    let leads: Vec<i64> = (0..LEADS)
        .map(|i| {
            amo.seed_lead(
                NewLead::new(&format!("Заявка {i}"))
                    .responsible(USER_IVAN)
                    .tag(TAG),
            )
        })
        .collect();

    let mut robot = Robot::new(Backend::Redis);
    let config = robot.dir.path().join("config");
    copy_dir(&crate::process::repo().join("config"), &config);
    std::fs::write(config.join("chains.toml"), chains_toml()).unwrap();
    robot.env.extend([
        ("ROBOT_CONFIG_DIR".to_owned(), config.display().to_string()),
        (
            "ROBOT_AMOCRM_BASE_URL".to_owned(),
            amo.base_url().to_owned(),
        ),
        ("ROBOT_AMOCRM_TOKEN".to_owned(), amo.long_lived_token()),
        ("ROBOT_AMOCRM_RATE_PER_SECOND".to_owned(), "5000".to_owned()),
    ]);
    let mut first = robot.serve(&robot.dir.path().join("first.log"));

    // The leads' webhooks enrol them; the steps start at once.
    let client = reqwest::Client::new();
    let base = robot.base();
    let posts = leads.iter().map(|&id| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            client
                .post(format!("{base}/hooks/amocrm/{SECRET}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(lead_add(id as u64))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let statuses = futures::future::join_all(posts).await;
    assert!(statuses.iter().all(|s| s.as_u16() == 200), "{statuses:?}");

    // Killed once somewhere between a third and two thirds of the steps.
    let total = LEADS * STEPS;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done: usize = writes(&amo).len();
        if done >= total / 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {total} steps within two minutes: {}",
            std::fs::read_to_string(robot.dir.path().join("first.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let at_kill = writes(&amo).len();
    assert!(
        at_kill < total,
        "every step ran before the kill: nothing was tested"
    );

    let mut second = robot.serve(&robot.dir.path().join("second.log"));
    let store = robot.store().await;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let mut finished = 0;
        let mut behind = Vec::new();
        for &id in &leads {
            let list = store.enrolments_of(&id.to_string()).await.unwrap();
            if list.len() == 1 && list[0].enrolment.next == STEPS && list[0].due_at.is_none() {
                finished += 1;
            } else if behind.len() < 3 {
                let step = match list.first() {
                    Some(r) => store
                        .step_record(&sales_robot::service::chains::step::step_key(
                            &r.enrolment.key,
                            r.enrolment.next,
                        ))
                        .await
                        .unwrap(),
                    None => None,
                };
                behind.push(format!("lead {id}: {list:?}; its next step: {step:?}"));
            }
        }
        if finished == LEADS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the restart {finished} of {LEADS} chains finished ({at_kill} of {total} steps written at the kill); behind: {behind:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let status = crate::process::terminate(&mut second, 30);
    assert!(status.success(), "serve exits 0 on SIGTERM, got {status}");

    let counted = writes(&amo);
    let twice: Vec<_> = counted.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "written more than once: {twice:?}");
    assert_eq!(counted.len(), total, "every step of every lead, once");
    for &id in &leads {
        for step in 0..STEPS {
            assert_eq!(
                counted.get(&(id, text(step))),
                Some(&1),
                "lead {id}, step {step}"
            );
        }
    }
    eprintln!(
        "{LEADS} chains × {STEPS} steps: killed at {at_kill} of {total} steps written; all done once after the restart; {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
}
