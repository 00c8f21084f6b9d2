//! Every stage output is checked against the contract before it is used.

use crate::bindings::wire;
use crate::config::Limits;
use crate::error::OutputProblem;
use crate::trace::StageOutput;

/// Indices in range and unique, length at most the input's, scores finite and
/// aligned, reasons aligned and within the byte cap.
pub(crate) fn validate_output(output: wire::Output, n: usize, limits: &Limits) -> Result<StageOutput, OutputProblem> {
    let len = output.order.len();
    if len > n {
        return Err(OutputProblem::TooLong { len, max: n });
    }
    let mut seen = vec![false; n];
    for &index in &output.order {
        let slot = seen.get_mut(index as usize).ok_or(OutputProblem::IndexOutOfRange { index, len: n })?;
        if std::mem::replace(slot, true) {
            return Err(OutputProblem::DuplicateIndex { index });
        }
    }
    if let Some(scores) = &output.scores {
        if scores.len() != len {
            return Err(OutputProblem::Misaligned { what: "scores".into(), len: scores.len(), expected: len });
        }
        if let Some(position) = scores.iter().position(|s| !s.is_finite()) {
            return Err(OutputProblem::NonFiniteScore { position });
        }
    }
    if let Some(reasons) = &output.reasons {
        if reasons.len() != len {
            return Err(OutputProblem::Misaligned { what: "reasons".into(), len: reasons.len(), expected: len });
        }
        let bytes: usize = reasons.iter().map(String::len).sum();
        if bytes > limits.max_reason_bytes {
            return Err(OutputProblem::ReasonsTooLarge { bytes, max: limits.max_reason_bytes });
        }
    }
    Ok(StageOutput { order: output.order, scores: output.scores, reasons: output.reasons })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(order: Vec<u32>, scores: Option<Vec<f32>>) -> wire::Output {
        wire::Output { order, scores, reasons: None }
    }

    #[test]
    fn accepts_a_valid_subset_and_rejects_each_problem() {
        let l = Limits::default();
        assert!(validate_output(out(vec![2, 0], Some(vec![1.0, 0.5])), 3, &l).is_ok());
        assert!(matches!(validate_output(out(vec![0, 1, 2, 0], None), 3, &l), Err(OutputProblem::TooLong { .. })));
        assert!(matches!(
            validate_output(out(vec![3], None), 3, &l),
            Err(OutputProblem::IndexOutOfRange { index: 3, .. })
        ));
        assert!(matches!(
            validate_output(out(vec![1, 1], None), 3, &l),
            Err(OutputProblem::DuplicateIndex { index: 1 })
        ));
        assert!(matches!(
            validate_output(out(vec![0, 1], Some(vec![1.0, f32::INFINITY])), 3, &l),
            Err(OutputProblem::NonFiniteScore { position: 1 })
        ));
        assert!(matches!(
            validate_output(out(vec![0, 1], Some(vec![1.0])), 3, &l),
            Err(OutputProblem::Misaligned { .. })
        ));
        let big =
            wire::Output { order: vec![0], scores: None, reasons: Some(vec!["x".repeat(l.max_reason_bytes + 1)]) };
        assert!(matches!(validate_output(big, 3, &l), Err(OutputProblem::ReasonsTooLarge { .. })));
    }
}
