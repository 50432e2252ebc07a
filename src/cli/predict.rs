//! `pantry predict`: label images with a trained model and write the
//! submission-format TSV.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use pantry::data::source::collect_inputs;
use pantry::predict::{write_tsv, PredictionRow};

use super::{BackboneArgs, Progress, UsageError, EXIT_SOME_INPUTS_FAILED};

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Model file written by `pantry train`.
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,

    /// Image files, folders (searched recursively) or label files with a
    /// `file` column.
    #[arg(value_name = "INPUT", required = true)]
    pub inputs: Vec<PathBuf>,

    /// Folder that relative paths in label files are resolved against.
    /// Default: the label file's own folder.
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,

    /// Path of the predictions TSV; `-` for standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: PathBuf,

    /// Number of labels to report per image, best first.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub top_k: usize,

    #[command(flatten)]
    pub backbone_args: BackboneArgs,
}

pub fn run(args: PredictArgs, progress: &Progress) -> Result<u8> {
    if args.top_k == 0 {
        return Err(UsageError::new("--top-k must be at least 1").into());
    }
    let (inputs, skipped) = collect_inputs(&args.inputs, args.images.as_deref())?;
    super::report_skipped_and_failed(&skipped, &[], progress);
    if inputs.is_empty() {
        bail!("no images found in the inputs given");
    }
    if args.output.as_os_str() != "-" {
        let model = std::iter::once(args.model.as_path());
        for protected in model.chain(inputs.iter().map(|input| input.path.as_path())) {
            if same_file(&args.output, protected) {
                return Err(UsageError::new(format!(
                    "--output {} would overwrite an input of this command; choose another file",
                    args.output.display()
                ))
                .into());
            }
        }
    }
    let classifier = super::load_classifier(&args.model, &args.backbone_args, progress)?;
    let paths: Vec<PathBuf> = inputs.iter().map(|input| input.path.clone()).collect();

    let bar = progress.bar(paths.len(), "predicting");
    let probabilities = classifier.probabilities(&paths, &mut |done| bar.inc(done as u64));
    bar.finish_and_clear();

    let mut failed = 0;
    let rows: Vec<PredictionRow> = inputs
        .iter()
        .zip(probabilities)
        .map(|(input, outcome)| {
            let outcome = outcome.map_err(|err| {
                failed += 1;
                progress.warn(&err.to_string());
                err.message
            });
            PredictionRow {
                file: input.name.clone(),
                outcome,
            }
        })
        .collect();

    let labels = classifier.labels();
    // A model cannot rank more labels than it has.
    let top_k = args.top_k.min(labels.len());
    if args.output.as_os_str() == "-" {
        write_tsv(std::io::stdout().lock(), &rows, labels, top_k)?;
    } else {
        let mut bytes = Vec::new();
        write_tsv(&mut bytes, &rows, labels, top_k)?;
        pantry::cache::write_atomic(&args.output, &bytes).with_context(|| {
            format!(
                "failed to write the predictions to {}",
                args.output.display()
            )
        })?;
    }
    progress.status(&format!(
        "predicted {} of {} inputs{}",
        rows.len() - failed,
        rows.len(),
        if args.output.as_os_str() == "-" {
            String::new()
        } else {
            format!("; written to {}", args.output.display())
        }
    ));
    if failed > 0 {
        eprintln!(
            "error: {failed} of {} inputs could not be classified (see the error column)",
            rows.len()
        );
        return Ok(EXIT_SOME_INPUTS_FAILED);
    }
    Ok(0)
}

/// Reports whether two paths name the same existing file.
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
