//! The Hugging Face reference of tests/fixtures/golden (see its README) and the engine's version of
//! the same computations, for the parity tests on the CPU and on CUDA.

use engine::data::{Encoded, Input, Tokenizer};
use engine::model::bert::Bert;
use engine::model::checkpoint::default_model_dir;
use engine::model::heads::{self, LinearHead};
use engine::model::safetensors::SafeTensors;
use engine::{Float, Result, Tape, Tensor};
use std::path::PathBuf;

pub struct Golden {
    pub json: serde_json::Value,
    pub tensors: SafeTensors,
}

pub fn golden() -> Golden {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden");
    let json = std::fs::read_to_string(dir.join("minilm-l6.json"))
        .unwrap_or_else(|e| panic!("{}: {e} (the golden reference ships in tests/fixtures/golden)", dir.display()));
    Golden {
        json: serde_json::from_str(&json).unwrap(),
        tensors: SafeTensors::open(&dir.join("minilm-l6.safetensors")).unwrap(),
    }
}

pub fn model_dir() -> PathBuf {
    default_model_dir().expect("the default checkpoint is needed: run weights/fetch.sh")
}

impl Golden {
    pub fn strings(&self, key: &str) -> Vec<String> {
        let v = self.json.pointer(key).unwrap_or_else(|| panic!("golden JSON has no {key}"));
        v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
    }

    pub fn numbers(&self, key: &str) -> Vec<f64> {
        let v = self.json.pointer(key).unwrap_or_else(|| panic!("golden JSON has no {key}"));
        v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
    }

    pub fn pairs(&self) -> Vec<(String, String)> {
        let v = self.json["pairs"].as_array().unwrap();
        v.iter().map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_str().unwrap().to_string())).collect()
    }

    pub fn f32(&self, name: &str) -> Vec<f32> {
        self.tensors.f32(name).unwrap()
    }

    pub fn ints(&self, name: &str) -> Vec<i32> {
        self.tensors.i64(name).unwrap().into_iter().map(|v| v as i32).collect()
    }

    /// Names of the parameters the golden file has gradients for, for `task`.
    pub fn grad_names(&self, task: &str) -> Vec<String> {
        let prefix = format!("grad.{task}.");
        self.tensors.names().filter_map(|n| n.strip_prefix(&prefix).map(str::to_string)).collect()
    }
}

/// Encodes sentences (or pairs) with the checkpoint's tokenizer at max length 128.
pub fn encode_singles(tok: &mut Tokenizer, s: &[String]) -> Encoded {
    let inputs: Vec<Input> = s.iter().map(|x| Input::Single(x)).collect();
    tok.encode(&inputs, 128).unwrap()
}

pub fn encode_pairs(tok: &mut Tokenizer, p: &[(String, String)]) -> Encoded {
    let inputs: Vec<Input> = p.iter().map(|(a, b)| Input::Pair(a, b)).collect();
    tok.encode(&inputs, 128).unwrap()
}

/// Runs the encoder on a batch: (last hidden state (B, T, C), mask).
pub fn encode<F: Float>(tape: &mut Tape<F>, bert: &Bert, e: &Encoded) -> Result<(Tensor, Tensor)> {
    let dims = [e.batch, e.len];
    let (ids, types, mask) = (tape.ints(&e.ids, &dims)?, tape.ints(&e.type_ids, &dims)?, tape.ints(&e.mask, &dims)?);
    Ok((bert.forward(tape, ids, types, mask)?, mask))
}

/// The golden training step's heads, registered as trainable parameters from init.head.*.
pub struct Heads {
    pub sst: LinearHead,
    pub para: LinearHead,
}

pub fn register_heads<F: Float>(tape: &mut Tape<F>, g: &Golden) -> Heads {
    let mut add = |name: &str, dims: &[usize]| {
        let v: Vec<F> = g.f32(&format!("init.{name}")).iter().map(|&x| F::from_f64(x as f64)).collect();
        tape.store.add_param(name, dims, &v, true).unwrap()
    };
    let sst = LinearHead { w: add("head.sst.weight", &[5, 384]), b: add("head.sst.bias", &[5]) };
    let para = LinearHead { w: add("head.para.weight", &[1, 1536]), b: add("head.para.bias", &[1]) };
    Heads { sst, para }
}

