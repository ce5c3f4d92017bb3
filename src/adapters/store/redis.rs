//! The store on Redis: apalis-redis for the queue, a few hashes beside it for the state.
//! Several robot processes can share it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apalis::prelude::TaskId;
use apalis_redis::Config as QueueConfig;
use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

use super::batch::{Batcher, Job, by_queue};
use super::later::{BACKLOG, CHUNK, Delayed, LaterKeys};
use super::{
    Claim, DeadLetter, Enqueued, EnrolmentRecord, JournalEntry, LOADS_KEPT_SECS, Pending,
    StepRecord, StepState, Stopped, StoreError, StoreSettings, Waiting,
};
use crate::domain::chains::Enrolment;
use crate::domain::event::Event;
use crate::domain::ledger::{LedgerRow, Outcome, Scored};
use crate::domain::presence::Presence;
use crate::domain::priority::Priority;
use crate::domain::rate::Rate;

/// The Redis backend.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    settings: StoreSettings,
    batcher: Batcher,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("namespace", &self.settings.namespace)
            .finish()
    }
}

const RECORD_HANDLED: &str = r"
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
  return 1
end
return 0";

const SET_PRESENCE: &str = r"
local current = redis.call('HGET', KEYS[2], ARGV[1])
if current and tonumber(current) > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1";

const TAKE: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then redis.call('HDEL', KEYS[1], ARGV[1]) end
return v";

/// Forgets finished jobs: apalis-redis keeps every done job's data, metadata and id forever.
const FORGET_DONE: &str = r"
local forgotten = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local meta = KEYS[3] .. ':' .. id
  local done_at = tonumber(redis.call('HGET', meta, 'done_at'))
  if done_at == nil or done_at <= tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[3] .. ':result', id)
    redis.call('DEL', meta)
    redis.call('SREM', KEYS[1], id)
    forgotten = forgotten + 1
  end
end
return forgotten";

/// The GCRA of `domain::rate::admit`, with Redis's clock, so that all replicas agree.
const ADMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = 1000 / tonumber(ARGV[1])
local tolerance = interval * (math.max(tonumber(ARGV[2]), 1) - 1)
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local ahead = tat - now
if ahead > tolerance then
  return tostring(ahead - tolerance)
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now + 1000))
return '0'";

const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

const SWEEP: &str = r"
local keys = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, k in ipairs(keys) do redis.call('HDEL', KEYS[1], k) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
return #keys";

