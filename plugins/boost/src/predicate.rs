//! Attribute predicates of boost rules, evaluated column-wise.

use edgerec_sdk::Candidates;
use serde::Deserialize;
use serde_json::Value;

/// `attribute op value`, e.g. `price lt 20`.
#[derive(Clone, Debug, Deserialize)]
pub struct Predicate {
    /// The attribute column it reads.
    pub attribute: String,
    /// The comparison.
    pub op: Op,
    /// The operand (absent for `present` / `missing`).
    #[serde(default)]
    pub value: Value,
}

/// A comparison.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Less than.
    Lt,
    /// At most.
    Le,
    /// Greater than.
    Gt,
    /// At least.
    Ge,
    /// Substring of a string / member of a list of strings.
    Contains,
    /// Has a value.
    Present,
    /// Has no value.
    Missing,
}

impl Predicate {
    /// Checks the operand fits the op (at config time).
    pub fn check(&self) -> Result<(), String> {
        let ok = match self.op {
            Op::Present | Op::Missing => true,
            Op::Lt | Op::Le | Op::Gt | Op::Ge => self.value.as_f64().is_some(),
            Op::Contains => self.value.is_string(),
            Op::Eq | Op::Ne => self.value.is_number() || self.value.is_string() || self.value.is_boolean(),
        };
        if self.attribute.is_empty() {
            return Err("`attribute` must be non-empty".into());
        }
        if !ok {
            return Err(format!("op {:?} does not take the value {}", self.op, self.value));
        }
        Ok(())
    }

    /// Whether it holds, per candidate. An absent column means every value is missing.
    pub fn evaluate(&self, cands: &Candidates) -> Result<Vec<bool>, String> {
        let n = cands.len() as u32;
        let name = self.attribute.as_str();
        let mismatch = || format!("op {:?} with value {} does not apply to column `{name}`", self.op, self.value);
        let holds: Vec<bool> = if let Some(c) = cands.f64(name) {
            (0..n).map(|i| self.number(c.get(i))).collect::<Option<_>>().ok_or_else(mismatch)?
        } else if let Some(c) = cands.i64(name) {
            (0..n).map(|i| self.number(c.get(i).map(|v| v as f64))).collect::<Option<_>>().ok_or_else(mismatch)?
        } else if let Some(c) = cands.bool(name) {
            (0..n).map(|i| self.boolean(c.get(i))).collect::<Option<_>>().ok_or_else(mismatch)?
        } else if let Some(c) = cands.string(name) {
            // Evaluate once per distinct string, then look codes up.
            let per_code: Vec<Option<bool>> = c.dictionary().iter().map(|s| self.string(Some(s))).collect();
            let absent = self.string(None).ok_or_else(mismatch)?;
            (0..n)
                .map(|i| c.code(i).map_or(Some(absent), |code| per_code[code as usize]))
                .collect::<Option<_>>()
                .ok_or_else(mismatch)?
        } else if let Some(c) = cands.string_list(name) {
            (0..n).map(|i| self.list(c.get(i))).collect::<Option<_>>().ok_or_else(mismatch)?
        } else {
            vec![self.op == Op::Missing; n as usize]
        };
        Ok(holds)
    }

    /// `None` = the op does not apply to this type.
    fn presence(&self, present: bool) -> Option<bool> {
        match self.op {
            Op::Present => Some(present),
            Op::Missing => Some(!present),
            _ => None,
        }
    }

    fn number(&self, v: Option<f64>) -> Option<bool> {
        if let Some(answer) = self.presence(v.is_some()) {
            return Some(answer);
        }
        let operand = self.value.as_f64()?;
        let Some(v) = v else { return Some(false) };
        match self.op {
            Op::Eq => Some(v == operand),
            Op::Ne => Some(v != operand),
            Op::Lt => Some(v < operand),
            Op::Le => Some(v <= operand),
            Op::Gt => Some(v > operand),
            Op::Ge => Some(v >= operand),
            _ => None,
        }
    }

    fn boolean(&self, v: Option<bool>) -> Option<bool> {
        if let Some(answer) = self.presence(v.is_some()) {
            return Some(answer);
        }
        let operand = self.value.as_bool()?;
        let Some(v) = v else { return Some(false) };
        match self.op {
            Op::Eq => Some(v == operand),
            Op::Ne => Some(v != operand),
            _ => None,
        }
    }

    fn string(&self, v: Option<&str>) -> Option<bool> {
        if let Some(answer) = self.presence(v.is_some()) {
            return Some(answer);
        }
        let operand = self.value.as_str()?;
        let Some(v) = v else { return Some(false) };
        match self.op {
            Op::Eq => Some(v == operand),
            Op::Ne => Some(v != operand),
            Op::Contains => Some(v.contains(operand)),
            _ => None,
        }
    }

    fn list(&self, v: Option<Vec<&str>>) -> Option<bool> {
        if let Some(answer) = self.presence(v.is_some()) {
            return Some(answer);
        }
        let operand = self.value.as_str()?;
        let Some(v) = v else { return Some(false) };
        match self.op {
            Op::Contains => Some(v.contains(&operand)),
            _ => None,
        }
    }
}
