//! The catch-up round: read through the CRM the leads, then the companies, then the tasks
//! changed since their watermarks, and queue the events no webhook brought, oldest first.
//! Each watermark moves only past records whose events are durably queued, so a crash in
//! the middle repeats part of a round (the dedup keys and the idempotent handlers absorb it)
//! and loses nothing.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::adapters::crm::{Crm, CrmError, LeadFilter};
use crate::adapters::store::{Enqueued, Store, StoreError};
use crate::domain::catchup::{
    Known, attribute_manager_change, missed, missed_company, missed_task, unheard, unheard_edit,
};
use crate::domain::echo::is_own_echo;
use crate::domain::event::{Event, EventKind, Source};
use crate::domain::lead::{Company, Lead};
use crate::service::jobs::Jobs;
use crate::service::routing::{handed_by_robot, read_before_hand_over};

/// The counter of events found by catch-up that no webhook had brought.
pub const EVENTS_FOUND: &str = "robot_catchup_events_total";
/// How far behind now the watermark is, in seconds.
pub const WATERMARK_LAG: &str = "robot_catchup_watermark_lag_seconds";

const WATERMARK: &str = "catchup:watermark";
const COMPANIES_WATERMARK: &str = "catchup:watermark:companies";
const TASKS_WATERMARK: &str = "catchup:watermark:tasks";
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
    /// Events about leads queued that no webhook had queued before.
    pub found: usize,
    /// The leads' watermark after the round, Unix seconds.
    pub watermark: i64,
    /// Companies the CRM listed as changed.
    pub companies: usize,
    /// Events about companies queued that no webhook had queued before.
    pub found_companies: usize,
    /// Tasks the CRM listed as changed.
    pub tasks: usize,
    /// Events about tasks queued that no webhook had queued before.
    pub found_tasks: usize,
    /// Changes the robot made itself, not queued.
    pub echoes: usize,
}

