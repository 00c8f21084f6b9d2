//! The connection to Redis (one server or a cluster): its own small tokio
//! runtime, a multiplexed connection for commands and one for the change
//! stream's blocking reads, a deadline on every call, and a short fast-fail
//! window after Redis was found unreachable.

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Script, Value};

use crate::store::{StoreError, timed};

/// How long a command may take before the call fails as `Unavailable`.
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long calls fail fast after Redis was found unreachable.
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// The follower's reads block up to their `wait`; its connection must wait longer.
const FOLLOW_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// One connection to Redis or to a Redis Cluster, multiplexed and
/// reconnecting; cheap to clone.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A connected client, blocking: every call runs on the client's runtime
/// and waits for its answer (callers are on the blocking pool).
pub(super) struct Client {
    /// Drives the client's connections; shut down without blocking on drop.
    runtime: Option<tokio::runtime::Runtime>,
    /// Where the calls run (the change stream's reads too).
    pub(super) handle: tokio::runtime::Handle,
    /// Every command but the change stream's.
    conn: Conn,
    /// `XREAD BLOCK` only: a blocking read would stall the multiplexed connection.
    pub(super) follow_conn: Conn,
    /// What the operator gave (`redis://…`), for messages.
    address: String,
    /// Until when calls fail at once after Redis was found unreachable: the
    /// edge answers degraded in microseconds instead of each request waiting
    /// for the client's reconnect attempts. One call after it probes again.
    away_until: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Drop for Client {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which tokio forbids inside another runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Client {
    /// Connects to `redis://HOST:PORT` (or `rediss://`) or to a cluster,
    /// `redis+cluster://H1:P1,H2:P2,…`.
    pub(super) fn connect(address: &str) -> anyhow::Result<Client> {
        use anyhow::Context;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("edgerec-redis")
            .enable_all()
            .build()
            .context("cannot start the Redis client's runtime")?;
        let handle = runtime.handle().clone();
        let spec = address.to_string();
        // Spawned and waited for, not `block_on`: `serve` opens the store
        // from inside its own runtime, where blocking on another is refused.
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        handle.spawn(async move {
            let connected = tokio::time::timeout(CONNECT_TIMEOUT * 3, connect_pair(&spec)).await;
            let _ = sender.send(connected);
        });
        let (conn, follow_conn) = receiver
            .recv()
            .map_err(|_| anyhow::anyhow!("the Redis client's runtime stopped"))?
            .map_err(|_| anyhow::anyhow!("no answer within {:?}", CONNECT_TIMEOUT * 3))
            .and_then(|r| r)
            .with_context(|| {
                format!("cannot reach Redis at {address}; start it (redis-server) or fix --store / EDGEREC_SERVE_STORE")
            })?;
        Ok(Client {
            runtime: Some(runtime),
            handle,
            conn,
            follow_conn,
            address: address.to_string(),
            away_until: std::sync::Mutex::default(),
        })
    }

    /// Runs `work` on the client's runtime and waits for it, at most
    /// [`COMMAND_TIMEOUT`].
    pub(super) fn block<T, F>(&self, op: &'static str, work: impl FnOnce(Conn) -> F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let away_until = *self.away_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if away_until.is_some_and(|until| std::time::Instant::now() < until) {
            return Err(StoreError::Unavailable(format!("{} did not answer moments ago", self.address)));
        }
        let result = timed(op, || {
            let future = work(self.conn.clone());
            let (sender, receiver) = std::sync::mpsc::sync_channel(1);
            self.handle.spawn(async move {
                let result = match tokio::time::timeout(COMMAND_TIMEOUT, future).await {
                    Ok(result) => result,
                    Err(_) => Err(StoreError::Unavailable(format!("no answer within {COMMAND_TIMEOUT:?}"))),
                };
                let _ = sender.send(result);
            });
            receiver.recv().map_err(|_| StoreError::Unavailable("the Redis client stopped".into()))?
        });
        let mut until = self.away_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *until = match &result {
            Err(error) if error.is_unavailable() => Some(std::time::Instant::now() + PROBE_EVERY),
            _ => None,
        };
        result
    }

    /// Runs one of [`Scripts`] with these keys and arguments.
    pub(super) fn run_script<T>(
        &self,
        op: &'static str,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Vec<u8>>,
    ) -> Result<T, StoreError>
    where
        T: redis::FromRedisValue + Send + 'static,
    {
        let script = script.clone();
        self.block(op, move |mut conn| async move {
            let mut call = script.prepare_invoke();
            for key in &keys {
                call.key(key);
            }
            for arg in &args {
                call.arg(arg.as_slice());
            }
            Ok(call.invoke_async(&mut conn).await?)
        })
    }

    /// Logs a warning when Redis would lose acknowledged writes on a crash.
    pub(super) fn warn_unless_durable(&self) {
        let Conn::Single(_) = self.conn else { return };
        let config = self.block("config", |mut conn| async move {
            let values: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("append*").query_async(&mut conn).await?;
            Ok(values)
        });
        let Ok(values) = config else { return };
        let get = |name: &str| {
            values.chunks(2).find_map(|pair| match pair {
                [key, value] if key == name => Some(value.clone()),
                _ => None,
            })
        };
        if get("appendonly").as_deref() != Some("yes") || get("appendfsync").as_deref() != Some("always") {
            tracing::warn!(
                store = %self.address,
                appendonly = ?get("appendonly"),
                appendfsync = ?get("appendfsync"),
                "Redis may lose acknowledged events on a crash: run it with `appendonly yes` and `appendfsync always`"
            );
        }
    }
}

async fn connect_pair(address: &str) -> anyhow::Result<(Conn, Conn)> {
    if let Some(nodes) = address.strip_prefix("redis+cluster://") {
        let nodes: Vec<String> = nodes.split(',').filter(|n| !n.is_empty()).map(|n| format!("redis://{n}")).collect();
        anyhow::ensure!(!nodes.is_empty(), "redis+cluster:// names no node; give redis+cluster://HOST:PORT,HOST:PORT");
        let client = |response: Duration| {
            redis::cluster::ClusterClient::builder(nodes.clone())
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(response)
                .retries(2)
                .build()
        };
        let conn = client(COMMAND_TIMEOUT)?.get_async_connection().await?;
        let follow = client(FOLLOW_RESPONSE_TIMEOUT)?.get_async_connection().await?;
        return Ok((Conn::Cluster(conn), Conn::Cluster(follow)));
    }
    let client = redis::Client::open(address)?;
    let config = |response: Duration| {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(response))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500))
    };
    let conn = ConnectionManager::new_with_config(client.clone(), config(COMMAND_TIMEOUT)).await?;
    let follow = ConnectionManager::new_with_config(client, config(FOLLOW_RESPONSE_TIMEOUT)).await?;
    Ok((Conn::Single(conn), Conn::Single(follow)))
}
