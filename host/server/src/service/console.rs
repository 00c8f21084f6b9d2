//! The console's sessions: a login with the operator token becomes a random
//! session id (the cookie) and a CSRF token (the forms' hidden field); the
//! token itself is checked once and never kept. Sessions live in this
//! host's memory, hashed like every other secret, and end at their expiry,
//! at logout, or when the server restarts. A session yields the same
//! [`Operator`] proof the token routes get, so the console reaches nothing
//! the token routes do not.
//!
//! Each session also holds the messages of its last action (a flash, shown
//! once by the next page): the answer of a POST is a redirect, and what it
//! did, or a key it issued, must not travel in a URL.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::access::Operator;
use crate::ids::{new_secret, same_hash, secret_hash};

/// At most this many sessions at once: a login beyond it ends the oldest.
const MAX_SESSIONS: usize = 1024;
/// At most this many messages wait in one session.
const MAX_FLASHES: usize = 8;

/// How a message reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlashKind {
    /// It worked.
    Done,
    /// It did not; the text says why and what to do.
    Refused,
    /// A secret shown once (a new storefront key).
    Secret,
}

/// A message for the next page of a session.
#[derive(Clone, Debug)]
pub struct Flash {
    /// How it reads.
    pub kind: FlashKind,
    /// What happened.
    pub text: String,
}

struct Session {
    expires: Instant,
    created: Instant,
    csrf: String,
    flashes: Vec<Flash>,
}

/// A new login: the cookie's value (the session id) and its lifetime.
pub struct Login {
    /// The session id, for the cookie only.
    pub id: String,
    /// How long the session lasts.
    pub ttl: Duration,
}

/// A live session, resolved from its cookie.
pub struct ActiveSession {
    /// The operator's proof.
    pub operator: Operator,
    /// The token every state-changing form of this session must carry.
    pub csrf: String,
}

/// This host's console sessions, by the hash of their ids.
#[derive(Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Starts a session for the operator (the proof: [`super::app::AppState::caller`]
    /// found the operator token), lasting `ttl`.
    pub fn login(&self, _operator: Operator, ttl: Duration) -> Login {
        let id = new_secret("es");
        let now = Instant::now();
        let session = Session { expires: now + ttl, created: now, csrf: new_secret("ct"), flashes: Vec::new() };
        let mut sessions = self.lock();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(secret_hash(&id), session);
        Login { id, ttl }
    }

    /// The session of cookie value `id`, when it is live.
    pub fn resolve(&self, id: &str) -> Option<ActiveSession> {
        let now = Instant::now();
        let mut sessions = self.lock();
        let hash = secret_hash(id);
        match sessions.get(&hash) {
            Some(session) if session.expires > now => {
                Some(ActiveSession { operator: Operator::verified(), csrf: session.csrf.clone() })
            }
            Some(_) => {
                sessions.remove(&hash);
                None
            }
            None => None,
        }
    }

    /// Whether `presented` is the CSRF token of the live session `id`
    /// (compared in constant time).
    pub fn csrf_matches(&self, id: &str, presented: &str) -> bool {
        self.resolve(id).is_some_and(|s| same_hash(&secret_hash(&s.csrf), &secret_hash(presented)))
    }

    /// Ends the session `id` (nothing when there is none).
    pub fn logout(&self, id: &str) {
        self.lock().remove(&secret_hash(id));
    }

    /// Leaves a message for the session's next page.
    pub fn flash(&self, id: &str, kind: FlashKind, text: impl Into<String>) {
        if let Some(session) = self.lock().get_mut(&secret_hash(id)) {
            if session.flashes.len() >= MAX_FLASHES {
                session.flashes.remove(0);
            }
            session.flashes.push(Flash { kind, text: text.into() });
        }
    }

    /// The session's waiting messages, removed: each is shown once.
    pub fn take_flashes(&self, id: &str) -> Vec<Flash> {
        self.lock().get_mut(&secret_hash(id)).map(|s| std::mem::take(&mut s.flashes)).unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
