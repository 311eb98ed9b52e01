//! The memory a fine-tuning run needs, estimated before anything big is allocated, and the check
//! that refuses a run that cannot fit with one line naming the flag that dominates (issue 17,
//! finding 2: `--lora 100000` was killed by the OOM killer after 86 s, `--head-hidden 100000000`
//! aborted in its initialisation).
//!
//! The estimate is upper-ish, not exact: every batch is taken padded to `--max-len` (a real batch
//! is padded to its longest example), the checkpoint is assumed to have a pooler, and every
//! encoder dropout to be on. All arithmetic is in f64, so no flag value can overflow it.
//!
//! What lives in memory during a run (f32 values, 4 bytes each; C hidden, I intermediate, L
//! layers, NH heads, T = --max-len, B = --batch-size, R = --lora rank, H = --head-hidden):
//! - parameters: the encoder (frozen under LoRA and below --freeze-layers), adapters and heads;
//! - per trainable value: its gradient and AdamW's two moments (3 more), and under --pcgrad one
//!   gradient copy per task (`TaskGradients`' slots span the whole trainable arena);
//! - the activation arena, which keeps the size of the largest pass: a training pass (B
//!   sequences; 2B with separately encoded pairs, whose two sides stay on one tape) or an
//!   evaluation pass (twice the batch, no dropout);
//! - the activation gradients: as long as a training pass's arena (`Store::zero_act_grads`).

use super::heads::HeadKind;
use super::options::TrainOptions;
use crate::data::cs224n::{Kind, Task};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::model::BertConfig;
use crate::model::lora::Target;

/// Bytes per value: parameters, moments and activations are all float32.
const VALUE: f64 = 4.0;

/// Headroom for what the arenas do not hold: the process, the data and the tokenizer, the CPU
/// GEMM's packing buffers, a GPU's context and kernels.
const MARGIN_FIXED: f64 = 256.0 * MIB;
const MARGIN_SHARE: f64 = 0.05;

const KIB: f64 = 1024.0;
const MIB: f64 = 1024.0 * KIB;
const GIB: f64 = 1024.0 * MIB;

/// A run's memory, in bytes, by part.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Estimate {
    /// Every encoder parameter, frozen or not.
    pub encoder: f64,
    /// The encoder parameters that train (none under LoRA; those above --freeze-layers).
    pub encoder_trainable: f64,
    /// LoRA's A (R, IN) and B (OUT, R) on every targeted linear of every layer.
    pub adapters: f64,
    /// The task heads: [hidden (H, IN) + (H)], output (K, IN or H) + (K); and their PALs.
    pub heads: f64,
    /// Gradients and AdamW's two moments of every trainable value (3 × trainable), and SMART's
    /// teacher (one more) under --smart-bregman.
    pub optimizer: f64,
    /// PCGrad's per-task gradient copies (tasks × trainable).
    pub pcgrad: f64,
    /// The activation arena (its largest pass) and the activation gradients (a training pass).
    pub activations: f64,
    /// Of `activations`: what the adapters add (their (M, R) products and (R, IN) copies).
    pub adapter_activations: f64,
    /// Of `activations`: what the heads' hidden layers add (H per sequence, three times).
    pub head_activations: f64,
    /// Sequences of the largest training pass and their padded length, for the message.
    pub sequences: usize,
    pub tokens_per_sequence: usize,
}

impl Estimate {
    pub fn trainable(&self) -> f64 {
        self.encoder_trainable + self.adapters + self.heads
    }

    /// Everything, margin included.
    pub fn total(&self) -> f64 {
        let arenas = self.encoder + self.adapters + self.heads + self.optimizer + self.pcgrad + self.activations;
        arenas + self.margin()
    }

    pub fn margin(&self) -> f64 {
        MARGIN_FIXED
            + MARGIN_SHARE
                * (self.encoder + self.adapters + self.heads + self.optimizer + self.pcgrad + self.activations)
    }

    /// On a CUDA device (or the emulator) arenas grow by doubling (`Buffer::grow_to`), so the
    /// activation arenas, grown op by op, can hold up to twice what a pass uses.
    fn with_doubling_arenas(mut self) -> Estimate {
        self.activations *= 2.0;
        self.adapter_activations *= 2.0;
        self.head_activations *= 2.0;
        self
    }
}

/// (OUT, IN) of the linear a LoRA target adapts.
fn target_dims(t: Target, c: f64, i: f64) -> (f64, f64) {
    match t {
        Target::Query | Target::Key | Target::Value | Target::AttnOut => (c, c),
        Target::FfnIn => (i, c),
        Target::FfnOut => (c, i),
    }
}

