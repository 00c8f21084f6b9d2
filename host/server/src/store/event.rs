//! An event as the store keeps it: what a storefront sent (the HTTP layer's
//! `IngestEvent`, field for field), read back to build a history. Ids stay
//! external here: the model's ids (`edgerec_kernels::Event`) and the plugin
//! contract's (`edgerec_runtime::Event`) are taken from it where the history
//! is built, because those two change with the model while a stored event
//! must outlive it.

use serde::{Deserialize, Serialize};

/// One thing a shopper did, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoredEvent {
    /// The shopper (required in `POST …/events`, optional in recommend,
    /// where the request's `user_id` applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The client's id for this event: an event id stored before is not stored again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// External item id.
    pub item: String,
    /// Unix seconds, from 1970 to at most `max_future_skew_s` (default a day) ahead of the server clock.
    #[serde(deserialize_with = "crate::integral::required")]
    pub ts: i64,
    /// view, cart, purchase, … (default `view`).
    #[serde(default = "default_action")]
    pub action: String,
}

fn default_action() -> String {
    "view".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_event_reads_back_as_it_was_written_and_old_rows_still_parse() {
        let event = StoredEvent {
            user_id: Some("u".into()),
            event_id: Some("e-1".into()),
            item: "sku".into(),
            ts: 7,
            action: "cart".into(),
        };
        let bytes = serde_json::to_vec(&event).unwrap();
        assert_eq!(serde_json::from_slice::<StoredEvent>(&bytes).unwrap(), event);
        // Rows written before events carried their ids: item, ts, action only.
        let old: StoredEvent = serde_json::from_str(r#"{"item":"sku","ts":7,"action":"view"}"#).unwrap();
        assert_eq!((old.user_id, old.event_id, old.ts), (None, None, 7));
        assert!(serde_json::from_str::<StoredEvent>(r#"{"item":"sku","ts":7,"colour":"red"}"#).is_err());
    }
}