/// One task's loss of the golden step (dropout off): "sst", "para" or "sts".
pub fn task_loss<F: Float>(
    tape: &mut Tape<F>,
    bert: &Bert,
    heads: &Heads,
    tok: &mut Tokenizer,
    g: &Golden,
    task: &str,
) -> Result<Tensor> {
    let f = |x: f64| F::from_f64(x);
    match task {
        "sst" => {
            let e = encode_singles(tok, &g.strings("/step/sst_sentences"));
            let (h, _) = encode(tape, bert, &e)?;
            let pooled = bert.pool(tape, h)?;
            let logits = heads::classify(tape, &heads.sst, pooled)?;
            let labels: Vec<i32> = g.numbers("/step/sst_labels").iter().map(|&x| x as i32).collect();
            let labels = tape.ints(&labels, &[labels.len()])?;
            tape.cross_entropy(logits, labels)
        }
        "para" => {
            let (a, b) =
                (encode_singles(tok, &g.strings("/step/para_a")), encode_singles(tok, &g.strings("/step/para_b")));
            let (ha, _) = encode(tape, bert, &a)?;
            let (hb, _) = encode(tape, bert, &b)?;
            let (u, v) = (bert.pool(tape, ha)?, bert.pool(tape, hb)?);
            let logits = heads::paraphrase_logits(tape, &heads.para, u, v)?;
            let y: Vec<F> = g.numbers("/step/para_labels").iter().map(|&x| f(x)).collect();
            let y = tape.constant(&y, &[y.len()])?;
            tape.bce_with_logits(logits, y)
        }
        "sts" => {
            let (a, b) =
                (encode_singles(tok, &g.strings("/step/sts_a")), encode_singles(tok, &g.strings("/step/sts_b")));
            let (ha, ma) = encode(tape, bert, &a)?;
            let (hb, mb) = encode(tape, bert, &b)?;
            let (pa, pb) = (tape.mean_pool(ha, ma)?, tape.mean_pool(hb, mb)?);
            let score = heads::similarity(tape, pa, pb)?;
            let y: Vec<F> = g.numbers("/step/sts_labels").iter().map(|&x| f(x)).collect();
            let y = tape.constant(&y, &[y.len()])?;
            tape.mse(score, y)
        }
        other => panic!("no task {other}"),
    }
}

/// Token ids, token types and masks of the golden singles and pairs, compared exactly.
pub fn check_tokenization() {
    let g = golden();
    let mut tok = Tokenizer::from_dir(&model_dir()).unwrap();
    let singles = encode_singles(&mut tok, &g.strings("/singles"));
    let pairs = encode_pairs(&mut tok, &g.pairs());
    for (name, e) in [("single", &singles), ("pair", &pairs)] {
        assert_eq!(e.ids, g.ints(&format!("{name}.input_ids")), "{name} input ids");
        assert_eq!(e.type_ids, g.ints(&format!("{name}.token_type_ids")), "{name} token types");
        assert_eq!(e.mask, g.ints(&format!("{name}.attention_mask")), "{name} attention mask");
    }
}

fn max_abs(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max)
}

/// last_hidden_state, pooler_output and mean_pooled of singles and pairs: max |Δ| ≤ `tol`.
pub fn check_forward(device: &engine::Device, tol: f64) {
    let g = golden();
    let dir = model_dir();
    let mut tok = Tokenizer::from_dir(&dir).unwrap();
    let ckpt = engine::model::Checkpoint::open(&dir).unwrap();
    let mut tape = Tape::<f32>::new(device.clone());
    let bert = ckpt.load_bert(&mut tape.store, &|_| false).unwrap();
    for name in ["single", "pair"] {
        let e = if name == "single" {
            encode_singles(&mut tok, &g.strings("/singles"))
        } else {
            encode_pairs(&mut tok, &g.pairs())
        };
        tape.reset();
        let (h, mask) = encode(&mut tape, &bert, &e).unwrap();
        let pooled = bert.pool(&mut tape, h).unwrap();
        let mean = tape.mean_pool(h, mask).unwrap();
        for (what, t) in [("last_hidden_state", h), ("pooler_output", pooled), ("mean_pooled", mean)] {
            let d = max_abs(&tape.store.read(t).unwrap(), &g.f32(&format!("{name}.{what}")));
            println!("{name}.{what}: max |Δ| {d:.2e}");
            assert!(d <= tol, "{name}.{what}: max |Δ| {d:e} > {tol:e}");
        }
    }
}

fn rel(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>().sqrt();
    let n: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>().sqrt();
    d / n.max(1e-30)
}

