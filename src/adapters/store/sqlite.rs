//! The store on an embedded SQLite file: apalis-sqlite's tables for the queue, ours beside
//! them for the state. WAL mode: a commit survives a crash of the process.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apalis_sqlite::{Config as QueueConfig, SqliteStorage};
use chrono::{DateTime, NaiveDate, Utc};
use futures::SinkExt;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::batch::{Batcher, Job, by_queue};
use super::{
    Claim, DeadLetter, Enqueued, EnrolmentRecord, JournalEntry, Pending, StepRecord, StepState,
    Stopped, StoreError, StoreSettings, Waiting,
};
use crate::domain::chains::Enrolment;
use crate::domain::event::Event;
use crate::domain::ledger::{LedgerRow, Outcome, Scored};
use crate::domain::presence::Presence;
use crate::domain::priority::Priority;
use crate::domain::rate::{Admission, Rate, admit};

/// The SQLite backend.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    settings: StoreSettings,
    batcher: Batcher,
    // One process owns an SQLite file, so rate limits can live in memory.
    rates: Arc<Mutex<HashMap<String, f64>>>,
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS robot_journal (
        dedup_key TEXT PRIMARY KEY,
        handled_at INTEGER NOT NULL,
        event TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS robot_journal_time ON robot_journal(handled_at)",
    "CREATE TABLE IF NOT EXISTS robot_presence (
        manager_id TEXT PRIMARY KEY,
        at_unix_ms INTEGER NOT NULL,
        presence TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS robot_values (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        expires_at_ms INTEGER)",
    "CREATE TABLE IF NOT EXISTS robot_dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        queue TEXT NOT NULL,
        payload TEXT NOT NULL,
        error TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        failed_at INTEGER NOT NULL)",
    // One row per lead. A lead closed before it was scored has an outcome and no score
    // yet (created_at_us and scored are NULL) until its score comes.
    "CREATE TABLE IF NOT EXISTS robot_ledger (
        lead_id TEXT PRIMARY KEY,
        created_at_us INTEGER,
        scored TEXT,
        outcome TEXT)",
    "CREATE INDEX IF NOT EXISTS robot_ledger_created ON robot_ledger(created_at_us, lead_id)",
    // Routing: leads each manager received on a day, and who got which lead that day.
    "CREATE TABLE IF NOT EXISTS robot_loads (
        day TEXT NOT NULL,
        manager_id TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (day, manager_id))",
    "CREATE TABLE IF NOT EXISTS robot_assigned (
        day TEXT NOT NULL,
        lead_id TEXT NOT NULL,
        manager_id TEXT NOT NULL,
        PRIMARY KEY (day, lead_id))",
    "CREATE TABLE IF NOT EXISTS robot_pending (
        lead_id TEXT PRIMARY KEY,
        priority INTEGER NOT NULL,
        since_us INTEGER NOT NULL)",
    // Chains: the enrolments (the progress apart from the stop, so that saving progress
    // can never undo a stop), the step records, sets and counters.
    "CREATE TABLE IF NOT EXISTS robot_chain_enrolments (
        key TEXT PRIMARY KEY,
        lead_id TEXT NOT NULL,
        next INTEGER NOT NULL,
        enrolment TEXT NOT NULL,
        due_at_us INTEGER,
        stopped TEXT)",
    "CREATE INDEX IF NOT EXISTS robot_chain_enrolments_lead ON robot_chain_enrolments(lead_id)",
    "CREATE TABLE IF NOT EXISTS robot_chain_steps (
        key TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        record TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS robot_sets (
        name TEXT NOT NULL,
        member TEXT NOT NULL,
        PRIMARY KEY (name, member))",
    "CREATE TABLE IF NOT EXISTS robot_lists (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        item TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS robot_lists_name ON robot_lists(name, seq)",
    "CREATE TABLE IF NOT EXISTS robot_counters (
        name TEXT PRIMARY KEY,
        count INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL)",
];

