//! Per-tenant quotas, so that one tenant's flood cannot delay the others:
//! request rates (GCRA through `governor`) for recommends and for writes
//! (events, catalog reads and writes), and a cap on each tenant's requests in flight.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Error, Result};
use crate::config::ServerConfig;

/// Which quota a request counts against.
#[derive(Clone, Copy, Debug)]
pub enum QuotaKind {
    /// `POST …/recommend`.
    Recommend,
    /// `POST …/events`, `PUT …/catalog/items`.
    Write,
    /// `GET …/catalog/items` and `GET …/catalog/items/{id}`: counted against
    /// the write rate (`tenant_write_rate` counts every catalog request), so
    /// that reading a large catalog in a loop costs the tenant its own quota.
    CatalogRead,
}

/// The quotas of every tenant.
pub struct Quotas {
    recommend: Option<DefaultKeyedRateLimiter<String>>,
    writes: Option<DefaultKeyedRateLimiter<String>>,
    in_flight: Mutex<HashMap<String, Arc<Semaphore>>>,
    max_in_flight: usize,
}

fn limiter(per_second: u32) -> Option<DefaultKeyedRateLimiter<String>> {
    NonZeroU32::new(per_second).map(|rate| RateLimiter::keyed(Quota::per_second(rate)))
}

impl Quotas {
    /// Quotas as configured (`tenant_recommend_rate`, `tenant_write_rate`,
    /// `tenant_max_in_flight`; a rate of 0 = unlimited).
    pub fn new(config: &ServerConfig) -> Quotas {
        Quotas {
            recommend: limiter(config.tenant_recommend_rate),
            writes: limiter(config.tenant_write_rate),
            in_flight: Mutex::default(),
            max_in_flight: config.tenant_max_in_flight,
        }
    }

    /// Admits one request of `tenant`, or answers 429 `rate_limited` with the
    /// time until it would be admitted. The permit holds one of the tenant's
    /// in-flight slots until it is dropped.
    pub fn admit(&self, tenant: &str, kind: QuotaKind) -> Result<OwnedSemaphorePermit> {
        let (limiter, what) = match kind {
            QuotaKind::Recommend => (&self.recommend, "recommend rate"),
            QuotaKind::Write | QuotaKind::CatalogRead => (&self.writes, "write rate"),
        };
        if let Some(limiter) = limiter
            && let Err(not_until) = limiter.check_key(&tenant.to_string())
        {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            metrics::counter!("edgerec_rate_limited_total", "tenant" => tenant.to_string(), "quota" => what)
                .increment(1);
            return Err(Error::rate_limited(what, wait.as_secs_f64().ceil() as u64));
        }
        let slots = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(tenant.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.max_in_flight)))
            .clone();
        slots.try_acquire_owned().map_err(|_| {
            metrics::counter!("edgerec_rate_limited_total", "tenant" => tenant.to_string(), "quota" => "in-flight")
                .increment(1);
            Error::rate_limited("in-flight", 1)
        })
    }
}
