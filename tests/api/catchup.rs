//! Catch-up: leads whose webhooks were lost are found by reading the CRM, scored once, and
//! the robot's own writes do not make it write again.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sales_robot::domain::event::Source;
use sales_robot::service::catchup::CatchUp;
use sales_robot::service::scoring::ScoreLeads;

use crate::helpers::{Backend, eventually, spawn_app_with};
use crate::scoring::{added, amo_client, setup, writes};
use crate::support::amocrm::{AmoEmulator, NewLead};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leads_whose_webhooks_were_lost_are_found_and_scored_once() {
    let amo = AmoEmulator::start().await;
    let crm = Arc::new(amo_client(&amo).await);
    let handler = Arc::new(ScoreLeads::new(
        crm.clone(),
        setup(),
        Source::Amocrm,
        "deal",
    ));
    let app = spawn_app_with(Backend::Sqlite, handler, |_| {}).await;
    let catchup = CatchUp::new(
        crm.clone(),
        app.jobs.clone(),
        Source::Amocrm,
        "robotdemo",
        None,
        Duration::from_secs(60),
    );
    let stopped_at = Utc::now() - chrono::Duration::hours(3);
    catchup.start_from(stopped_at).await.unwrap();

    // While the robot was down: 20 leads, their webhooks lost; one lead older than the
    // watermark, already handled before the stop.
    let t0 = stopped_at.timestamp();
    for i in 0..20 {
        amo.seed_lead(
            NewLead::new(&format!("Заявка {i}"))
                .price(100_000)
                .created_at(t0 + 60 * (i + 1))
                .updated_at(t0 + 60 * (i + 1)),
        );
    }
    amo.seed_lead(
        NewLead::new("Старая")
            .created_at(t0 - 86_400)
            .updated_at(t0 - 86_400),
    );

    let round = catchup.round(Utc::now()).await.unwrap();
    assert_eq!((round.leads, round.found), (20, 20), "{round:?}");
    app.wait_for_journal(20, 30).await;
    assert_eq!(writes(&amo), 20, "each found lead scored and written once");
    let metrics = app.metrics().await;
    assert!(metrics.contains("robot_catchup_events_total"), "{metrics}");

    // The next rounds see the robot's own writes: handled, nothing written again.
    for _ in 0..3 {
        catchup.round(Utc::now()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(writes(&amo), 20, "echoes write nothing");
    assert_eq!(
        catchup.round(Utc::now()).await.unwrap().found,
        0,
        "nothing left to find"
    );

    // A lead whose webhook does come: catch-up after it finds nothing new of it.
    let lead = amo.seed_lead(NewLead::new("С вебхуком").price(50_000));
    let shown = amo.lead(lead).unwrap();
    let modified = shown["updated_at"].as_i64().unwrap();
    assert_eq!(app.post_amocrm(added(lead, modified)).await.status(), 200);
    eventually(20, || {
        let n = writes(&amo);
        async move { n == 21 }
    })
    .await
    .expect("the webhook's lead is scored");
    catchup.round(Utc::now()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        writes(&amo),
        21,
        "the change seen by both doors is handled once"
    );
    app.stop().await;
}
