//! The console's pages as data: one askama template per page (in
//! `host/server/console/templates`), and the rows they show, built from
//! the service's state and the metrics ring. Every value is escaped by the
//! templates; nothing here writes markup.

use askama::Template;

use super::charts::{self, Chart, Unit};
use crate::metrics_ring::{
    self, PLUGIN_ERRORS, PLUGIN_FUEL, PLUGIN_SECONDS, PLUGIN_SKIPS, REQUEST_SECONDS, SLOT_SECONDS,
};
use crate::service::console::{Flash, FlashKind};
use edgerec_catalog::Filter;

use crate::store::{ModelVersion, PipelineRecord, PluginVersion, StageSpec};

/// The route whose requests the console counts as a tenant's recommends.
const RECOMMEND_ROUTE: &str = "/v1/tenants/{tenant}/recommend";
/// The overview's "last minutes": 30 slots of 10 s.
const RECENT_SLOTS: usize = 30;

/// What every page has around its content.
pub struct Chrome {
    /// The page's title.
    pub title: String,
    /// The login's CSRF token (none on the login page: not logged in yet).
    pub csrf: Option<String>,
    /// Messages of the last action.
    pub flashes: Vec<FlashView>,
}

/// A message as shown.
pub struct FlashView {
    /// Its CSS class.
    pub class: &'static str,
    /// Its text.
    pub text: String,
}

impl From<Flash> for FlashView {
    fn from(flash: Flash) -> Self {
        let class = match flash.kind {
            FlashKind::Done => "done",
            FlashKind::Refused => "refused",
            FlashKind::Secret => "secret",
        };
        FlashView { class, text: flash.text }
    }
}

/// The login form.
#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    /// Around it.
    pub chrome: Chrome,
}

/// The tenants overview.
#[derive(Template)]
#[template(path = "tenants.html")]
pub struct TenantsPage {
    /// Around it.
    pub chrome: Chrome,
    /// How many minutes the rates and latencies cover.
    pub minutes: u64,
    /// One row per tenant.
    pub tenants: Vec<TenantRow>,
}

/// A tenant in the overview.
pub struct TenantRow {
    /// Name.
    pub name: String,
    /// Loaded and serving.
    pub available: bool,
    /// Why not, when not.
    pub reason: String,
    /// The backend serving it.
    pub backend: String,
    /// The model serving it.
    pub model: String,
    /// The active pipeline version.
    pub pipeline: String,
    /// Recommends per second lately.
    pub rate: String,
    /// Recommend latency, median.
    pub p50: String,
    /// Recommend latency, 99th percentile.
    pub p99: String,
}

/// Recent recommend statistics of a tenant: rate, p50, p99 (formatted).
pub fn recent_recommends(tenant: &str, now: u64) -> (String, String, String) {
    let window = metrics_ring::global().window(REQUEST_SECONDS, &[("tenant", tenant), ("route", RECOMMEND_ROUTE)], now);
    let recent = window.last(RECENT_SLOTS);
    let rate = recent.count as f64 / (RECENT_SLOTS as u64 * SLOT_SECONDS) as f64;
    let quantile = |q| recent.quantile(q).map_or_else(|| "–".to_string(), charts::duration);
    (format!("{rate:.2}"), quantile(0.5), quantile(0.99))
}

/// The overview's time span in minutes.
pub fn recent_minutes() -> u64 {
    RECENT_SLOTS as u64 * SLOT_SECONDS / 60
}

