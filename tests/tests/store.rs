//! The store contract, checked on both stores: the embedded redb store and
//! Redis (a real `redis-server` on a loopback port). Every check runs on a
//! fresh store; `open` opens it again (the same file, the same Redis), as a
//! restarted host would.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use edgerec_e2e::redis::RedisServer;
use edgerec_server::store::{
    AppendOutcome, OnErrorPolicy, PluginDeletion, RedbStore, RedisStore, StageSpec, Store, StoredEvent,
};

/// Opens the store under test (again).
type Open = dyn Fn() -> Arc<dyn Store>;

/// Each user's kept events (both stores trim to it).
const KEEP: usize = 100;

/// Runs `check` on a fresh redb store and on a fresh Redis.
fn on_both_stores(check: fn(&Open)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    check(&move || Arc::new(RedbStore::open(&path).unwrap()) as Arc<dyn Store>);
    let redis = RedisServer::start(&dir.path().join("redis"));
    let url = redis.url();
    check(&move || Arc::new(RedisStore::connect(&url).unwrap()) as Arc<dyn Store>);
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            super::on_both_stores(super::$name);
        }
    )*};
}

mod both_stores {
    contract!(
        events_are_per_tenant_and_user_and_survive_reopen,
        batches_and_event_ids_are_stored_once_per_tenant,
        catalog_pages_stay_inside_the_tenant,
        plugins_are_content_addressed_and_pipelines_roll_back,
        a_plugin_version_is_deleted_only_when_no_pipeline_version_uses_it,
        pipelines_activate_by_version_and_roll_back_through_the_log,
        a_generated_secret_is_kept_by_the_first_writer,
        event_ids_are_per_user,
        each_user_keeps_their_newest_events_and_a_window_of_ids,
        a_refused_model_version_leaves_no_bytes_behind,
    );
}

fn event(item: &str, ts: i64) -> StoredEvent {
    StoredEvent { user_id: None, event_id: None, item: item.into(), ts, action: "view".into() }
}

fn events_are_per_tenant_and_user_and_survive_reopen(open: &Open) {
    {
        let store = open();
        store.append_events("a", &[new("u1", event("x", 1)), new("u2", event("y", 2))], None, KEEP).unwrap();
        store.append_events("b", &[new("u1", event("z", 3))], None, KEEP).unwrap();
        store.append_events("a", &[new("u1", event("w", 4))], None, KEEP).unwrap();
    }
    let store = open();
    assert_eq!(store.recent_events("a", "u1", 10).unwrap(), vec![new("u1", event("x", 1)), new("u1", event("w", 4))]);
    assert_eq!(store.recent_events("a", "u1", 1).unwrap(), vec![new("u1", event("w", 4))]);
    assert_eq!(store.recent_events("b", "u1", 10).unwrap(), vec![new("u1", event("z", 3))]);
    assert!(store.recent_events("a", "u3", 10).unwrap().is_empty());
}

fn new(user: &str, event: StoredEvent) -> StoredEvent {
    StoredEvent { user_id: Some(user.into()), ..event }
}

fn batches_and_event_ids_are_stored_once_per_tenant(open: &Open) {
    let store = open();
    let batch = [new("u1", event("x", 1)), new("u1", event("y", 2))];
    let first = store.append_events("a", &batch, Some("batch-1"), KEEP).unwrap();
    assert_eq!(first, AppendOutcome { accepted: 2, duplicates: 0, replayed: false });
    let again = store.append_events("a", &batch, Some("batch-1"), KEEP).unwrap();
    assert_eq!(again, AppendOutcome { accepted: 2, duplicates: 0, replayed: true });
    // The same key in another tenant is another batch.
    assert!(!store.append_events("b", &batch, Some("batch-1"), KEEP).unwrap().replayed);
    assert_eq!(store.recent_events("a", "u1", 10).unwrap().len(), 2);

    let with_id = |id: &str, ts| StoredEvent { event_id: Some(id.into()), ..new("u2", event("z", ts)) };
    let outcome = store.append_events("a", &[with_id("e1", 5), with_id("e2", 6)], None, KEEP).unwrap();
    assert_eq!((outcome.accepted, outcome.duplicates), (2, 0));
    let outcome = store.append_events("a", &[with_id("e2", 6), with_id("e3", 7)], None, KEEP).unwrap();
    assert_eq!((outcome.accepted, outcome.duplicates), (1, 1));
    assert_eq!(store.recent_events("a", "u2", 10).unwrap().len(), 3);
}

