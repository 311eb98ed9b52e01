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

/// Packed batches (issue 16) on the device: the tiny BERT's encoder on token-packed rows with
/// every dropout on (hidden, attention inside the variable-length attention), [CLS] and mean
/// pooling, LoRA beside the linears; loss and gradients against the CPU's packed pass.
#[test]
fn tiny_bert_on_packed_batches_matches_the_cpu() {
    let Some(g) = gpu() else { return };
    let lora = LoraConfig { rank: 3, alpha: 6.0, dropout: 0.1, targets: Target::ALL.to_vec() };
    for lora in [None, Some(&lora)] {
        let (loss_c, grads_c) = packed_step(&Device::Cpu, lora);
        let (loss_g, grads_g) = packed_step(&g, lora);
        let loss_err = ((loss_g - loss_c) / loss_c).abs() as f64;
        println!("packed, LoRA {}: loss cpu {loss_c} gpu {loss_g}: relative {loss_err:.2e}", lora.is_some());
        assert!(loss_err <= 1e-4, "loss differs by {loss_err:e}");
        let whole = |g: &[(String, Vec<f32>)]| g.iter().flat_map(|(_, v)| v.iter().copied()).collect::<Vec<f32>>();
        let e = rel(&whole(&grads_g), &whole(&grads_c));
        println!("whole gradient: relative {e:.2e}");
        assert!(e <= 1e-4, "the gradient differs by {e:e}");
        for ((name, gc), (_, gg)) in grads_c.iter().zip(&grads_g) {
            if !name.contains("key.bias") {
                let e = rel(gg, gc);
                assert!(e <= 1e-4, "{name}: gradient differs by {e:e}");
            }
        }
    }
}

/// Σ w ⊙ (mean-pooled ⊕ [CLS]) (w in (0, 1], so the sum does not cancel) of a packed batch of 5 sequences (lengths 1 to 9), training.
fn packed_step(device: &Device, lora: Option<&LoraConfig>) -> (f32, Vec<(String, Vec<f32>)>) {
    use engine::model::bert::{first_tokens, mean_pool};
    use engine::model::{EncoderInput, Packing};
    let mut tape = Tape::<f32>::new(device.clone());
    tape.set_training(true);
    tape.set_seed(99);
    let model = tiny_bert::build_with(&mut tape, 3, lora);
    let e = tiny_bert::ragged_batch();
    let input = EncoderInput::new(&mut tape, &e, Packing::Packed).unwrap();
    let h = model.bert.encode(&mut tape, &input, model.bert.layers.len()).unwrap();
    let (m, c) = (mean_pool(&mut tape, h, &input).unwrap(), first_tokens(&mut tape, h, &input).unwrap());
    let v = tape.concat(&[m, c]).unwrap();
    let w: Vec<f32> = (0..v.numel()).map(|i| ((i * 37 % 11) as f32 + 1.0) / 11.0).collect();
    let w = tape.constant(&w, v.dims()).unwrap();
    let y = tape.mul(v, w).unwrap();
    let loss = tape.sum(y).unwrap();
    tape.backward(loss).unwrap();
    let l = tape.store.read(loss).unwrap()[0];
    let params: Vec<_> =
        tape.store.params().filter(|(_, t)| t.requires_grad).map(|(n, t)| (n.to_string(), t)).collect();
    (l, params.into_iter().map(|(n, t)| (n, tape.store.read_grad(t).unwrap())).collect())
}
