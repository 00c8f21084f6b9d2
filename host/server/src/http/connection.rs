//! One client connection's lifetime. hyper bounds how long HTTP/1 headers
//! may take, but neither the read that tells HTTP/1 from HTTP/2 nor an
//! HTTP/2 connection has a deadline of its own: a socket that sends nothing,
//! or only the HTTP/2 preface, would hold its place in `max_connections` for
//! ever. Here every connection must deliver its first request within
//! `first_request_timeout_ms` and is closed after `idle_timeout_ms` with no
//! request in flight; its permit returns when it closes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::UpgradeableConnection;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// A connection told to close (HTTP/2: GOAWAY, then its PING handshake) is
/// dropped this long after, if it has no request in flight by then.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The deadlines of every connection.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// From accept until the first request has arrived.
    pub first_request: Duration,
    /// With no request in flight.
    pub idle: Duration,
}

/// What a connection is doing, shared by its requests and its watchdog.
pub struct Activity {
    opened: Instant,
    /// Requests whose response has not been sent in full.
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` when the connection last fell idle;
    /// [`NEVER`] before its first request.
    idle_since_ms: AtomicU64,
    /// Wakes the watchdog when a response has been sent.
    done: Notify,
}

const NEVER: u64 = u64::MAX;

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(NEVER),
            done: Notify::new(),
        })
    }

    /// When the connection is to be closed unless a request arrives first;
    /// `None` while a request is in flight.
    fn deadline(&self, deadlines: &Deadlines) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        match self.idle_since_ms.load(Ordering::Acquire) {
            NEVER => Some(self.opened + deadlines.first_request),
            ms => Some(self.opened + Duration::from_millis(ms) + deadlines.idle),
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        // Served at least once: from now on only the idle deadline applies.
        let _ = self.idle_since_ms.compare_exchange(NEVER, 0, Ordering::AcqRel, Ordering::Acquire);
        InFlight(self.clone())
    }
}

/// One request in flight; its drop (the response sent, or abandoned) may
/// leave the connection idle.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let elapsed = u64::try_from(activity.opened.elapsed().as_millis()).unwrap_or(NEVER - 1);
        activity.idle_since_ms.store(elapsed, Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
        activity.done.notify_one();
    }
}

/// The router as one connection's service: counts its requests in flight
/// until each response body has been sent.
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    /// `inner` for a new connection, with that connection's activity.
    pub fn new(inner: S) -> (Tracked<S>, Arc<Activity>) {
        let activity = Activity::new();
        (Tracked { inner, activity: activity.clone() }, activity)
    }
}

impl<S, B> tower_service::Service<Request<B>> for Tracked<S>
where
    S: tower_service::Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let guard = self.activity.begin();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| Body::new(Guarded { body, _guard: guard })))
        })
    }
}

/// A response body that holds its request's [`InFlight`] until sent.
struct Guarded {
    body: Body,
    _guard: InFlight,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A served connection, as the accept loop makes it.
pub type Connection =
    UpgradeableConnection<'static, TokioIo<TcpStream>, TowerToHyperService<Tracked<Router>>, TokioExecutor>;

/// Drives `connection` until it ends, closing it when a deadline passes with
/// no request in flight, or when `stopping` turns true (the server shuts
/// down: requests in flight finish, then it closes).
pub async fn run(
    connection: Connection,
    activity: Arc<Activity>,
    deadlines: Deadlines,
    mut stopping: watch::Receiver<bool>,
) {
    tokio::pin!(connection);
    // Set once the connection was told to close: it is dropped at this time
    // unless it ended or still has a request in flight.
    let mut drop_at: Option<Instant> = None;
    loop {
        let deadline = if drop_at.is_none() { activity.deadline(&deadlines) } else { None };
        tokio::select! {
            _ = connection.as_mut() => return,
            () = sleep_until(deadline) => {
                if activity.deadline(&deadlines).is_some_and(|d| d <= Instant::now()) {
                    let first = activity.idle_since_ms.load(Ordering::Acquire) == NEVER;
                    tracing::debug!(first_request = first, "closing a connection past its deadline");
                    connection.as_mut().graceful_shutdown();
                    drop_at = Some(Instant::now() + CLOSE_GRACE);
                }
            }
            () = activity.done.notified(), if drop_at.is_none() => {}
            changed = stopping.changed(), if drop_at.is_none() => {
                if changed.is_err() || *stopping.borrow() {
                    connection.as_mut().graceful_shutdown();
                    drop_at = Some(Instant::now() + CLOSE_GRACE);
                }
            }
            () = sleep_until(drop_at) => {
                if activity.in_flight.load(Ordering::Acquire) == 0 {
                    return;
                }
                // A request came in while closing: it finishes first (the
                // request deadline bounds it).
                drop_at = Some(Instant::now() + CLOSE_GRACE);
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_is_the_first_request_then_idle_and_none_while_busy() {
        let deadlines = Deadlines { first_request: Duration::from_secs(5), idle: Duration::from_secs(60) };
        let activity = Activity::new();
        let first = activity.deadline(&deadlines);
        assert_eq!(first, Some(activity.opened + Duration::from_secs(5)));
        let request = activity.begin();
        let second = activity.begin();
        assert_eq!(activity.deadline(&deadlines), None, "no deadline while a request is in flight");
        drop(request);
        assert_eq!(activity.deadline(&deadlines), None, "one request is still in flight");
        drop(second);
        let idle = activity.deadline(&deadlines).expect("idle: a deadline");
        assert!(idle >= activity.opened + Duration::from_secs(60), "the idle deadline runs from the last response");
        assert!(idle <= Instant::now() + Duration::from_secs(60));
    }
}
