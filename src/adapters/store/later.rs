//! Jobs on Redis kept out of apalis until it can take them.
//!
//! apalis-redis 1.0 puts every job, due now or later, in one sorted set, and its fetch
//! script moves all the due ones to the active list in a single Lua `unpack`: past about
//! 8,000 due at once (a morning's chain steps that waited for the send window, a bulk
//! import's webhooks while the workers are busy, the steps of a long downtime) Redis
//! answers "too many results to unpack", the worker stops, and that queue never runs
//! again. So a delayed job waits here instead, in a sorted set of our own (`<queue>:later`,
//! member = the job's dedup key, score = when it is due in ms) with its payload in a hash
//! beside it, and so does a job due now while apalis's set holds [`BACKLOG`] already; the
//! workers' promoter hands due jobs over in chunks while apalis's set has room.
//!
//! Nothing is lost between the two: a job leaves the set only after apalis has it, and the
//! handing over is keyed (`<key>@<due>`), so a promoter that dies half way, or two
//! promoters at once, hand a job over once.

use std::sync::LazyLock;

use redis::Script;
use redis::aio::ConnectionManager;

use super::{Enqueued, StoreError};

/// The most jobs handed to apalis in one go.
pub(super) const CHUNK: usize = 500;
/// The most jobs apalis's set may hold before new ones wait here: a quarter of Lua's unpack
/// limit, so that several robot processes writing at once stay well under it.
pub(super) const BACKLOG: usize = 2_000;

/// Claims each job's dedup key (apalis's own key set, so that a key is one key whatever
/// the delay) and adds the job to the set. KEYS: the set, the payload hash, the dedup
/// prefix. ARGV: the TTL, then (key, payload, due ms) triples. Returns 1/0 per job.
const ADD_LUA: &str = r"
local out = {}
for i = 2, #ARGV, 3 do
  local key = ARGV[i]
  if redis.call('SET', KEYS[3] .. ':' .. key, 'later', 'NX', 'EX', ARGV[1]) then
    redis.call('ZADD', KEYS[1], ARGV[i + 2], key)
    redis.call('HSET', KEYS[2], key, ARGV[i + 1])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out";

/// [`ADD_LUA`], hashed once: it runs for every batch of webhooks.
static ADD: LazyLock<Script> = LazyLock::new(|| Script::new(ADD_LUA));

/// The due jobs, oldest first. KEYS: the set, the payload hash. ARGV: now in ms, the most.
/// Returns (key, due, payload) triples; a job whose payload went missing has payload false.
const DUE: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
local out = {}
for i = 1, #due, 2 do
  out[#out + 1] = due[i]
  out[#out + 1] = due[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], due[i]) or false
end
return out";

/// Forgets jobs handed over, unless one was planned again meanwhile (its due changed).
/// KEYS: the set, the payload hash. ARGV: (key, due) pairs.
const DONE: &str = r"
local n = 0
for i = 1, #ARGV, 2 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[i + 1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
    n = n + 1
  end
end
return n";

/// A delayed job to add.
pub(super) struct Delayed<'a> {
    pub key: &'a str,
    pub payload: &'a [u8],
    pub due_ms: u64,
}

/// A due job taken from the set.
pub(super) struct Due {
    pub key: String,
    pub due_ms: u64,
    pub payload: Option<Vec<u8>>,
}

impl Due {
    /// The key under which the job is handed to apalis: once per plan.
    pub fn handover_key(&self) -> String {
        format!("{}@{}", self.key, self.due_ms)
    }
}

/// The keys of a queue's delayed jobs.
pub(super) struct LaterKeys {
    set: String,
    payloads: String,
    dedup: String,
}

impl LaterKeys {
    /// For `queue`, whose dedup keys live under `dedup` (apalis's idempotency key set).
    pub fn new(queue: &str, dedup: String) -> LaterKeys {
        LaterKeys {
            set: format!("{queue}:later"),
            payloads: format!("{queue}:later:payload"),
            dedup,
        }
    }

    /// The sorted set, for counting.
    pub fn set(&self) -> &str {
        &self.set
    }

    /// Adds delayed jobs; says for each whether it is new or its key was taken.
    pub async fn add(
        &self,
        conn: &mut ConnectionManager,
        ttl_secs: u64,
        jobs: &[Delayed<'_>],
    ) -> Result<Vec<Enqueued>, StoreError> {
        let mut call = ADD.key(&self.set);
        call.key(&self.payloads)
            .key(&self.dedup)
            .arg(ttl_secs.max(1));
        for job in jobs {
            call.arg(job.key).arg(job.payload).arg(job.due_ms);
        }
        let added: Vec<i64> = call.invoke_async(conn).await?;
        Ok(added
            .into_iter()
            .map(|a| {
                if a == 1 {
                    Enqueued::New
                } else {
                    Enqueued::Duplicate
                }
            })
            .collect())
    }

    /// At most `limit` jobs due by `now_ms`, oldest first.
    pub async fn due(
        &self,
        conn: &mut ConnectionManager,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<Due>, StoreError> {
        let raw: Vec<redis::Value> = Script::new(DUE)
            .key(&self.set)
            .key(&self.payloads)
            .arg(now_ms)
            .arg(limit)
            .invoke_async(conn)
            .await?;
        let mut out = Vec::with_capacity(raw.len() / 3);
        for triple in raw.chunks_exact(3) {
            let key: String = parse(&triple[0])?;
            let due: f64 = parse(&triple[1])?;
            let payload: Option<Vec<u8>> = parse(&triple[2])?;
            out.push(Due {
                key,
                due_ms: due as u64,
                payload,
            });
        }
        Ok(out)
    }

    /// Every job waiting here, the soonest first.
    pub async fn all(&self, conn: &mut ConnectionManager) -> Result<Vec<Due>, StoreError> {
        self.due(conn, u64::MAX, i64::MAX as usize).await
    }

    /// Forgets the jobs handed over.
    pub async fn done(&self, conn: &mut ConnectionManager, jobs: &[Due]) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let script = Script::new(DONE);
        let mut call = script.key(&self.set);
        call.key(&self.payloads);
        for job in jobs {
            call.arg(&job.key).arg(job.due_ms);
        }
        let _: i64 = call.invoke_async(conn).await?;
        Ok(())
    }
}

fn parse<T: redis::FromRedisValue>(value: &redis::Value) -> Result<T, StoreError> {
    Ok(redis::from_redis_value_ref(value).map_err(redis::RedisError::from)?)
}
