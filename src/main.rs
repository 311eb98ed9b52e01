//! The `engine` command line: parse, call the library, print. Errors print as one line.

use clap::{Args, Parser, Subcommand};
use engine::data::cs224n::{Split, Task};
use engine::data::user_task::TaskDef;
use engine::device::{Device, DeviceChoice, Precision};
use engine::embed::{EmbedOptions, Pooling, embed};
use engine::model::checkpoint::default_model_dir;
use engine::model::lora::{LoraConfig, Target};
use engine::model::pals::PalsConfig;
use engine::optim::Rule;
use engine::train::export::Format as ExportFormat;
use engine::train::heads::HeadKind;
use engine::train::methods::pcgrad::Reduction;
use engine::train::options::{LrSchedule, PairEncoding, Schedule};
use engine::train::pretrain::{Corpus, PretrainArgs, PretrainOptions};
use engine::train::smart::{SmartConfig, SmartNorm};
use engine::train::{DataFile, FinetuneArgs, TrainOptions};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "engine", version, about = "Multi-task BERT fine-tuning with its own autograd tape and CUDA kernels")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of its variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Print the compute device `--device auto` picks, and why.
    Devices,
    /// Sentence embeddings of a text file: one JSON line {"text", "embedding"} per input line.
    /// A line holding a tab is a pair, encoded jointly as [CLS] a [SEP] b [SEP].
    Embed {
        /// A Hugging Face BERT folder (config.json, model.safetensors, tokenizer.json), a checkpoint of
        /// engine finetune, or a LoRA adapter folder (engine finetune --lora, or PEFT's save_pretrained):
        /// its base model with the adapters; default: weights/all-MiniLM-L6-v2 (fetch it with weights/fetch.sh).
        #[arg(long)]
        model: Option<PathBuf>,
        /// How token states become one vector.
        #[arg(long, value_enum, default_value_t = Pooling::Mean)]
        pooling: Pooling,
        /// Text file, one sentence (or tab-separated pair) per line; `-` reads standard input.
        #[arg(long)]
        input: PathBuf,
        /// Output file (JSON lines), written atomically.
        #[arg(long)]
        output: PathBuf,
        /// Hidden state to pool: `last`, or the number of encoder layers to run (0 = embeddings).
        #[arg(long, default_value = "last")]
        layer: String,
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        /// Longest tokenized input; longer ones are truncated (longest side first for pairs).
        #[arg(long, default_value_t = 128)]
        max_len: usize,
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
        /// No progress output on stderr.
        #[arg(long)]
        quiet: bool,
        /// Padded batches instead of packed ones (the same numbers; for comparison).
        #[arg(long)]
        padded: bool,
    },
    /// Fine-tune a BERT checkpoint on several CS224N tasks at once; reports dev scores, keeps the
    /// best checkpoint (out/best), writes predictions (out/predictions), metrics.jsonl, curves.svg
    /// and the best checkpoint's dev analysis (analysis.txt, confusion-<task>.svg, sts-scatter.svg).
    Finetune(FinetuneCli),
    /// Further pre-training of a checkpoint's encoder on the tasks' own sentences, or a text file,
    /// before fine-tuning (`--mlm`: BERT's masked-language modelling); writes a BERT folder that
    /// `engine finetune --model OUT` (and another `engine pretrain --model OUT`) starts from.
    #[command(override_usage = "engine pretrain --mlm --out DIR [--model M] [--tasks T,… | --text FILE] [OPTIONS]")]
    Pretrain(PretrainCli),
    /// Evaluate a fine-tuned checkpoint: dev scores and analysis (per-class precision, recall, F1,
    /// confusion matrices), or test predictions, for every task it has.
    Eval {
        /// A folder written by `engine finetune` (out/best or out/last).
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long, value_enum, default_value_t = SplitArg::Dev)]
        split: SplitArg,
        #[command(flatten)]
        data: DataFlags,
        /// Where the prediction files (and, on dev, analysis.txt and the plots) go (default:
        /// CHECKPOINT/predictions).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
        /// Padded batches instead of packed ones (the same numbers; for comparison).
        #[arg(long)]
        padded: bool,
    },
    /// Fold a LoRA checkpoint's adapters into its base model: writes a plain Hugging Face BERT
    /// folder (model.safetensors with the task heads as head.*, config.json, tokenizer files,
    /// train.json), which `engine eval`, `engine predict` and other tools read as any checkpoint.
    Merge {
        /// A folder written by `engine finetune --lora R` (out/best or out/last).
        #[arg(long)]
        checkpoint: PathBuf,
        /// The folder to write (replaced atomically if it exists).
        #[arg(long)]
        output: PathBuf,
    },
    /// Export a fine-tuned checkpoint's encoder for another tool: `--format sentence-transformers`
    /// writes a folder that `SentenceTransformer(DIR)` loads, pooling as the run did (LoRA adapters
    /// folded in, task heads left out); its embeddings are `engine embed --pooling <the run's>`'s.
    Export {
        /// A folder written by `engine finetune` (out/best or out/last).
        #[arg(long)]
        checkpoint: PathBuf,
        #[arg(long, value_enum, default_value_t = ExportFormat::SentenceTransformers)]
        format: ExportFormat,
        /// The folder to write (replaced atomically if it exists).
        #[arg(long)]
        output: PathBuf,
    },
    /// Predict one task's file (CS224N format in) with a fine-tuned checkpoint (CS224N format out).
    Predict {
        #[arg(long)]
        checkpoint: PathBuf,
        /// The task (one the checkpoint was trained on).
        #[arg(long)]
        task: String,
        /// A CS224N file of the task (labels, if any, are ignored).
        #[arg(long)]
        input: PathBuf,
        /// The prediction file to write (default: standard output).
        #[arg(long)]
        output: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
        /// Padded batches instead of packed ones (the same numbers; for comparison).
        #[arg(long)]
        padded: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SplitArg {
    Dev,
    Test,
}

/// Where the task files are: the CS224N names under --data-dir, each overridable.
#[derive(Args, Clone, Debug)]
struct DataFlags {
    /// Folder with the CS224N files (ids-sst-train.csv, quora-dev.csv, …).
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    #[arg(long)]
    sst_train: Option<PathBuf>,
    #[arg(long)]
    sst_dev: Option<PathBuf>,
    #[arg(long)]
    sst_test: Option<PathBuf>,
    #[arg(long)]
    quora_train: Option<PathBuf>,
    #[arg(long)]
    quora_dev: Option<PathBuf>,
    #[arg(long)]
    quora_test: Option<PathBuf>,
    #[arg(long)]
    sts_train: Option<PathBuf>,
    #[arg(long)]
    sts_dev: Option<PathBuf>,
    #[arg(long)]
    sts_test: Option<PathBuf>,
    #[arg(long)]
    cfimdb_train: Option<PathBuf>,
    #[arg(long)]
    cfimdb_dev: Option<PathBuf>,
    #[arg(long)]
    cfimdb_test: Option<PathBuf>,
}

impl DataFlags {
    /// Every (task, split) file, with the flag that names it (or --data-dir's default).
    fn files(&self) -> Vec<DataFile> {
        let given = |t: Task, s: Split| -> Option<&PathBuf> {
            match (t, s) {
                (Task::Sst, Split::Train) => self.sst_train.as_ref(),
                (Task::Sst, Split::Dev) => self.sst_dev.as_ref(),
                (Task::Sst, Split::Test) => self.sst_test.as_ref(),
                (Task::Quora, Split::Train) => self.quora_train.as_ref(),
                (Task::Quora, Split::Dev) => self.quora_dev.as_ref(),
                (Task::Quora, Split::Test) => self.quora_test.as_ref(),
                (Task::Sts, Split::Train) => self.sts_train.as_ref(),
                (Task::Sts, Split::Dev) => self.sts_dev.as_ref(),
                (Task::Sts, Split::Test) => self.sts_test.as_ref(),
                (Task::Cfimdb, Split::Train) => self.cfimdb_train.as_ref(),
                (Task::Cfimdb, Split::Dev) => self.cfimdb_dev.as_ref(),
                (Task::Cfimdb, Split::Test) => self.cfimdb_test.as_ref(),
                (Task::User(_), _) => None,
            }
        };
        let mut out = Vec::new();
        for task in Task::all() {
            for split in [Split::Train, Split::Dev, Split::Test] {
                let flag = format!("--{}-{}", task.name(), split.name());
                let (path, flag) = match given(task, split) {
                    Some(p) => (p.clone(), flag),
                    None => (task.path(&self.data_dir, split), format!("{flag} (default under --data-dir)")),
                };
                out.push(DataFile { task, split, path, flag });
            }
        }
        out
    }
}

/// `engine finetune`'s flags. Defaults are the reference recipe.
#[derive(Args, Debug)]
struct FinetuneCli {
    /// Tasks to train together: any of sst, quora, sts, cfimdb, and those --task-def defines.
    #[arg(long, value_delimiter = ',', default_value = "sst,quora,sts")]
    tasks: Vec<String>,
    /// Define a task of your own, NAME:single|pair:classes=N|binary|regression[:label=COLUMN]
    /// (e.g. nli:pair:classes=3), read from NAME-train.csv, NAME-dev.csv and NAME-test.csv under
    /// --data-dir in the CS224N layout (id, sentence or sentence1 and sentence2, the label column,
    /// `label` by default); name it in --tasks. The checkpoint keeps the definition.
    #[arg(long, value_name = "DEF", value_delimiter = ',')]
    task_def: Vec<String>,
    #[command(flatten)]
    data: DataFlags,
    /// The BERT checkpoint to start from (default: weights/all-MiniLM-L6-v2).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Output folder: best/, last/, predictions/, metrics.jsonl, curves.svg, analysis.txt and plots.
    #[arg(long, default_value = "runs/finetune")]
    out: PathBuf,
    /// Continue a run from its out/last folder (its options and weights are used).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Replace the run --out already holds (its best/, last/, predictions/, metrics): without
    /// this flag a fresh run into such a folder refuses.
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// Sentence vector the heads read.
    #[arg(long, value_enum, default_value_t = Pooling::Mean)]
    pooling: Pooling,
    /// How pair tasks read their sentences when --head does not say: joint (every head linear on
    /// [CLS] a [SEP] b [SEP]) or separate (Quora: full, STS: cosine).
    #[arg(long, value_enum, default_value_t = PairEncoding::Joint)]
    pair_encoding: PairEncoding,
    /// Each task's head, e.g. sts=cosine,quora=full (unnamed tasks: see --pair-encoding).
    /// linear: the input's sentence vector (a pair read jointly) → linear. Pairs read one side at
    /// a time, u and v: concat [u, v], full [u, v, |u−v|, u·v], product u·v, difference |u−v|
    /// (each → linear), or cosine: no parameters; a score 5·cos (:shifted (cos+1)·2.5, :unit loss
    /// on labels/5), yes/no p = cos (:shifted (cos+1)/2) with MSE (:bce BCE), yes where p > 1/2. lstm:H and rnn:H: an H-wide
    /// recurrent layer over the token states, its last state beside the sentence vector → linear.
    #[arg(long, value_name = "TASK=HEAD", value_delimiter = ',')]
    head: Vec<String>,
    /// Add a GELU hidden layer of this width to every head with a linear layer (0: none).
    #[arg(long, default_value_t = 0)]
    head_hidden: usize,
    /// Which tasks each step trains. Under proportional or annealed sampling with --pcgrad or
    /// --gradvac, each step draws one batch per task by the schedule's probabilities and the
    /// method combines the tasks drawn ("Gradient Compromise").
    #[arg(long, value_enum, default_value_t = Schedule::RoundRobin)]
    schedule: Schedule,
    /// Loss weights, e.g. sst=1,quora=0.5,sts=1 (unnamed tasks: 1; a bare number: every task).
    #[arg(long, value_delimiter = ',')]
    task_weights: Vec<String>,
    /// Peak learning rate (default: 1e-4; 1e-3 with --lora, whose adapters start from zero).
    #[arg(long)]
    lr: Option<f64>,
    /// Decoupled weight decay, on every parameter (see --no-decay-norm-bias).
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// No weight decay on biases and LayerNorm weights, as Hugging Face's Trainer does (the
    /// default decays every parameter, as the reference recipe's torch.optim.AdamW does).
    #[arg(long)]
    no_decay_norm_bias: bool,
    /// The update rule: AdamW, Adamax (Adam's ∞-norm variant), QHAdam (quasi-hyperbolic Adam) or
    /// LAMB (per-tensor trust ratios); all take --betas and --weight-decay (decoupled as AdamW's,
    /// but inside LAMB's direction as its paper has it).
    #[arg(long, value_enum, default_value_t = Rule::Adamw)]
    optimizer: Rule,
    /// QHAdam's ν1,ν2 (the paper's recommended 0.7,1.0; with ν1 = ν2 = 1 it is Adam).
    #[arg(long, value_delimiter = ',', default_value = "0.7,1.0")]
    qh_nu: Vec<f64>,
    /// Peak learning rate of the task heads (and PALs), which follow the same schedule
    /// (default: --lr).
    #[arg(long, value_name = "LR", allow_hyphen_values = true)]
    head_lr: Option<f64>,
    /// Leave out this fraction of each task's longest training inputs, in tokens (e.g. 0.02).
    #[arg(long, value_name = "F", default_value_t = 0.0, allow_hyphen_values = true)]
    drop_longest: f64,
    /// EDA (Wei & Zou 2019): add augmented copies of these tasks' training examples (never dev or
    /// test), e.g. sst,quora; each copy changed by one operation, taken in turn: synonym
    /// replacement, random insertion (both need --eda-synonyms), random swap, random deletion.
    #[arg(long, value_name = "TASKS", value_delimiter = ',')]
    eda_tasks: Vec<String>,
    /// EDA's α: synonym replacement, insertion and swap make max(1, round(α·ℓ)) changes to a
    /// sentence of ℓ words; deletion deletes each word with probability α.
    #[arg(long, value_name = "A", default_value_t = 0.1, allow_hyphen_values = true, requires = "eda_tasks")]
    eda_alpha: f64,
    /// EDA's augmented copies per training example, originals kept (a copy that comes out the same
    /// as its original is left out); a pair's sentences each get the copy's operation.
    #[arg(long, value_name = "N", default_value_t = 4, requires = "eda_tasks")]
    eda_num: usize,
    /// EDA's synonyms: one `word<TAB>syn1,syn2,…` line per word (blank and `#` lines ignored);
    /// without it, no synonym replacement or insertion.
    #[arg(long, value_name = "FILE", requires = "eda_tasks")]
    eda_synonyms: Option<PathBuf>,
    /// AdamW's β1,β2.
    #[arg(long, value_delimiter = ',', default_value = "0.9,0.999")]
    betas: Vec<f64>,
    #[arg(long, default_value_t = 0.1)]
    warmup_ratio: f64,
    #[arg(long, value_enum, default_value_t = LrSchedule::Linear)]
    lr_schedule: LrSchedule,
    /// Clip the global gradient norm to this (0: no clipping).
    #[arg(long, default_value_t = 0.0)]
    grad_clip: f64,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Examples per task per batch: one size, or per task, e.g. sst=16,quora=64,sts=16 (unnamed
    /// tasks: 16; a bare number: every task). A round-robin epoch is the largest task's batches.
    #[arg(long, value_delimiter = ',', default_value = "16")]
    batch_size: Vec<String>,
    #[arg(long, default_value_t = 128)]
    max_len: usize,
    /// Dropout before each head.
    #[arg(long, default_value_t = 0.1)]
    dropout: f64,
    #[arg(long, default_value_t = 11711)]
    seed: u64,
    /// Freeze the embeddings and the bottom N encoder layers.
    #[arg(long, default_value_t = 0)]
    freeze_layers: usize,
    /// Stop after this many optimizer steps (0: all epochs); the schedule spans them.
    #[arg(long, default_value_t = 0)]
    max_steps: usize,
    /// Evaluate on dev every N steps besides each epoch's end.
    #[arg(long, default_value_t = 0)]
    eval_every: usize,
    #[arg(long, default_value_t = 10)]
    log_every: usize,
    /// PCGrad: project each task's gradient of the shared parameters away from the others' where
    /// they conflict (Yu et al. 2020). Statistics go to metrics.jsonl and pcgrad.svg.
    #[arg(long)]
    pcgrad: bool,
    /// How PCGrad combines the projected task gradients.
    #[arg(long, value_enum, default_value_t = Reduction::Sum, requires = "pcgrad")]
    pcgrad_reduction: Reduction,
    /// Per-task warm start: train each task alone for N epochs, in --tasks order, then all of
    /// them jointly (one plan of steps: the LR schedule spans both, --resume crosses the boundary).
    #[arg(long, value_name = "N", default_value_t = 0)]
    individual_epochs: usize,
    /// GradVac (Wang et al. 2021): keep a moving average of each task pair's gradient cosine and
    /// lift a task's gradient towards the other's whenever their cosine falls below it.
    /// Statistics (with the targets) go to metrics.jsonl and gradvac.svg.
    #[arg(long, conflicts_with = "pcgrad")]
    gradvac: bool,
    /// GradVac's decay β of the targets' moving average.
    #[arg(long, value_name = "BETA", default_value_t = 0.01, requires = "gradvac")]
    gradvac_beta: f64,
    /// LoRA rank: train low-rank adapters (and the heads) with the encoder frozen.
    #[arg(long, value_name = "R")]
    lora: Option<usize>,
    /// LoRA's α: the adapters are scaled by α/R (default: R).
    #[arg(long, value_name = "A", requires = "lora")]
    lora_alpha: Option<f64>,
    /// Dropout on the adapters' inputs.
    #[arg(long, value_name = "P", default_value_t = 0.0, requires = "lora")]
    lora_dropout: f64,
    /// The linears that get adapters: any of query,key,value,attn_out,ffn_in,ffn_out.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "query,value", requires = "lora")]
    lora_targets: Vec<Target>,
    /// The matmuls' operands: f32, or bf16 (rounded to nearest even, float32 accumulation; the
    /// tensor cores on a GPU). Weights, optimizer state and every other op stay float32.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    precision: Precision,
    /// Stop after N steps as an interruption would (out/last is saved; continue with --resume).
    #[arg(long)]
    stop_after: Option<usize>,
    /// Refuse malformed data records instead of skipping them.
    #[arg(long)]
    strict: bool,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// No progress output on stderr.
    #[arg(long)]
    quiet: bool,
    /// Batches padded to their longest sequence instead of token-packed (the same numbers on
    /// the real tokens, about twice the work): the old path, kept for comparison.
    #[arg(long)]
    padded: bool,
    /// SMART (Jiang et al. 2020): add λ·ℓ_s(f(e + δ), f(e)) to each task's loss, δ an adversarial
    /// perturbation of the embeddings' output found by --smart-steps ascent steps; ℓ_s the
    /// symmetric KL (SST, Quora) or squared error (STS). About 2.7× the work of a step.
    #[arg(long)]
    smart: bool,
    /// λ: one weight for every task, or per task, e.g. sts=10 (unnamed tasks: 1).
    #[arg(long, value_name = "W", value_delimiter = ',', requires = "smart")]
    smart_weight: Vec<String>,
    /// The tasks SMART regularises (default: all of --tasks).
    #[arg(long, value_delimiter = ',', requires = "smart")]
    smart_tasks: Vec<String>,
    /// ε: projecting, each element of δ stays within ±ε; normalizing, it guards the division.
    #[arg(long, value_name = "EPS", default_value_t = 1e-5, requires = "smart")]
    smart_eps: f64,
    /// η: the ascent step's size (see --smart-norm; ∞-norms are per token).
    #[arg(long, value_name = "ETA", default_value_t = 1e-3, requires = "smart")]
    smart_step: f64,
    /// σ: δ starts as N(0, σ²) noise.
    #[arg(long, value_name = "SIGMA", default_value_t = 1e-5, requires = "smart")]
    smart_noise: f64,
    /// How each ascent step bounds δ: normalize (MT-DNN's and smart-pytorch's, which the CS224N
    /// reports use: each token's δ scaled to an ∞-norm of 1, ε only guarding the division) or
    /// project (the paper's Algorithm 1: clamp to ±ε). At the paper's ε = 1e-5, projecting keeps
    /// ℓ_s below 1e-6, too small to change the model.
    #[arg(long, value_enum, default_value_t = SmartNorm::Normalize, requires = "smart")]
    smart_norm: SmartNorm,
    /// K: ascent steps per task batch (0: the noise alone).
    #[arg(long, value_name = "K", default_value_t = 1, requires = "smart")]
    smart_steps: usize,
    /// μ: add μ·ℓ_s(f(e; θ), f(e; θ̃)), the Bregman proximal term against a momentum teacher θ̃
    /// (0: off). The teacher is kept in out/last for --resume.
    #[arg(long, value_name = "MU", default_value_t = 0.0, requires = "smart")]
    smart_bregman: f64,
    /// β: the teacher's momentum, θ̃ ← (1−β)θ + βθ̃ after each step.
    #[arg(long, value_name = "BETA", default_value_t = 0.99, requires = "smart")]
    smart_beta: f64,
    /// PALs (Stickland & Murray 2019): per task, a projected attention layer beside each encoder
    /// layer, V_D·MHA(V_E·h), V_E and V_D shared across layers; saved with the task's head.
    #[arg(long)]
    pals: bool,
    /// d_s, the PALs' width (default: the paper's 204 for a 768-wide BERT, scaled to the model
    /// and rounded to a multiple of --pals-heads: 108 for MiniLM).
    #[arg(long, value_name = "D", requires = "pals")]
    pals_dim: Option<usize>,
    /// Attention heads of each PAL.
    #[arg(long, value_name = "H", default_value_t = 12, requires = "pals")]
    pals_heads: usize,
}

impl FinetuneCli {
    /// --task-def's definitions, registered, so that --tasks and the data files can name them.
    fn task_defs(&self) -> anyhow::Result<Vec<TaskDef>> {
        let defs = self.task_def.iter().map(|d| TaskDef::parse(d)).collect::<engine::Result<Vec<_>>>()?;
        for d in &defs {
            d.clone().register()?;
        }
        Ok(defs)
    }

    fn options(&self) -> anyhow::Result<TrainOptions> {
        let task_defs = self.task_defs()?;
        let tasks = self.tasks.iter().map(|t| t.parse::<Task>()).collect::<engine::Result<Vec<_>>>()?;
        let weights = parse_task_values("--task-weights", &self.task_weights, &tasks, 1.0)?;
        let sizes = parse_task_values("--batch-size", &self.batch_size, &tasks, 16.0)?
            .into_iter()
            .map(|b| match b.fract() == 0.0 && (1.0..=1e6).contains(&b) {
                true => Ok(b as usize),
                false => Err(anyhow::anyhow!("--batch-size {b}: a whole number of examples, at least 1")),
            })
            .collect::<anyhow::Result<Vec<usize>>>()?;
        if self.betas.len() != 2 {
            anyhow::bail!("--betas takes two values, e.g. 0.9,0.999");
        }
        Ok(TrainOptions {
            heads: parse_heads(&self.head, &tasks, self.pair_encoding)?,
            smart: self.smart.then(|| self.smart_config(&tasks)).transpose()?,
            tasks,
            task_defs,
            task_weights: weights,
            pooling: self.pooling,
            pair_encoding: self.pair_encoding,
            head_hidden: self.head_hidden,
            schedule: self.schedule,
            lr: self.lr.unwrap_or(if self.lora.is_some() { 1e-3 } else { 1e-4 }),
            weight_decay: self.weight_decay,
            beta1: self.betas[0],
            beta2: self.betas[1],
            eps: 1e-8,
            warmup_ratio: self.warmup_ratio,
            lr_schedule: self.lr_schedule,
            grad_clip: self.grad_clip,
            grad_accum: self.grad_accum,
            epochs: self.epochs,
            batch_size: sizes.iter().copied().max().unwrap_or(16),
            task_batch_sizes: if sizes.iter().all(|&b| b == sizes[0]) { Vec::new() } else { sizes },
            max_len: self.max_len,
            dropout: self.dropout,
            seed: self.seed,
            freeze_layers: self.freeze_layers,
            max_steps: self.max_steps,
            eval_every: self.eval_every,
            log_every: self.log_every,
            pcgrad: self.pcgrad,
            pcgrad_reduction: self.pcgrad_reduction,
            individual_epochs: self.individual_epochs,
            gradvac: self.gradvac,
            gradvac_beta: self.gradvac_beta,
            lora: self.lora.map(|rank| LoraConfig {
                rank,
                alpha: self.lora_alpha.unwrap_or(rank as f64),
                dropout: self.lora_dropout,
                targets: self.lora_targets.clone(),
            }),
            precision: self.precision,
            padded: self.padded,
            pals: self.pals.then(|| self.pals_config()).transpose()?,
            head_lr: self.head_lr,
            no_decay_norm_bias: self.no_decay_norm_bias,
            drop_longest: self.drop_longest,
            optimizer: self.optimizer,
            qh_nu: match self.qh_nu[..] {
                [a, b] => [a, b],
                _ => anyhow::bail!("--qh-nu takes two values, e.g. 0.7,1.0"),
            },
            eda_tasks: self.eda_tasks.iter().map(|t| t.parse::<Task>()).collect::<engine::Result<Vec<_>>>()?,
            eda_alpha: self.eda_alpha,
            eda_num: self.eda_num,
            // Absolute, so that --resume from another folder finds it.
            eda_synonyms: match &self.eda_synonyms {
                Some(p) => {
                    Some(std::path::absolute(p).map_err(|e| anyhow::anyhow!("--eda-synonyms {}: {e}", p.display()))?)
                }
                None => None,
            },
        })
    }

    /// --pals' settings (d_s 0: the paper's, scaled to the model when it is built).
    fn pals_config(&self) -> anyhow::Result<PalsConfig> {
        if self.pals_dim == Some(0) {
            anyhow::bail!("--pals-dim 0: give a width of at least 1, or leave it out for the paper's");
        }
        Ok(PalsConfig { dim: self.pals_dim.unwrap_or(0), heads: self.pals_heads })
    }

    /// --smart's settings: λ per task from --smart-weight and --smart-tasks.
    fn smart_config(&self, tasks: &[Task]) -> anyhow::Result<SmartConfig> {
        let mut c = SmartConfig::new(tasks.len());
        c.weights = parse_task_values("--smart-weight", &self.smart_weight, tasks, 1.0)?;
        let smart_tasks = self.smart_tasks.iter().map(|t| t.parse::<Task>()).collect::<engine::Result<Vec<_>>>()?;
        if !smart_tasks.is_empty() {
            for t in &smart_tasks {
                if !tasks.contains(t) {
                    anyhow::bail!("--smart-tasks: {t} is not in --tasks");
                }
            }
            for (w, t) in c.weights.iter_mut().zip(tasks) {
                if !smart_tasks.contains(t) {
                    *w = 0.0;
                }
            }
        }
        c.eps = self.smart_eps;
        c.step = self.smart_step;
        c.noise = self.smart_noise;
        c.steps = self.smart_steps;
        c.norm = self.smart_norm;
        c.bregman = self.smart_bregman;
        c.beta = self.smart_beta;
        Ok(c)
    }
}

/// `engine pretrain`'s flags: finetune's names and defaults where they mean the same thing.
#[derive(Args, Debug)]
struct PretrainCli {
    /// The objective (required): masked-language modelling, as BERT's.
    ///
    /// Of each sentence's tokens but [CLS] and [SEP], a share of --mask-prob is chosen (at least
    /// one); of those, 80% become [MASK], 10% a random token, 10% stay; the loss is the
    /// cross-entropy of the original tokens there. The head is BertForMaskedLM's (dense, GELU,
    /// LayerNorm, a decoder tied to the word embeddings): the checkpoint's cls.predictions.*
    /// when it has them, else a fresh one.
    #[arg(long)]
    mlm: bool,
    /// The BERT checkpoint to start from (default: weights/all-MiniLM-L6-v2).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Read every training sentence of these tasks, each side of a pair on its own: any of sst,
    /// quora, sts, cfimdb (default: sst,quora,sts, unless --text is given).
    #[arg(long, value_delimiter = ',')]
    tasks: Vec<String>,
    /// Read the lines of this text file instead, one sentence each (blank lines skipped).
    #[arg(long, value_name = "FILE")]
    text: Option<PathBuf>,
    /// Folder with the CS224N training files (ids-sst-train.csv, quora-train.csv, …).
    #[arg(long, visible_alias = "data", value_name = "DIR", default_value = "data")]
    data_dir: PathBuf,
    /// The folder to write (required); `engine finetune --model DIR` starts from it.
    ///
    /// Written atomically after every epoch: model.safetensors (the encoder under the input's
    /// tensor names, and the head as cls.predictions.*), config.json, the tokenizer files and
    /// pretrain.json (the options, the losses, the steps).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Replace --out when it exists and is not empty; without this flag such a folder is refused.
    #[arg(long)]
    overwrite: bool,
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Sentences per batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Peak learning rate, reached after --warmup-ratio of the steps, then decayed linearly to 0.
    #[arg(long, default_value_t = 5e-5, allow_hyphen_values = true)]
    lr: f64,
    #[arg(long, default_value_t = 0.1, allow_hyphen_values = true)]
    warmup_ratio: f64,
    /// Decoupled weight decay, on every parameter (see --no-decay-norm-bias).
    #[arg(long, default_value_t = 0.01, allow_hyphen_values = true)]
    weight_decay: f64,
    /// No weight decay on biases and LayerNorm weights, as BERT's recipe and Hugging Face's
    /// Trainer have it.
    #[arg(long)]
    no_decay_norm_bias: bool,
    /// Clip the global gradient norm to this (0: no clipping).
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    grad_clip: f64,
    /// Longest tokenized sentence, [CLS] and [SEP] included; longer ones are truncated.
    #[arg(long, default_value_t = 128)]
    max_len: usize,
    /// The share of each sentence's tokens chosen for prediction, in (0, 1).
    #[arg(long, value_name = "P", default_value_t = 0.15, allow_hyphen_values = true)]
    mask_prob: f64,
    /// Seeds the batches, the masks and dropout (a new mask of every sentence each epoch).
    #[arg(long, default_value_t = 11711)]
    seed: u64,
    /// Stop after this many steps (0: all epochs); the schedule spans them.
    #[arg(long, default_value_t = 0)]
    max_steps: usize,
    #[arg(long, default_value_t = 10)]
    log_every: usize,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// No progress output on stderr.
    #[arg(long)]
    quiet: bool,
}

impl PretrainCli {
    fn args(&self) -> anyhow::Result<PretrainArgs> {
        if !self.mlm {
            anyhow::bail!(
                "engine pretrain needs an objective: pass --mlm (masked-language modelling, the only one for now)"
            );
        }
        let Some(out) = self.out.clone() else {
            anyhow::bail!("--out: give the folder to write the pretrained model to");
        };
        let corpus = match (&self.text, self.tasks.is_empty()) {
            (Some(_), false) => {
                anyhow::bail!("--text and --tasks: give one corpus, a text file or the tasks' training sentences")
            }
            (Some(text), true) => Corpus::Text(text.clone()),
            (None, given) => {
                let names: Vec<&str> =
                    if given { vec!["sst", "quora", "sts"] } else { self.tasks.iter().map(String::as_str).collect() };
                let tasks = names
                    .iter()
                    .map(|n| n.trim().parse::<Task>().map_err(|e| anyhow::anyhow!("--tasks: {e}")))
                    .collect::<anyhow::Result<Vec<Task>>>()?;
                Corpus::Tasks { tasks, data_dir: self.data_dir.clone() }
            }
        };
        let opts = PretrainOptions {
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            warmup_ratio: self.warmup_ratio,
            weight_decay: self.weight_decay,
            no_decay_norm_bias: self.no_decay_norm_bias,
            grad_clip: self.grad_clip,
            max_len: self.max_len,
            mask_prob: self.mask_prob,
            seed: self.seed,
            max_steps: self.max_steps,
            log_every: self.log_every,
        };
        opts.validate()?;
        let model = match &self.model {
            Some(m) => m.clone(),
            None => default_model_dir()?,
        };
        // Before the device is opened, which may print a note.
        engine::train::pretrain::check_out(&out, self.overwrite)?;
        let device = Device::select(self.device)?;
        Ok(PretrainArgs { opts, model, corpus, out, device, quiet: self.quiet, overwrite: self.overwrite })
    }
}

/// One value per task from `flag`'s entries: a bare number for every task, or task=value (the
/// tasks named nowhere get `default`).
fn parse_task_values(flag: &str, entries: &[String], tasks: &[Task], default: f64) -> anyhow::Result<Vec<f64>> {
    let mut values = vec![default; tasks.len()];
    for e in entries {
        let number = |v: &str| v.parse::<f64>().map_err(|_| anyhow::anyhow!("{flag} {e:?}: {v:?} is not a number"));
        match e.split_once('=') {
            None => values.fill(number(e)?),
            Some((name, value)) => {
                let task: Task = name.parse()?;
                let i = tasks
                    .iter()
                    .position(|&t| t == task)
                    .ok_or_else(|| anyhow::anyhow!("{flag}: {task} is not in --tasks"))?;
                values[i] = number(value)?;
            }
        }
    }
    Ok(values)
}

/// --head's `TASK=HEAD` entries as one head per task, in `tasks` order (the default for tasks it
/// does not name); empty when it names none.
fn parse_heads(entries: &[String], tasks: &[Task], pairs: PairEncoding) -> anyhow::Result<Vec<HeadKind>> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let mut heads: Vec<HeadKind> =
        tasks.iter().map(|&t| HeadKind::default_for(t, pairs == PairEncoding::Separate)).collect();
    let mut named = Vec::new();
    for e in entries {
        let (name, head) =
            e.split_once('=').ok_or_else(|| anyhow::anyhow!("--head {e:?}: give TASK=HEAD, e.g. sts=cosine"))?;
        let task: Task = name.parse()?;
        let i =
            tasks.iter().position(|&t| t == task).ok_or_else(|| anyhow::anyhow!("--head: {task} is not in --tasks"))?;
        if named.contains(&task) {
            anyhow::bail!("--head: {task} is given twice");
        }
        named.push(task);
        // The parser's message begins `head "…"`: name the flag.
        heads[i] = head.parse::<HeadKind>().map_err(|err| anyhow::anyhow!("--{err}"))?;
    }
    Ok(heads)
}

fn main() {
    let cli = Cli::parse();
    // The whole command on a worker of the CPU pool (see engine::cpu_pool for why).
    if let Err(e) = engine::cpu_pool::run(|| run(cli)) {
        // One line: the error and those of its causes that its message does not already quote
        // (an I/O error's message ends with its OS error, which is also its source).
        let mut line = e.to_string();
        for cause in e.chain().skip(1).map(|c| c.to_string()) {
            if !line.contains(&cause) {
                line = format!("{line}: {cause}");
            }
        }
        eprintln!("error: {line}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Devices => {
            println!("{}", Device::select(DeviceChoice::Auto)?.describe());
            // The emulator (`--device emu`, or ENGINE_EMULATE_GPU=1) runs the CUDA kernels on the CPU.
            match engine::device::Cuda::emulated() {
                Ok(c) => println!("{c:?}: available with --device emu (slow; for tests without a GPU)"),
                Err(e) => println!("PTX emulator unavailable: {e}"),
            }
        }
        Command::Embed { model, pooling, input, output, layer, batch_size, max_len, device, quiet, padded } => {
            let layer = match layer.as_str() {
                "last" => None,
                n => Some(n.parse().map_err(|_| anyhow::anyhow!("--layer {n:?}: expected `last` or a layer count"))?),
            };
            let model = match model {
                Some(m) => m,
                None => default_model_dir()?,
            };
            let device = Device::select(device)?;
            let opts =
                EmbedOptions { model, input, output, pooling, layer, batch_size, max_len, device, quiet, padded };
            let n = embed(&opts)?;
            println!("embedded {n} lines into {}", opts.output.display());
        }
        Command::Finetune(f) => {
            let opts = f.options()?;
            opts.validate()?;
            let model = match &f.model {
                Some(m) => m.clone(),
                None if f.resume.is_some() => PathBuf::new(),
                None => default_model_dir()?,
            };
            let args = FinetuneArgs {
                opts,
                model,
                files: f.data.files(),
                data_dir: Some(f.data.data_dir.clone()),
                out: f.out.clone(),
                resume: f.resume.clone(),
                device: Device::select(f.device)?,
                quiet: f.quiet,
                strict: f.strict,
                stop_after: f.stop_after,
                overwrite: f.overwrite,
            };
            let s = engine::train::finetune(&args)?;
            if let Some(gemm) = engine::profile::gemm_seconds() {
                // ENGINE_PROFILE=1 (benches/real_data_compare.sh reads this line).
                eprintln!("profile: GEMMs {gemm:.2} s of {:.2} s ({:.0}%)", s.seconds, 100.0 * gemm / s.seconds);
                eprint!("profile per step, by op:\n{}", engine::profile::op_table(s.steps.max(1) as f64));
            }
            if s.stopped_early {
                println!("stopped after step {}; resume with --resume {}", s.steps, f.out.join("last").display());
            } else {
                print!("{}", engine::train::report::table(&s.best, s.best_combined, s.best_step));
                println!(
                    "{} steps in {:.0} s; predictions in {}; analysis in {}",
                    s.steps,
                    s.seconds,
                    f.out.join("predictions").display(),
                    f.out.join(engine::train::analysis::REPORT).display()
                );
            }
        }
        Command::Pretrain(p) => {
            let args = p.args()?;
            let s = engine::train::pretrain::pretrain(&args)?;
            println!(
                "{} steps on {} sentences in {:.0} s, final masked-LM loss {:.4}; wrote {} (fine-tune it with --model {})",
                s.steps,
                s.sentences,
                s.seconds,
                s.final_loss,
                args.out.display(),
                args.out.display()
            );
        }
        Command::Eval { checkpoint, split, data, out, device, padded } => {
            // The checkpoint's own task definitions first: they have data files too.
            engine::train::checkpoint::load_options(&checkpoint)?;
            let split = if split == SplitArg::Dev { Split::Dev } else { Split::Test };
            let out = out.unwrap_or_else(|| checkpoint.join("predictions"));
            let (scores, analyses) = engine::train::evaluate::evaluate_checkpoint(
                &checkpoint,
                split,
                &data.files(),
                &out,
                Device::select(device)?,
                padded,
            )?;
            if !scores.is_empty() {
                let c = engine::train::metrics::combined(&scores);
                print!(
                    "{}",
                    engine::train::report::table(&scores, c, 0).replacen("best dev scores (step 0)", "dev scores", 1)
                );
            }
            if !analyses.is_empty() {
                print!("\n{}", engine::train::analysis::report(&analyses));
            }
            println!("predictions in {}", out.display());
        }
        Command::Export { checkpoint, format, output } => {
            let modules = engine::train::export::export(&checkpoint, format, &output)?;
            println!("exported {} ({modules}) to {}", checkpoint.display(), output.display());
        }
        Command::Merge { checkpoint, output } => {
            let n = engine::train::merge::merge(&checkpoint, &output)?;
            println!("merged {n} adapters into {}", output.display());
        }
        Command::Predict { checkpoint, task, input, output, device, padded } => {
            // The checkpoint's own task definitions first: --task may name one.
            engine::train::checkpoint::load_options(&checkpoint)?;
            let task: Task = task.parse()?;
            let text =
                engine::train::evaluate::predict_file(&checkpoint, task, &input, Device::select(device)?, padded)?;
            match output {
                Some(path) => {
                    engine::util::write_atomically(&path, text.as_bytes())?;
                    println!("predictions in {}", path.display());
                }
                None => print!("{text}"),
            }
        }
    }
    Ok(())
}
