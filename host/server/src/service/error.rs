//! The service layer's error: a refusal with a stable [`ErrorCode`] and a
//! message that says what to fix, or a fault on the server's side. It knows
//! nothing of HTTP: the HTTP layer turns it into its answer (and logs an
//! internal fault, with an id, where the answer is made).

use crate::error_code::ErrorCode;
use crate::store::StoreError;

/// What a service call that did not succeed reports.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The request cannot be served as it is: the caller can act on the message.
    #[error("{message}")]
    Refused {
        /// Stable code.
        code: ErrorCode,
        /// What was wrong and what to do.
        message: String,
        /// When retrying later may succeed: after how many seconds.
        retry_after_s: Option<u64>,
    },
    /// A fault on the server's side; the cause is for the operator's log only.
    #[error("{context} failed: {cause}")]
    Internal {
        /// What the server was doing.
        context: String,
        /// What went wrong (store paths, panic text: never shown to clients).
        cause: String,
    },
}

/// The service's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A refusal with the given code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error::Refused { code, message: message.into(), retry_after_s: None }
    }

    /// A refusal the caller may retry after `seconds`.
    pub fn retry_after(code: ErrorCode, message: impl Into<String>, seconds: u64) -> Self {
        Error::Refused { code, message: message.into(), retry_after_s: Some(seconds) }
    }

    /// A fault on the server's side while doing `context`.
    pub fn internal(context: &str, cause: impl std::fmt::Display) -> Self {
        Error::Internal { context: context.to_string(), cause: cause.to_string() }
    }

    /// 400 bad_request: a well-formed request with a wrong value.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// The same error with `what` said first: before a refusal's message
    /// (its code and retry kept), or before a fault's context.
    pub fn context(self, what: impl std::fmt::Display) -> Self {
        match self {
            Error::Refused { code, message, retry_after_s } => {
                Error::Refused { code, message: format!("{what}: {message}"), retry_after_s }
            }
            Error::Internal { context, cause } => Error::Internal { context: format!("{what}: {context}"), cause },
        }
    }

    /// The error's code (`internal` for a fault).
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Refused { code, .. } => *code,
            Error::Internal { .. } => ErrorCode::Internal,
        }
    }

    /// unknown_tenant.
    pub fn unknown_tenant(tenant: &str) -> Self {
        Self::new(
            ErrorCode::UnknownTenant,
            format!("no tenant named {tenant:?}; list tenants with GET /v1/tenants or create it with POST /v1/tenants"),
        )
    }

    /// tenant_unavailable: stored, but it could not load at start.
    pub fn tenant_unavailable(tenant: &str, reason: &str) -> Self {
        Self::retry_after(
            ErrorCode::TenantUnavailable,
            format!(
                "tenant {tenant:?} could not be loaded ({reason}); the operator must fix its model or pipeline and restart"
            ),
            30,
        )
    }

    /// unknown_item.
    pub fn unknown_item(item: &str) -> Self {
        Self::new(
            ErrorCode::UnknownItem,
            format!(
                "item {item:?} is neither in the tenant's model nor in its catalog; upsert it with PUT …/catalog/items first"
            ),
        )
    }

    /// overloaded, retried after `retry_after_s`.
    pub fn overloaded(retry_after_s: u64) -> Self {
        Self::retry_after(
            ErrorCode::Overloaded,
            "the server is at its concurrency limit; retry after the Retry-After delay",
            retry_after_s,
        )
    }

    /// rate_limited, retried after `retry_after_s` (at least 1).
    pub fn rate_limited(what: &str, retry_after_s: u64) -> Self {
        Self::retry_after(
            ErrorCode::RateLimited,
            format!(
                "this tenant is over its {what} quota; retry after the Retry-After delay or ask the operator for a higher quota"
            ),
            retry_after_s.max(1),
        )
    }

    /// Logs an internal fault that no answer will carry (its request is
    /// gone); a refusal needs no log.
    pub fn log_unanswered(&self) {
        if let Error::Internal { context, cause } = self {
            tracing::error!(error = %cause, context = %context, "internal error (its request was gone)");
        }
    }

    /// What may be shown outside the server's log (a tenant's unavailable
    /// reason, a start-up message): a refusal's message as it is, a fault
    /// logged here with an id and named by it.
    pub fn report(&self) -> String {
        match self {
            Error::Refused { message, .. } => message.clone(),
            Error::Internal { context, cause } => {
                let id = crate::ids::new_key_id();
                tracing::error!(error = %cause, context = %context, error_id = %id, "internal error");
                format!(
                    "{context} failed on the server (error id {id}; the operator finds the cause in the server log)"
                )
            }
        }
    }
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        if error.is_unavailable() {
            return Self::retry_after(
                ErrorCode::StoreUnavailable,
                format!("{error}; this request needs it: retry when it is back (GET /readyz says)"),
                1,
            );
        }
        Error::internal("the store", error)
    }
}
