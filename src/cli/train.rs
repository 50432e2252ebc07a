//! `pantry train`: extract features, fit the head, save the model file.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use pantry::backbone::BackboneKind;
use pantry::train::TrainConfig;
use pantry::workflow::{self, LabelledFeatures, TrainSummary};

use super::{BackboneArgs, Progress, UsageError, EXIT_SOME_INPUTS_FAILED};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Training data: a folder with one sub-folder per class, or a TSV/CSV
    /// label file with `file` and `label` columns.
    #[arg(value_name = "DATA")]
    pub data: PathBuf,

    /// Path of the trained model file to write.
    #[arg(long, short, value_name = "MODEL")]
    pub output: PathBuf,

    /// Pretrained backbone to extract features with.
    #[arg(long, default_value = "efficientnet-lite0", value_parser = parse_backbone)]
    pub backbone: BackboneKind,

    /// Validation data, in the same forms as DATA. Without it a stratified
    /// share of DATA is held out (see --val-fraction).
    #[arg(long, value_name = "DATA", conflicts_with = "val_fraction")]
    pub val: Option<PathBuf>,

    /// Share of each class held out for validation when --val is not given.
    #[arg(long, value_name = "F", default_value_t = 0.15)]
    pub val_fraction: f64,

    /// Folder that relative paths in label files are resolved against.
    /// Default: the label file's own folder.
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,

    /// Maximum number of epochs; early stopping may end training sooner
    /// [default: 60]
    #[arg(long, value_name = "N")]
    pub epochs: Option<usize>,

    /// Seed for the validation split, weight initialisation, shuffling and dropout.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,

    /// Hidden layer widths of the head, comma separated; `none` for a linear
    /// head [default: 512]
    #[arg(long, value_name = "WIDTHS")]
    pub hidden: Option<String>,

    /// Dropout probability after each hidden layer of the head
    /// [default: 0.3]
    #[arg(long, value_name = "P")]
    pub dropout: Option<f64>,

    /// Peak learning rate of AdamW [default: 0.003]
    #[arg(long, value_name = "LR")]
    pub learning_rate: Option<f64>,

    /// Label smoothing of the cross-entropy loss, in [0, 1) [default: 0.1]
    #[arg(long, value_name = "EPS")]
    pub label_smoothing: Option<f64>,

    /// Epochs without a better validation macro-F1 before training stops
    /// [default: 10]
    #[arg(long, value_name = "N")]
    pub patience: Option<usize>,

    /// Weight the loss by inverse class frequency, for imbalanced data.
    #[arg(long)]
    pub class_weighting: bool,

    #[command(flatten)]
    pub backbone_args: BackboneArgs,
}

pub fn parse_backbone(name: &str) -> Result<BackboneKind> {
    name.parse()
}

impl TrainArgs {
    /// Applies the command-line overrides to the default training settings.
    pub fn train_config(&self) -> Result<TrainConfig> {
        let mut config = TrainConfig {
            seed: self.seed,
            class_weighting: self.class_weighting,
            ..TrainConfig::default()
        };
        if let Some(epochs) = self.epochs {
            if epochs == 0 {
                return Err(UsageError::new("--epochs must be at least 1").into());
            }
            config.epochs = epochs;
        }
        if let Some(hidden) = &self.hidden {
            config.hidden = parse_hidden(hidden)?;
        }
        if let Some(dropout) = self.dropout {
            config.dropout = dropout;
        }
        if let Some(rate) = self.learning_rate {
            config.learning_rate = rate;
        }
        if let Some(smoothing) = self.label_smoothing {
            config.label_smoothing = smoothing;
        }
        if let Some(patience) = self.patience {
            config.patience = patience;
        }
        Ok(config)
    }
}

fn parse_hidden(text: &str) -> Result<Vec<usize>> {
    if text.trim() == "none" || text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|part| match part.trim().parse::<usize>() {
            Ok(width) if width > 0 => Ok(width),
            _ => bail!(
                "invalid --hidden value {text:?}: expected widths such as 512 or 1024,256, or none"
            ),
        })
        .collect()
}

