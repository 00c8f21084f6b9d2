//! What a call and a pipeline run report: outcome, fuel, time, logs, changes.

use serde::{Deserialize, Serialize};

use crate::error::StageFailure;

/// One log line a plugin wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// "debug", "info", "warn" or "error".
    pub level: String,
    /// The text (truncated to the log byte cap).
    pub message: String,
}

/// What one call of a plugin cost, whatever its outcome.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CallReport {
    /// Fuel (≈ wasm instructions) used.
    pub fuel_used: u64,
    /// Wall time of the call, instantiation included, in microseconds.
    pub wall_us: f64,
    /// Of which instantiation, in microseconds.
    pub instantiate_us: f64,
    /// The most linear memory the instance held, in bytes.
    pub peak_memory_bytes: u64,
    /// The log lines kept.
    pub logs: Vec<LogLine>,
    /// Log lines dropped over the caps.
    pub logs_dropped: u64,
}

/// A validated stage output, in the stage's own input indices.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageOutput {
    /// The kept candidates, best first, as indices into the stage's input.
    pub order: Vec<u32>,
    /// New scores aligned with `order`, if the stage re-scored.
    pub scores: Option<Vec<f32>>,
    /// Reason codes aligned with `order`, if any.
    pub reasons: Option<Vec<String>>,
}

/// What happened to a stage in a pipeline run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StageStatus {
    /// It ran and its output was applied.
    Ran,
    /// It failed and `on_error: skip` passed the candidates on unchanged.
    Skipped {
        /// Why it failed.
        failure: StageFailure,
    },
    /// It failed and `on_error: fail` failed the request.
    Failed {
        /// Why.
        failure: StageFailure,
    },
}

/// The trace of one stage of a pipeline run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageTrace {
    /// Position in the pipeline.
    pub stage: usize,
    /// The plugin's name (or short content hash).
    pub plugin: String,
    /// Ran, skipped or failed.
    #[serde(flatten)]
    pub status: StageStatus,
    /// Candidates in.
    pub input_len: usize,
    /// Candidates out (the input's count when skipped).
    pub output_len: usize,
    /// Item ids it dropped.
    pub removed: Vec<u64>,
    /// Kept items whose relative position changed (0 for a pure filter).
    pub moved: usize,
    /// Cost and logs.
    pub report: CallReport,
}

/// A candidate leaving the pipeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinalCandidate {
    /// Index into the pipeline's input batch.
    pub index: u32,
    /// Item id.
    pub id: u64,
    /// Final score.
    pub score: f32,
    /// Reason codes, `"stage<i>:<code>"`, in stage order.
    pub reasons: Vec<String>,
}

/// The result of a pipeline run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipelineOutcome {
    /// The candidates, best first.
    pub candidates: Vec<FinalCandidate>,
    /// One entry per stage.
    pub stages: Vec<StageTrace>,
}

/// How many kept entries changed relative position: `order` (ascending input
/// indices = unchanged) minus its longest increasing subsequence.
pub(crate) fn moved_count(order: &[u32]) -> usize {
    // Patience sorting, O(n log n); an entry that extends the longest run
    // (every entry of a pure filter's order) skips the binary search.
    let mut tails: Vec<u32> = Vec::with_capacity(order.len());
    for &x in order {
        if tails.last().is_none_or(|&last| last < x) {
            tails.push(x);
        } else if let Err(at) = tails.binary_search(&x) {
            tails[at] = x;
        }
    }
    order.len() - tails.len()
}

#[cfg(test)]
mod tests {
    use super::moved_count;

    #[test]
    fn moved_count_is_len_minus_longest_increasing_run() {
        assert_eq!(moved_count(&[0, 1, 2, 3]), 0);
        assert_eq!(moved_count(&[0, 2, 3]), 0); // a pure filter moves nothing
        assert_eq!(moved_count(&[3, 0, 1, 2]), 1); // one item pinned to the top
        assert_eq!(moved_count(&[3, 2, 1, 0]), 3);
    }
}