/// One tenant's page.
#[derive(Template)]
#[template(path = "tenant.html")]
pub struct TenantPage {
    /// Around it.
    pub chrome: Chrome,
    /// The CSRF token of its forms.
    pub csrf: String,
    /// Tenant name.
    pub name: String,
    /// Backend serving it.
    pub backend: String,
    /// Model serving it.
    pub model: String,
    /// Active pipeline version (0: none).
    pub pipeline_version: u32,
    /// Recommends per second lately.
    pub rate: String,
    /// Charts of the last 15 minutes.
    pub charts: Vec<Chart>,
    /// The active pipeline's stages.
    pub stages: Vec<StageRow>,
    /// The active pipeline as `PUT …/pipeline`'s body, to start a new version from.
    pub stages_json: String,
    /// What a rollback would serve, when there is something to roll back to.
    pub rollback: Option<RollbackView>,
    /// Every pipeline version, newest first.
    pub versions: Vec<VersionRow>,
    /// The try-it form's values.
    pub trial_form: TrialForm,
    /// The try-it answer, on the page that ran it.
    pub trial: Option<TrialView>,
    /// Plugin versions.
    pub plugins: Vec<PluginRow>,
    /// Uploaded model versions.
    pub models: Vec<ModelRow>,
    /// Whether an uploaded model version serves (a rollback may return from it).
    pub model_rollback: bool,
    /// Storefront keys.
    pub keys: Vec<KeyRow>,
}

/// A stage of the active pipeline with its recent cost.
pub struct StageRow {
    /// Position, from 0.
    pub index: usize,
    /// Plugin name.
    pub plugin: String,
    /// Plugin version.
    pub version: u32,
    /// `skip` or `fail`.
    pub on_error: String,
    /// Its limits as JSON (`default` when none are set).
    pub limits: String,
    /// Its config as JSON.
    pub config: String,
    /// Calls in the window.
    pub calls: u64,
    /// Mean wall time per call.
    pub mean: String,
    /// 99th percentile wall time.
    pub p99: String,
    /// Mean fuel per call.
    pub fuel: String,
    /// Failed calls (skipped ones included).
    pub failures: u64,
    /// Failed calls skipped (`on_error: skip`).
    pub skips: u64,
}

/// One line of a diff.
pub struct DiffLine {
    /// `+`, `-` or a space.
    pub sign: &'static str,
    /// Its CSS class.
    pub class: &'static str,
    /// The line.
    pub text: String,
}

/// What a rollback would serve.
pub struct RollbackView {
    /// The version it returns to.
    pub version: u32,
    /// The difference from the active version.
    pub diff: Vec<DiffLine>,
}

/// A pipeline version.
pub struct VersionRow {
    /// Its number.
    pub version: u32,
    /// When it was stored.
    pub created: String,
    /// Its stages on one line.
    pub summary: String,
    /// Whether it serves.
    pub active: bool,
    /// What activating it changes.
    pub diff: Vec<DiffLine>,
}

/// The try-it form's values (kept after a run).
#[derive(Clone, Default, serde::Deserialize)]
pub struct TrialForm {
    /// Shopper id (optional).
    #[serde(default)]
    pub user_id: String,
    /// Item ids, comma-separated, oldest first.
    #[serde(default)]
    pub items: String,
    /// How many items.
    #[serde(default = "default_k")]
    pub k: String,
}

fn default_k() -> String {
    "10".into()
}

/// A try-it answer.
pub struct TrialView {
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// The pipeline version that answered.
    pub pipeline_version: u32,
    /// Whether the answer was degraded (shared store away).
    pub degraded: bool,
    /// The items, best first.
    pub items: Vec<TrialItem>,
    /// What each stage did.
    pub trace: Vec<TraceRow>,
}

/// A recommended item.
pub struct TrialItem {
    /// External id.
    pub item: String,
    /// Score, formatted.
    pub score: String,
    /// Reason codes, comma-separated.
    pub reasons: String,
}

/// One stage of a try-it trace.
pub struct TraceRow {
    /// `plugin@version`.
    pub stage: String,
    /// `ran`, `skipped` or `failed`.
    pub status: String,
    /// Why it failed (empty when it did not).
    pub failure: String,
    /// Candidates in.
    pub input_len: usize,
    /// Candidates out.
    pub output_len: usize,
    /// Dropped items, comma-separated.
    pub removed: String,
    /// Kept items it moved.
    pub moved: usize,
    /// Wall time.
    pub time: String,
    /// Fuel used.
    pub fuel: u64,
    /// Its log lines, one per line.
    pub logs: String,
}