fn day_key(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

/// Adds `by` (1 or -1) to a manager's count of a day, never below zero.
/// Takes a lead off whoever had it that day, their count going down with it; who that was.
async fn unassign(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    day: &str,
    lead_id: &str,
) -> Result<Option<String>, StoreError> {
    let owner: Option<String> = sqlx::query_scalar(
        "DELETE FROM robot_assigned WHERE day = ?1 AND lead_id = ?2 RETURNING manager_id",
    )
    .bind(day)
    .bind(lead_id)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(owner) = &owner {
        bump(tx, day, owner, -1).await?;
    }
    Ok(owner)
}

async fn bump(
    tx: &mut sqlx::SqliteConnection,
    day: &str,
    manager_id: &str,
    by: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO robot_loads (day, manager_id, count) VALUES (?1, ?2, MAX(?3, 0))
         ON CONFLICT(day, manager_id) DO UPDATE SET count = MAX(robot_loads.count + ?3, 0)",
    )
    .bind(day)
    .bind(manager_id)
    .bind(by)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn ts(at: DateTime<Utc>) -> i64 {
    at.timestamp()
}

fn from_ts(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

impl SqliteStore {
    /// Opens (and creates) the file, the queue's tables and ours.
    pub async fn open(path: &Path, settings: StoreSettings) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Sqlite(sqlx::Error::Io(e)))?;
        }
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // In WAL mode NORMAL loses nothing when the process dies; only a power cut can
            // take the last commits, which the sender then retries.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        SqliteStorage::setup(&pool)
            .await
            .map_err(|e| StoreError::Queue(e.to_string()))?;
        for stmt in SCHEMA {
            sqlx::query(*stmt).execute(&pool).await?;
        }
        let (writer_pool, writer_settings) = (pool.clone(), settings.clone());
        let batcher = Batcher::spawn(move |jobs| {
            write_batch(writer_pool.clone(), writer_settings.clone(), jobs)
        });
        Ok(SqliteStore {
            pool,
            settings,
            batcher,
            rates: Arc::default(),
        })
    }

    pub(super) fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    /// The connection pool, shared with the queue's workers.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// apalis's settings for a queue of this store.
    pub fn queue_config(&self, queue: &str) -> QueueConfig {
        queue_config(&self.settings, queue)
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub(super) fn batcher(&self) -> &Batcher {
        &self.batcher
    }

    pub(super) async fn queue_depth(&self, queue: &str) -> Result<u64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) FROM Jobs WHERE job_type = ?1
               AND (status = 'Pending' OR (status = 'Failed' AND attempts < max_attempts))",
        )
        .bind(queue)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.get::<i64, _>(0) as u64)
    }

    pub(super) async fn waiting(&self, queue: &str) -> Result<Vec<Waiting>, StoreError> {
        let rows = sqlx::query(
            "SELECT job, run_at FROM Jobs WHERE job_type = ?1 AND status = 'Pending'
              ORDER BY run_at, rowid",
        )
        .bind(queue)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Waiting {
                payload: r.get(0),
                due: from_ts(r.get(1)),
            })
            .collect())
    }

    pub(super) async fn record_handled(
        &self,
        event: &Event,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let res = sqlx::query("INSERT INTO robot_journal (dedup_key, handled_at, event) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING")
            .bind(&event.dedup_key)
            .bind(ts(at))
            .bind(serde_json::to_string(event)?)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected() == 1)
    }

    pub(super) async fn journal(&self, limit: usize) -> Result<Vec<JournalEntry>, StoreError> {
        let rows = sqlx::query("SELECT handled_at, event FROM robot_journal ORDER BY handled_at DESC, rowid DESC LIMIT ?1")
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(JournalEntry {
                    handled_at: from_ts(r.get(0)),
                    event: serde_json::from_str(r.get::<&str, _>(1))?,
                })
            })
            .collect()
    }

    pub(super) async fn journal_len(&self) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) FROM robot_journal")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.get::<i64, _>(0) as u64)
    }

    pub(super) async fn set_presence(&self, p: &Presence) -> Result<bool, StoreError> {
        let res = sqlx::query(
            "INSERT INTO robot_presence (manager_id, at_unix_ms, presence) VALUES (?1, ?2, ?3)
             ON CONFLICT(manager_id) DO UPDATE SET at_unix_ms = excluded.at_unix_ms, presence = excluded.presence
             WHERE excluded.at_unix_ms >= robot_presence.at_unix_ms",
        )
        .bind(&p.manager_id)
        .bind(p.at.timestamp_millis())
        .bind(serde_json::to_string(p)?)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    pub(super) async fn presence(&self, manager_id: &str) -> Result<Option<Presence>, StoreError> {
        let row = sqlx::query("SELECT presence FROM robot_presence WHERE manager_id = ?1")
            .bind(manager_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(serde_json::from_str(r.get::<&str, _>(0))?),
            None => None,
        })
    }

    pub(super) async fn loads(&self, day: NaiveDate) -> Result<HashMap<String, u32>, StoreError> {
        let rows =
            sqlx::query("SELECT manager_id, count FROM robot_loads WHERE day = ?1 AND count > 0")
                .bind(day_key(day))
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1) as u32))
            .collect())
    }

    pub(super) async fn claim_lead(
        &self,
        day: NaiveDate,
        lead_id: &str,
        manager_id: &str,
        expected: u32,
    ) -> Result<Claim, StoreError> {
        let day = day_key(day);
        let mut tx = self.pool.begin().await?;
        // The write comes first, so the transaction holds the write lock from its first
        // statement: a read first would let two claimers deadlock on the upgrade.
        let inserted = sqlx::query(
            "INSERT INTO robot_assigned (day, lead_id, manager_id)
             SELECT ?1, ?2, ?3
             WHERE COALESCE((SELECT count FROM robot_loads WHERE day = ?1 AND manager_id = ?3), 0) = ?4
             ON CONFLICT(day, lead_id) DO NOTHING",
        )
        .bind(&day)
        .bind(lead_id)
        .bind(manager_id)
        .bind(i64::from(expected))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let claim = if inserted == 1 {
            bump(&mut tx, &day, manager_id, 1).await?;
            Claim::Claimed
        } else {
            let owner: Option<String> = sqlx::query_scalar(
                "SELECT manager_id FROM robot_assigned WHERE day = ?1 AND lead_id = ?2",
            )
            .bind(&day)
            .bind(lead_id)
            .fetch_optional(&mut *tx)
            .await?;
            match owner {
                Some(owner) => Claim::AlreadyAssigned(owner),
                None => {
                    let count: Option<i64> = sqlx::query_scalar(
                        "SELECT count FROM robot_loads WHERE day = ?1 AND manager_id = ?2",
                    )
                    .bind(&day)
                    .bind(manager_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    Claim::Moved {
                        count: count.unwrap_or(0) as u32,
                    }
                }
            }
        };
        tx.commit().await?;
        Ok(claim)
    }

    pub(super) async fn release_lead(
        &self,
        day: NaiveDate,
        lead_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let day = day_key(day);
        let mut tx = self.pool.begin().await?;
        let owner = unassign(&mut tx, &day, lead_id).await?;
        tx.commit().await?;
        Ok(owner)
    }

    pub(super) async fn reassign(
        &self,
        day: NaiveDate,
        lead_id: &str,
        manager_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let day = day_key(day);
        let mut tx = self.pool.begin().await?;
        let owner = unassign(&mut tx, &day, lead_id).await?;
        sqlx::query("INSERT INTO robot_assigned (day, lead_id, manager_id) VALUES (?1, ?2, ?3)")
            .bind(&day)
            .bind(lead_id)
            .bind(manager_id)
            .execute(&mut *tx)
            .await?;
        bump(&mut tx, &day, manager_id, 1).await?;
        tx.commit().await?;
        Ok(owner)
    }

    pub(super) async fn add_pending(
        &self,
        lead_id: &str,
        priority: Priority,
        since: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO robot_pending (lead_id, priority, since_us) VALUES (?1, ?2, ?3)
             ON CONFLICT(lead_id) DO UPDATE SET priority = excluded.priority",
        )
        .bind(lead_id)
        .bind(i64::from(priority.number()))
        .bind(since.timestamp_micros())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn pending(&self) -> Result<Vec<Pending>, StoreError> {
        let rows = sqlx::query("SELECT lead_id, priority, since_us FROM robot_pending")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| Pending {
                lead_id: r.get(0),
                // Only a `Priority` is ever written.
                priority: Priority::new(r.get::<i64, _>(1).clamp(1, 5) as u8)
                    .unwrap_or(Priority::FIFTH),
                since: DateTime::from_timestamp_micros(r.get(2)).unwrap_or_default(),
            })
            .collect())
    }

    pub(super) async fn remove_pending(&self, lead_id: &str) -> Result<bool, StoreError> {
        let res = sqlx::query("DELETE FROM robot_pending WHERE lead_id = ?1")
            .bind(lead_id)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected() == 1)
    }

    pub(super) async fn add_dead(
        &self,
        queue: &str,
        payload: &str,
        error: &str,
        attempts: u32,
        at: DateTime<Utc>,
    ) -> Result<String, StoreError> {
        let res = sqlx::query("INSERT INTO robot_dead_letters (queue, payload, error, attempts, failed_at) VALUES (?1, ?2, ?3, ?4, ?5)")
            .bind(queue)
            .bind(payload)
            .bind(error)
            .bind(attempts as i64)
            .bind(ts(at))
            .execute(&self.pool)
            .await?;
        Ok(res.last_insert_rowid().to_string())
    }

    pub(super) async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query("SELECT id, queue, payload, error, attempts, failed_at FROM robot_dead_letters ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(dead_letter).collect())
    }

    pub(super) async fn take_dead(&self, id: &str) -> Result<Option<DeadLetter>, StoreError> {
        let row = sqlx::query("DELETE FROM robot_dead_letters WHERE id = ?1 RETURNING id, queue, payload, error, attempts, failed_at")
            .bind(id.parse::<i64>().unwrap_or(-1))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(dead_letter))
    }

    pub(super) async fn admit(
        &self,
        bucket: &str,
        rate: Rate,
    ) -> Result<Option<Duration>, StoreError> {
        let mut rates = self
            .rates
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match admit(rate, rates.get(bucket).copied(), super::now_ms()) {
            Admission::Go { tat_ms } => {
                rates.insert(bucket.to_owned(), tat_ms);
                Ok(None)
            }
            Admission::Wait(wait) => Ok(Some(wait)),
        }
    }

    pub(super) async fn value(&self, name: &str) -> Result<Option<String>, StoreError> {
        // A value kept for a while reads as absent once its time is up, swept or not.
        Ok(sqlx::query_scalar(
            "SELECT value FROM robot_values
             WHERE name = ?1 AND (expires_at_ms IS NULL OR expires_at_ms > ?2)",
        )
        .bind(name)
        .bind(super::now_ms() as i64)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub(super) async fn set_value_for(
        &self,
        name: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let until = super::now_ms() as i64 + ttl.as_millis().max(1) as i64;
        sqlx::query(
            "INSERT INTO robot_values (name, value, expires_at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET value = excluded.value, expires_at_ms = excluded.expires_at_ms",
        )
        .bind(name)
        .bind(value)
        .bind(until)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn set_value(&self, name: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO robot_values (name, value, expires_at_ms) VALUES (?1, ?2, NULL)
             ON CONFLICT(name) DO UPDATE SET value = excluded.value, expires_at_ms = NULL",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn remove_value(&self, name: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM robot_values WHERE name = ?1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn try_lock(
        &self,
        name: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        let token = super::lock_token();
        let now = super::now_ms() as i64;
        // Taken when absent or expired; one statement, so two takers cannot both win.
        let res = sqlx::query(
            "INSERT INTO robot_values (name, value, expires_at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET value = excluded.value, expires_at_ms = excluded.expires_at_ms
             WHERE robot_values.expires_at_ms IS NOT NULL AND robot_values.expires_at_ms <= ?4",
        )
        .bind(format!("lock:{name}"))
        .bind(&token)
        .bind(now + ttl.as_millis() as i64)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok((res.rows_affected() == 1).then_some(token))
    }

    pub(super) async fn unlock(&self, name: &str, token: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM robot_values WHERE name = ?1 AND value = ?2")
            .bind(format!("lock:{name}"))
            .bind(token)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn record_score(&self, scored: &Scored) -> Result<(), StoreError> {
        // One statement: the outcome column is left as it is, whatever runs beside it.
        sqlx::query(
            "INSERT INTO robot_ledger (lead_id, created_at_us, scored) VALUES (?1, ?2, ?3)
             ON CONFLICT(lead_id) DO UPDATE SET created_at_us = excluded.created_at_us, scored = excluded.scored",
        )
        .bind(&scored.lead_id)
        .bind(scored.created_at.timestamp_micros())
        .bind(serde_json::to_string(scored)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn record_outcome(&self, outcome: &Outcome) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO robot_ledger (lead_id, outcome) VALUES (?1, ?2)
             ON CONFLICT(lead_id) DO UPDATE SET outcome = excluded.outcome",
        )
        .bind(&outcome.lead_id)
        .bind(serde_json::to_string(outcome)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn ledger(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<LedgerRow>, StoreError> {
        // Rows without a score have no created time and fall outside every range.
        let rows = sqlx::query(
            "SELECT scored, outcome FROM robot_ledger
             WHERE created_at_us >= ?1 AND created_at_us < ?2
             ORDER BY created_at_us, lead_id",
        )
        .bind(from.timestamp_micros())
        .bind(to.timestamp_micros())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LedgerRow {
                    scored: serde_json::from_str(r.get::<&str, _>(0))?,
                    outcome: match r.get::<Option<&str>, _>(1) {
                        Some(o) => Some(serde_json::from_str(o)?),
                        None => None,
                    },
                })
            })
            .collect()
    }

    pub(super) async fn sweep(
        &self,
        now: DateTime<Utc>,
        queues: &[&str],
    ) -> Result<u64, StoreError> {
        let before = ts(now) - self.settings.dedup_window.as_secs() as i64;
        // Finished jobs go once the window is past, and their dedup keys with them.
        let mut jobs = 0;
        for queue in queues {
            jobs += sqlx::query(
                "DELETE FROM Jobs WHERE job_type = ?1 AND status IN ('Done', 'Killed') AND done_at < ?2",
            )
            .bind(queue)
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        let journal = sqlx::query("DELETE FROM robot_journal WHERE handled_at < ?1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        // Values kept for a while, and locks whose holder is long gone.
        let values = sqlx::query(
            "DELETE FROM robot_values WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= ?1",
        )
        .bind(now.timestamp_millis())
        .execute(&self.pool)
        .await?;
        Ok(jobs + journal.rows_affected() + values.rows_affected())
    }
}

impl SqliteStore {
    pub(super) async fn add_enrolment(&self, e: &Enrolment) -> Result<bool, StoreError> {
        let res = sqlx::query(
            "INSERT INTO robot_chain_enrolments (key, lead_id, next, enrolment) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(key) DO NOTHING",
        )
        .bind(&e.key)
        .bind(&e.lead_id)
        .bind(e.next as i64)
        .bind(serde_json::to_string(e)?)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    pub(super) async fn enrolment(&self, key: &str) -> Result<Option<EnrolmentRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT enrolment, due_at_us, stopped FROM robot_chain_enrolments WHERE key = ?1",
        )
        .bind(key)
        .fetch_all(&self.pool)
        .await?;
        Ok(enrolment_records(&rows)?.pop())
    }

    pub(super) async fn enrolments_of(
        &self,
        lead_id: &str,
    ) -> Result<Vec<EnrolmentRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT enrolment, due_at_us, stopped FROM robot_chain_enrolments WHERE lead_id = ?1",
        )
        .bind(lead_id)
        .fetch_all(&self.pool)
        .await?;
        enrolment_records(&rows)
    }

    pub(super) async fn enrolments(&self) -> Result<Vec<EnrolmentRecord>, StoreError> {
        let rows = sqlx::query("SELECT enrolment, due_at_us, stopped FROM robot_chain_enrolments")
            .fetch_all(&self.pool)
            .await?;
        enrolment_records(&rows)
    }

    pub(super) async fn save_progress(
        &self,
        e: &Enrolment,
        due_at: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        let res = sqlx::query(
            "UPDATE robot_chain_enrolments SET next = ?2, enrolment = ?3, due_at_us = ?4
             WHERE key = ?1 AND next <= ?2",
        )
        .bind(&e.key)
        .bind(e.next as i64)
        .bind(serde_json::to_string(e)?)
        .bind(due_at.map(|d| d.timestamp_micros()))
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    pub(super) async fn stop_enrolment(
        &self,
        key: &str,
        stopped: &Stopped,
    ) -> Result<bool, StoreError> {
        let res = sqlx::query(
            "UPDATE robot_chain_enrolments SET stopped = ?2 WHERE key = ?1 AND stopped IS NULL",
        )
        .bind(key)
        .bind(serde_json::to_string(stopped)?)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    pub(super) async fn claim_step(
        &self,
        key: &str,
        record: &StepRecord,
    ) -> Result<Option<StepRecord>, StoreError> {
        let res = sqlx::query(
            "INSERT INTO robot_chain_steps (key, state, record) VALUES (?1, ?2, ?3)
             ON CONFLICT(key) DO UPDATE SET state = excluded.state, record = excluded.record
             WHERE robot_chain_steps.state = 'released'",
        )
        .bind(key)
        .bind(record.state.as_str())
        .bind(serde_json::to_string(record)?)
        .execute(&self.pool)
        .await?;
        if res.rows_affected() == 1 {
            return Ok(None);
        }
        self.step_record(key).await
    }

    pub(super) async fn settle_step(
        &self,
        key: &str,
        from: StepState,
        record: &StepRecord,
    ) -> Result<bool, StoreError> {
        let res = sqlx::query(
            "UPDATE robot_chain_steps SET state = ?3, record = ?4 WHERE key = ?1 AND state = ?2",
        )
        .bind(key)
        .bind(from.as_str())
        .bind(record.state.as_str())
        .bind(serde_json::to_string(record)?)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    pub(super) async fn step_record(&self, key: &str) -> Result<Option<StepRecord>, StoreError> {
        let record: Option<String> =
            sqlx::query_scalar("SELECT record FROM robot_chain_steps WHERE key = ?1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(match record {
            Some(r) => Some(serde_json::from_str(&r)?),
            None => None,
        })
    }

    pub(super) async fn add_member(&self, name: &str, member: &str) -> Result<bool, StoreError> {
        let res = sqlx::query(
            "INSERT INTO robot_sets (name, member) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(member)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    pub(super) async fn members(&self, name: &str) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT member FROM robot_sets WHERE name = ?1")
                .bind(name)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub(super) async fn push_capped(
        &self,
        name: &str,
        item: &str,
        keep: usize,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO robot_lists (name, item) VALUES (?1, ?2)")
            .bind(name)
            .bind(item)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM robot_lists WHERE name = ?1 AND seq NOT IN
               (SELECT seq FROM robot_lists WHERE name = ?1 ORDER BY seq DESC LIMIT ?2)",
        )
        .bind(name)
        .bind(keep as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn list(&self, name: &str) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT item FROM robot_lists WHERE name = ?1 ORDER BY seq")
                .bind(name)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub(super) async fn bump(&self, name: &str, by: i64, ttl: Duration) -> Result<i64, StoreError> {
        let now = super::now_ms() as i64;
        // One statement: an expired counter starts again from zero with a new lifetime.
        let count: i64 = sqlx::query_scalar(
            "INSERT INTO robot_counters (name, count, expires_at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET
               count = CASE WHEN robot_counters.expires_at_ms <= ?4 THEN excluded.count
                            ELSE robot_counters.count + excluded.count END,
               expires_at_ms = CASE WHEN robot_counters.expires_at_ms <= ?4
                            THEN excluded.expires_at_ms ELSE robot_counters.expires_at_ms END
             RETURNING count",
        )
        .bind(name)
        .bind(by)
        .bind(now + ttl.as_millis() as i64)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(count)
    }

    pub(super) async fn counter(&self, name: &str) -> Result<i64, StoreError> {
        let count: Option<i64> = sqlx::query_scalar(
            "SELECT count FROM robot_counters WHERE name = ?1 AND expires_at_ms > ?2",
        )
        .bind(name)
        .bind(super::now_ms() as i64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(count.unwrap_or(0))
    }
}

fn enrolment_records(rows: &[sqlx::sqlite::SqliteRow]) -> Result<Vec<EnrolmentRecord>, StoreError> {
    rows.iter()
        .map(|r| {
            Ok(EnrolmentRecord {
                enrolment: serde_json::from_str(r.get::<&str, _>(0))?,
                due_at: r
                    .get::<Option<i64>, _>(1)
                    .and_then(DateTime::from_timestamp_micros),
                stopped: match r.get::<Option<&str>, _>(2) {
                    Some(s) => Some(serde_json::from_str(s)?),
                    None => None,
                },
            })
        })
        .collect()
}

fn dead_letter(r: &sqlx::sqlite::SqliteRow) -> DeadLetter {
    DeadLetter {
        id: r.get::<i64, _>(0).to_string(),
        queue: r.get(1),
        payload: r.get(2),
        error: r.get(3),
        attempts: r.get::<i64, _>(4) as u32,
        failed_at: from_ts(r.get(5)),
    }
}

fn queue_config(settings: &StoreSettings, queue: &str) -> QueueConfig {
    QueueConfig::default()
        .queue(queue)
        .heartbeat_interval(settings.heartbeat)
        .missed_heartbeats(3)
}

/// Writes a batch of jobs in one transaction. The dedup key lives on the job row itself (a
/// unique index of apalis-sqlite), so a key and its job commit together and a second job
/// with the key is dropped by SQLite; the look-up before the write is what tells the caller
/// which jobs were duplicates.
async fn write_batch(
    pool: SqlitePool,
    settings: StoreSettings,
    jobs: Vec<Job>,
) -> Result<Vec<Enqueued>, StoreError> {
    let mut outcomes = vec![Enqueued::New; jobs.len()];
    for (queue, members) in by_queue(&jobs) {
        let keys: Vec<&str> = members.iter().map(|&i| jobs[i].key.as_str()).collect();
        let seen: Vec<String> = sqlx::query_scalar(
            "SELECT idempotency_key FROM Jobs WHERE job_type = ?1 AND idempotency_key IN (SELECT value FROM json_each(?2))",
        )
        .bind(queue)
        .bind(serde_json::to_string(&keys)?)
        .fetch_all(&pool)
        .await?;
        let mut taken: std::collections::HashSet<&str> = seen.iter().map(String::as_str).collect();
        let mut tasks = Vec::new();
        for &i in &members {
            if taken.insert(jobs[i].key.as_str()) {
                tasks.push(Ok(jobs[i].task().build()));
            } else {
                outcomes[i] = Enqueued::Duplicate;
            }
        }
        let mut storage =
            SqliteStorage::<()>::new(&pool).with_config(queue_config(&settings, queue));
        storage
            .send_all(&mut futures::stream::iter(tasks))
            .await
            .map_err(|e| StoreError::Queue(e.to_string()))?;
    }
    Ok(outcomes)
}