/// The ledger's rows created in a range, read in one step so that a score or an outcome
/// written meanwhile is seen whole or not at all: the score and the outcome of each lead in
/// turn, the outcome `false` (nil) while there is none.
const LEDGER: &str = r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '(' .. ARGV[2])
local out = {}
for _, id in ipairs(ids) do
  out[#out + 1] = redis.call('HGET', KEYS[2], id)
  out[#out + 1] = redis.call('HGET', KEYS[3], id)
end
return out";

/// A claim: KEYS are the day's assignments (lead → manager) and counts (manager → n);
/// ARGV the lead, the manager, the count the decision saw and the keys' lifetime.
const CLAIM: &str = r"
local owner = redis.call('HGET', KEYS[1], ARGV[1])
if owner then return {'assigned', owner} end
local count = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
if count ~= tonumber(ARGV[3]) then return {'moved', tostring(count)} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return {'claimed', tostring(count + 1)}";

/// Takes a lead back from its manager and, when ARGV[2] names one, gives it to them
/// (a hand reassignment: no check of the counts). Returns who had it, or false.
const MOVE: &str = r"
local owner = redis.call('HGET', KEYS[1], ARGV[1])
if owner then
  redis.call('HDEL', KEYS[1], ARGV[1])
  if tonumber(redis.call('HINCRBY', KEYS[2], owner, -1)) <= 0 then
    redis.call('HDEL', KEYS[2], owner)
  end
end
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
return owner";

/// Adds a lead to the pending list (a hash of lead → `priority:since_us`), keeping the
/// time it began to wait when it is there already.
const ADD_PENDING: &str = r"
local current = redis.call('HGET', KEYS[1], ARGV[1])
local since = ARGV[3]
if current then since = string.match(current, ':(.*)$') or since end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. since)
return 1";

impl RedisStore {
    /// Connects. Timeouts are generous: redis-rs answers an error after 500 ms by default,
    /// which under load would stop apalis's workers for good.
    pub async fn open(url: &str, settings: StoreSettings) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_with_config(client, config).await?;
        let (writer_conn, writer_settings) = (conn.clone(), settings.clone());
        let backlogs = Arc::new(Backlogs::default());
        let batcher = Batcher::spawn(move |jobs| {
            write_batch(
                writer_conn.clone(),
                writer_settings.clone(),
                backlogs.clone(),
                jobs,
            )
        });
        Ok(RedisStore {
            conn,
            settings,
            batcher,
        })
    }

    pub(super) fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    /// A connection for the queue's workers.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// apalis's settings for a queue of this store; the idempotency TTL is the dedup window.
    pub fn queue_config(&self, queue: &str) -> QueueConfig {
        queue_config(&self.settings, queue)
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.settings.namespace)
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    pub(super) fn batcher(&self) -> &Batcher {
        &self.batcher
    }

    pub(super) async fn queue_depth(&self, queue: &str) -> Result<u64, StoreError> {
        let config = self.queue_config(queue);
        let mut conn = self.conn.clone();
        let (active, scheduled, later): (u64, u64, u64) = redis::pipe()
            .llen(config.active_jobs_list())
            .zcard(config.scheduled_jobs_set())
            .zcard(later_keys(&config).set())
            .query_async(&mut conn)
            .await?;
        Ok(active + scheduled + later)
    }

    pub(super) async fn waiting(&self, queue: &str) -> Result<Vec<Waiting>, StoreError> {
        let config = self.queue_config(queue);
        let mut conn = self.conn.clone();
        let mut out = Vec::new();
        for job in later_keys(&config).all(&mut conn).await? {
            if let Some(payload) = job.payload {
                out.push(Waiting {
                    due: DateTime::from_timestamp_millis(job.due_ms as i64).unwrap_or_default(),
                    payload,
                });
            }
        }
        Ok(out)
    }

    /// Hands the queue's due delayed jobs to apalis, a chunk at a time, while apalis holds
    /// fewer than [`BACKLOG`]; returns how many.
    pub(super) async fn promote_due(&self, queue: &str) -> Result<usize, StoreError> {
        let config = self.queue_config(queue);
        let keys = later_keys(&config);
        let mut conn = self.conn.clone();
        let mut moved = 0;
        loop {
            let backlog: usize = conn.zcard(config.scheduled_jobs_set()).await?;
            let room = BACKLOG.saturating_sub(backlog).min(CHUNK);
            if room == 0 {
                return Ok(moved);
            }
            let due = keys.due(&mut conn, super::now_ms() as u64, room).await?;
            let tasks: Vec<_> = due
                .iter()
                .filter_map(|job| {
                    let payload = job.payload.clone()?;
                    Some(
                        apalis::prelude::TaskBuilder::new(payload)
                            .idempotency_key(job.handover_key())
                            .task_id(TaskId::from(ulid::Ulid::generate().to_string()))
                            .build(),
                    )
                })
                .collect();
            if !tasks.is_empty() {
                apalis_redis::queries::push_tasks(&mut conn, &config, &tasks)
                    .await
                    .map_err(queue_error)?;
            }
            keys.done(&mut conn, &due).await?;
            moved += due.len();
            if due.len() < room {
                return Ok(moved);
            }
        }
    }

    pub(super) async fn record_handled(
        &self,
        event: &Event,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let set: i32 = Script::new(RECORD_HANDLED)
            .key(self.key("journal"))
            .key(self.key("journal:by_time"))
            .arg(&event.dedup_key)
            .arg(serde_json::to_string(&JournalEntry {
                handled_at: at,
                event: event.clone(),
            })?)
            .arg(at.timestamp())
            .invoke_async(&mut conn)
            .await?;
        Ok(set == 1)
    }

    pub(super) async fn journal(&self, limit: usize) -> Result<Vec<JournalEntry>, StoreError> {
        let mut conn = self.conn.clone();
        let keys: Vec<String> = conn
            .zrevrange(self.key("journal:by_time"), 0, limit as isize - 1)
            .await?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.key("journal"))
            .arg(&keys)
            .query_async(&mut conn)
            .await?;
        values
            .into_iter()
            .flatten()
            .map(|v| Ok(serde_json::from_str(&v)?))
            .collect()
    }

    pub(super) async fn journal_len(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        Ok(conn.hlen(self.key("journal")).await?)
    }

    pub(super) async fn set_presence(&self, p: &Presence) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let set: i32 = Script::new(SET_PRESENCE)
            .key(self.key("presence"))
            .key(self.key("presence:at"))
            .arg(&p.manager_id)
            .arg(p.at.timestamp_millis())
            .arg(serde_json::to_string(p)?)
            .invoke_async(&mut conn)
            .await?;
        Ok(set == 1)
    }

    pub(super) async fn presence(&self, manager_id: &str) -> Result<Option<Presence>, StoreError> {
        let mut conn = self.conn.clone();
        let v: Option<String> = conn.hget(self.key("presence"), manager_id).await?;
        Ok(match v {
            Some(v) => Some(serde_json::from_str(&v)?),
            None => None,
        })
    }

    fn day_keys(&self, day: NaiveDate) -> (String, String) {
        let day = day.format("%Y-%m-%d");
        (
            self.key(&format!("routing:{day}:assigned")),
            self.key(&format!("routing:{day}:loads")),
        )
    }

    pub(super) async fn loads(&self, day: NaiveDate) -> Result<HashMap<String, u32>, StoreError> {
        let mut conn = self.conn.clone();
        let all: HashMap<String, i64> = conn.hgetall(self.day_keys(day).1).await?;
        Ok(all
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(m, n)| (m, n as u32))
            .collect())
    }

    pub(super) async fn claim_lead(
        &self,
        day: NaiveDate,
        lead_id: &str,
        manager_id: &str,
        expected: u32,
    ) -> Result<Claim, StoreError> {
        let (assigned, loads) = self.day_keys(day);
        let mut conn = self.conn.clone();
        let (what, value): (String, String) = Script::new(CLAIM)
            .key(assigned)
            .key(loads)
            .arg(lead_id)
            .arg(manager_id)
            .arg(expected)
            .arg(LOADS_KEPT_SECS)
            .invoke_async(&mut conn)
            .await?;
        Ok(match what.as_str() {
            "claimed" => Claim::Claimed,
            "assigned" => Claim::AlreadyAssigned(value),
            _ => Claim::Moved {
                count: value.parse().unwrap_or(0),
            },
        })
    }

    async fn move_lead(
        &self,
        day: NaiveDate,
        lead_id: &str,
        to: &str,
    ) -> Result<Option<String>, StoreError> {
        let (assigned, loads) = self.day_keys(day);
        let mut conn = self.conn.clone();
        Ok(Script::new(MOVE)
            .key(assigned)
            .key(loads)
            .arg(lead_id)
            .arg(to)
            .arg(LOADS_KEPT_SECS)
            .invoke_async(&mut conn)
            .await?)
    }

    pub(super) async fn release_lead(
        &self,
        day: NaiveDate,
        lead_id: &str,
    ) -> Result<Option<String>, StoreError> {
        self.move_lead(day, lead_id, "").await
    }

    pub(super) async fn reassign(
        &self,
        day: NaiveDate,
        lead_id: &str,
        manager_id: &str,
    ) -> Result<Option<String>, StoreError> {
        self.move_lead(day, lead_id, manager_id).await
    }

    pub(super) async fn add_pending(
        &self,
        lead_id: &str,
        priority: Priority,
        since: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i32 = Script::new(ADD_PENDING)
            .key(self.key("routing:pending"))
            .arg(lead_id)
            .arg(priority.number())
            .arg(since.timestamp_micros())
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    pub(super) async fn pending(&self) -> Result<Vec<Pending>, StoreError> {
        let mut conn = self.conn.clone();
        let all: HashMap<String, String> = conn.hgetall(self.key("routing:pending")).await?;
        // Only ADD_PENDING writes the hash, so every entry parses.
        Ok(all
            .into_iter()
            .filter_map(|(lead_id, v)| {
                let (p, since) = v.split_once(':')?;
                Some(Pending {
                    lead_id,
                    priority: Priority::new(p.parse().ok()?).ok()?,
                    since: DateTime::from_timestamp_micros(since.parse().ok()?)?,
                })
            })
            .collect())
    }

    pub(super) async fn remove_pending(&self, lead_id: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let removed: i32 = conn.hdel(self.key("routing:pending"), lead_id).await?;
        Ok(removed == 1)
    }

    pub(super) async fn add_dead(
        &self,
        queue: &str,
        payload: &str,
        error: &str,
        attempts: u32,
        at: DateTime<Utc>,
    ) -> Result<String, StoreError> {
        let mut conn = self.conn.clone();
        let id: u64 = conn.incr(self.key("dead:seq"), 1).await?;
        let letter = DeadLetter {
            id: id.to_string(),
            queue: queue.to_owned(),
            payload: payload.to_owned(),
            error: error.to_owned(),
            attempts,
            failed_at: at,
        };
        let _: () = conn
            .hset(self.key("dead"), id, serde_json::to_string(&letter)?)
            .await?;
        Ok(letter.id)
    }

    pub(super) async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let mut conn = self.conn.clone();
        let all: Vec<String> = conn.hvals(self.key("dead")).await?;
        let mut letters = all
            .iter()
            .map(|v| serde_json::from_str(v))
            .collect::<Result<Vec<DeadLetter>, _>>()?;
        letters.sort_by_key(|l| l.id.parse::<u64>().unwrap_or(0));
        Ok(letters)
    }

    pub(super) async fn take_dead(&self, id: &str) -> Result<Option<DeadLetter>, StoreError> {
        let mut conn = self.conn.clone();
        let v: Option<String> = Script::new(TAKE)
            .key(self.key("dead"))
            .arg(id)
            .invoke_async(&mut conn)
            .await?;
        Ok(match v {
            Some(v) => Some(serde_json::from_str(&v)?),
            None => None,
        })
    }

    pub(super) async fn admit(
        &self,
        bucket: &str,
        rate: Rate,
    ) -> Result<Option<Duration>, StoreError> {
        let mut conn = self.conn.clone();
        let wait: String = Script::new(ADMIT)
            .key(self.key(&format!("rate:{bucket}")))
            .arg(rate.per_second)
            .arg(rate.burst)
            .invoke_async(&mut conn)
            .await?;
        let wait_ms: f64 = wait.parse().unwrap_or(0.0);
        Ok((wait_ms > 0.0).then(|| Duration::from_micros((wait_ms * 1000.0).ceil() as u64)))
    }

    pub(super) async fn value(&self, name: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn.clone();
        Ok(conn.get(self.key(&format!("value:{name}"))).await?)
    }

    pub(super) async fn set_value(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: () = conn.set(self.key(&format!("value:{name}")), value).await?;
        Ok(())
    }

    pub(super) async fn set_value_for(
        &self,
        name: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: () = redis::cmd("SET")
            .arg(self.key(&format!("value:{name}")))
            .arg(value)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    pub(super) async fn remove_value(&self, name: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i32 = conn.del(self.key(&format!("value:{name}"))).await?;
        Ok(())
    }

    pub(super) async fn try_lock(
        &self,
        name: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        let token = super::lock_token();
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(self.key(&format!("lock:{name}")))
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut conn)
            .await?;
        Ok(set.map(|_| token))
    }

    pub(super) async fn unlock(&self, name: &str, token: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i32 = Script::new(UNLOCK)
            .key(self.key(&format!("lock:{name}")))
            .arg(token)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    // The ledger: the scores and the outcomes in two hashes by lead id, so that scoring a
    // lead again can never touch its outcome, and the scored leads in a sorted set by their
    // created time in microseconds (exact in a double until the year 2255). None expires.

    pub(super) async fn record_score(&self, scored: &Scored) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: () = redis::pipe()
            .atomic()
            .hset(
                self.key("ledger:scored"),
                &scored.lead_id,
                serde_json::to_string(scored)?,
            )
            .ignore()
            .zadd(
                self.key("ledger:created"),
                &scored.lead_id,
                scored.created_at.timestamp_micros(),
            )
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    pub(super) async fn record_outcome(&self, outcome: &Outcome) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: () = conn
            .hset(
                self.key("ledger:outcome"),
                &outcome.lead_id,
                serde_json::to_string(outcome)?,
            )
            .await?;
        Ok(())
    }

    pub(super) async fn ledger(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<LedgerRow>, StoreError> {
        let mut conn = self.conn.clone();
        let found: Vec<Option<String>> = Script::new(LEDGER)
            .key(self.key("ledger:created"))
            .key(self.key("ledger:scored"))
            .key(self.key("ledger:outcome"))
            .arg(from.timestamp_micros())
            .arg(to.timestamp_micros())
            .invoke_async(&mut conn)
            .await?;
        let mut rows = Vec::with_capacity(found.len() / 2);
        for pair in found.chunks(2) {
            // Written together with its place in the sorted set, a score is always there.
            let Some(scored) = &pair[0] else { continue };
            rows.push(LedgerRow {
                scored: serde_json::from_str(scored)?,
                outcome: match pair.get(1).and_then(Option::as_ref) {
                    Some(o) => Some(serde_json::from_str(o)?),
                    None => None,
                },
            });
        }
        Ok(rows)
    }

    pub(super) async fn sweep(
        &self,
        now: DateTime<Utc>,
        queues: &[&str],
    ) -> Result<u64, StoreError> {
        // Dedup keys of the queue expire by themselves (their TTL is the window).
        let before = now.timestamp() - self.settings.dedup_window.as_secs() as i64;
        let mut conn = self.conn.clone();
        let mut n: u64 = Script::new(SWEEP)
            .key(self.key("journal"))
            .key(self.key("journal:by_time"))
            .arg(before)
            .invoke_async(&mut conn)
            .await?;
        let forget = Script::new(FORGET_DONE);
        for queue in queues {
            let config = self.queue_config(queue);
            let done = config.done_jobs_set();
            // In slices, so that Redis is never blocked for long.
            let mut cursor: u64 = 0;
            loop {
                let (next, ids): (u64, Vec<String>) = redis::cmd("SSCAN")
                    .arg(&done)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(500)
                    .query_async(&mut conn)
                    .await?;
                if !ids.is_empty() {
                    let forgotten: u64 = forget
                        .key(&done)
                        .key(config.job_data_hash())
                        .key(config.job_meta_hash())
                        .arg(before)
                        .arg(&ids)
                        .invoke_async(&mut conn)
                        .await?;
                    n += forgotten;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(n)
    }
}

/// Adds an enrolment (KEYS: progress, next, the lead's set; ARGV: key, progress, next).
const ADD_ENROLMENT: &str = r"
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[1])
return 1";

/// Saves progress unless the stored next step is ahead (KEYS: progress, next; ARGV: key,
/// progress, next).
const SAVE_PROGRESS: &str = r"
local current = redis.call('HGET', KEYS[2], ARGV[1])
if not current or tonumber(current) > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1";

/// Stops an enrolment once (KEYS: progress, stops; ARGV: key, stop).
const STOP_ENROLMENT: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
return redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])";

