//! The catch-up round: read through the CRM what changed since the watermark, and queue
//! the events no webhook brought, oldest first. The watermark moves only past leads whose
//! events are durably queued, so a crash in the middle repeats part of a round (the dedup
//! keys and the idempotent handlers absorb it) and loses nothing.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::adapters::crm::{Crm, CrmError, LeadFilter};
use crate::adapters::store::{Enqueued, Store, StoreError};
use crate::domain::catchup::{Known, missed};
use crate::domain::event::Source;
use crate::domain::lead::Lead;
use crate::service::jobs::Jobs;

/// The counter of events found by catch-up that no webhook had brought.
pub const EVENTS_FOUND: &str = "robot_catchup_events_total";
/// How far behind now the watermark is, in seconds.
pub const WATERMARK_LAG: &str = "robot_catchup_watermark_lag_seconds";

const WATERMARK: &str = "catchup:watermark";
const LOCK: &str = "catchup:lock";

/// Why a round failed (it is tried again at the next one).
#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    /// The CRM.
    #[error(transparent)]
    Crm(#[from] CrmError),
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Round {
    /// Leads the CRM listed as changed.
    pub leads: usize,
    /// Events queued that no webhook had queued before.
    pub found: usize,
    /// The watermark after the round, Unix seconds.
    pub watermark: i64,
}

/// The catch-up of one CRM account.
pub struct CatchUp {
    crm: Arc<dyn Crm>,
    jobs: Arc<Jobs>,
    source: Source,
    account: String,
    crm_entity: Option<String>,
    overlap: Duration,
}

/// Where the robot keeps what it last knew of a lead.
pub fn known_key(source: Source, lead_id: &str) -> String {
    format!("known:{source}:{lead_id}")
}

/// Notes what the robot now knows of a lead, so that catch-up does not bring its changes
/// again.
pub async fn remember(store: &Store, source: Source, lead: &Lead) -> Result<(), StoreError> {
    let known = serde_json::to_string(&Known::of(lead))?;
    store.set_value(&known_key(source, &lead.id), &known).await
}

impl CatchUp {
    /// Catch-up of `crm`'s leads into `jobs`' queue, with events as the CRM's webhooks
    /// would bring them (`account`, and `crm_entity` for Bitrix24); each round re-reads
    /// `overlap` before the watermark, for changes made in the same second as the last
    /// one seen.
    pub fn new(
        crm: Arc<dyn Crm>,
        jobs: Arc<Jobs>,
        source: Source,
        account: &str,
        crm_entity: Option<&str>,
        overlap: Duration,
    ) -> CatchUp {
        CatchUp {
            crm,
            jobs,
            source,
            account: account.to_owned(),
            crm_entity: crm_entity.map(str::to_owned),
            overlap,
        }
    }

    /// Sets the watermark: the next round reads changes from `at` on.
    pub async fn start_from(&self, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.jobs
            .store()
            .set_value(WATERMARK, &at.timestamp().to_string())
            .await
    }

    /// One round. The first round ever only sets the watermark to `now`: the robot does
    /// not replay an account's whole past unless told where to start.
    pub async fn round(&self, now: DateTime<Utc>) -> Result<Round, CatchUpError> {
        let store = self.jobs.store();
        let Some(mut watermark) = store
            .value(WATERMARK)
            .await?
            .and_then(|v| v.parse::<i64>().ok())
        else {
            self.start_from(now).await?;
            return Ok(Round {
                watermark: now.timestamp(),
                ..Round::default()
            });
        };
        let from = watermark - self.overlap.as_secs() as i64;
        let mut leads = self
            .crm
            .leads(&LeadFilter {
                updated_from: Some(from),
                ..LeadFilter::default()
            })
            .await?;
        leads.sort_by_key(|l| (l.updated_at, l.id.clone()));
        let mut round = Round {
            leads: leads.len(),
            ..Round::default()
        };
        for lead in &leads {
            let key = known_key(self.source, &lead.id);
            let known: Option<Known> = store
                .value(&key)
                .await?
                .and_then(|v| serde_json::from_str(&v).ok());
            for event in missed(
                self.source,
                &self.account,
                self.crm_entity.as_deref(),
                lead,
                known.as_ref(),
            ) {
                if self.jobs.enqueue(&event).await? == Enqueued::New {
                    round.found += 1;
                    ::metrics::counter!(EVENTS_FOUND, "kind" => event.kind.name()).increment(1);
                }
            }
            remember(store, self.source, lead).await?;
            if lead.updated_at > watermark {
                watermark = lead.updated_at;
                store.set_value(WATERMARK, &watermark.to_string()).await?;
            }
        }
        round.watermark = watermark;
        ::metrics::gauge!(WATERMARK_LAG).set((now.timestamp() - watermark).max(0) as f64);
        Ok(round)
    }

    /// Runs a round every `every` until `stop`, one replica at a time (a lock in the store).
    pub async fn run(self, every: Duration, stop: CancellationToken) {
        loop {
            let store = self.jobs.store().clone();
            match store
                .try_lock(LOCK, every.max(Duration::from_secs(60)))
                .await
            {
                Ok(Some(token)) => {
                    match self.round(Utc::now()).await {
                        Ok(r) => tracing::info!(
                            leads = r.leads,
                            found = r.found,
                            watermark = r.watermark,
                            "catch-up round"
                        ),
                        Err(e) => tracing::warn!("catch-up round failed, tried again later: {e}"),
                    }
                    if let Err(e) = store.unlock(LOCK, &token).await {
                        tracing::warn!("catch-up lock not released: {e}");
                    }
                }
                Ok(None) => tracing::debug!("another replica runs the catch-up"),
                Err(e) => tracing::warn!("catch-up skipped, the store failed: {e}"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}
