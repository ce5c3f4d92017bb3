//! `sales-robot serve` (HTTP intake and a worker) and `sales-robot work` (a worker only).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::cli::context;
use crate::service::app::Application;
use crate::service::secrets::Origin;
use crate::service::worker;

/// Cancels `stop` on SIGTERM or Ctrl-C.
fn stop_on_signal(stop: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("stopping: no new requests; finishing the jobs in flight");
        stop.cancel();
    });
}

/// Starts the periodic catch-up beside the worker, when a CRM is connected.
fn start_catchup(
    ctx: &context::Context,
    jobs: &Arc<crate::service::jobs::Jobs>,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    match ctx.catchup(jobs.store(), jobs.clone())? {
        Some((catchup, every)) => {
            println!(
                "catch-up: every {}s, reading what the CRM changed",
                every.as_secs()
            );
            tokio::spawn(catchup.run(every, stop.clone()));
        }
        None => println!("catch-up: off (no CRM connected, or [catchup] every = \"0s\")"),
    }
    Ok(())
}

/// Starts the periodic look at the leads waiting for a manager, when leads are routed.
fn start_recheck(
    routing: Option<Arc<crate::service::routing::RouteLeads>>,
    store: &crate::adapters::store::Store,
    stop: &CancellationToken,
) {
    if let Some(routing) = routing {
        println!(
            "routing: waiting leads are looked at every {}s and on each presence change",
            routing.recheck().as_secs()
        );
        tokio::spawn(routing.run(store.clone(), stop.clone()));
    }
}

/// Runs the robot until SIGTERM: the HTTP intake when `http`, a worker when `worker`.
pub async fn serve(config_dir: &Path, http: bool, worker: bool) -> anyhow::Result<()> {
    let ctx = context::load(config_dir)?;
    let store = ctx.open_store().await?;
    let (settings, hook_origin) = ctx.settings(worker)?;
    let handling = ctx.handler(&store)?;
    if let Some(client) = handling.client {
        context::check_fields_in_background(client);
    }
    let (handler, crm, routing) = (handling.handler, handling.what, handling.routing);
    let (steps, chains) = (handling.steps, handling.chains);
    let stop = CancellationToken::new();
    stop_on_signal(stop.clone());
    if !http {
        let jobs = Arc::new(crate::service::jobs::Jobs::new(
            store,
            handler,
            settings.retry,
        ));
        println!(
            "sales-robot worker on {} ({})",
            ctx.storage_description(),
            jobs.queue()
        );
        println!("CRM: {crm}");
        println!("chains: {chains}");
        start_catchup(&ctx, &jobs, &stop)?;
        start_recheck(routing, jobs.store(), &stop);
        let grace = settings.shutdown_grace;
        worker::run_with_steps(jobs, steps, settings.concurrency, grace, async move {
            stop.cancelled().await
        })
        .await
        .context("the worker gave up")?;
        return Ok(());
    }
    let app = Application::build(settings, store, handler)
        .await
        .with_context(|| format!("cannot listen on {}", ctx.listen()))?
        .with_steps(steps);
    println!(
        "sales-robot listening on http://{} (storage: {})",
        app.local_addr(),
        ctx.storage_description()
    );
    match hook_origin {
        Origin::Generated => println!(
            "hook secret: generated now and kept in {}",
            ctx.data_dir().join("hook_secret").display()
        ),
        Origin::DataDir => println!(
            "hook secret: from {}",
            ctx.data_dir().join("hook_secret").display()
        ),
        Origin::Environment => println!("hook secret: from ROBOT_HOOK_SECRET"),
    }
    println!("CRM: {crm}");
    println!("chains: {chains}");
    if worker {
        start_catchup(&ctx, &app.jobs(), &stop)?;
        start_recheck(routing, app.jobs().store(), &stop);
    }
    println!("Paste these webhook URLs:");
    for (who, url) in app.webhook_urls() {
        println!("  {who:<9} {url}");
    }
    println!(
        "  presence token: {}",
        if std::env::var_os("ROBOT_PRESENCE_TOKEN").is_some() {
            "from ROBOT_PRESENCE_TOKEN".to_owned()
        } else {
            format!("in {}", ctx.data_dir().join("presence_token").display())
        }
    );
    app.run(stop).await?;
    println!("sales-robot stopped");
    Ok(())
}