/// Claims a step that is absent or released (KEYS: states, records; ARGV: key, state,
/// record): nil when claimed, else the record there.
const CLAIM_STEP: &str = r"
local state = redis.call('HGET', KEYS[1], ARGV[1])
if not state or state == 'released' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
  return false
end
return redis.call('HGET', KEYS[2], ARGV[1])";

/// Settles a step standing at a state (KEYS: states, records; ARGV: key, from, to, record).
const SETTLE_STEP: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
return 1";

/// Adds to a counter, giving a new one its lifetime (KEYS: the counter; ARGV: by, ttl ms).
const BUMP: &str = r"
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return n";

/// An enrolment's progress as the hash keeps it; the stop lives in a hash of its own.
#[derive(serde::Serialize, serde::Deserialize)]
struct Progress {
    enrolment: Enrolment,
    due_at: Option<DateTime<Utc>>,
}

impl RedisStore {
    fn chain_keys(&self) -> (String, String, String) {
        (
            self.key("chains:enrolments"),
            self.key("chains:next"),
            self.key("chains:stopped"),
        )
    }

    fn by_lead(&self, lead_id: &str) -> String {
        self.key(&format!("chains:by_lead:{lead_id}"))
    }

    pub(super) async fn add_enrolment(&self, e: &Enrolment) -> Result<bool, StoreError> {
        let (progress, next, _) = self.chain_keys();
        let mut conn = self.conn.clone();
        let added: i32 = Script::new(ADD_ENROLMENT)
            .key(progress)
            .key(next)
            .key(self.by_lead(&e.lead_id))
            .arg(&e.key)
            .arg(serde_json::to_string(&Progress {
                enrolment: e.clone(),
                due_at: None,
            })?)
            .arg(e.next)
            .invoke_async(&mut conn)
            .await?;
        Ok(added == 1)
    }

