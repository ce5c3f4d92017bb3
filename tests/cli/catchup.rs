//! `catchup --since`: after a downtime, the changes the webhooks did not bring are queued
//! once.

use crate::process::{Backend, Robot};
use crate::support::amocrm::{AmoEmulator, NewLead};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catchup_since_queues_what_no_webhook_brought_once() {
    let amo = AmoEmulator::start().await;
    let day = 1_763_000_000;
    for i in 0..5 {
        amo.seed_lead(
            NewLead::new(&format!("Заявка {i}"))
                .created_at(day + i * 3_600)
                .updated_at(day + i * 3_600),
        );
    }
    let mut robot = Robot::new(Backend::Sqlite);
    robot.env.extend([
        (
            "ROBOT_AMOCRM_BASE_URL".to_owned(),
            amo.base_url().to_owned(),
        ),
        ("ROBOT_AMOCRM_TOKEN".to_owned(), amo.long_lived_token()),
    ]);
    let (first, second, robot) = tokio::task::spawn_blocking(move || {
        let first = robot.run(&["catchup", "--since", "2025-01-01"]);
        let second = robot.run(&["catchup", "--since", "2025-01-01"]);
        (first, second, robot)
    })
    .await
    .unwrap();
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    assert!(first.status.success(), "{}", text(&first));
    assert!(
        text(&first).contains("5 leads changed since 2025-01-01; 5 events queued"),
        "{}",
        text(&first)
    );
    assert!(
        text(&second).contains("5 leads changed since 2025-01-01; 0 events queued"),
        "{}",
        text(&second)
    );
    // The account's one company (Ромашка, changed yesterday) is read too.
    assert!(
        text(&first).contains("1 companies changed, 1 events queued"),
        "{}",
        text(&first)
    );
    assert!(
        text(&second).contains("1 companies changed, 0 events queued"),
        "{}",
        text(&second)
    );
    let store = robot.store().await;
    let queue = store.queue_name("handle_event");
    assert_eq!(
        store.queue_depth(&queue).await.unwrap(),
        6,
        "five leads and a company wait for a worker"
    );
}