fn output_width(task: Task) -> f64 {
    match task.kind() {
        Kind::Classes(k) => k as f64,
        Kind::Binary | Kind::Regression => 1.0,
    }
}

/// The memory of fine-tuning `config` with `opts` (host arenas: exactly as long as they are used).
pub fn estimate(opts: &TrainOptions, config: &BertConfig) -> Estimate {
    let (c, i, l) = (config.hidden_size as f64, config.intermediate_size as f64, config.num_hidden_layers as f64);
    let nh = config.num_attention_heads as f64;
    let t = opts.max_len as f64;
    let b = opts.max_batch() as f64;
    let h = opts.head_hidden as f64;

    // Parameters (values).
    // Embeddings: word (V, C), position (P, C), type (TV, C), layernorm (C) + (C).
    let embeddings = (config.vocab_size + config.max_position_embeddings + config.type_vocab_size) as f64 * c + 2.0 * c;
    // A layer: q, k, v, o (C, C) + (C); two layernorms 2 × 2C; FFN (I, C) + (I) and (C, I) + (C).
    let layer = 4.0 * (c * c + c) + 4.0 * c + 2.0 * i * c + i + c;
    let pooler = c * c + c;
    let encoder = embeddings + l * layer + pooler;
    let encoder_trainable = match (&opts.lora, opts.freeze_layers) {
        (Some(_), _) => 0.0,
        (None, 0) => encoder,
        (None, f) => (l - (f as f64).min(l)) * layer + pooler,
    };
    let mut adapters = 0.0;
    let mut adapter_token = 0.0; // per token per layer
    let mut adapter_pass = 0.0; // per pass per layer
    if let Some(lora) = &opts.lora {
        let r = lora.rank as f64;
        let mut targets = lora.targets.clone();
        targets.sort_by_key(|t| *t as usize);
        targets.dedup();
        for &target in &targets {
            let (out, inp) = target_dims(target, c, i);
            adapters += l * (r * inp + out * r);
            // Folded (`lora_linear`): Z and G (M, R); unfolded (`Lora::delta`): dropout (IN),
            // A x and its scaling (R each), B(…) (OUT), a head split and the sum (OUT each).
            adapter_token += 2.0 * r + inp + 3.0 * out;
            // Folded: s·A (R, IN) and the merged weight W' (OUT, IN).
            adapter_pass += r * inp + out * inp;
        }
        if targets.iter().any(|t| matches!(t, Target::Query | Target::Key | Target::Value)) {
            adapter_pass += 3.0 * c * c; // the fused (3C, C) projection's W'
        }
    }
    let mut heads = 0.0;
    let mut head_sequence: f64 = 0.0; // per sequence, the largest head
    let mut hidden_sequence: f64 = 0.0; // of which the hidden layer's
    let mut separate_pairs = false;
    for &task in &opts.tasks {
        let head = opts.head(task);
        let separate = task.is_pair() && head.reads_sides();
        separate_pairs |= separate;
        let input = match head {
            HeadKind::Cosine(_) => {
                head_sequence = head_sequence.max(8.0 * c); // two mean pools, the cosine
                continue;
            }
            HeadKind::Features(f) => f.width(config.hidden_size) as f64,
            HeadKind::Linear => c,
            HeadKind::Recurrent { cell, width } => {
                let (g, w) = ((cell.gates() * width) as f64, width as f64);
                heads += g * (c + w) + 2.0 * g;
                // Per token: the input projection, the gates, the backward's scratch (G·H each),
                // the cell states and the shifted hidden states (H each).
                head_sequence = head_sequence.max(t * (3.0 * g + 2.0 * w));
                c + w
            }
        };
        let k = output_width(task);
        heads += if h > 0.0 { h * input + h + k * h + k } else { k * input + k };
        // Pooled vectors, |u − v|, u·v, the concatenation, dropout (C or 4C each); the hidden
        // layer's linear, GELU and dropout (H each); logits and the loss's probabilities.
        let hidden = 3.0 * h;
        hidden_sequence = hidden_sequence.max(hidden);
        head_sequence = head_sequence.max(6.0 * c + 2.0 * input + hidden + 3.0 * k);
    }
    // PALs, per task: V_E (d, C) + (d), V_D (C, d) + (C), per layer a fused QKV (3d, d) + (3d);
    // per token per layer: V_E's output, the QKV and its three bands, the context, V_D's output
    // and the sum (8d + 2C), and the attention's probabilities (heads · T).
    let (mut pal_token, mut pals) = (0.0, 0.0);
    if let Some(p) = &opts.pals {
        let d = p.dim_for(config.hidden_size) as f64;
        pals = opts.tasks.len() as f64 * (2.0 * d * c + d + c + l * (3.0 * d * d + 3.0 * d));
        pal_token = 8.0 * d + 2.0 * c + p.heads as f64 * t;
    }
    let heads = heads + pals;
    let trainable = encoder_trainable + adapters + heads;
    // Gradients, the optimizer's two moments, LAMB's direction, and SMART's teacher (each a copy
    // of the trainable values).
    let teacher = opts.smart.as_ref().is_some_and(|s| s.bregman > 0.0);
    let lamb = opts.optimizer == crate::optim::Rule::Lamb;
    let optimizer = (3.0 + f64::from(u8::from(teacher)) + f64::from(u8::from(lamb))) * trainable;
    let pcgrad = if opts.combines_gradients() { opts.tasks.len() as f64 * trainable } else { 0.0 };

    // Activations of one token through one layer, training (see `Bert::forward_layers`):
    // QKV (3C), three head splits (3C), scores, probabilities and their dropout (NH·T each, the
    // (B, NH, T, T) tensors per token), context and merged heads (2C), output projection,
    // dropout, residual, layernorm (4C, + mean and rstd), FFN in and GELU (2I), FFN out, dropout,
    // residual, layernorm (4C, + mean and rstd).
    let layer_train = 16.0 * c + 2.0 * i + 4.0 + 3.0 * nh * t;
    // Evaluation records no dropout: two C and one NH·T fewer.
    let layer_eval = 14.0 * c + 2.0 * i + 4.0 + 2.0 * nh * t;
    // Embedding sum, layernorm (+ mean and rstd), dropout; ids, types and mask (i32, 4 bytes).
    let embed_token = 3.0 * c + 2.0 + 3.0;
    let sequences = if separate_pairs { 2.0 * b } else { b };
    let pass = |seqs: f64, per_layer: f64| {
        let tokens = seqs * t;
        tokens * (embed_token + l * (per_layer + adapter_token + pal_token)) + l * adapter_pass + seqs * head_sequence
    };
    // SMART keeps a second (perturbed) pass beside the clean one, and δ (C per token); its ascent
    // passes are rewound into the perturbed pass's memory.
    let smart = if opts.smart.is_some() { 2.0 } else { 1.0 };
    let train = smart * pass(sequences, layer_train) + (smart - 1.0) * sequences * t * c;
    let eval = pass(2.0 * sequences, layer_eval);
    // The arena keeps its largest pass; the gradients mirror a training pass.
    let activations = train.max(eval) + train;
    let share = |seqs: f64| seqs * t * l * adapter_token + l * adapter_pass;
    let adapter_activations = share(2.0 * sequences).max(share(sequences)) + share(sequences);
    let head_activations = 2.0 * sequences * hidden_sequence + sequences * hidden_sequence;

    Estimate {
        encoder: encoder * VALUE,
        encoder_trainable: encoder_trainable * VALUE,
        adapters: adapters * VALUE,
        heads: heads * VALUE,
        optimizer: optimizer * VALUE,
        pcgrad: pcgrad * VALUE,
        activations: activations * VALUE,
        adapter_activations: adapter_activations * VALUE,
        head_activations: head_activations * VALUE,
        sequences: sequences as usize,
        tokens_per_sequence: opts.max_len,
    }
}