    async fn enrolments_by_keys(
        &self,
        keys: &[String],
    ) -> Result<Vec<EnrolmentRecord>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let (progress, _, stops) = self.chain_keys();
        let mut conn = self.conn.clone();
        let (found, stopped): (Vec<Option<String>>, Vec<Option<String>>) = redis::pipe()
            .cmd("HMGET")
            .arg(&progress)
            .arg(keys)
            .cmd("HMGET")
            .arg(&stops)
            .arg(keys)
            .query_async(&mut conn)
            .await?;
        let mut out = Vec::with_capacity(keys.len());
        for (p, s) in found.into_iter().zip(stopped) {
            let Some(p) = p else { continue };
            let p: Progress = serde_json::from_str(&p)?;
            out.push(EnrolmentRecord {
                enrolment: p.enrolment,
                due_at: p.due_at,
                stopped: match s {
                    Some(s) => Some(serde_json::from_str(&s)?),
                    None => None,
                },
            });
        }
        Ok(out)
    }

    pub(super) async fn enrolment(&self, key: &str) -> Result<Option<EnrolmentRecord>, StoreError> {
        Ok(self.enrolments_by_keys(&[key.to_owned()]).await?.pop())
    }

    pub(super) async fn enrolments_of(
        &self,
        lead_id: &str,
    ) -> Result<Vec<EnrolmentRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let keys: Vec<String> = conn.smembers(self.by_lead(lead_id)).await?;
        self.enrolments_by_keys(&keys).await
    }

    pub(super) async fn enrolments(&self) -> Result<Vec<EnrolmentRecord>, StoreError> {
        let (progress, _, _) = self.chain_keys();
        let mut conn = self.conn.clone();
        let keys: Vec<String> = conn.hkeys(progress).await?;
        let mut out = Vec::with_capacity(keys.len());
        // In slices, so that Redis is never blocked for long by one large answer.
        for chunk in keys.chunks(1000) {
            out.extend(self.enrolments_by_keys(chunk).await?);
        }
        Ok(out)
    }

    pub(super) async fn save_progress(
        &self,
        e: &Enrolment,
        due_at: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        let (progress, next, _) = self.chain_keys();
        let mut conn = self.conn.clone();
        let saved: i32 = Script::new(SAVE_PROGRESS)
            .key(progress)
            .key(next)
            .arg(&e.key)
            .arg(serde_json::to_string(&Progress {
                enrolment: e.clone(),
                due_at,
            })?)
            .arg(e.next)
            .invoke_async(&mut conn)
            .await?;
        Ok(saved == 1)
    }

    pub(super) async fn stop_enrolment(
        &self,
        key: &str,
        stopped: &Stopped,
    ) -> Result<bool, StoreError> {
        let (progress, _, stops) = self.chain_keys();
        let mut conn = self.conn.clone();
        let done: i32 = Script::new(STOP_ENROLMENT)
            .key(progress)
            .key(stops)
            .arg(key)
            .arg(serde_json::to_string(stopped)?)
            .invoke_async(&mut conn)
            .await?;
        Ok(done == 1)
    }

    fn step_keys(&self) -> (String, String) {
        (self.key("chains:step_state"), self.key("chains:steps"))
    }

    pub(super) async fn claim_step(
        &self,
        key: &str,
        record: &StepRecord,
    ) -> Result<Option<StepRecord>, StoreError> {
        let (states, records) = self.step_keys();
        let mut conn = self.conn.clone();
        let before: Option<String> = Script::new(CLAIM_STEP)
            .key(states)
            .key(records)
            .arg(key)
            .arg(record.state.as_str())
            .arg(serde_json::to_string(record)?)
            .invoke_async(&mut conn)
            .await?;
        Ok(match before {
            Some(r) => Some(serde_json::from_str(&r)?),
            None => None,
        })
    }

    pub(super) async fn settle_step(
        &self,
        key: &str,
        from: StepState,
        record: &StepRecord,
    ) -> Result<bool, StoreError> {
        let (states, records) = self.step_keys();
        let mut conn = self.conn.clone();
        let done: i32 = Script::new(SETTLE_STEP)
            .key(states)
            .key(records)
            .arg(key)
            .arg(from.as_str())
            .arg(record.state.as_str())
            .arg(serde_json::to_string(record)?)
            .invoke_async(&mut conn)
            .await?;
        Ok(done == 1)
    }

    pub(super) async fn step_record(&self, key: &str) -> Result<Option<StepRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let r: Option<String> = conn.hget(self.step_keys().1, key).await?;
        Ok(match r {
            Some(r) => Some(serde_json::from_str(&r)?),
            None => None,
        })
    }

    pub(super) async fn add_member(&self, name: &str, member: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let added: i32 = conn.sadd(self.key(&format!("set:{name}")), member).await?;
        Ok(added == 1)
    }

    pub(super) async fn members(&self, name: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        Ok(conn.smembers(self.key(&format!("set:{name}"))).await?)
    }

    pub(super) async fn push_capped(
        &self,
        name: &str,
        item: &str,
        keep: usize,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let key = self.key(&format!("list:{name}"));
        // MULTI/EXEC: the push and the trim land together.
        let _: () = redis::pipe()
            .atomic()
            .rpush(&key, item)
            .ignore()
            .ltrim(&key, -(keep as isize), -1)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    pub(super) async fn list(&self, name: &str) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        Ok(conn
            .lrange(self.key(&format!("list:{name}")), 0, -1)
            .await?)
    }

    pub(super) async fn bump(&self, name: &str, by: i64, ttl: Duration) -> Result<i64, StoreError> {
        let mut conn = self.conn.clone();
        Ok(Script::new(BUMP)
            .key(self.key(&format!("counter:{name}")))
            .arg(by)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut conn)
            .await?)
    }

    pub(super) async fn counter(&self, name: &str) -> Result<i64, StoreError> {
        let mut conn = self.conn.clone();
        let n: Option<i64> = conn.get(self.key(&format!("counter:{name}"))).await?;
        Ok(n.unwrap_or(0))
    }
}

