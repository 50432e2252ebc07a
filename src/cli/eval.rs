//! `pantry eval`: score a model on labelled data.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use pantry::features::InputError;
use pantry::metrics::EvalReport;
use pantry::predict::{write_tsv, PredictionRow};
use pantry::workflow::{evaluate, Evaluation};

use super::{BackboneArgs, Progress, EXIT_SOME_INPUTS_FAILED};

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Model file written by `pantry train`.
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,

    /// Labelled data: a folder with one sub-folder per class, or a TSV/CSV
    /// label file with `file` and `label` columns.
    #[arg(value_name = "DATA")]
    pub data: PathBuf,

    /// Print the figures as one JSON object on stdout (keys `accuracy`,
    /// `macro_f1`, `top5_accuracy`, `per_class`, `confusion`).
    #[arg(long)]
    pub json: bool,

    /// Folder that relative paths in label files are resolved against.
    /// Default: the label file's own folder.
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,

    /// Also write every image's prediction to this TSV file, in the format
    /// of `pantry predict`, with each image named as the label file writes
    /// it.
    #[arg(long, value_name = "FILE")]
    pub predictions: Option<PathBuf>,

    #[command(flatten)]
    pub backbone_args: BackboneArgs,
}

pub fn run(args: EvalArgs, progress: &Progress) -> Result<u8> {
    let evaluation = run_evaluation(
        &args.model,
        &args.data,
        args.images.as_deref(),
        &args.backbone_args,
        progress,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&evaluation.report)?);
    } else {
        print_report(&evaluation.report);
    }
    finish(&evaluation, args.predictions.as_deref(), None, progress)
}

/// Evaluates and writes the optional predictions and metrics files; `demo`
/// calls it after training.
pub fn evaluate_and_report(
    model: &Path,
    data: &Path,
    images: Option<&Path>,
    backbone_args: &BackboneArgs,
    predictions: Option<&Path>,
    metrics: Option<&Path>,
    progress: &Progress,
) -> Result<u8> {
    let evaluation = run_evaluation(model, data, images, backbone_args, progress)?;
    print_report(&evaluation.report);
    finish(&evaluation, predictions, metrics, progress)
}

fn run_evaluation(
    model: &Path,
    data: &Path,
    images: Option<&Path>,
    backbone_args: &BackboneArgs,
    progress: &Progress,
) -> Result<Evaluation> {
    let classifier = super::load_classifier(model, backbone_args, progress)?;
    let bar = RefCell::new(progress.bar(0, "evaluating"));
    let evaluation = evaluate(
        &classifier,
        data,
        images,
        &mut |total| bar.borrow().set_length(total as u64),
        &mut |done| bar.borrow().inc(done as u64),
    )?;
    bar.borrow().finish_and_clear();
    match evaluation.unknown_label_count {
        0 => {}
        1 => {
            progress.warn("1 image carries a label the model does not know; it counts as an error")
        }
        count => progress.warn(&format!(
            "{count} images carry labels the model does not know; they count as errors"
        )),
    }
    Ok(evaluation)
}

/// Writes the optional files, reports failed inputs and picks the exit code.
fn finish(
    evaluation: &Evaluation,
    predictions: Option<&Path>,
    metrics: Option<&Path>,
    progress: &Progress,
) -> Result<u8> {
    let failures: Vec<InputError> = evaluation
        .outcomes
        .iter()
        .filter_map(|(_, outcome)| outcome.as_ref().err().cloned())
        .collect();
    super::report_skipped_and_failed(&evaluation.skipped, &failures, progress);
    if let Some(path) = predictions {
        let rows: Vec<PredictionRow> = evaluation
            .outcomes
            .iter()
            .map(|(file, outcome)| PredictionRow {
                file: file.clone(),
                outcome: outcome.clone().map_err(|err| err.message),
            })
            .collect();
        let mut bytes = Vec::new();
        write_tsv(&mut bytes, &rows, &evaluation.labels, 1)?;
        pantry::cache::write_atomic(path, &bytes)
            .with_context(|| format!("failed to write the predictions to {}", path.display()))?;
    }
    if let Some(path) = metrics {
        let json = serde_json::to_vec_pretty(&evaluation.report)?;
        pantry::cache::write_atomic(path, &json)
            .with_context(|| format!("failed to write the metrics to {}", path.display()))?;
    }
    if !failures.is_empty() {
        eprintln!(
            "error: {} of {} images could not be read or decoded and were left out of the figures",
            failures.len(),
            evaluation.outcomes.len()
        );
        return Ok(EXIT_SOME_INPUTS_FAILED);
    }
    Ok(0)
}

/// Prints the headline figures and a per-class table.
fn print_report(report: &EvalReport) {
    println!("accuracy        {:.4}", report.accuracy);
    println!("macro-F1        {:.4}", report.macro_f1);
    println!("top-5 accuracy  {:.4}", report.top5_accuracy);
    println!();
    let width = report
        .per_class
        .iter()
        .map(|c| c.label.chars().count())
        .max()
        .unwrap_or(5)
        .max(5);
    println!("{:<width$}  precision  recall      f1  support", "class");
    for class in report.per_class.iter().filter(|c| c.support > 0) {
        println!(
            "{:<width$}  {:>9.3}  {:>6.3}  {:>6.3}  {:>7}",
            class.label, class.precision, class.recall, class.f1, class.support
        );
    }
}
