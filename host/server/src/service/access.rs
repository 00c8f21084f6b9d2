//! Who a request's secret belongs to: the operator, a tenant's storefront,
//! or nobody (decided by [`super::app::AppState::caller`]). The HTTP layer
//! reads the secret and the path; the proof of operator access
//! ([`Operator`]) can only be made inside the service layer.

/// Who the presented secret belongs to.
pub enum Caller {
    /// The operator token.
    Operator(Operator),
    /// A storefront key of the named tenant.
    Tenant(String),
}

/// Proof that a request carries the operator token: only the service layer
/// makes one (when the token matches, and for start-up code), so that a
/// service call that needs the operator cannot be reached without it.
pub struct Operator(());

impl Operator {
    /// The server itself at start-up (loading tenants, the demo tenant).
    pub(crate) fn start_up() -> Operator {
        Operator(())
    }

    /// The caller presented the operator token (checked by the caller).
    pub(super) fn verified() -> Operator {
        Operator(())
    }
}
