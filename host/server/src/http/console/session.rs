//! The console's credentials: the session cookie as an extractor, the CSRF
//! check of every state-changing form, and the headers every console answer
//! carries (content security policy and the like). The operator token is
//! read once, from the login form's body, and goes nowhere else: not into a
//! cookie, a URL, a page or a log.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use crate::service::access::Operator;
use crate::service::app::AppState;
use crate::service::console::FlashKind;

/// The session cookie's name.
pub const COOKIE: &str = "edgerec_console";
/// Where a request without a live session is sent.
pub const LOGIN_PATH: &str = "/console/login";

/// The console's own assets only; no script at all, no frames, forms post
/// only to the console itself.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A request of a logged-in operator.
pub struct ConsoleSession {
    /// The session id (the cookie's value): names the session to the service.
    pub id: String,
    /// The operator's proof, as the token routes get it.
    pub operator: Operator,
    /// The CSRF token this login's forms carry.
    pub csrf: String,
}

/// Why a console request was not served.
#[derive(Debug)]
pub enum Refusal {
    /// No live session: a page is sent to the login form; any other request is refused 403.
    NoSession {
        /// The request's method.
        method: Method,
    },
    /// A state-changing request without this login's CSRF token, or sent from another origin.
    Forged,
    /// A form whose body could not be read (too large, cut off, not multipart).
    Unreadable(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::NoSession { method } if method == Method::GET || method == Method::HEAD => {
                Redirect::to(LOGIN_PATH).into_response()
            }
            Refusal::NoSession { .. } => refusal_page(
                StatusCode::FORBIDDEN,
                "Not logged in",
                "This action needs a console login: log in with the operator token, then try again.",
            ),
            Refusal::Forged => refusal_page(
                StatusCode::FORBIDDEN,
                "Refused: the form did not come from this console",
                "The request lacked this login's form token or came from another site. Reload the console page and submit the form from there.",
            ),
            Refusal::Unreadable(why) => refusal_page(
                StatusCode::BAD_REQUEST,
                "The form could not be read",
                &format!(
                    "{why}. Go back, check the file (its size is bounded by the server's upload limits) and submit again."
                ),
            ),
        }
    }
}

/// A minimal page for refusals (no template: nothing of the session is in
/// it; the message is escaped, as it may quote the request).
fn refusal_page(status: StatusCode, title: &str, message: &str) -> Response {
    let message = askama::filters::escape(message, askama::filters::Html).map(|m| m.to_string()).unwrap_or_default();
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <link rel=\"stylesheet\" href=\"/console/assets/console.css\"></head>\
         <body><main><h1>{title}</h1><p class=\"flash refused\">{message}</p>\
         <p><a href=\"{LOGIN_PATH}\">Go to the console</a></p></main></body></html>"
    );
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
}

/// Whether a request that may change something came from this server's own
/// pages: browsers send `Origin` with every POST, and it must name the host
/// the request was sent to. (A request without `Origin` is not a browser's
/// cross-site form; it still needs the CSRF token.)
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let (Ok(origin), Some(Ok(host))) = (origin.to_str(), headers.get(header::HOST).map(HeaderValue::to_str)) else {
        return false;
    };
    origin.split_once("://").is_some_and(|(_, authority)| authority == host)
}

impl FromRequestParts<Arc<AppState>> for ConsoleSession {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let no_session = || Refusal::NoSession { method: parts.method.clone() };
        let id = cookie(&parts.headers, COOKIE).ok_or_else(no_session)?;
        let session = app.console_sessions.resolve(id).ok_or_else(no_session)?;
        if parts.method != Method::GET && parts.method != Method::HEAD && !same_origin(&parts.headers) {
            return Err(Refusal::Forged);
        }
        Ok(ConsoleSession { id: id.to_string(), operator: session.operator, csrf: session.csrf })
    }
}

impl ConsoleSession {
    /// Refuses a form whose CSRF token is not this login's.
    pub fn check_csrf(&self, app: &AppState, presented: &str) -> Result<(), Refusal> {
        if app.console_sessions.csrf_matches(&self.id, presented) { Ok(()) } else { Err(Refusal::Forged) }
    }

    /// Leaves a message for this login's next page.
    pub fn flash(&self, app: &AppState, kind: FlashKind, text: impl Into<String>) {
        app.console_sessions.flash(&self.id, kind, text);
    }
}

/// Whether the request came through HTTPS (a TLS proxy in front says so),
/// or the configuration says the console is only served that way.
pub fn secure(app: &AppState, headers: &HeaderMap) -> bool {
    app.config.console_secure_cookie
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// The `Set-Cookie` value that starts a session.
pub fn session_cookie(id: &str, ttl_s: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={ttl_s}{secure}")
}

/// The `Set-Cookie` value that ends one.
pub fn cleared_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

/// Middleware: the headers of every console answer. Pages are never cached
/// (they hold CSRF tokens and, once, new keys), framed, or sniffed.
pub async fn headers(State(_app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: under it browsers send `Origin: null` with the
    // console's own forms, which the same-origin check must refuse.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_found_among_others_and_origins_must_match_the_host() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; edgerec_console=es_abc ; b=2"));
        assert_eq!(cookie(&headers, COOKIE), Some("es_abc"));
        assert_eq!(cookie(&headers, "edgerec"), None);
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&headers), "no Origin: not a browser's cross-site form");
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(same_origin(&headers));
        headers.insert(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1:9999"));
        assert!(!same_origin(&headers));
        headers.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&headers));
    }

    #[test]
    fn session_cookies_are_http_only_strict_and_secure_when_asked() {
        let cookie = session_cookie("es_x", 60, false);
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Max-Age=60"));
        assert!(!cookie.contains("Secure"));
        assert!(session_cookie("es_x", 60, true).ends_with("; Secure"));
        assert!(cleared_cookie(false).contains("Max-Age=0"));
    }
}