fn queue_config(settings: &StoreSettings, queue: &str) -> QueueConfig {
    QueueConfig::default()
        .queue(queue)
        .heartbeat_interval(settings.heartbeat)
        .missed_heartbeats(3)
        .idempotency_ttl(Some(settings.dedup_window))
        // Workers poll every 100 ms; a PUBLISH per job would cost Redis more than it saves.
        .emit_events(false)
        // apalis's task locks add nothing here (a dead worker's jobs come back through its
        // in-flight set either way, and every job is idempotent) but cost an `LREM` over the
        // whole active list per job: with 100,000 steps queued, most of Redis's time.
        .lock_tasks(false)
}

fn queue_error(e: apalis_redis::Error) -> StoreError {
    match e {
        apalis_redis::Error::Database(r) => StoreError::Redis(r),
        other => StoreError::Queue(other.to_string()),
    }
}

/// Where the queue's delayed jobs wait (see `later`).
fn later_keys(config: &QueueConfig) -> LaterKeys {
    LaterKeys::new(config.queue.as_ref(), config.idempotency_key_set())
}

/// How long the writer trusts its count of apalis's set: other robot processes add to it
/// meanwhile, at most a few thousand jobs in this time even at full speed, well inside the
/// room between [`BACKLOG`] and Lua's limit.
const BACKLOG_FRESH: Duration = Duration::from_millis(100);

