use super::*;

fn config(json: &str) -> Config {
    edgerec_sdk::parse_config(json.as_bytes()).unwrap()
}

fn cands() -> Candidates {
    Candidates::new(vec![100, 101, 102, 103, 104], vec![0.5, 0.4, 0.3, 0.2, 0.1])
        .with_string("brand", vec![Some("x"), Some("acme"), None, Some("acme"), Some("y")])
        .with_f64("margin", vec![Some(0.1), Some(0.5), Some(0.9), None, Some(0.2)])
        .with_bool("sponsored", vec![Some(false), Some(false), Some(false), Some(false), Some(true)])
        .with_string_list("tags", vec![Some(vec!["clearance"]), Some(vec![]), None, Some(vec!["new"]), None])
}

#[test]
fn multiply_and_add_rescore_and_resort_with_reasons() {
    let c = config(
        r#"{"rules": [
            {"name": "acme", "attribute": "brand", "op": "eq", "value": "acme", "action": {"multiply": 2.0}},
            {"attribute": "margin", "op": "ge", "value": 0.9, "action": {"add": 1.0}}
        ]}"#,
    );
    let out = Boost::run(&Context::new("t"), &c, &cands()).unwrap();
    // scores: 0.5, 0.8, 1.3, 0.4, 0.1
    assert_eq!(out.order(), &[2, 1, 0, 3, 4]);
    let scores = out.scores().unwrap();
    assert!((scores[0] - 1.3).abs() < 1e-6 && (scores[1] - 0.8).abs() < 1e-6);
    assert_eq!(out.reasons().unwrap()[..2], ["rule1".to_string(), "acme".to_string()]);
}

#[test]
fn bury_then_pin() {
    let c = config(
        r#"{"rules": [
            {"attribute": "tags", "op": "contains", "value": "clearance", "action": "bury"},
            {"attribute": "sponsored", "op": "eq", "value": true, "action": {"pin": 0}}
        ]}"#,
    );
    let out = Boost::run(&Context::new("t"), &c, &cands()).unwrap();
    assert_eq!(out.order(), &[4, 1, 2, 3, 0]);
}

#[test]
fn missing_values_match_only_missing() {
    let c = config(r#"{"rules": [{"attribute": "margin", "op": "missing", "action": "bury"}]}"#);
    let out = Boost::run(&Context::new("t"), &c, &cands()).unwrap();
    assert_eq!(out.order(), &[0, 1, 2, 4, 3]);
    let lt = config(r#"{"rules": [{"attribute": "margin", "op": "lt", "value": 0.15, "action": "bury"}]}"#);
    assert_eq!(Boost::run(&Context::new("t"), &lt, &cands()).unwrap().order(), &[1, 2, 3, 4, 0]);
}

#[test]
fn bad_configs_are_refused_at_setup() {
    let bad = config(r#"{"rules": [{"attribute": "brand", "op": "lt", "value": "a", "action": "bury"}]}"#);
    assert!(Boost::columns(&bad).is_err());
    assert!(edgerec_sdk::parse_config::<Config>(br#"{"rules": [{"attribute": "a", "op": "nope"}]}"#).is_err());
    // A misspelt key is refused rather than ignored.
    let typo = br#"{"rules": [{"attribute": "a", "op": "present", "acton": "bury"}]}"#;
    assert!(edgerec_sdk::parse_config::<Config>(typo).is_err());
    let unknown = br#"{"rules": [{"attribute": "a", "op": "present", "action": "bury", "weight": 2}]}"#;
    assert!(edgerec_sdk::parse_config::<Config>(unknown).is_err());
    let good = config(
        r#"{"rules": [{"attribute": "brand", "op": "eq", "value": "a", "action": "bury"},
                      {"attribute": "brand", "op": "present", "action": {"add": 1}}]}"#,
    );
    assert_eq!(Boost::columns(&good).unwrap(), vec!["brand".to_string()]);
}

#[test]
fn type_mismatch_at_run_time_is_an_error() {
    let c = config(r#"{"rules": [{"attribute": "brand", "op": "gt", "value": 3, "action": "bury"}]}"#);
    assert!(Boost::run(&Context::new("t"), &c, &cands()).is_err());
}
