//! GPU suite: the tiny BERT of the gradient checks, with all three losses and dropout on, on
//! CUDA (float32, plain float32 GEMMs) against the CPU path: the loss and every parameter's
//! gradient within 1e-4 relative (‖g_gpu − g_cpu‖₂ / ‖g_cpu‖₂ per tensor).

mod common;
use common::{gpu, rel, tiny_bert};
use engine::device::Precision;
use engine::model::lora::{LoraConfig, Target};
use engine::{Device, Tape};

/// Loss and every parameter gradient (name, values) of one forward + backward on `device`.
fn step(device: &Device, lora: Option<&LoraConfig>, precision: Precision) -> (f32, Vec<(String, Vec<f32>)>) {
    let mut tape = Tape::<f32>::new(device.clone());
    tape.store.precision = precision;
    tape.set_training(true);
    tape.set_seed(1234);
    let model = tiny_bert::build_with(&mut tape, 3, lora);
    let loss = tiny_bert::three_task_loss(&mut tape, &model).unwrap();
    tape.backward(loss).unwrap();
    let l = tape.store.read(loss).unwrap()[0];
    let params: Vec<_> =
        tape.store.params().filter(|(_, t)| t.requires_grad).map(|(n, t)| (n.to_string(), t)).collect();
    let grads = params.into_iter().map(|(n, t)| (n, tape.store.read_grad(t).unwrap())).collect();
    (l, grads)
}

#[test]
fn tiny_bert_loss_and_gradients_match_the_cpu() {
    let Some(g) = gpu() else { return };
    compare(&g, None, Precision::F32, 1e-4);
}

/// With bf16 matmul operands on both devices (the GPU's bf16 tensor cores against the CPU's
/// rounding before its float32 GEMM): the same rounded operands, so only the order of float32
/// sums differs, and where that moves a value across a bf16 rounding boundary, one operand by
/// 2⁻⁸ relative.
#[test]
fn tiny_bert_in_bf16_matches_the_cpu_in_bf16() {
    let Some(g) = gpu() else { return };
    compare(&g, None, Precision::Bf16, 1e-2);
}

/// The same with LoRA adapters (and their dropout) on every linear of a frozen encoder.
#[test]
fn tiny_bert_with_lora_matches_the_cpu() {
    let Some(g) = gpu() else { return };
    let lora = LoraConfig { rank: 3, alpha: 6.0, dropout: 0.1, targets: Target::ALL.to_vec() };
    compare(&g, Some(&lora), Precision::F32, 1e-4);
}

/// LoRA with its dropout off, where the adapters run folded into the base weights.
#[test]
fn tiny_bert_with_folded_lora_matches_the_cpu() {
    let Some(g) = gpu() else { return };
    let lora = LoraConfig { rank: 3, alpha: 6.0, dropout: 0.0, targets: Target::ALL.to_vec() };
    compare(&g, Some(&lora), Precision::F32, 1e-4);
}

fn compare(g: &Device, lora: Option<&LoraConfig>, precision: Precision, tol: f64) {
    let (loss_c, grads_c) = step(&Device::Cpu, lora, precision);
    let (loss_g, grads_g) = step(g, lora, precision);
    let loss_err = ((loss_g - loss_c) / loss_c).abs() as f64;
    println!("loss cpu {loss_c} gpu {loss_g}: relative {loss_err:.2e}");
    assert!(loss_err <= tol, "loss differs by {loss_err:e}");
    let mut worst = 0.0f64;
    for ((name, gc), (_, gg)) in grads_c.iter().zip(&grads_g) {
        let e = rel(gg, gc);
        println!("{name:<48} {e:.2e}");
        // The key bias's gradient is zero in exact arithmetic (softmax ignores a shift of a row's
        // scores), so both devices hold rounding noise there, which bf16 operands make large
        // against the (zero) value: compare the difference with the scale of a bias gradient of
        // that layer, the query bias's, instead.
        let e = if name.contains("attention.self.key.bias") {
            let query = name.replace("key.bias", "query.bias");
            let (_, gq) = grads_c.iter().find(|(n, _)| *n == query).expect("the layer has a query bias");
            let diff: f64 = gg.iter().zip(gc).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum::<f64>().sqrt();
            let scale: f64 = gq.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
            let e = e.min(diff / scale.max(1e-30));
            println!("{name:<48} {e:.2e} (of the query bias's gradient norm)");
            e
        } else {
            e
        };
        worst = worst.max(e);
    }
    assert!(worst <= tol, "worst parameter gradient differs by {worst:e}");
}
