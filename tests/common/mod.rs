//! The GPU suite's parity harness: an op (or any graph) on CUDA against the CPU path, float32,
//! on fresh random inputs. Before the measured run, every activation and activation gradient on
//! the GPU is poisoned with NaN, so a kernel that leaves part of its output unwritten fails.
//! Error: ‖gpu − cpu‖₂ / ‖cpu‖₂ per output and per input gradient.
//! Without a usable GPU (or with ENGINE_EMULATE_GPU=1), `gpu()` gives the PTX emulator, which
//! runs the same kernels on the CPU: the suite runs everywhere libnvrtc does.
#![allow(dead_code)] // each test file uses part of the harness

pub mod golden;
pub mod gradcheck;
pub mod runs;
pub mod tiny_bert;

use engine::device::Cuda;
use engine::rng::Rng;
use engine::{Device, Result, Tape, Tensor};

/// float32 kernels against the float32 CPU path.
pub const F32_TOL: f64 = 1e-5;

pub type Build<'a> = dyn Fn(&mut Tape<f32>, &[Tensor]) -> Result<Tensor> + 'a;

/// The device of the GPU suite: GPU 0 when one opens and ENGINE_EMULATE_GPU is not set, else the
/// PTX emulator; it says which. Without either (no libnvrtc) the test fails with the reason.
/// (An Option for the tests' `let Some(g) = gpu() else { return }`; it is always Some.)
pub fn gpu() -> Option<Device> {
    // `--device cuda`'s choice (the emulator when ENGINE_EMULATE_GPU asks for it), else the emulator.
    let dev = Cuda::open_default().or_else(|e| {
        println!("GPU suite: no usable GPU ({e}): the PTX emulator");
        Cuda::emulated()
    });
    match dev {
        Ok(c) => {
            println!("GPU suite on {c:?}");
            Some(Device::Cuda(c))
        }
        Err(e) => panic!("GPU suite: neither a GPU nor the PTX emulator: {e}"),
    }
}

/// Whether `device` is the PTX emulator (a few cases that are large only for their own sake run
/// smaller there; see each).
pub fn emulated(device: &Device) -> bool {
    matches!(device, Device::Cuda(c) if c.is_emulated())
}

/// Forward + backward of `build` (its output projected to a scalar with fixed weights) on
/// `device`; returns the output and the gradient of every input.
pub fn run(
    device: &Device,
    shapes: &[&[usize]],
    seed: u64,
    build: &Build<'_>,
    poison: bool,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let mut tape = Tape::<f32>::new(device.clone());
    tape.set_training(true);
    tape.set_seed(17);
    let mut rng = Rng::new(seed);
    let inputs: Vec<Tensor> = shapes
        .iter()
        .enumerate()
        .map(|(i, dims)| {
            let n: usize = dims.iter().product();
            let data: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
            tape.store.add_param(&format!("x{i}"), dims, &data, true).unwrap()
        })
        .collect();
    let weights: Vec<f32> = (0..1 << 22).map(|_| rng.normal() as f32).collect();
    let pass = |tape: &mut Tape<f32>| {
        tape.reset();
        tape.store.zero_grads().unwrap();
        let out = build(tape, &inputs).unwrap();
        let loss = if out.numel() == 1 {
            out
        } else {
            let r = tape.constant(&weights[..out.numel()], out.dims()).unwrap();
            let p = tape.mul(out, r).unwrap();
            tape.sum(p).unwrap()
        };
        tape.backward(loss).unwrap();
        out
    };
    if poison {
        pass(&mut tape); // sizes the arenas
        tape.store.poison_acts(f32::NAN).unwrap();
    }
    let out = pass(&mut tape);
    let values = tape.store.read(out).unwrap();
    let grads = inputs.iter().map(|&x| tape.store.read_grad(x).unwrap()).collect();
    (values, grads)
}

pub fn rel(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>().sqrt();
    let n: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>().sqrt();
    if n == 0.0 { d } else { d / n }
}

/// Runs `build` on the CPU and the GPU and checks outputs and input gradients within `tol`.
pub fn parity(gpu: &Device, name: &str, shapes: &[&[usize]], tol: f64, build: &Build<'_>) {
    let seed = name.bytes().map(u64::from).sum::<u64>();
    let (out_c, grads_c) = run(&Device::Cpu, shapes, seed, build, false);
    let (out_g, grads_g) = run(gpu, shapes, seed, build, true);
    let mut worst = rel(&out_g, &out_c);
    assert!(out_g.iter().all(|v| v.is_finite()), "{name}: non-finite output on the GPU");
    println!("{name}: output {:.2e}", worst);
    for (i, (g, c)) in grads_g.iter().zip(&grads_c).enumerate() {
        assert!(g.iter().all(|v| v.is_finite()), "{name}: non-finite gradient of input {i} on the GPU");
        let e = rel(g, c);
        println!("{name}: grad {i} {:.2e}", e);
        worst = worst.max(e);
    }
    assert!(worst <= tol, "{name}: GPU vs CPU relative error {worst:.3e} > {tol:e}");
}

/// Tensor-core GEMMs with tf32 inputs against the float32 CPU path.
pub const TF32_TOL: f64 = 2e-3;
/// Tensor-core GEMMs with bf16 inputs.
pub const BF16_TOL: f64 = 1e-2;