/// A plugin version.
pub struct PluginRow {
    /// Plugin name.
    pub name: String,
    /// Version.
    pub version: u32,
    /// First 12 hex digits of its digest.
    pub digest: String,
    /// Size, formatted.
    pub size: String,
    /// When uploaded.
    pub uploaded: String,
    /// The pipeline versions that use it (empty: deletable).
    pub used_by: String,
}

/// A model version.
pub struct ModelRow {
    /// Its name.
    pub version: String,
    /// Size, formatted.
    pub size: String,
    /// When uploaded.
    pub uploaded: String,
    /// Whether it serves.
    pub active: bool,
}

/// A storefront key (never the key itself).
pub struct KeyRow {
    /// Its id.
    pub id: String,
    /// When issued.
    pub created: String,
}

/// Unix seconds as `YYYY-MM-DD HH:MM UTC`.
pub fn timestamp(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let seconds = unix.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil: the proleptic Gregorian date of a day number.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", seconds / 3600, seconds % 3600 / 60)
}

/// Bytes as B, KiB or MiB.
pub fn size(bytes: usize) -> String {
    match bytes {
        b if b < 1 << 10 => format!("{b} B"),
        b if b < 1 << 20 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    }
}

fn on_error(stage: &StageSpec) -> String {
    serde_json::to_value(stage.on_error).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

fn limits(stage: &StageSpec) -> String {
    stage
        .limits
        .as_ref()
        .and_then(|l| serde_json::to_string(l).ok())
        .filter(|l| l != "{}")
        .unwrap_or_else(|| "default".into())
}

/// A stage on one line, as diffs show it.
fn stage_line(index: usize, stage: &StageSpec) -> String {
    format!(
        "stage {index}: {}@{} on_error={} limits={} config={}",
        stage.plugin,
        stage.version.unwrap_or(0),
        on_error(stage),
        limits(stage),
        stage.config
    )
}

/// A pipeline's retrieval filter on one line (`None` without one).
pub fn filter_line(filter: &Filter) -> Option<String> {
    let predicates: Vec<String> = filter
        .predicates
        .iter()
        .map(|p| match p.value.is_null() {
            true => format!("{} {}", p.attribute, p.op.name()),
            false => format!("{} {} {}", p.attribute, p.op.name(), p.value),
        })
        .collect();
    (!predicates.is_empty()).then(|| format!("retrieve where {}", predicates.join(" and ")))
}

/// A pipeline's filter and stages as lines (an empty pipeline says so).
fn pipeline_lines(filter: &Filter, stages: &[StageSpec]) -> Vec<String> {
    let mut lines: Vec<String> = filter_line(filter).into_iter().collect();
    if stages.is_empty() {
        lines.push("no stages (the model's ranking)".into());
    }
    lines.extend(stages.iter().enumerate().map(|(i, s)| stage_line(i, s)));
    lines
}

/// The line diff from the active pipeline (filter and stages) to a candidate's.
pub fn diff(active: (&Filter, &[StageSpec]), candidate: (&Filter, &[StageSpec])) -> Vec<DiffLine> {
    let (old, new) = (pipeline_lines(active.0, active.1), pipeline_lines(candidate.0, candidate.1));
    let old: Vec<&str> = old.iter().map(String::as_str).collect();
    let new: Vec<&str> = new.iter().map(String::as_str).collect();
    similar::TextDiff::from_slices(&old, &new)
        .iter_all_changes()
        .map(|change| {
            let (sign, class) = match change.tag() {
                similar::ChangeTag::Delete => ("-", "del"),
                similar::ChangeTag::Insert => ("+", "add"),
                similar::ChangeTag::Equal => (" ", "same"),
            };
            DiffLine { sign, class, text: change.value().to_string() }
        })
        .collect()
}

/// The active pipeline's stages with their cost over the ring's window.
pub fn stage_rows(tenant: &str, stages: &[StageSpec], now: u64) -> Vec<StageRow> {
    let ring = metrics_ring::global();
    stages
        .iter()
        .enumerate()
        .map(|(index, stage)| {
            let labels = [("tenant", tenant), ("stage", stage.plugin.as_str())];
            let time = ring.window(PLUGIN_SECONDS, &labels, now).total();
            let fuel = ring.window(PLUGIN_FUEL, &labels, now).total();
            let calls = time.count;
            StageRow {
                index,
                plugin: stage.plugin.clone(),
                version: stage.version.unwrap_or(0),
                on_error: on_error(stage),
                limits: limits(stage),
                config: stage.config.to_string(),
                calls,
                mean: if calls > 0 { charts::duration(time.sum / calls as f64) } else { "–".into() },
                p99: time.quantile(0.99).map_or_else(|| "–".into(), charts::duration),
                fuel: if calls > 0 { format!("{:.0}", fuel.sum / calls as f64) } else { "–".into() },
                failures: ring.window(PLUGIN_ERRORS, &labels, now).total().sum as u64,
                skips: ring.window(PLUGIN_SKIPS, &labels, now).total().sum as u64,
            }
        })
        .collect()
}

/// The tenant page's charts: recommend rate, recommend latency, stage time.
pub fn tenant_charts(tenant: &str, now: u64) -> Vec<Chart> {
    let ring = metrics_ring::global();
    let requests = ring.window(REQUEST_SECONDS, &[("tenant", tenant), ("route", RECOMMEND_ROUTE)], now);
    let stages: Vec<(String, Vec<Option<f64>>)> = ring
        .label_values(PLUGIN_SECONDS, "stage", &[("tenant", tenant)])
        .into_iter()
        .map(|stage| {
            let window = ring.window(PLUGIN_SECONDS, &[("tenant", tenant), ("stage", stage.as_str())], now);
            (stage, charts::means(&window))
        })
        .collect();
    vec![
        charts::chart(
            "Recommends per second",
            "chart-rate",
            Unit::Rate,
            vec![("recommends/s".into(), charts::rates(&requests))],
        ),
        charts::chart(
            "Recommend latency",
            "chart-latency",
            Unit::Seconds,
            vec![("p50".into(), charts::quantiles(&requests, 0.5)), ("p99".into(), charts::quantiles(&requests, 0.99))],
        ),
        charts::chart("Stage time (mean per call)", "chart-stages", Unit::Seconds, stages),
    ]
}

/// Pipeline versions, newest first, each with what activating it changes.
pub fn version_rows(
    versions: &[PipelineRecord],
    active: u32,
    active_pipeline: (&Filter, &[StageSpec]),
) -> Vec<VersionRow> {
    versions
        .iter()
        .rev()
        .map(|record| {
            let stages = match record.stages.is_empty() {
                true => "no stages".to_string(),
                false => record
                    .stages
                    .iter()
                    .map(|s| format!("{}@{}", s.plugin, s.version.unwrap_or(0)))
                    .collect::<Vec<_>>()
                    .join(" → "),
            };
            VersionRow {
                version: record.version,
                created: timestamp(record.created_at),
                summary: match filter_line(&record.retrieve) {
                    Some(filter) => format!("{filter} → {stages}"),
                    None => stages,
                },
                active: record.version == active,
                diff: diff(active_pipeline, (&record.retrieve, &record.stages)),
            }
        })
        .collect()
}

/// Plugin versions with the pipeline versions that use each.
pub fn plugin_rows(plugins: Vec<PluginVersion>, pipelines: &[PipelineRecord]) -> Vec<PluginRow> {
    plugins
        .into_iter()
        .map(|p| {
            let used_by: Vec<String> = pipelines
                .iter()
                .filter(|record| record.stages.iter().any(|s| s.plugin == p.name && s.version == Some(p.version)))
                .map(|record| record.version.to_string())
                .collect();
            PluginRow {
                digest: p.digest.chars().take(12).collect(),
                size: size(p.size),
                uploaded: timestamp(p.uploaded_at),
                used_by: used_by.join(", "),
                name: p.name,
                version: p.version,
            }
        })
        .collect()
}

/// Model versions, with the one serving marked.
pub fn model_rows(models: Vec<ModelVersion>, active: Option<&str>) -> Vec<ModelRow> {
    models
        .into_iter()
        .map(|m| ModelRow {
            active: active == Some(m.version.as_str()),
            size: size(m.size),
            uploaded: timestamp(m.uploaded_at),
            version: m.version,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(plugin: &str, version: u32) -> StageSpec {
        StageSpec {
            plugin: plugin.into(),
            version: Some(version),
            config: serde_json::json!({"k": 1}),
            on_error: Default::default(),
            limits: None,
        }
    }

    #[test]
    fn the_diff_shows_removed_added_and_kept_stages() {
        let none = Filter::default();
        let active = [stage("in-stock", 1), stage("boost", 1)];
        let candidate = [stage("in-stock", 1), stage("boost", 2)];
        let lines: Vec<(&str, String)> =
            diff((&none, &active), (&none, &candidate)).into_iter().map(|l| (l.sign, l.text)).collect();
        assert_eq!(
            lines,
            [
                (" ", "stage 0: in-stock@1 on_error=skip limits=default config={\"k\":1}".to_string()),
                ("-", "stage 1: boost@1 on_error=skip limits=default config={\"k\":1}".to_string()),
                ("+", "stage 1: boost@2 on_error=skip limits=default config={\"k\":1}".to_string()),
            ]
        );
        let to_nothing: Vec<&str> = diff((&none, &active), (&none, &[])).iter().map(|l| l.sign).collect();
        assert_eq!(to_nothing, ["-", "-", "+"]);
        let filtered: Filter =
            serde_json::from_value(serde_json::json!([{"attribute": "stock", "op": "gt", "value": 0}]))
                .expect("a filter");
        let lines: Vec<(&str, String)> =
            diff((&none, &active), (&filtered, &active)).into_iter().map(|l| (l.sign, l.text)).collect();
        assert_eq!(lines[0], ("+", "retrieve where stock gt 0".to_string()), "a filter is part of the diff");
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(timestamp(0), "1970-01-01 00:00 UTC");
        assert_eq!(timestamp(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(timestamp(1_767_225_599), "2025-12-31 23:59 UTC");
    }

    #[test]
    fn plugins_name_the_pipeline_versions_that_use_them() {
        let plugins = vec![
            PluginVersion {
                name: "boost".into(),
                version: 1,
                digest: "ab".repeat(32),
                size: 2048,
                uploaded_at: 0,
                declared_name: None,
            },
            PluginVersion {
                name: "boost".into(),
                version: 2,
                digest: "cd".repeat(32),
                size: 10,
                uploaded_at: 0,
                declared_name: None,
            },
        ];
        let pipelines = [
            PipelineRecord { version: 1, retrieve: Filter::default(), stages: vec![stage("boost", 1)], created_at: 0 },
            PipelineRecord {
                version: 2,
                retrieve: Filter::default(),
                stages: vec![stage("boost", 1), stage("in-stock", 1)],
                created_at: 0,
            },
        ];
        let rows = plugin_rows(plugins, &pipelines);
        assert_eq!(rows[0].used_by, "1, 2");
        assert_eq!(rows[1].used_by, "");
        assert_eq!((rows[0].digest.len(), rows[0].size.as_str()), (12, "2.0 KiB"));
    }
}
