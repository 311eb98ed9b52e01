//! The `engine` command line: parse, call the library, print. Errors print as one line.

use clap::{Parser, Subcommand};
use engine::Device;

#[derive(Parser)]
#[command(name = "engine", version, about = "Multi-task BERT fine-tuning with its own autograd tape and CUDA kernels")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the compute devices this build can use and how many CPU threads it runs on.
    Devices,
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
            println!("{}", Device::Cpu.describe());
            Ok(())
        }
    }
}