/// The golden training step: each task's loss (relative ≤ `loss_tol`) and gradients
/// (‖g − g_ref‖/‖g_ref‖ ≤ `grad_tol`), then one AdamW step (lr 1e-3, wd 0.01) on the sum of
/// the three losses (max |Δ| of the parameters ≤ `param_tol`).
pub fn check_step(device: &engine::Device, loss_tol: f64, grad_tol: f64, param_tol: f64) {
    use engine::optim::{Optimizer, OptimizerConfig};
    let g = golden();
    let dir = model_dir();
    let mut tok = Tokenizer::from_dir(&dir).unwrap();
    let ckpt = engine::model::Checkpoint::open(&dir).unwrap();
    let mut tape = Tape::<f32>::new(device.clone());
    let bert = ckpt.load_bert(&mut tape.store, &|_| true).unwrap();
    let heads = register_heads(&mut tape, &g);
    tape.set_training(false); // the reference step runs with dropout 0
    // Each task alone: loss and gradients.
    for task in ["sst", "para", "sts"] {
        tape.store.zero_grads().unwrap();
        tape.reset();
        let loss = task_loss(&mut tape, &bert, &heads, &mut tok, &g, task).unwrap();
        tape.backward(loss).unwrap();
        let got = tape.store.read(loss).unwrap()[0] as f64;
        let want = g.json["losses"][task].as_f64().unwrap();
        let e = ((got - want) / want).abs();
        println!("{task}: loss {got} (reference {want}), relative {e:.2e}");
        assert!(e <= loss_tol, "{task} loss relative error {e:e}");
        let names = g.grad_names(task);
        assert!(!names.is_empty());
        for name in names {
            let t = tape.store.param(&name).unwrap_or_else(|| panic!("no parameter {name}"));
            let e = rel(&tape.store.read_grad(t).unwrap(), &g.f32(&format!("grad.{task}.{name}")));
            println!("  grad {name}: {e:.2e}");
            assert!(e <= grad_tol, "{task}: gradient of {name} differs by {e:e}");
        }
    }
    // The sum of the three losses: accumulate every task's gradient, then one AdamW step.
    tape.store.zero_grads().unwrap();
    for task in ["sst", "para", "sts"] {
        tape.reset();
        let loss = task_loss(&mut tape, &bert, &heads, &mut tok, &g, task).unwrap();
        tape.backward(loss).unwrap();
    }
    let lr = 1e-3;
    let config = OptimizerConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, ..Default::default() };
    let initial: Vec<(String, Vec<f32>)> = after_adamw_names(&g)
        .into_iter()
        .map(|n| {
            let v = tape.store.read(tape.store.param(&n).unwrap()).unwrap();
            (n, v)
        })
        .collect();
    let mut opt = Optimizer::new(&tape.store, config).unwrap();
    opt.update(&mut tape.store, lr).unwrap();
    // Adam's first step is lr·g/(|g| + eps), whose slope lr·eps/(|g| + eps)² is 10 at |g| = 1e-6
    // and 2.5e4 at |g| = eps: there it turns the float32 rounding noise of a gradient (~1e-8
    // absolute here, 1e-6 of the tensor's largest element, in PyTorch's numbers as in ours) into
    // differences up to the step size. Elements whose reference gradient is ≥ 1e-6 must be within
    // `param_tol`; the rest are held to the step size, and fewer than 1 in 10⁴ may exceed `param_tol`.
    let (mut tiny, mut total) = (0usize, 0usize);
    for (name, _) in &initial {
        let t = tape.store.param(name).unwrap();
        let got = tape.store.read(t).unwrap();
        let want = g.f32(&format!("after_adamw.{name}"));
        let gref = reference_gradient(&g, name);
        let (mut worst, mut worst_tiny) = (0.0f64, 0.0f64);
        for i in 0..got.len() {
            let d = (got[i] - want[i]).abs() as f64;
            if gref[i].abs() >= 1e-6 {
                worst = worst.max(d);
            } else {
                tiny += usize::from(d > param_tol);
                worst_tiny = worst_tiny.max(d);
            }
        }
        total += got.len();
        println!("after Optimizer {name}: max |Δ| {worst:.2e} (|g| ≥ 1e-6), {worst_tiny:.2e} (|g| < 1e-6)");
        assert!(worst <= param_tol, "after Optimizer, {name} differs by {worst:e}");
        assert!(worst_tiny <= lr, "after Optimizer, {name}: a near-zero-gradient element moved {worst_tiny:e} off");
    }
    println!("{tiny} of {total} elements (all with |g| < 1e-6) differ by more than {param_tol:e}");
    assert!(tiny * 10_000 < total, "{tiny} of {total} near-zero-gradient elements differ by more than {param_tol:e}");
    // The optimizer alone, fed the reference gradients (Σ over tasks): every element within `param_tol`.
    let mut tape = Tape::<f32>::new(device.clone());
    let _bert = ckpt.load_bert(&mut tape.store, &|_| true).unwrap();
    register_heads(&mut tape, &g);
    for (name, _) in &initial {
        let t = tape.store.param(name).unwrap();
        tape.store.write_grad(t, &reference_gradient(&g, name)).unwrap();
    }
    let mut opt = Optimizer::new(&tape.store, config).unwrap();
    opt.update(&mut tape.store, lr).unwrap();
    for (name, _) in &initial {
        let d =
            max_abs(&tape.store.read(tape.store.param(name).unwrap()).unwrap(), &g.f32(&format!("after_adamw.{name}")));
        println!("AdamW on the reference gradients, {name}: max |Δ| {d:.2e}");
        assert!(d <= param_tol, "AdamW on the reference gradients: {name} differs by {d:e}");
    }
}

fn after_adamw_names(g: &Golden) -> Vec<String> {
    g.tensors.names().filter_map(|n| n.strip_prefix("after_adamw.").map(str::to_string)).collect()
}

/// The reference gradient of the summed loss: the sum of the per-task gradients the golden
/// file has for `name` (a task that does not touch it has none).
fn reference_gradient(g: &Golden, name: &str) -> Vec<f32> {
    let mut sum: Option<Vec<f32>> = None;
    for task in ["sst", "para", "sts"] {
        if let Ok(v) = g.tensors.f32(&format!("grad.{task}.{name}")) {
            match &mut sum {
                None => sum = Some(v),
                Some(s) => s.iter_mut().zip(&v).for_each(|(a, b)| *a += b),
            }
        }
    }
    sum.unwrap_or_else(|| panic!("no reference gradient for {name}"))
}
