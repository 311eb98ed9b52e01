//! The float64 gradient check: every input's gradient from the tape against central differences
//! of a loss that projects the output on fixed random weights (L = Σ out ⊙ R, so that every output
//! element counts). Relative error ‖g_tape − g_fd‖₂ / max(‖g_fd‖₂, 1e-2), h = 1e-5, tolerance
//! 1e-6. The floor of 1e-2 turns the check into an absolute one (1e-8) for a gradient that is zero
//! in exact arithmetic (the attention key bias's), where g_fd is rounding noise (~1e-9).

use engine::rng::Rng;
use engine::{Device, Result, Tape, Tensor};

pub const H: f64 = 1e-5;
pub const TOL: f64 = 1e-6;

pub type Build<'a> = dyn Fn(&mut Tape<f64>, &[Tensor]) -> Result<Tensor> + 'a;

/// Projects `out` to a scalar with fixed random weights (left alone when already a scalar).
fn project(tape: &mut Tape<f64>, out: Tensor, weights: &[f64]) -> Result<Tensor> {
    if out.numel() == 1 {
        return Ok(out);
    }
    let r = tape.constant(&weights[..out.numel()], out.dims())?;
    let p = tape.mul(out, r)?;
    tape.sum(p)
}

fn loss(tape: &mut Tape<f64>, inputs: &[Tensor], build: &Build<'_>, weights: &[f64]) -> f64 {
    tape.reset();
    let out = build(tape, inputs).unwrap();
    let l = project(tape, out, weights).unwrap();
    tape.store.read(l).unwrap()[0]
}

/// Checks d(loss)/d(input) of every input against central differences; returns the worst error.
pub fn check_tape(name: &str, tape: &mut Tape<f64>, inputs: &[Tensor], build: &Build<'_>) -> f64 {
    let mut rng = Rng::new(99);
    let weights: Vec<f64> = (0..1 << 16).map(|_| rng.normal()).collect();
    tape.store.zero_grads().unwrap();
    tape.reset();
    let out = build(tape, inputs).unwrap();
    let l = project(tape, out, &weights).unwrap();
    tape.backward(l).unwrap();
    let mut worst = 0.0f64;
    for (i, &x) in inputs.iter().enumerate() {
        let analytic = tape.store.read_grad(x).unwrap();
        let mut values = tape.store.read(x).unwrap();
        let mut numeric = vec![0.0; values.len()];
        for j in 0..values.len() {
            let v = values[j];
            values[j] = v + H;
            tape.store.write(x, &values).unwrap();
            let lp = loss(tape, inputs, build, &weights);
            values[j] = v - H;
            tape.store.write(x, &values).unwrap();
            let lm = loss(tape, inputs, build, &weights);
            values[j] = v;
            tape.store.write(x, &values).unwrap();
            numeric[j] = (lp - lm) / (2.0 * H);
        }
        let diff: f64 = analytic.iter().zip(&numeric).map(|(a, n)| (a - n) * (a - n)).sum::<f64>().sqrt();
        let norm: f64 = numeric.iter().map(|n| n * n).sum::<f64>().sqrt();
        let rel = diff / norm.max(1e-2);
        println!("{name}: input {i} {}: ‖g‖ {norm:.3e}, relative error {rel:.3e}", x.shape);
        assert!(norm > 0.0 || analytic.iter().all(|&a| a == 0.0), "{name}: input {i} has zero numeric gradient");
        worst = worst.max(rel);
    }
    assert!(worst <= TOL, "{name}: relative error {worst:.3e} > {TOL:e}");
    worst
}

/// Gradient check of `build` on fresh random inputs of the given shapes.
pub fn check(name: &str, shapes: &[&[usize]], build: &Build<'_>) {
    let mut tape = Tape::<f64>::new(Device::Cpu);
    tape.set_training(true);
    tape.set_seed(5);
    let mut rng = Rng::new(name.len() as u64 * 31 + 7);
    let inputs: Vec<Tensor> = shapes
        .iter()
        .enumerate()
        .map(|(i, dims)| {
            let n: usize = dims.iter().product();
            let data: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
            tape.store.add_param(&format!("x{i}"), dims, &data, true).unwrap()
        })
        .collect();
    check_tape(name, &mut tape, &inputs, build);
}
