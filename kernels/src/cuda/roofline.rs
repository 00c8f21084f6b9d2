//! Device roofs measured in the same run as the timings they are compared
//! with: the f32 FMA peak (roofline.cu `fma_peak`) and the device-to-device
//! copy bandwidth.

use crate::error::BackendError;

use super::device::{CudaLauncher, dev_err};
use super::launch::{Arg, Shape, alloc, launch};
use super::signatures::Kernel;
use super::{CudaBackend, Engine};

/// What the device attains, measured.
#[derive(Clone, Copy, Debug)]
pub struct Roofs {
    /// f32 FMA throughput in TFLOP/s (2 FLOP per FMA, CUDA cores, no tensor cores).
    pub fma_tflops: f64,
    /// Device-to-device copy bandwidth in GB/s (bytes read + bytes written).
    pub copy_gbps: f64,
}

impl CudaBackend {
    /// Measures the FMA peak and copy bandwidth (about half a second).
    pub fn measure_roofs(&self) -> Result<Roofs, BackendError> {
        let cuda = self.cuda_device()?;
        let stream = &cuda.stream;
        let ctx = &cuda.ctx;
        let sms = ctx
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(dev_err("SM count"))? as u32;
        let sink = alloc::<f32>(cuda, 1)?;
        let (threads, blocks, iters) = (256u32, sms * 8, 4096i32);
        let (a, b) = (0.999_f32, 1e-3_f32);
        // fma_peak never writes for these a, b.
        let run_fma = || {
            launch(
                cuda,
                Kernel::FmaPeak,
                &Shape::new((blocks, 1, 1), threads),
                &[sink.arg(), Arg::I32(iters), Arg::F32(a), Arg::F32(b)],
            )
        };
        run_fma()?;
        let secs = self.time(run_fma)?;
        // 16 rounds × 8 chains FMAs per iteration per thread.
        let flops = 2.0 * 16.0 * 8.0 * iters as f64 * (threads * blocks) as f64;
        let len = 64 << 20; // 256 MiB per buffer
        let src = stream.alloc_zeros::<f32>(len).map_err(dev_err("alloc"))?;
        let mut dst = stream.alloc_zeros::<f32>(len).map_err(dev_err("alloc"))?;
        stream.memcpy_dtod(&src, &mut dst).map_err(dev_err("copy"))?;
        let copy_secs = self.time(|| {
            for _ in 0..5 {
                stream.memcpy_dtod(&src, &mut dst).map_err(dev_err("copy"))?;
            }
            Ok(())
        })? / 5.0;
        Ok(Roofs { fma_tflops: flops / secs / 1e12, copy_gbps: 2.0 * 4.0 * len as f64 / copy_secs / 1e9 })
    }

    /// Seconds `work` takes on the stream (device events around it).
    pub fn time(&self, mut work: impl FnMut() -> Result<(), BackendError>) -> Result<f64, BackendError> {
        let cuda = self.cuda_device()?;
        let stream = &cuda.stream;
        let ctx = &cuda.ctx;
        let start = ctx.new_event(None).map_err(dev_err("event"))?;
        let end = ctx.new_event(None).map_err(dev_err("event"))?;
        start.record(stream).map_err(dev_err("event"))?;
        work()?;
        end.record(stream).map_err(dev_err("event"))?;
        end.synchronize().map_err(dev_err("event"))?;
        Ok(f64::from(start.elapsed_ms(&end).map_err(dev_err("event"))?) / 1e3)
    }
}

impl CudaBackend {
    /// The GPU behind this backend, or an error under the emulator (device
    /// timing means nothing there).
    fn cuda_device(&self) -> Result<&CudaLauncher, BackendError> {
        match &self.engine {
            Engine::Cuda(c) => Ok(c),
            Engine::Emu(_) => {
                Err(BackendError::InvalidCall("device timing needs a GPU; this backend is cuda-emu".into()))
            }
        }
    }
}