/// Bytes as people read them: "3.7 GiB", "86.7 MiB".
pub fn human(bytes: f64) -> String {
    if bytes >= GIB {
        format!("{:.1} GiB", bytes / GIB)
    } else if bytes >= MIB {
        format!("{:.1} MiB", bytes / MIB)
    } else {
        format!("{:.1} KiB", bytes / KIB)
    }
}

/// Refuses, before the model is built, a run whose estimate exceeds the memory available on
/// `device`: the host's (MemAvailable, a cgroup limit, `ulimit -v`) on the CPU and the emulator,
/// the GPU's free memory on a GPU. Nothing is refused where the available memory is unknown.
pub fn check_fits(opts: &TrainOptions, config: &BertConfig, device: &Device) -> Result<()> {
    let (est, available, place) = match device {
        Device::Cpu => (estimate(opts, config), host_available(), "in host memory".to_string()),
        Device::Cuda(dev) if dev.is_emulated() => {
            (estimate(opts, config).with_doubling_arenas(), host_available(), "to the emulator".to_string())
        }
        Device::Cuda(dev) => {
            let free = dev.gpu()?.ctx.mem_get_info().map(|(free, _)| free as f64).ok();
            (estimate(opts, config).with_doubling_arenas(), free, format!("on {dev:?}"))
        }
    };
    match available {
        Some(avail) if est.total() > avail => Err(Error::Config(refusal(opts, &est, avail, &place))),
        _ => Ok(()),
    }
}