fn catalog_pages_stay_inside_the_tenant(open: &Open) {
    let store = open();
    let items: Vec<_> = (0..5).map(|i| (format!("i{i}"), serde_json::json!({"n": i}))).collect();
    store.upsert_items("a", &items).unwrap();
    store.upsert_items("b", &[("zz".into(), serde_json::json!({}))]).unwrap();
    let first = store.items_page("a", None, 2).unwrap();
    assert_eq!(first.iter().map(|i| i.0.as_str()).collect::<Vec<_>>(), ["i0", "i1"]);
    let rest = store.items_page("a", Some("i1"), 10).unwrap();
    assert_eq!(rest.iter().map(|i| i.0.as_str()).collect::<Vec<_>>(), ["i2", "i3", "i4"]);
    assert_eq!(store.item("a", "i3").unwrap(), Some(serde_json::json!({"n": 3})));
    assert_eq!(store.item("b", "i3").unwrap(), None);
}

fn plugins_are_content_addressed_and_pipelines_roll_back(open: &Open) {
    let store = open();
    let v1 = store.add_plugin("a", "boost", "d1", b"one", None).unwrap();
    let again = store.add_plugin("a", "boost", "d1", b"one", None).unwrap();
    let v2 = store.add_plugin("a", "boost", "d2", b"two", None).unwrap();
    assert_eq!((v1.version, again.version, v2.version), (1, 1, 2));
    assert_eq!(store.blob("a", "d2").unwrap().as_deref(), Some(&b"two"[..]));
    assert_eq!(store.plugins("a").unwrap().len(), 2);
    assert!(store.plugins("b").unwrap().is_empty());

    let p1 = store.add_pipeline("a", vec![].into()).unwrap();
    let p2 = store.add_pipeline("a", vec![].into()).unwrap();
    assert_eq!((p1.version, p2.version), (1, 2));
    assert_eq!(store.rollback("a").unwrap().map(|p| p.version), Some(1));
    assert!(store.rollback("a").unwrap().is_none());
    let (active, all) = store.pipelines("a").unwrap();
    assert_eq!((active, all.len()), (Some(1), 2));
}

fn a_plugin_version_is_deleted_only_when_no_pipeline_version_uses_it(open: &Open) {
    let store = open();
    store.add_plugin("a", "boost", "d1", b"one", Some("boost")).unwrap();
    store.add_plugin("a", "boost", "d2", b"two", Some("boost")).unwrap();
    // Tenant b uploaded the same bytes: the blob is shared.
    store.add_plugin("b", "mine", "d1", b"one", None).unwrap();
    let stage = |version| StageSpec {
        plugin: "boost".into(),
        version: Some(version),
        config: serde_json::json!({}),
        on_error: OnErrorPolicy::Skip,
        limits: None,
    };
    store.add_pipeline("a", vec![stage(1)].into()).unwrap();
    store.add_pipeline("a", vec![stage(2)].into()).unwrap();
    store.add_pipeline("a", vec![stage(1)].into()).unwrap();
    assert_eq!(store.delete_plugin_version("a", "boost", 1).unwrap(), PluginDeletion::InUse(vec![1, 3]));
    assert_eq!(store.delete_plugin_version("a", "boost", 9).unwrap(), PluginDeletion::NotFound);
    assert_eq!(store.delete_plugin_version("b", "mine", 1).unwrap(), PluginDeletion::Deleted);
    assert_eq!(store.blob("a", "d1").unwrap().as_deref(), Some(&b"one"[..]), "tenant a's version still holds it");
    assert_eq!(store.delete_plugin_version("b", "mine", 1).unwrap(), PluginDeletion::NotFound);
    let names: Vec<_> = store.plugins("a").unwrap().into_iter().map(|p| (p.version, p.declared_name)).collect();
    assert_eq!(names, [(1, Some("boost".to_string())), (2, Some("boost".to_string()))]);
}

