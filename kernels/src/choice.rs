//! Which backend serves: the operator's choice ([`BackendChoice`]), resolved
//! to a CPU backend or a device backend inside its [`Failover`]. Its own
//! module because it sits above both: the backends know nothing of the
//! failover that wraps them, nor of how they are chosen.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::backend::{Backend, CpuBackend};
use crate::cuda::CudaBackend;
use crate::error::BackendError;
use crate::failover::{Backoff, Failover, OpenDevice};
use crate::model::Model;

/// Which backend to serve with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// CUDA when it loads, otherwise the CPU.
    #[default]
    Auto,
    /// The CPU backend.
    Cpu,
    /// The CUDA backend; an error when it cannot load.
    Cuda,
    /// The CUDA kernels run on the CPU by the emulator (tests and checks;
    /// slow; never chosen by `Auto`).
    CudaEmu,
}

impl FromStr for BackendChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "cpu" => Ok(BackendChoice::Cpu),
            "cuda" => Ok(BackendChoice::Cuda),
            "cuda-emu" => Ok(BackendChoice::CudaEmu),
            other => Err(format!("unknown backend {other:?}: expected auto, cpu, cuda or cuda-emu")),
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Cpu => "cpu",
            BackendChoice::Cuda => "cuda",
            BackendChoice::CudaEmu => "cuda-emu",
        })
    }
}

/// The CUDA backend for `model`, or why it cannot run here.
///
/// This is the one place the CUDA backend (kernels/src/cuda) is wired in.
pub fn cuda_backend(model: Arc<Model>) -> Result<Box<dyn Backend>, BackendError> {
    Ok(Box::new(CudaBackend::new(model)?))
}

/// The backend a [`BackendChoice`] resolved to.
pub struct Selected {
    /// The backend to serve with.
    pub backend: Box<dyn Backend>,
    /// Under `Auto` on a CPU fallback: why CUDA was refused (for the log).
    pub cuda_refused: Option<BackendError>,
}

/// Creates the backend for `choice` and says, under `Auto`, why CUDA was
/// refused when it falls back to the CPU. `Cuda` and `CudaEmu` fail with
/// [`BackendError::Unavailable`] when they cannot run here. A device backend
/// comes inside a [`Failover`]: after a lost context it serves on the CPU
/// while it is rebuilt.
pub fn open_backend(choice: BackendChoice, model: Arc<Model>) -> Result<Selected, BackendError> {
    let emulated: OpenDevice = Box::new(|model| Ok(Box::new(CudaBackend::emulated(model)?)));
    let (backend, cuda_refused): (Box<dyn Backend>, _) = match choice {
        BackendChoice::Cpu => (Box::new(CpuBackend::new(model)), None),
        BackendChoice::Cuda => (with_failover(cuda_backend(model)?, Box::new(cuda_backend)), None),
        BackendChoice::CudaEmu => (with_failover(emulated(model)?, emulated), None),
        BackendChoice::Auto => match cuda_backend(model.clone()) {
            Ok(backend) => (with_failover(backend, Box::new(cuda_backend)), None),
            Err(why) => (Box::new(CpuBackend::new(model)), Some(why)),
        },
    };
    Ok(Selected { backend, cuda_refused })
}

fn with_failover(device: Box<dyn Backend>, open: OpenDevice) -> Box<dyn Backend> {
    Box::new(Failover::new(device, open, Backoff::default()))
}

/// Creates the backend for `choice` ([`open_backend`] without the reason):
/// `Auto` tries CUDA and falls back to the CPU.
pub fn select_backend(choice: BackendChoice, model: Arc<Model>) -> Result<Box<dyn Backend>, BackendError> {
    open_backend(choice, model).map(|s| s.backend)
}
