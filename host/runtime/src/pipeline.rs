//! Pipelines: ordered stages, each a plugin with its config, error policy and limits.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::batch::{CandidateBatch, EncodedColumn, GatheredCandidates, RequestContext};
use crate::bindings::wire;
use crate::config::Limits;
use crate::error::{CandidatesError, PluginError, StageFailure};
use crate::runtime::{CompiledPlugin, Runtime};
use crate::trace::{FinalCandidate, PipelineOutcome, StageStatus, StageTrace, moved_count};

/// What a failing stage does to the request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Fail open: the candidates pass on as they came into the stage.
    #[default]
    Skip,
    /// Fail the request.
    Fail,
}

/// One stage: a plugin version, its config, its error policy and limits.
/// Built by [`Runtime::stage`], which checks the config with the plugin.
#[derive(Clone, Debug)]
pub struct Stage {
    /// The plugin.
    pub plugin: Arc<CompiledPlugin>,
    /// The operator's config bytes for this stage (JSON by convention).
    pub config: Vec<u8>,
    /// What a failure does.
    pub on_error: OnError,
    /// Per-call limits.
    pub limits: Limits,
    columns: Vec<String>,
}

impl Stage {
    /// The attribute columns this stage reads (as the plugin declared for this config).
    pub fn columns(&self) -> &[String] {
        &self.columns
    }
}

/// An ordered list of stages.
#[derive(Clone, Debug, Default)]
pub struct Pipeline {
    /// The stages, run in order.
    pub stages: Vec<Stage>,
}

impl Pipeline {
    /// Every attribute column some stage reads, each once, in first-use order:
    /// what the caller should fetch from the catalog.
    pub fn required_columns(&self) -> Vec<String> {
        let mut columns: Vec<String> = Vec::new();
        for name in self.stages.iter().flat_map(|s| s.columns.iter()) {
            if !columns.contains(name) {
                columns.push(name.clone());
            }
        }
        columns
    }
}

impl Runtime {
    /// A stage of `plugin` with `config`: asks the plugin which columns it reads
    /// with this config; a refusal (or a misbehaving plugin) is an error here,
    /// off the request path.
    pub fn stage(
        &self,
        plugin: Arc<CompiledPlugin>,
        config: Vec<u8>,
        on_error: OnError,
        limits: Limits,
    ) -> Result<Stage, PluginError> {
        let (columns, _) = self.columns(&plugin, &config, &limits);
        let columns = match columns {
            Ok(Ok(columns)) => columns,
            Ok(Err(message)) => return Err(PluginError::InvalidConfig { message }),
            Err(failure) => return Err(PluginError::SampleFailed { failure }),
        };
        Ok(Stage { plugin, config, on_error, limits, columns })
    }

    /// Runs the stages in order over the batch. Each stage sees the previous
    /// one's candidates (its columns gathered for those rows) and can drop,
    /// move and re-score them. Blocks: call it from a blocking pool.
    pub fn run_pipeline(
        &self,
        pipeline: &Pipeline,
        ctx: &RequestContext,
        batch: &CandidateBatch,
    ) -> Result<PipelineOutcome, PipelineError> {
        batch.validate()?;
        // Encode each needed column once (strings dictionary-encoded), then gather per stage.
        let encoded: HashMap<String, EncodedColumn> = pipeline
            .required_columns()
            .into_iter()
            .filter_map(|name| batch.column(&name).map(|c| (name, EncodedColumn::encode(c))))
            .collect();
        self.run_encoded(pipeline, ctx, &batch.ids, &batch.scores, &encoded)
    }

    /// [`Runtime::run_pipeline`] over columns a catalog snapshot already
    /// typed and dictionary-encoded ([`edgerec_catalog::GatheredColumn`], one value per
    /// candidate): nothing is parsed or hashed per request. Blocks: call it
    /// from a blocking pool.
    pub fn run_pipeline_gathered(
        &self,
        pipeline: &Pipeline,
        ctx: &RequestContext,
        candidates: GatheredCandidates,
    ) -> Result<PipelineOutcome, PipelineError> {
        candidates.validate()?;
        let GatheredCandidates { ids, scores, columns } = candidates;
        let encoded: HashMap<String, EncodedColumn> =
            columns.into_iter().map(|c| (c.name.clone(), EncodedColumn::from_gathered(c))).collect();
        self.run_encoded(pipeline, ctx, &ids, &scores, &encoded)
    }

