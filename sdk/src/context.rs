//! The request context a stage sees.

use crate::bindings::edgerec::plugin::types as wit;

/// One thing the shopper did recently: `item`, `action` ("view", "purchase", ...), `ts` (unix seconds).
pub type Event = wit::Event;

/// What the host knows about the request (the same for every stage).
#[derive(Clone, Debug)]
pub struct Context {
    inner: wit::RequestContext,
}

impl Context {
    /// A context for `tenant` with no user, `k` = 10, `now` = 0, no attributes or events
    /// (for unit tests; the host builds the real one).
    pub fn new(tenant: &str) -> Self {
        Context {
            inner: wit::RequestContext {
                tenant: tenant.to_owned(),
                user: None,
                k: 10,
                now: 0,
                attributes: Vec::new(),
                recent_events: Vec::new(),
            },
        }
    }

    pub(crate) fn from_wit(inner: wit::RequestContext) -> Self {
        Context { inner }
    }

    /// Sets the user id.
    pub fn with_user(mut self, user: &str) -> Self {
        self.inner.user = Some(user.to_owned());
        self
    }

    /// Sets `k`.
    pub fn with_k(mut self, k: u32) -> Self {
        self.inner.k = k;
        self
    }

    /// Sets the request time (unix seconds).
    pub fn with_now(mut self, now: i64) -> Self {
        self.inner.now = now;
        self
    }

    /// Adds a request attribute.
    pub fn with_attribute(mut self, name: &str, value: &str) -> Self {
        self.inner.attributes.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Adds a recent event (keep them oldest first).
    pub fn with_event(mut self, item: u64, action: &str, ts: i64) -> Self {
        self.inner.recent_events.push(Event { item, action: action.to_owned(), ts });
        self
    }

    /// The merchant.
    pub fn tenant(&self) -> &str {
        &self.inner.tenant
    }

    /// The shopper, when known.
    pub fn user(&self) -> Option<&str> {
        self.inner.user.as_deref()
    }

    /// How many items the storefront wants back.
    pub fn k(&self) -> u32 {
        self.inner.k
    }

    /// The request's time, unix seconds (plugins have no clock of their own).
    pub fn now(&self) -> i64 {
        self.inner.now
    }

    /// A request attribute (page, locale, device, ...), if present.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.inner.attributes.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The shopper's recent events, oldest first.
    pub fn recent_events(&self) -> &[Event] {
        &self.inner.recent_events
    }
}
