//! A task's head on the encoder's last hidden states: its parameters (registered fresh or from a
//! checkpoint), its forward for each kind of train/heads.rs, and its loss. Parameters are named
//! `head.{task}.weight`/`.bias` (the output layer) and `head.{task}.hidden.*` (--head-hidden), as
//! before heads were chosen, so older checkpoints load; a recurrent head's are
//! `head.{task}.{lstm,rnn}.{weight_ih,weight_hh,bias_ih,bias_hh}`, in PyTorch's layout.

use super::heads::{CosineHead, HeadKind};
use crate::data::cs224n::{Kind, Label, Task};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::model::bert::{Bert, Pooling, linear, mean_pool};
use crate::model::heads::{LinearHead, add_constant, pair_features, score_from_cosine};
use crate::model::input::EncoderInput;
use crate::model::safetensors::SafeTensors;
use crate::rng::Rng;
use crate::store::Store;
use crate::tape::Tape;
use crate::tensor::Tensor;

/// Where a head's values come from: a fresh initialisation or a saved checkpoint.
pub enum HeadSource<'a> {
    Init(&'a mut Rng),
    Saved(&'a SafeTensors),
}

/// A task's head: its kind, an optional GELU hidden layer, then the output layer (none for the
/// cosine head).
#[derive(Clone, Copy, Debug)]
pub struct TaskHead {
    pub task: Task,
    pub kind: HeadKind,
    pub hidden: Option<LinearHead>,
    pub out: Option<LinearHead>,
    /// The recurrent head's layer.
    pub recurrent: Option<RecurrentLayer>,
}

/// A recurrent head's LSTM or RNN: W_ih (G·H, C), b_ih (G·H), W_hh (G·H, H), b_hh (G·H).
#[derive(Clone, Copy, Debug)]
pub struct RecurrentLayer {
    pub w_ih: Tensor,
    pub b_ih: Tensor,
    pub w_hh: Tensor,
    pub b_hh: Tensor,
}

/// The encoder's last hidden states a head reads, in the run's layout, with their inputs.
pub enum States<'a> {
    /// The input as one sequence (a pair read jointly).
    Whole(Tensor, &'a EncoderInput),
    /// Each side of a pair, read alone.
    Sides([(Tensor, &'a EncoderInput); 2]),
}

/// Settings every head shares.
#[derive(Clone, Copy, Debug)]
pub struct HeadSettings {
    pub pooling: Pooling,
    /// Dropout before the linear layers.
    pub dropout: f64,
}

/// The width of a task's output layer: a logit per class, else one value.
pub fn output_width(task: Task) -> usize {
    match task.kind() {
        Kind::Classes(k) => k as usize,
        Kind::Binary | Kind::Regression => 1,
    }
}

impl TaskHead {
    /// Registers the head `kind` of `task` on C-wide states, with a GELU hidden layer of
    /// `hidden` (0: none) before its linear.
    pub fn register(
        store: &mut Store<f32>,
        source: &mut HeadSource<'_>,
        task: Task,
        kind: HeadKind,
        c: usize,
        hidden: usize,
    ) -> Result<TaskHead> {
        kind.check(task)?;
        let name = task.name();
        let mut recurrent = None;
        let mut input = match kind {
            HeadKind::Linear => c,
            HeadKind::Features(f) => f.width(c),
            HeadKind::Cosine(_) => return Ok(TaskHead { task, kind, hidden: None, out: None, recurrent }),
            HeadKind::Recurrent { cell, width } => {
                let prefix = format!("head.{name}.{}", kind.to_string().split(':').next().unwrap_or("rnn"));
                let g = cell.gates() * width;
                // PyTorch's nn.LSTM / nn.RNN: every tensor U(−1/√H, 1/√H).
                let bound = 1.0 / (width as f64).sqrt();
                let mut param =
                    |part: &str, dims: &[usize]| head_param(store, source, &format!("{prefix}.{part}"), dims, bound);
                recurrent = Some(RecurrentLayer {
                    w_ih: param("weight_ih", &[g, c])?,
                    w_hh: param("weight_hh", &[g, width])?,
                    b_ih: param("bias_ih", &[g])?,
                    b_hh: param("bias_hh", &[g])?,
                });
                c + width
            }
        };
        let hidden = match hidden {
            0 => None,
            h => {
                let layer = linear_head(store, source, &format!("head.{name}.hidden"), input, h)?;
                input = h;
                Some(layer)
            }
        };
        let out = linear_head(store, source, &format!("head.{name}"), input, output_width(task))?;
        Ok(TaskHead { task, kind, hidden, out: Some(out), recurrent })
    }

    /// The task's outputs from the encoder's states: logits (B, K) for classes, a logit (B, 1)
    /// or a cosine (B) for yes/no, a score on the 0–5 scale (B, 1) or (B) for a regression.
    pub fn forward(&self, tape: &mut Tape<f32>, bert: &Bert, s: HeadSettings, states: States<'_>) -> Result<Tensor> {
        match (self.kind, states) {
            (HeadKind::Linear, States::Whole(h, input)) => {
                let x = bert.sentence_vector(tape, h, input, s.pooling)?;
                self.linear_layers(tape, s, x)
            }
            (HeadKind::Recurrent { cell, .. }, States::Whole(h, input)) => {
                let r = self.recurrent.ok_or_else(|| Error::Config("a recurrent head without its layer".into()))?;
                // The input projection of every token at once, as rows: (N, G·H) packed, (B·T, G·H) padded.
                let gx = linear(tape, h, r.w_ih, r.b_ih)?;
                let gx = gx.reshape(&[gx.numel() / gx.shape.last(), gx.shape.last()])?;
                let spans = input.spans(tape)?;
                let last = tape.recurrent(cell, gx, r.w_hh, r.b_hh, &spans)?; // (B, H)
                let v = bert.sentence_vector(tape, h, input, s.pooling)?; // (B, C)
                let x = tape.concat(&[last, v])?;
                self.linear_layers(tape, s, x)
            }
            (HeadKind::Features(f), States::Sides([(ha, ia), (hb, ib)])) => {
                let u = bert.sentence_vector(tape, ha, ia, s.pooling)?;
                let v = bert.sentence_vector(tape, hb, ib, s.pooling)?;
                let x = pair_features(tape, f, u, v)?;
                self.linear_layers(tape, s, x)
            }
            (HeadKind::Cosine(c), States::Sides([(ha, ia), (hb, ib)])) => {
                let (u, v) = (mean_pool(tape, ha, ia)?, mean_pool(tape, hb, ib)?);
                let cos = tape.cosine(u, v)?;
                cosine_output(tape, self.task, c, cos)
            }
            (kind, _) => Err(Error::Config(format!("the {kind} head was given the wrong encoding of its input"))),
        }
    }

    /// dropout → [linear → GELU → dropout] → linear
    fn linear_layers(&self, tape: &mut Tape<f32>, s: HeadSettings, x: Tensor) -> Result<Tensor> {
        let mut x = tape.dropout(x, s.dropout)?;
        if let Some(h) = self.hidden {
            x = linear(tape, x, h.w, h.b)?;
            x = tape.gelu(x)?;
            x = tape.dropout(x, s.dropout)?;
        }
        let out = self.out.ok_or_else(|| Error::Config("head without an output layer".into()))?;
        linear(tape, x, out.w, out.b)
    }

    /// The task's loss (mean over the batch) on `outputs` of [`TaskHead::forward`].
    pub fn loss(&self, tape: &mut Tape<f32>, labels: &[Label], outputs: Tensor) -> Result<Tensor> {
        let task = self.task;
        let values: Vec<f32> = labels.iter().map(|l| l.as_f32()).collect();
        match (task.kind(), self.kind) {
            (Kind::Classes(_), _) => {
                let labels: Vec<i32> = values.iter().map(|&l| l as i32).collect();
                let labels = tape.ints(&labels, &[labels.len()])?;
                tape.cross_entropy(outputs, labels)
            }
            // The output is o = p − 1/2. MSE: (p − y)² = (o − (y − 1/2))²; BCE: BCE with logits on
            // logit(p) = ln(p/(1−p)) = 2·atanh(2p − 1) = 2·atanh(2o) (clamped where p ≤ 0 or ≥ 1).
            (Kind::Binary, HeadKind::Cosine(c)) => {
                if c.bce {
                    let y = tape.constant(&values, &[values.len()])?;
                    let z = tape.scale(outputs, 2.0)?;
                    let a = tape.atanh(z)?;
                    let logit = tape.scale(a, 2.0)?;
                    tape.bce_with_logits(logit, y)
                } else {
                    let y: Vec<f32> = values.iter().map(|v| v - 0.5).collect();
                    let y = tape.constant(&y, &[y.len()])?;
                    tape.mse(outputs, y)
                }
            }
            (Kind::Binary, _) => {
                let y = tape.constant(&values, &[values.len()])?;
                tape.bce_with_logits(outputs, y)
            }
            // Scores on [0, 1]: both sides divided by 5.
            (Kind::Regression, HeadKind::Cosine(CosineHead { unit: true, .. })) => {
                let y: Vec<f32> = values.iter().map(|v| v / 5.0).collect();
                let y = tape.constant(&y, &[y.len()])?;
                let p = tape.scale(outputs, 0.2)?;
                tape.mse(p, y)
            }
            (Kind::Regression, _) => {
                let y = tape.constant(&values, &[values.len()])?;
                tape.mse(outputs, y)
            }
        }
    }

    /// The head with its parameters read as constants (SMART's ascent pass).
    pub fn detached(&self) -> TaskHead {
        let d = |h: Option<LinearHead>| h.map(|h| LinearHead { w: h.w.detached(), b: h.b.detached() });
        let recurrent = self.recurrent.map(|r| RecurrentLayer {
            w_ih: r.w_ih.detached(),
            b_ih: r.b_ih.detached(),
            w_hh: r.w_hh.detached(),
            b_hh: r.b_hh.detached(),
        });
        TaskHead { task: self.task, kind: self.kind, hidden: d(self.hidden), out: d(self.out), recurrent }
    }
}

/// A cosine head's output: for a score, 5·cos or (cos+1)·2.5; for yes/no, o = p − 1/2 with p the
/// probability read from the cosine, cos or (cos+1)/2, so that o > 0 predicts yes as a logit's
/// sign does.
pub fn cosine_output<F: Float>(tape: &mut Tape<F>, task: Task, c: CosineHead, cos: Tensor) -> Result<Tensor> {
    match (task.kind(), c.shifted) {
        (Kind::Regression, shifted) => score_from_cosine(tape, cos, shifted),
        // (cos+1)/2 − 1/2
        (_, true) => tape.scale(cos, 0.5),
        (_, false) => add_constant(tape, cos, -0.5),
    }
}

/// A linear layer `name` (OUT, IN), fresh as PyTorch's nn.Linear (U(−1/√IN, 1/√IN) for weight
/// and bias) or read from a checkpoint.
pub fn linear_head(
    store: &mut Store<f32>,
    source: &mut HeadSource<'_>,
    name: &str,
    inp: usize,
    out: usize,
) -> Result<LinearHead> {
    let bound = 1.0 / (inp as f64).sqrt();
    Ok(LinearHead {
        w: head_param(store, source, &format!("{name}.weight"), &[out, inp], bound)?,
        b: head_param(store, source, &format!("{name}.bias"), &[out], bound)?,
    })
}

/// A head's parameter `name` (dims): drawn from U(−bound, bound) on a fresh head, read from the
/// checkpoint on a saved one.
fn head_param(
    store: &mut Store<f32>,
    source: &mut HeadSource<'_>,
    name: &str,
    dims: &[usize],
    bound: f64,
) -> Result<Tensor> {
    // Fallible: a size the memory check let through may still not be there.
    let too_large = || {
        let shape: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
        Error::Config(format!("{name}: cannot allocate its {} values: lower --head-hidden", shape.join(" × ")))
    };
    let n = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(too_large)?;
    let values = match source {
        HeadSource::Init(rng) => {
            let mut v: Vec<f32> = Vec::new();
            v.try_reserve_exact(n).map_err(|_| too_large())?;
            v.extend((0..n).map(|_| rng.range(-bound, bound) as f32));
            v
        }
        HeadSource::Saved(st) => st.f32(name)?,
    };
    if values.len() != n {
        return Err(Error::Config(format!("{name}: saved head has the wrong size for these options")));
    }
    store.add_param(name, dims, &values, true)
}