    fn run_encoded(
        &self,
        pipeline: &Pipeline,
        ctx: &RequestContext,
        ids: &[u64],
        scores: &[f32],
        encoded: &HashMap<String, EncodedColumn>,
    ) -> Result<PipelineOutcome, PipelineError> {
        let wire_ctx = ctx.to_wire();
        let mut rows: Vec<u32> = (0..ids.len() as u32).collect();
        let mut scores = scores.to_vec();
        // Reason codes as (input row, code id), codes made once per distinct
        // (stage, reason): a stage's reasons repeat ("acme" on every acme item)
        // and most candidates are dropped later, so strings are only cloned
        // for the candidates that leave the pipeline.
        let mut reasons = ReasonLog::default();
        let mut traces = Vec::with_capacity(pipeline.stages.len());
        for (at, stage) in pipeline.stages.iter().enumerate() {
            let candidates = wire::Candidates {
                ids: rows.iter().map(|&r| ids[r as usize]).collect(),
                scores: scores.clone(),
                columns: stage.columns.iter().filter_map(|name| encoded.get(name)).map(|c| c.gather(&rows)).collect(),
            };
            let (result, report) = self.run_wire(&stage.plugin, &wire_ctx, &stage.config, &candidates, &stage.limits);
            let mut trace = StageTrace {
                stage: at,
                plugin: stage.plugin.name().to_owned(),
                status: StageStatus::Ran,
                input_len: rows.len(),
                output_len: rows.len(),
                removed: Vec::new(),
                moved: 0,
                report,
            };
            match result {
                Ok(output) => {
                    let mut kept = vec![false; rows.len()];
                    output.order.iter().for_each(|&j| kept[j as usize] = true);
                    trace.removed = (0..rows.len()).filter(|&j| !kept[j]).map(|j| ids[rows[j] as usize]).collect();
                    trace.moved = moved_count(&output.order);
                    trace.output_len = output.order.len();
                    let new_scores = match output.scores {
                        Some(s) => s,
                        None => output.order.iter().map(|&j| scores[j as usize]).collect(),
                    };
                    rows = output.order.iter().map(|&j| rows[j as usize]).collect();
                    scores = new_scores;
                    if let Some(stage_reasons) = &output.reasons {
                        reasons.record(at, &rows, stage_reasons);
                    }
                    traces.push(trace);
                }
                Err(failure) => match stage.on_error {
                    OnError::Skip => {
                        trace.status = StageStatus::Skipped { failure };
                        traces.push(trace);
                    }
                    OnError::Fail => {
                        trace.status = StageStatus::Failed { failure: failure.clone() };
                        traces.push(trace);
                        return Err(PipelineError::StageFailed {
                            stage: at,
                            plugin: stage.plugin.name().to_owned(),
                            failure,
                            trace: traces,
                        });
                    }
                },
            }
        }
        let mut candidates: Vec<FinalCandidate> = rows
            .iter()
            .zip(&scores)
            .map(|(&row, &score)| FinalCandidate { index: row, id: ids[row as usize], score, reasons: Vec::new() })
            .collect();
        reasons.attach(&rows, ids.len(), &mut candidates);
        Ok(PipelineOutcome { candidates, stages: traces })
    }
}

/// The reason codes stages gave, in stage order, as (input row, code) pairs.
#[derive(Default)]
struct ReasonLog {
    /// Distinct `"stage<i>:<code>"` strings.
    codes: Vec<String>,
    /// (input row, index into `codes`), in the order they were given.
    given: Vec<(u32, u32)>,
}

impl ReasonLog {
    /// Records one stage's reasons; `rows[position]` is the input row of the
    /// stage's output position (`rows` already in the stage's output order).
    fn record(&mut self, stage: usize, rows: &[u32], reasons: &[String]) {
        let mut seen: HashMap<&str, u32> = HashMap::new();
        for (&row, reason) in rows.iter().zip(reasons) {
            if reason.is_empty() {
                continue;
            }
            let code = *seen.entry(reason.as_str()).or_insert_with(|| {
                self.codes.push(format!("stage{stage}:{reason}"));
                (self.codes.len() - 1) as u32
            });
            self.given.push((row, code));
        }
    }

    /// Gives each final candidate (`rows[i]` is candidate i's input row) its
    /// reasons, in stage order.
    fn attach(&self, rows: &[u32], batch_len: usize, candidates: &mut [FinalCandidate]) {
        if self.given.is_empty() {
            return;
        }
        let mut position = vec![u32::MAX; batch_len];
        for (at, &row) in rows.iter().enumerate() {
            position[row as usize] = at as u32;
        }
        for &(row, code) in &self.given {
            if let Some(candidate) = candidates.get_mut(position[row as usize] as usize) {
                candidate.reasons.push(self.codes[code as usize].clone());
            }
        }
    }
}

/// Why a pipeline run failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum PipelineError {
    /// The candidates are malformed.
    #[error("invalid candidates: {0}")]
    Input(#[from] CandidatesError),
    /// A stage with `on_error: fail` failed.
    #[error("stage {stage} ({plugin}) failed: {failure}")]
    StageFailed {
        /// Its position in the pipeline.
        stage: usize,
        /// The plugin's short hash.
        plugin: String,
        /// How.
        failure: StageFailure,
        /// The trace up to and including the failed stage.
        trace: Vec<StageTrace>,
    },
}
