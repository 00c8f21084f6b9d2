//! Blocking work that holds the permits bounding it. A handler future can be
//! dropped (request deadline, client gone) while its blocking job runs on:
//! the permits move into the job and are released when the job ends, so the
//! configured bounds count every job still running, observed or not.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use super::Error;

/// What a blocking job does; each kind has its own gauge on `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// History, encode and scoring of a recommend.
    Encode,
    /// A recommend's plugin pipeline.
    Plugins,
    /// Store writes (events, catalog) and operator work (uploads, activations).
    Write,
    /// Store reads a route answers with (catalog pages and items, operator listings).
    Read,
}

impl JobKind {
    fn label(self) -> &'static str {
        match self {
            JobKind::Encode => "encode",
            JobKind::Plugins => "plugins",
            JobKind::Write => "write",
            JobKind::Read => "read",
        }
    }

    fn counters(self) -> &'static (AtomicI64, AtomicI64) {
        static ENCODE: (AtomicI64, AtomicI64) = (AtomicI64::new(0), AtomicI64::new(0));
        static PLUGINS: (AtomicI64, AtomicI64) = (AtomicI64::new(0), AtomicI64::new(0));
        static WRITE: (AtomicI64, AtomicI64) = (AtomicI64::new(0), AtomicI64::new(0));
        static READ: (AtomicI64, AtomicI64) = (AtomicI64::new(0), AtomicI64::new(0));
        match self {
            JobKind::Encode => &ENCODE,
            JobKind::Plugins => &PLUGINS,
            JobKind::Write => &WRITE,
            JobKind::Read => &READ,
        }
    }
}

/// Counts a running job in `edgerec_blocking_jobs{kind}` and its high-water
/// mark in `edgerec_blocking_jobs_peak{kind}` (a scrape can miss a peak; the
/// mark cannot).
struct Running(JobKind);

impl Running {
    fn enter(kind: JobKind) -> Running {
        let (running, peak) = kind.counters();
        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
        let highest = peak.fetch_max(now, Ordering::SeqCst).max(now);
        metrics::gauge!("edgerec_blocking_jobs", "kind" => kind.label()).set(now as f64);
        metrics::gauge!("edgerec_blocking_jobs_peak", "kind" => kind.label()).set(highest as f64);
        Running(kind)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let (running, _) = self.0.counters();
        let now = running.fetch_sub(1, Ordering::SeqCst) - 1;
        metrics::gauge!("edgerec_blocking_jobs", "kind" => self.0.label()).set(now as f64);
    }
}

/// An error a job may end with. Internal faults are logged where they are
/// answered; one whose caller stopped waiting is answered to nobody, so the
/// job logs it instead.
pub trait JobError: From<Error> + Send + 'static {
    /// Logs the error if it is an internal fault (its caller is gone).
    fn log_unanswered(&self);
}

impl JobError for Error {
    fn log_unanswered(&self) {
        Error::log_unanswered(self);
    }
}

/// Runs `work` on the blocking pool inside `span`. `permits` are held until
/// `work` returns, even when the caller stops waiting. `work` reports the
/// service's errors or its caller's (the HTTP layer runs its own work here too).
pub async fn run<T, P, E>(
    kind: JobKind,
    span: tracing::Span,
    permits: P,
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E>
where
    T: Send + 'static,
    P: Send + 'static,
    E: JobError,
{
    let (answer, answered) = tokio::sync::oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let running = Running::enter(kind);
        let result = span.in_scope(work);
        // Leave the gauge before the permits let the next job in, or the
        // two overlap in the count and the peak reads one over the bound.
        drop(running);
        drop(permits);
        if let Err(Err(error)) = answer.send(result) {
            error.log_unanswered();
        }
    });
    // Closed without an answer: `work` panicked (the panic is in the log).
    answered.await.map_err(|_| E::from(Error::internal(&format!("the {} job", kind.label()), "it panicked")))?
}

/// Tells a blocking job that its request is gone: set when the
/// [`RequestAlive`] the handler holds is dropped (the request deadline
/// answered, or the client left). A job checks it before a step whose
/// result only the client wanted, e.g. storing an upload nobody waits for.
#[derive(Clone)]
pub struct Abandoned(Arc<AtomicBool>);

impl Abandoned {
    /// Whether the request that started the job is gone.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// The flag itself, for work that polls it (a compile process is killed
    /// when it turns true).
    pub fn flag(&self) -> &AtomicBool {
        &self.0
    }
}

/// Held by a handler while it awaits its job; dropping it sets [`Abandoned`].
pub struct RequestAlive(Arc<AtomicBool>);

impl Drop for RequestAlive {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A pair: the handler keeps the first, the job takes the second.
pub fn watch_request() -> (RequestAlive, Abandoned) {
    let flag = Arc::new(AtomicBool::new(false));
    (RequestAlive(flag.clone()), Abandoned(flag))
}