fn pipelines_activate_by_version_and_roll_back_through_the_log(open: &Open) {
    let store = open();
    let p1 = store.add_pipeline("a", vec![].into()).unwrap();
    let p2 = store.add_pipeline("a", vec![].into()).unwrap();
    let p3 = store.add_pipeline("a", vec![].into()).unwrap();
    assert_eq!(store.activate_pipeline("a", p1.version).unwrap().map(|p| p.version), Some(1));
    assert!(store.activate_pipeline("a", 9).unwrap().is_none(), "no version 9");
    assert!(store.activate_pipeline("b", 1).unwrap().is_none(), "tenant b has no pipelines");
    assert_eq!(store.pipelines("a").unwrap().0, Some(1));
    // The log is 1 2 3 1: rolling back returns to 3, then 2.
    assert_eq!(store.rollback_target("a").unwrap().map(|p| p.version), Some(p3.version));
    assert_eq!(store.rollback("a").unwrap().map(|p| p.version), Some(p3.version));
    assert_eq!(store.rollback("a").unwrap().map(|p| p.version), Some(p2.version));
    drop(store);
    assert_eq!(open().pipelines("a").unwrap().0, Some(2), "the active pointer is stored");
}

fn a_generated_secret_is_kept_by_the_first_writer(open: &Open) {
    let store = open();
    assert_eq!(store.init_meta("token", "first").unwrap(), "first");
    assert_eq!(store.init_meta("token", "second").unwrap(), "first");
    drop(store);
    let store = open();
    assert_eq!(store.meta("token").unwrap().as_deref(), Some("first"));
    store.remove_meta("token").unwrap();
    assert_eq!(store.meta("token").unwrap(), None);
}

/// Two users' events under the same `event_id` are two events; the same
/// user's again is a duplicate (on redb, ids were once tenant-wide: bob's
/// `e-1` was dropped as alice's).
fn event_ids_are_per_user(open: &Open) {
    let store = open();
    let with_id = |user: &str, id: &str, ts| StoredEvent { event_id: Some(id.into()), ..new(user, event("x", ts)) };
    let outcome = store.append_events("a", &[with_id("alice", "e-1", 1)], None, KEEP).unwrap();
    assert_eq!((outcome.accepted, outcome.duplicates), (1, 0));
    let outcome = store.append_events("a", &[with_id("bob", "e-1", 2)], None, KEEP).unwrap();
    assert_eq!((outcome.accepted, outcome.duplicates), (1, 0), "bob's e-1 is not alice's");
    let outcome =
        store.append_events("a", &[with_id("alice", "e-1", 1), with_id("bob", "e-1", 2)], None, KEEP).unwrap();
    assert_eq!((outcome.accepted, outcome.duplicates), (0, 2));
    drop(store);
    let store = open();
    assert_eq!(store.append_events("a", &[with_id("bob", "e-1", 2)], None, KEEP).unwrap().duplicates, 1);
    assert_eq!(store.recent_events("a", "alice", 10).unwrap().len(), 1);
    assert_eq!(store.recent_events("a", "bob", 10).unwrap().len(), 1);
}

