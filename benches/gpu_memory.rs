//! Memory-bound kernels in GB/s beside a device-to-device copy in the same run: layernorm,
//! attention softmax, GELU (forward) and the fused AdamW step, at 64 MB and 256 MB of float32.
//! CUDA events around each launch, warm-up, median of 25 runs, random inputs.
//! `cargo bench --bench gpu_memory`; without a GPU it says why and exits 0.

use engine::device::{Buffer, Cuda};
use engine::optim::{Optimizer, OptimizerConfig};
use engine::rng::Rng;
use engine::{Device, Result, Tape};
use std::sync::Arc;

const RUNS: usize = 25;

fn median(mut v: Vec<f32>) -> f32 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Median milliseconds of `f` after three warm-up calls.
fn time(dev: &Cuda, mut f: impl FnMut() -> Result<()>) -> Result<f32> {
    for _ in 0..3 {
        f()?;
    }
    let mut t = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        t.push(dev.time_ms(&mut f)?);
    }
    Ok(median(t))
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.normal() as f32).collect()
}

fn row(name: &str, mb: usize, bytes: f64, ms: f32, copy_gbs: f64) {
    let gbs = bytes / (ms as f64 * 1e-3) / 1e9;
    println!("{name:<22} {mb:>6} {ms:>10.4} {gbs:>10.1} {:>8.2}", gbs / copy_gbs);
}

fn bench(dev: &Arc<Cuda>) -> Result<()> {
    let device = Device::Cuda(dev.clone());
    println!("memory-bound kernels on {dev:?}: GB/s counts bytes read + written once");
    println!("{:<22} {:>6} {:>10} {:>10} {:>8}", "kernel", "MB", "ms", "GB/s", "vs copy");
    for mb in [64usize, 256] {
        let n = mb * (1 << 20) / 4; // floats in `mb` MB
        // Copy: the yardstick.
        let mut src: Buffer<f32> = Buffer::new(&device);
        let mut dst: Buffer<f32> = Buffer::new(&device);
        src.grow_to(n)?;
        dst.grow_to(n)?;
        src.write(0, &random(n, 1))?;
        let copy_ms = time(dev, || {
            let err = |e: cudarc::driver::DriverError| engine::Error::Cuda(e.to_string());
            let (s, d) = (src.device_ptr().unwrap(), dst.device_ptr().unwrap());
            let stream = dev.gpu()?.stream.cu_stream();
            // SAFETY: both buffers hold n floats on this device's stream.
            unsafe { cudarc::driver::result::memcpy_dtod_async(d, s, n * 4, stream) }.map_err(err)
        })?;
        let copy_gbs = 8.0 * n as f64 / (copy_ms as f64 * 1e-3) / 1e9;
        row("copy (dtod)", mb, 8.0 * n as f64, copy_ms, copy_gbs);
        drop((src, dst));

        let mut tape = Tape::<f32>::new(device.clone());
        let c = 768;
        let x = tape.store.add_param("x", &[n / c, c], &random(n / c * c, 2), true)?;
        let g = tape.store.add_param("g", &[c], &random(c, 3), true)?;
        let b = tape.store.add_param("b", &[c], &random(c, 4), true)?;
        let ms = time(dev, || {
            tape.reset();
            tape.layernorm(x, g, b, 1e-12).map(|_| ())
        })?;
        row("layernorm fwd (C 768)", mb, 8.0 * n as f64, ms, copy_gbs);
        let ms = time(dev, || {
            tape.reset();
            tape.gelu(x).map(|_| ())
        })?;
        row("gelu fwd", mb, 8.0 * n as f64, ms, copy_gbs);
        // Attention probabilities (B, NH, T, T) at T = 128, 12 heads, no padding.
        let (t, nh) = (128, 12);
        let batch = n / (nh * t * t);
        let scores = x.reshape(&[batch, nh, t, t])?;
        let ms = time(dev, || {
            tape.reset();
            let mask = tape.ints(&vec![1; batch * t], &[batch, t])?;
            tape.attention_softmax(scores, mask, 0.125).map(|_| ())
        })?;
        row("softmax fwd (T 128)", mb, 8.0 * (batch * nh * t * t) as f64, ms, copy_gbs);
        drop(tape);

        // AdamW over n parameters: reads p, g, m, v and writes p, m, v.
        let mut tape = Tape::<f32>::new(device.clone());
        let w = tape.store.add_param("w", &[n], &random(n, 5), true)?;
        tape.store.write_grad(w, &random(n, 6))?;
        let mut opt = Optimizer::new(&tape.store, OptimizerConfig::default())?;
        let ms = time(dev, || opt.update(&mut tape.store, 1e-4))?;
        row("adamw step", mb, 28.0 * n as f64, ms, copy_gbs);
    }
    Ok(())
}

fn main() {
    let dev = match Cuda::open(0) {
        Ok(d) => d,
        Err(e) => {
            println!("gpu_memory: skipped: no usable GPU ({e})");
            return;
        }
    };
    if let Err(e) = bench(&dev) {
        eprintln!("gpu_memory: {e}");
        std::process::exit(1);
    }
}
