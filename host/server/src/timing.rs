//! Stage timings as metrics: a leaf, so that the extractors, the recommend
//! path and the pipeline record their stages without importing each other.

use std::time::Instant;

/// Records the time of one stage as a metric (the span records it for traces).
pub fn stage_done(stage: &'static str, start: Instant) {
    metrics::histogram!("edgerec_stage_seconds", "stage" => stage).record(start.elapsed().as_secs_f64());
}