/// Each user keeps their newest `keep` events (what the model can use) and
/// recognises the ids of a window of their newest events; what is older is
/// deleted, on both stores.
fn each_user_keeps_their_newest_events_and_a_window_of_ids(open: &Open) {
    let store = open();
    let keep = 8;
    let with_id = |id: String, ts| StoredEvent { event_id: Some(id), ..new("u", event("x", ts)) };
    for ts in 0..30 {
        store.append_events("a", &[with_id(format!("e{ts}"), ts)], None, keep).unwrap();
    }
    store.append_events("a", &[new("other", event("y", 1))], None, keep).unwrap();
    let kept: Vec<i64> = store.recent_events("a", "u", 100).unwrap().iter().map(|e| e.ts).collect();
    assert_eq!(kept, (22..30).collect::<Vec<_>>());
    assert_eq!(store.recent_events("a", "other", 100).unwrap().len(), 1, "another user keeps their own");
    // An id sent again after its event was trimmed is still recognised.
    assert_eq!(store.append_events("a", &[with_id("e3".into(), 3)], None, keep).unwrap().duplicates, 1);
    // Past the id window the oldest ids are forgotten, and the user still keeps `keep` events.
    let window = edgerec_server::store::event_id_window(keep);
    let flood: Vec<StoredEvent> = (0..window as i64).map(|i| with_id(format!("f{i}"), 100 + i)).collect();
    assert_eq!(store.append_events("a", &flood, None, keep).unwrap().accepted, window);
    assert_eq!(store.recent_events("a", "u", 100).unwrap().len(), keep);
    let again = store.append_events("a", &[with_id("e3".into(), 3)], None, keep).unwrap();
    assert_eq!((again.accepted, again.duplicates), (1, 0), "e3 left the window");
    drop(store);
    let store = open();
    let newest = format!("f{}", window - 1);
    assert_eq!(store.append_events("a", &[with_id(newest, 1)], None, keep).unwrap().duplicates, 1);
}

/// A model version is immutable: another bundle under it is refused, and
/// its bytes are not kept (a refused 256 MB upload must not cost 256 MB).
fn a_refused_model_version_leaves_no_bytes_behind(open: &Open) {
    use edgerec_server::store::ModelAdd;
    let store = open();
    assert!(matches!(store.add_model("a", "v1", "d1", b"first").unwrap(), ModelAdd::Added(_)));
    assert!(matches!(store.add_model("a", "v1", "d1", b"first").unwrap(), ModelAdd::Unchanged(_)));
    assert!(matches!(store.add_model("a", "v1", "d2", b"second").unwrap(), ModelAdd::Taken(v) if v.digest == "d1"));
    assert_eq!(store.blob("a", "d2").unwrap(), None, "the refused bundle's bytes were kept");
    assert_eq!(store.blob("a", "d1").unwrap().as_deref(), Some(&b"first"[..]));
    // The same bundle under a new version shares the stored bytes.
    assert!(matches!(store.add_model("a", "v2", "d1", b"first").unwrap(), ModelAdd::Added(_)));
    assert!(matches!(store.add_model("a", "v2", "d3", b"third").unwrap(), ModelAdd::Taken(_)));
    assert_eq!(store.blob("a", "d1").unwrap().as_deref(), Some(&b"first"[..]));
    assert_eq!(store.blob("a", "d3").unwrap(), None);
}

/// On Redis a user's keys expire after their last event: 90 days unless
/// configured, never when turned off.
#[test]
fn redis_user_keys_expire_after_the_last_event() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path());
    let ttl_of = |user: &str, what: &str| -> i64 {
        redis.cli(&["TTL", &format!("er:{{a:{user}}}:{what}")]).trim().parse().unwrap()
    };
    let with_id = |user: &str| StoredEvent { event_id: Some("e1".into()), ..new(user, event("x", 1)) };
    let default = RedisStore::connect(&redis.url()).unwrap();
    default.append_events("a", &[with_id("u1")], None, KEEP).unwrap();
    let ninety_days = edgerec_server::store::DEFAULT_USER_TTL.as_secs() as i64;
    assert_eq!(ninety_days, 90 * 24 * 3600);
    for what in ["events", "event-ids"] {
        let ttl = ttl_of("u1", what);
        assert!((ninety_days - 60..=ninety_days).contains(&ttl), "{what}: TTL {ttl}");
    }
    let never = RedisStore::connect(&redis.url()).unwrap().with_user_ttl(None);
    never.append_events("a", &[with_id("u2")], None, KEEP).unwrap();
    assert_eq!(ttl_of("u2", "events"), -1, "no TTL when turned off");
    let short = RedisStore::connect(&redis.url()).unwrap().with_user_ttl(Some(Duration::from_secs(1)));
    short.append_events("a", &[with_id("u3")], None, KEEP).unwrap();
    assert_eq!(short.recent_events("a", "u3", 10).unwrap().len(), 1);
    std::thread::sleep(Duration::from_millis(2100));
    assert!(short.recent_events("a", "u3", 10).unwrap().is_empty(), "u3's events outlived their TTL");
    // Expired with its events, the id is free again: the user starts afresh.
    assert_eq!(short.append_events("a", &[with_id("u3")], None, KEEP).unwrap().accepted, 1);
}

