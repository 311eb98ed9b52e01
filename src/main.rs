//! The `engine` command line: parse, call the library, print. Errors print as one line.

use clap::{Parser, Subcommand};
use engine::device::{Device, DeviceChoice};
use engine::embed::{EmbedOptions, Pooling, embed};
use engine::model::checkpoint::default_model_dir;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "engine", version, about = "Multi-task BERT fine-tuning with its own autograd tape and CUDA kernels")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the compute device `--device auto` picks, and why.
    Devices,
    /// Sentence embeddings of a text file: one JSON line {"text", "embedding"} per input line.
    /// A line holding a tab is a pair, encoded jointly as [CLS] a [SEP] b [SEP].
    Embed {
        /// A Hugging Face BERT folder (config.json, model.safetensors, tokenizer.json);
        /// default: weights/all-MiniLM-L6-v2 (fetch it with weights/fetch.sh).
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
    },
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Devices => {
            println!("{}", Device::select(DeviceChoice::Auto)?.describe());
        }
        Command::Embed { model, pooling, input, output, layer, batch_size, max_len, device, quiet } => {
            let layer = match layer.as_str() {
                "last" => None,
                n => Some(n.parse().map_err(|_| anyhow::anyhow!("--layer {n:?}: expected `last` or a layer count"))?),
            };
            let model = match model {
                Some(m) => m,
                None => default_model_dir()?,
            };
            let device = Device::select(device)?;
            let opts = EmbedOptions { model, input, output, pooling, layer, batch_size, max_len, device, quiet };
            let n = embed(&opts)?;
            println!("embedded {n} lines into {}", opts.output.display());
        }
    }
    Ok(())
}