/// The catch-up of one CRM account.
pub struct CatchUp {
    crm: Arc<dyn Crm>,
    jobs: Arc<Jobs>,
    source: Source,
    account: String,
    crm_entity: Option<String>,
    overlap: Duration,
    own_user: Option<String>,
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

/// Where the robot keeps when it last saw a company changed.
fn known_company_key(source: Source, id: &str) -> String {
    format!("known:{source}:company:{id}")
}

/// Where the robot keeps when it last saw a task changed.
fn known_task_key(source: Source, id: &str) -> String {
    format!("known:{source}:task:{id}")
}

/// Notes that the robot has seen a company as it is now, so that catch-up does not bring
/// the same change again.
pub async fn remember_company(
    store: &Store,
    source: Source,
    company: &Company,
) -> Result<(), StoreError> {
    store
        .set_value(
            &known_company_key(source, &company.id),
            &company.updated_at.to_string(),
        )
        .await
}

async fn stored_time(store: &Store, key: &str) -> Result<Option<i64>, StoreError> {
    Ok(store.value(key).await?.and_then(|v| v.parse::<i64>().ok()))
}

async fn watermark_or(store: &Store, key: &str, or: i64) -> Result<i64, StoreError> {
    Ok(stored_time(store, key).await?.unwrap_or(or))
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
            own_user: None,
        }
    }

    /// The CRM user the robot writes as (`crm.robot_user_id`): changes it made itself are
    /// its own echoes, noted as known and not queued.
    pub fn with_own_user(mut self, id: Option<String>) -> CatchUp {
        self.own_user = id.filter(|id| !id.trim().is_empty());
        self
    }

    /// Sets the watermark: the next round reads changes from `at` on.
    pub async fn start_from(&self, at: DateTime<Utc>) -> Result<(), StoreError> {
        let at = at.timestamp().to_string();
        for key in [WATERMARK, COMPANIES_WATERMARK, TASKS_WATERMARK] {
            self.jobs.store().set_value(key, &at).await?;
        }
        Ok(())
    }

    /// One round. The first round ever only sets the watermark to `now`: the robot does
    /// not replay an account's whole past unless told where to start.
    pub async fn round(&self, now: DateTime<Utc>) -> Result<Round, CatchUpError> {
        let store = self.jobs.store();
        let Some(mut watermark) = stored_time(store, WATERMARK).await? else {
            self.start_from(now).await?;
            return Ok(Round {
                watermark: now.timestamp(),
                ..Round::default()
            });
        };
        // A store from before companies and tasks were read starts them at the leads' mark.
        let started = watermark;
        let mut leads = self
            .crm
            .leads(&LeadFilter {
                updated_from: Some(self.back(watermark)),
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
            let mut events = missed(
                self.source,
                &self.account,
                self.crm_entity.as_deref(),
                lead,
                known.as_ref(),
            );
            let read = match (&known, events.is_empty()) {
                (Some(_), false) => read_before_hand_over(store, &lead.id).await?,
                _ => None,
            };
            if unheard(known.as_ref(), read.as_ref(), self.own_user.as_deref()) {
                // Its key is the edit's own: the edit `missed` found is the same event.
                events.retain(|e| !matches!(e.kind, EventKind::LeadUpdated { .. }));
                events.push(unheard_edit(
                    self.source,
                    &self.account,
                    self.crm_entity.as_deref(),
                    lead,
                ));
            }
            for mut event in events {
                if matches!(event.kind, EventKind::LeadResponsibleChanged { .. }) {
                    let handed = handed_by_robot(store, &lead.id).await?;
                    attribute_manager_change(&mut event, handed.as_deref());
                }
                round.found += usize::from(self.enqueue(&event, &mut round).await?);
            }
            remember(store, self.source, lead).await?;
            if lead.updated_at > watermark {
                watermark = lead.updated_at;
                store.set_value(WATERMARK, &watermark.to_string()).await?;
            }
        }
        self.lag("leads", now, watermark);

        let mark = watermark_or(store, COMPANIES_WATERMARK, started).await?;
        let mut companies = self.crm.companies_changed(self.back(mark)).await?;
        companies.sort_by_key(|c| (c.updated_at, c.id.clone()));
        round.companies = companies.len();
        let mut mark_now = mark;
        for company in &companies {
            let key = known_company_key(self.source, &company.id);
            let known = stored_time(store, &key).await?;
            if let Some(event) = missed_company(self.source, &self.account, company, known) {
                round.found_companies += usize::from(self.enqueue(&event, &mut round).await?);
            }
            remember_company(store, self.source, company).await?;
            mark_now = self
                .advance(COMPANIES_WATERMARK, mark_now, company.updated_at)
                .await?;
        }
        self.lag("companies", now, mark_now);

        let mark = watermark_or(store, TASKS_WATERMARK, started).await?;
        let mut tasks = self.crm.tasks_changed(self.back(mark)).await?;
        tasks.sort_by_key(|t| (t.updated_at, t.id.clone()));
        round.tasks = tasks.len();
        let mut mark_now = mark;
        for task in &tasks {
            let key = known_task_key(self.source, &task.id);
            let known = stored_time(store, &key).await?;
            if let Some(event) = missed_task(self.source, &self.account, task, known) {
                round.found_tasks += usize::from(self.enqueue(&event, &mut round).await?);
            }
            store.set_value(&key, &task.updated_at.to_string()).await?;
            mark_now = self
                .advance(TASKS_WATERMARK, mark_now, task.updated_at)
                .await?;
        }
        self.lag("tasks", now, mark_now);
        round.watermark = watermark;
        Ok(round)
    }

    /// Queues one event; true when no webhook had queued it before. The robot's own echo
    /// is not queued: nothing is to be decided on it.
    async fn enqueue(&self, event: &Event, round: &mut Round) -> Result<bool, StoreError> {
        if is_own_echo(event, self.own_user.as_deref()) {
            round.echoes += 1;
            return Ok(false);
        }
        let new = self.jobs.enqueue(event).await? == Enqueued::New;
        if new {
            ::metrics::counter!(EVENTS_FOUND, "kind" => event.kind.name()).increment(1);
        }
        Ok(new)
    }

    /// Where a read from the watermark `mark` starts: `overlap` before it.
    fn back(&self, mark: i64) -> i64 {
        mark - self.overlap.as_secs() as i64
    }

    /// Moves the watermark `key` from `mark` to `to` when that is later.
    async fn advance(&self, key: &str, mark: i64, to: i64) -> Result<i64, StoreError> {
        if to <= mark {
            return Ok(mark);
        }
        self.jobs.store().set_value(key, &to.to_string()).await?;
        Ok(to)
    }

    fn lag(&self, entity: &'static str, now: DateTime<Utc>, mark: i64) {
        ::metrics::gauge!(WATERMARK_LAG, "entity" => entity)
            .set((now.timestamp() - mark).max(0) as f64);
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
                            companies = r.companies,
                            found_companies = r.found_companies,
                            tasks = r.tasks,
                            found_tasks = r.found_tasks,
                            echoes = r.echoes,
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