pub fn run(args: TrainArgs, progress: &Progress) -> Result<u8> {
    let config = args.train_config()?;
    if !(0.0..1.0).contains(&args.val_fraction) {
        let message = format!(
            "--val-fraction must be in [0, 1), got {}",
            args.val_fraction
        );
        return Err(UsageError::new(message).into());
    }
    let checked = TrainConfig {
        val_fraction: args.val_fraction,
        ..config.clone()
    };
    checked
        .validate()
        .map_err(|err| UsageError::new(format!("{err:#}")))?;
    let (summary, failed) = train_model(&args, config, progress)?;
    print_summary(&summary);
    if failed > 0 {
        let (images, were) = if failed == 1 {
            ("image", "was")
        } else {
            ("images", "were")
        };
        eprintln!(
            "error: {failed} {images} could not be read or decoded and {were} left out of training (listed above)"
        );
        return Ok(EXIT_SOME_INPUTS_FAILED);
    }
    Ok(0)
}

/// Runs the whole training job and returns its summary with the number of
/// training and validation images that failed to decode; `demo` calls it
/// too.
pub fn train_model(
    args: &TrainArgs,
    mut config: TrainConfig,
    progress: &Progress,
) -> Result<(TrainSummary, usize)> {
    config.val_fraction = args.val_fraction;
    let extractor = super::load_extractor(args.backbone, &args.backbone_args, progress)?;
    let images = args.images.as_deref();
    let train = super::labelled_features(&extractor, &args.data, images, "train", progress)?;
    for label in &train.lost_labels {
        progress.warn(&format!(
            "no training image labelled {label:?} could be decoded, so the model will not know that class"
        ));
    }
    let val: Option<LabelledFeatures> = match &args.val {
        Some(path) => Some(super::labelled_features(
            &extractor, path, images, "val", progress,
        )?),
        None => None,
    };
    let mut on_epoch = super::epoch_printer(progress, config.epochs);
    let summary = workflow::train_and_save(
        &extractor,
        &train,
        val.as_ref(),
        &config,
        &args.output,
        &mut on_epoch,
    )?;
    for (label, count) in &summary.unknown_val_labels {
        progress.warn(&format!(
            "{count} validation images are labelled {label:?}, which the training data lacks; they were left out"
        ));
    }
    let failed = train.failures.len() + val.as_ref().map_or(0, |val| val.failures.len());
    Ok((summary, failed))
}

pub fn print_summary(summary: &TrainSummary) {
    let figure = |value: Option<f64>| value.map_or("n/a".to_string(), |v| format!("{v:.4}"));
    println!(
        "trained {} classes on {} images, validated on {}: best epoch {}, val accuracy {}, val macro-F1 {}",
        summary.classes,
        summary.train_count,
        summary.val_count,
        summary.best_epoch,
        figure(summary.val_accuracy),
        figure(summary.val_macro_f1)
    );
    println!("model written to {}", summary.model_path.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_defaults_match_train_config() {
        let command = <TrainArgs as clap::Args>::augment_args(clap::Command::new("train"));
        let help = |id: &str| {
            let argument = command.get_arguments().find(|a| a.get_id() == id);
            argument
                .and_then(|a| a.get_help())
                .map(|help| help.to_string())
        };
        let defaults = TrainConfig::default();
        let widths: Vec<String> = defaults.hidden.iter().map(usize::to_string).collect();
        let expected = [
            ("epochs", defaults.epochs.to_string()),
            ("hidden", widths.join(",")),
            ("dropout", defaults.dropout.to_string()),
            ("learning_rate", defaults.learning_rate.to_string()),
            ("label_smoothing", defaults.label_smoothing.to_string()),
            ("patience", defaults.patience.to_string()),
        ];
        for (id, value) in expected {
            // Written like clap's own default notes, since the fields are
            // options that leave unset values to `TrainConfig`.
            let help = help(id).unwrap_or_default();
            let note = format!("[default: {value}]");
            assert!(help.ends_with(&note), "--{id}: {help}");
        }
    }
}