/// The writer's count of the jobs in apalis's set of each queue: read from Redis at most
/// every [`BACKLOG_FRESH`], plus what the writer has put there since. It only overcounts
/// (the workers take jobs out), so a job is at worst held back for the promoter.
#[derive(Debug, Default)]
struct Backlogs(Mutex<HashMap<String, (Instant, usize)>>);

impl Backlogs {
    fn known(&self, queue: &str) -> Option<usize> {
        let map = self.0.lock().ok()?;
        let (read_at, count) = map.get(queue)?;
        (read_at.elapsed() < BACKLOG_FRESH).then_some(*count)
    }

    fn read(&self, queue: &str, count: usize) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(queue.to_owned(), (Instant::now(), count));
        }
    }

    fn added(&self, queue: &str, n: usize) {
        if let Ok(mut map) = self.0.lock()
            && let Some((_, count)) = map.get_mut(queue)
        {
            *count += n;
        }
    }
}

/// Writes a batch of jobs. apalis-redis claims each key and adds each job in one Lua script,
/// atomically; it answers only how many it added, so when that is fewer than the batch, the
/// keys say which were already taken: each holds the id of the job that claimed it.
async fn write_batch(
    mut conn: ConnectionManager,
    settings: StoreSettings,
    backlogs: Arc<Backlogs>,
    jobs: Vec<Job>,
) -> Result<Vec<Enqueued>, StoreError> {
    let mut outcomes = vec![Enqueued::New; jobs.len()];
    for (queue, all) in by_queue(&jobs) {
        let config = queue_config(&settings, queue);
        // Delayed jobs wait in a set of our own until due, and so do jobs due now while
        // apalis holds many already (see `later`).
        let backlog = match backlogs.known(queue) {
            Some(n) => n,
            None => {
                let n: usize = conn.zcard(config.scheduled_jobs_set()).await?;
                backlogs.read(queue, n);
                n
            }
        };
        let (held, members): (Vec<usize>, Vec<usize>) = all.into_iter().partition(|&i| {
            jobs[i].run_after.is_some_and(|d| !d.is_zero()) || backlog + jobs.len() > BACKLOG
        });
        if !held.is_empty() {
            let now = super::now_ms() as u64;
            let batch: Vec<Delayed<'_>> = held
                .iter()
                .map(|&i| Delayed {
                    key: &jobs[i].key,
                    payload: &jobs[i].payload,
                    due_ms: now + jobs[i].run_after.unwrap_or_default().as_millis() as u64,
                })
                .collect();
            let added = later_keys(&config)
                .add(&mut conn, settings.dedup_window.as_secs(), &batch)
                .await?;
            for (&i, outcome) in held.iter().zip(added) {
                outcomes[i] = outcome;
            }
        }
        if members.is_empty() {
            continue;
        }
        let ids: Vec<String> = members
            .iter()
            .map(|_| ulid::Ulid::generate().to_string())
            .collect();
        let tasks: Vec<_> = members
            .iter()
            .zip(&ids)
            .map(|(&i, id)| jobs[i].task().task_id(TaskId::from(id.clone())).build())
            .collect();
        let (now, later) = apalis_redis::queries::push_tasks(&mut conn, &config, &tasks)
            .await
            .map_err(queue_error)?;
        backlogs.added(queue, (now + later) as usize);
        if (now + later) as usize == tasks.len() {
            continue;
        }
        let keys: Vec<String> = members
            .iter()
            .map(|&i| format!("{}:{}", config.idempotency_key_set(), jobs[i].key))
            .collect();
        let owners: Vec<Option<String>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        for ((&i, id), owner) in members.iter().zip(&ids).zip(owners) {
            if owner.as_deref() != Some(id.as_str()) {
                outcomes[i] = Enqueued::Duplicate;
            }
        }
    }
    Ok(outcomes)
}
