//! The operator API's JSON forms of stored records (plugin versions,
//! pipeline versions and their stages, model versions). The store keeps
//! its own records and knows no OpenAPI; these are what the API answers
//! and documents, field for field the same JSON.

use serde::{Deserialize, Serialize};

use edgerec_catalog::Filter;

use crate::integral;
use crate::store::{ModelVersion, OnErrorPolicy, PipelineRecord, PluginVersion, StageSpec};

/// One uploaded plugin version.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = PluginVersion)]
pub struct PluginVersionJson {
    /// Plugin name.
    pub name: String,
    /// 1, 2, … per (tenant, name).
    pub version: u32,
    /// sha256 of the component bytes (hex).
    pub digest: String,
    /// Component size in bytes.
    pub size: usize,
    /// Unix seconds.
    pub uploaded_at: i64,
    /// The plugin name the component declares (its `edgerec:plugin-name` section), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_name: Option<String>,
}

impl From<PluginVersion> for PluginVersionJson {
    fn from(p: PluginVersion) -> Self {
        let PluginVersion { name, version, digest, size, uploaded_at, declared_name } = p;
        PluginVersionJson { name, version, digest, size, uploaded_at, declared_name }
    }
}

/// One stage of a pipeline.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = StageSpec)]
pub struct StageSpecJson {
    /// Plugin name (uploaded to this tenant).
    pub plugin: String,
    /// Plugin version; absent in a request = the latest.
    #[serde(default, deserialize_with = "integral::optional")]
    pub version: Option<u32>,
    /// The stage's configuration, handed to the plugin.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// `skip` (fail open, candidates pass unchanged) or `fail` (the request fails).
    #[serde(default)]
    pub on_error: OnErrorPolicyJson,
    /// Per-call limits (deadline_us, fuel, memory_bytes, max_reason_bytes,
    /// max_log_lines, max_log_bytes); each one absent takes the server's
    /// default, each one given must be within the server's maxima.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub limits: Option<edgerec_runtime::LimitsSpec>,
}

impl From<StageSpec> for StageSpecJson {
    fn from(s: StageSpec) -> Self {
        let StageSpec { plugin, version, config, on_error, limits } = s;
        StageSpecJson { plugin, version, config, on_error: on_error.into(), limits }
    }
}

impl From<StageSpecJson> for StageSpec {
    fn from(s: StageSpecJson) -> Self {
        let StageSpecJson { plugin, version, config, on_error, limits } = s;
        StageSpec { plugin, version, config, on_error: on_error.into(), limits }
    }
}

/// What a failing stage does to the request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = OnErrorPolicy)]
pub enum OnErrorPolicyJson {
    /// Fail open: the candidates pass the stage unchanged (the default).
    #[default]
    Skip,
    /// The request fails with 502 plugin_failed.
    Fail,
}

impl From<OnErrorPolicy> for OnErrorPolicyJson {
    fn from(p: OnErrorPolicy) -> Self {
        match p {
            OnErrorPolicy::Skip => OnErrorPolicyJson::Skip,
            OnErrorPolicy::Fail => OnErrorPolicyJson::Fail,
        }
    }
}

impl From<OnErrorPolicyJson> for OnErrorPolicy {
    fn from(p: OnErrorPolicyJson) -> Self {
        match p {
            OnErrorPolicyJson::Skip => OnErrorPolicy::Skip,
            OnErrorPolicyJson::Fail => OnErrorPolicy::Fail,
        }
    }
}

/// A pipeline's retrieval step.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Retrieve)]
pub struct RetrieveJson {
    /// Hard filters over catalog attributes, all of which must hold:
    /// retrieval keeps only the items they let through before it takes the
    /// candidates, so a filtered item never reaches a stage. Ops: `eq ne gt
    /// ge lt le` (numbers; `eq ne` for booleans and strings), `in` (an
    /// array), `contains` (substring of a string, element of a list),
    /// `present`, `missing`. A missing value passes only `missing`. Checked
    /// against the catalog when the version is activated: the attribute must
    /// be in the catalog, the op must fit its type.
    #[serde(rename = "where")]
    pub predicates: Vec<edgerec_catalog::Predicate>,
}

impl From<RetrieveJson> for Filter {
    fn from(r: RetrieveJson) -> Self {
        Filter { predicates: r.predicates }
    }
}

/// One pipeline version.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = PipelineRecord)]
pub struct PipelineRecordJson {
    /// 1, 2, … per tenant.
    pub version: u32,
    /// Retrieval's hard filters (absent: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrieve: Option<RetrieveJson>,
    /// Stages in order, with resolved plugin versions.
    pub stages: Vec<StageSpecJson>,
    /// Unix seconds.
    pub created_at: i64,
}

impl From<PipelineRecord> for PipelineRecordJson {
    fn from(r: PipelineRecord) -> Self {
        PipelineRecordJson {
            version: r.version,
            retrieve: (!r.retrieve.is_empty()).then_some(RetrieveJson { predicates: r.retrieve.predicates }),
            stages: r.stages.into_iter().map(Into::into).collect(),
            created_at: r.created_at,
        }
    }
}

/// One uploaded model version of a tenant (the bundle is stored by digest).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ModelVersion)]
pub struct ModelVersionJson {
    /// The version's name, given at upload (`PUT …/models/{version}`).
    pub version: String,
    /// sha256 of the bundle (hex).
    pub digest: String,
    /// Bundle size in bytes.
    pub size: usize,
    /// Unix seconds.
    pub uploaded_at: i64,
}

impl From<ModelVersion> for ModelVersionJson {
    fn from(m: ModelVersion) -> Self {
        let ModelVersion { version, digest, size, uploaded_at } = m;
        ModelVersionJson { version, digest, size, uploaded_at }
    }
}