/// An event batch's answer is kept for retries only `BATCH_KEY_TTL` (7 days)
/// on both stores: the same key used after that is a new batch, and the
/// embedded store forgets expired keys as Redis does.
#[test]
fn batch_keys_expire_on_both_stores() {
    assert_eq!(edgerec_server::store::BATCH_KEY_TTL.as_secs(), 7 * 24 * 3600);
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(&dir.path().join("redis"));
    let second = Duration::from_secs(1);
    let stores: [Arc<dyn Store>; 2] = [
        Arc::new(RedbStore::open(dir.path()).unwrap().with_batch_key_ttl(second)),
        Arc::new(RedisStore::connect(&redis.url()).unwrap().with_batch_key_ttl(second)),
    ];
    for store in stores {
        let batch = [new("u1", event("x", 1))];
        assert!(!store.append_events("a", &batch, Some("k1"), KEEP).unwrap().replayed);
        assert!(store.append_events("a", &batch, Some("k1"), KEEP).unwrap().replayed, "a retry within the TTL");
        std::thread::sleep(Duration::from_millis(2100));
        // Another user: on Redis the events of a keyed batch also carry ids
        // derived from the key, which live as long as the user's other ids.
        let later = [new("u2", event("y", 2))];
        let again = store.append_events("a", &later, Some("k1"), KEEP).unwrap();
        assert_eq!(again, AppendOutcome { accepted: 1, duplicates: 0, replayed: false }, "{}", store.kind());
        assert!(store.append_events("a", &later, Some("k1"), KEEP).unwrap().replayed, "the new answer is kept");
        assert_eq!(store.recent_events("a", "u2", 10).unwrap().len(), 1);
    }
}

/// Every key a tenant's data is written under carries that tenant's hash tag
/// (so a cluster keeps it together, and no tenant's data lands under another's).
#[test]
fn redis_keys_of_a_tenant_stay_under_its_own_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path());
    let store = RedisStore::connect(&redis.url()).unwrap();
    for tenant in ["shop", "shop-2"] {
        let record =
            serde_json::from_value(serde_json::json!({"name": tenant, "model": "demo", "created_at": 0})).unwrap();
        assert!(store.create_tenant(&record).unwrap());
        store.append_events(tenant, &[new("u1", event("x", 1))], Some("k1"), KEEP).unwrap();
        store.upsert_items(tenant, &[("i1".into(), serde_json::json!({"n": 1}))]).unwrap();
        store.add_plugin(tenant, "boost", &format!("digest-{tenant}"), b"bytes", None).unwrap();
        let stage = StageSpec {
            plugin: "boost".into(),
            version: Some(1),
            config: serde_json::json!({}),
            on_error: OnErrorPolicy::Skip,
            limits: None,
        };
        store.add_pipeline(tenant, vec![stage].into()).unwrap();
    }
    store.init_meta("operator_token_sha256", "hash").unwrap();
    let keys: HashSet<String> = redis.cli(&["--scan"]).lines().map(str::to_string).collect();
    let shared: HashSet<&str> = ["er:tenants", "er:changes", "er:meta:operator_token_sha256"].into();
    for key in &keys {
        if shared.contains(key.as_str()) {
            continue;
        }
        let owners: Vec<&str> = ["shop", "shop-2"]
            .into_iter()
            .filter(|t| RedisStore::tenant_prefixes(t).iter().any(|p| key.starts_with(p.as_str())))
            .collect();
        assert_eq!(owners.len(), 1, "key {key:?} belongs to exactly one tenant, not {owners:?}");
    }
    for tenant in ["shop", "shop-2"] {
        for what in ["tenant", "catalog", "catalog-ids", "plugins", "pipelines", "activations", "batch:k1"] {
            assert!(keys.contains(&format!("er:{{{tenant}}}:{what}")), "{tenant}: {what} missing from {keys:?}");
        }
        assert!(keys.contains(&format!("er:{{{tenant}:u1}}:events")));
    }
}
