//! AdamW with its moments kept in named tensors, so that a checkpoint can
//! save and `--resume` restore them (candle's own AdamW keeps them private).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor, Var, backprop::GradStore};

use crate::error::TrainError;

/// AdamW hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWParams {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator floor.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

/// AdamW over named variables.
pub struct AdamW {
    vars: Vec<(String, Var)>,
    first: Vec<Tensor>,
    second: Vec<Tensor>,
    step: u64,
    params: AdamWParams,
}

impl AdamW {
    /// Fresh moments (zeros) for `vars`.
    pub fn new(vars: Vec<(String, Var)>, params: AdamWParams) -> Result<Self, TrainError> {
        let first = vars.iter().map(|(_, v)| v.zeros_like()).collect::<candle_core::Result<Vec<_>>>()?;
        let second = first.clone();
        Ok(AdamW { vars, first, second, step: 0, params })
    }

    /// One update from the gradients of a backward pass (variables without a gradient are left alone).
    pub fn step(&mut self, grads: &GradStore) -> Result<(), TrainError> {
        self.step += 1;
        let p = self.params;
        let correction1 = 1.0 - p.beta1.powi(self.step as i32);
        let correction2 = 1.0 - p.beta2.powi(self.step as i32);
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(grad) = grads.get(var) else { continue };
            // Detached: a moment that kept the gradient's op graph would keep every
            // step's forward graph alive (memory grew by GBs per epoch before this).
            let grad = grad.detach();
            let grad = &grad;
            let m = ((&self.first[i] * p.beta1)? + (grad * (1.0 - p.beta1))?)?;
            let v = ((&self.second[i] * p.beta2)? + (grad.sqr()? * (1.0 - p.beta2))?)?;
            let update = ((&m / correction1)? / ((&v / correction2)?.sqrt()? + p.eps)?)?;
            let theta = var.as_tensor().detach();
            let theta = &theta;
            let decayed = (theta * (1.0 - p.lr * p.weight_decay))?;
            var.set(&(decayed - (update * p.lr)?)?)?;
            self.first[i] = m.detach();
            self.second[i] = v.detach();
        }
        Ok(())
    }

    /// Writes the moments and the step count (safetensors).
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        let mut tensors = HashMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            tensors.insert(format!("m.{name}"), self.first[i].clone());
            tensors.insert(format!("v.{name}"), self.second[i].clone());
        }
        tensors.insert("step".to_string(), Tensor::new(&[self.step as f32], &Device::Cpu)?);
        candle_core::safetensors::save(&tensors, path)?;
        Ok(())
    }

    /// Restores moments written by [`AdamW::save`] for the same variables.
    pub fn load(&mut self, path: &Path) -> Result<(), TrainError> {
        let mut tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
        let missing = |name: &str| {
            TrainError::Invalid(format!("{}: optimizer state lacks {name:?}; start without --resume", path.display()))
        };
        for (i, (name, var)) in self.vars.iter().enumerate() {
            let m = tensors.remove(&format!("m.{name}")).ok_or_else(|| missing(name))?;
            let v = tensors.remove(&format!("v.{name}")).ok_or_else(|| missing(name))?;
            if m.shape() != var.shape() || v.shape() != var.shape() {
                return Err(TrainError::Invalid(format!(
                    "{}: optimizer state of {name:?} has another shape than the model",
                    path.display()
                )));
            }
            self.first[i] = m;
            self.second[i] = v;
        }
        let step = tensors.remove("step").ok_or_else(|| missing("step"))?;
        self.step = step.to_vec1::<f32>()?[0] as u64;
        Ok(())
    }
}