/// The one line of a refusal: the flag whose part is largest, the parts, what is available.
pub fn refusal(opts: &TrainOptions, est: &Estimate, available: f64, place: &str) -> String {
    let k = if opts.combines_gradients() { opts.tasks.len() as f64 } else { 0.0 };
    let copies = 4.0 + k; // values, gradients, two moments, PCGrad's copies
    let batch = est.activations - est.adapter_activations - est.head_activations;
    let mut blame: Vec<(f64, String, &str)> = vec![
        (
            batch,
            format!("--batch-size {} with --max-len {}", opts.max_batch(), opts.max_len),
            "lower --batch-size or --max-len",
        ),
        (
            est.encoder + est.encoder_trainable * (copies - 1.0),
            "the model".to_string(),
            "choose a smaller model, or train it with --lora or --freeze-layers",
        ),
    ];
    if let Some(lora) = &opts.lora {
        blame.push((est.adapters * copies + est.adapter_activations, format!("--lora {}", lora.rank), "lower --lora"));
    }
    if opts.head_hidden > 0 {
        blame.push((
            est.heads * copies + est.head_activations,
            format!("--head-hidden {}", opts.head_hidden),
            "lower --head-hidden",
        ));
    }
    if opts.pcgrad {
        blame.push((est.pcgrad, "--pcgrad".to_string(), "train without --pcgrad"));
    }
    if opts.gradvac {
        blame.push((est.pcgrad, "--gradvac".to_string(), "train without --gradvac"));
    }
    let (_, flag, advice) = blame.into_iter().fold((f64::MIN, String::new(), ""), |a, b| if b.0 > a.0 { b } else { a });

    let mut parts = Vec::new();
    let with = |bytes: f64| format!("{} ×{copies} with gradients and moments", human(bytes));
    if est.encoder_trainable > 0.0 {
        parts.push(format!("encoder {}", with(est.encoder_trainable)));
        if est.encoder > est.encoder_trainable {
            parts.push(format!("frozen encoder {}", human(est.encoder - est.encoder_trainable)));
        }
    } else {
        parts.push(format!("frozen encoder {}", human(est.encoder)));
    }
    if est.adapters > 0.0 {
        parts.push(format!("adapters {}", with(est.adapters)));
    }
    parts.push(format!("heads {}", with(est.heads)));
    parts.push(format!(
        "activations {} for {} × {} tokens, their gradients and evaluation's double batch",
        human(est.activations),
        est.sequences,
        est.tokens_per_sequence
    ));
    format!(
        "{flag} needs about {} ({}) but {} are available {place}: {advice}",
        human(est.total()),
        parts.join(", "),
        human(available)
    )
}

/// Bytes this process may still allocate on the host: the least of the kernel's MemAvailable, a
/// cgroup's memory limit less its usage, and the address-space limit (`ulimit -v`) less this
/// process's size. None when none can be read (not Linux).
pub fn host_available() -> Option<f64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let field = |text: &str, name: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kb: f64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * KIB)
    };
    let number = |s: Option<String>| s.and_then(|s| s.trim().parse::<f64>().ok());
    let mut limits = Vec::new();
    if let Some(m) = read("/proc/meminfo") {
        limits.extend(field(&m, "MemAvailable:"));
    }
    // cgroup v2: this process's group ("0::/path"), else the root of the mount; then cgroup v1.
    let group = read("/proc/self/cgroup")
        .and_then(|g| g.lines().find_map(|l| l.strip_prefix("0::").map(|p| p.trim().to_string())))
        .unwrap_or_default();
    let v2 = [format!("/sys/fs/cgroup{group}"), "/sys/fs/cgroup".to_string()];
    let v1 = ["/sys/fs/cgroup/memory".to_string()];
    let groups = v2.iter().map(|d| (d, "memory.max", "memory.current"));
    for (dir, max, used) in groups.chain(v1.iter().map(|d| (d, "memory.limit_in_bytes", "memory.usage_in_bytes"))) {
        // "max" (v2) or a near-2^63 value (v1) mean no limit and parse to nothing or to more than any host has.
        if let (Some(max), Some(used)) = (number(read(&format!("{dir}/{max}"))), number(read(&format!("{dir}/{used}"))))
            && max < 1e18
        {
            limits.push((max - used).max(0.0));
            break;
        }
    }
    if let Some(l) = read("/proc/self/limits") {
        let soft = l
            .lines()
            .find(|l| l.starts_with("Max address space"))
            .and_then(|l| l["Max address space".len()..].split_whitespace().next().and_then(|v| v.parse::<f64>().ok()));
        let size = read("/proc/self/status").and_then(|s| field(&s, "VmSize:"));
        if let (Some(soft), Some(size)) = (soft, size) {
            limits.push((soft - size).max(0.0));
        }
    }
    limits.into_iter().reduce(f64::min)
}
