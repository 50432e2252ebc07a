//! `pantry demo`: train on the Grocery Store dataset's train split and
//! evaluate on its val split, end to end.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;

use pantry::backbone::BackboneKind;
use pantry::cache::cache_root;
use pantry::train::TrainConfig;

use super::train::{parse_backbone, print_summary, train_model, TrainArgs};
use super::{BackboneArgs, Progress};

/// Environment variable naming the Grocery Store dataset folder.
pub const GROCERY_DIR_ENV: &str = "PANTRY_GROCERY_DIR";

/// Public repository of the Grocery Store dataset (MIT licence).
const GROCERY_REPOSITORY: &str = "https://github.com/marcusklasson/GroceryStoreDataset";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The Grocery Store dataset folder: either one holding `train.tsv` and
    /// `val.tsv`, or the `dataset` folder of the original repository
    /// (`train.txt`, `val.txt`, `classes.csv`). Default: $PANTRY_GROCERY_DIR,
    /// else a clone of the dataset's public repository in the user cache.
    #[arg(long, value_name = "DIR", env = GROCERY_DIR_ENV)]
    pub data: Option<PathBuf>,

    /// Folder for the model, the val predictions and the val metrics.
    #[arg(long, short, value_name = "DIR", default_value = "pantry-demo")]
    pub output: PathBuf,

    /// Pretrained backbone to extract features with.
    #[arg(long, default_value = "efficientnet-lite0", value_parser = parse_backbone)]
    pub backbone: BackboneKind,

    /// Seed for weight initialisation, shuffling and dropout.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,

    #[command(flatten)]
    pub backbone_args: BackboneArgs,
}

/// Label files of one copy of the dataset, with the folder their paths are
/// relative to.
struct GrocerySplits {
    train: PathBuf,
    val: PathBuf,
    images: PathBuf,
}

pub fn run(args: DemoArgs, progress: &Progress) -> Result<u8> {
    let data_dir = match &args.data {
        Some(dir) => dir.clone(),
        None => download_dataset(progress)?,
    };
    std::fs::create_dir_all(&args.output).with_context(|| {
        format!(
            "failed to create the output folder {}",
            args.output.display()
        )
    })?;
    let splits = find_splits(&data_dir, &args.output)?;
    let model_path = args
        .output
        .join(format!("grocery-{}.safetensors", args.backbone.name()));

    let train_args = TrainArgs {
        data: splits.train.clone(),
        output: model_path.clone(),
        backbone: args.backbone,
        // Early stopping uses a hold-out of the train split, so the val
        // split stays unseen until the final evaluation.
        val: None,
        val_fraction: 0.15,
        images: Some(splits.images.clone()),
        epochs: None,
        seed: args.seed,
        hidden: None,
        dropout: None,
        learning_rate: None,
        label_smoothing: None,
        patience: None,
        class_weighting: false,
        backbone_args: args.backbone_args.clone(),
    };
    progress.status(&format!(
        "training {} on {} (evaluating on {})",
        args.backbone,
        splits.train.display(),
        splits.val.display()
    ));
    let config = TrainConfig {
        seed: args.seed,
        ..TrainConfig::default()
    };
    let (summary, _failed) = train_model(&train_args, config, progress)?;
    print_summary(&summary);

    let predictions = args.output.join("val-predictions.tsv");
    let metrics = args.output.join("val-metrics.json");
    super::eval::evaluate_and_report(
        &model_path,
        &splits.val,
        Some(&splits.images),
        &args.backbone_args,
        Some(&predictions),
        Some(&metrics),
        progress,
    )?;
    println!("val predictions written to {}", predictions.display());
    println!("val metrics written to {}", metrics.display());
    Ok(0)
}

/// Finds the train and val label files in `dir`, converting the original
/// repository's `train.txt`/`val.txt` into TSV files under `work_dir`.
fn find_splits(dir: &Path, work_dir: &Path) -> Result<GrocerySplits> {
    if dir.join("train.tsv").is_file() && dir.join("val.tsv").is_file() {
        return Ok(GrocerySplits {
            train: dir.join("train.tsv"),
            val: dir.join("val.tsv"),
            images: dir.to_path_buf(),
        });
    }
    for candidate in [dir.to_path_buf(), dir.join("dataset")] {
        if candidate.join("train.txt").is_file() && candidate.join("classes.csv").is_file() {
            let names = class_names(&candidate.join("classes.csv"))?;
            let train = work_dir.join("grocery-train.tsv");
            let val = work_dir.join("grocery-val.tsv");
            convert_split(&candidate.join("train.txt"), &names, &train)?;
            convert_split(&candidate.join("val.txt"), &names, &val)?;
            return Ok(GrocerySplits {
                train,
                val,
                images: candidate,
            });
        }
    }
    bail!(
        "{} does not look like the Grocery Store dataset: expected train.tsv and val.tsv, \
         or train.txt, val.txt and classes.csv (in the folder or its dataset/ sub-folder)",
        dir.display()
    )
}

/// Reads fine class names by class id from the dataset's `classes.csv`.
fn class_names(path: &Path) -> Result<Vec<String>> {
    let mut reader = csv::Reader::from_path(path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    let mut names: Vec<(usize, String)> = Vec::new();
    for (row, record) in reader.records().enumerate() {
        let record =
            record.with_context(|| format!("{}: invalid CSV row {}", path.display(), row + 2))?;
        let (Some(name), Some(id)) = (record.get(0), record.get(1)) else {
            bail!(
                "{}: row {} has fewer than two columns",
                path.display(),
                row + 2
            );
        };
        let id: usize = id.trim().parse().with_context(|| {
            format!(
                "{}: row {} has an invalid class id {id:?}",
                path.display(),
                row + 2
            )
        })?;
        names.push((id, name.trim().to_string()));
    }
    names.sort();
    for (expected, (id, _)) in names.iter().enumerate() {
        if *id != expected {
            bail!(
                "{}: class ids are not 0..{} without gaps",
                path.display(),
                names.len()
            );
        }
    }
    Ok(names.into_iter().map(|(_, name)| name).collect())
}

/// Rewrites a `path, fine_id, coarse_id` split file as a `file<TAB>label` TSV.
fn convert_split(path: &Path, names: &[String], output: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    let mut writer = csv::WriterBuilder::new()
        .delimiter(b'\t')
        .from_writer(Vec::new());
    writer.write_record(["file", "label"])?;
    for (line_index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = line.split(',').map(str::trim);
        let (Some(file), Some(id)) = (fields.next(), fields.next()) else {
            bail!(
                "{}:{}: expected `path, class id, coarse id`",
                path.display(),
                line_index + 1
            );
        };
        let label = id
            .parse::<usize>()
            .ok()
            .and_then(|id| names.get(id))
            .with_context(|| {
                format!(
                    "{}:{}: unknown class id {id:?}",
                    path.display(),
                    line_index + 1
                )
            })?;
        writer.write_record([file, label.as_str()])?;
    }
    let bytes = writer
        .into_inner()
        .context("failed to encode the label file")?;
    pantry::cache::write_atomic(output, &bytes)
}

/// Clones the dataset's public repository into the user cache (once) and
/// returns its `dataset` folder.
fn download_dataset(progress: &Progress) -> Result<PathBuf> {
    let target = cache_root()?.join("datasets").join("GroceryStoreDataset");
    if target.join("dataset").join("train.txt").is_file() {
        return Ok(target.join("dataset"));
    }
    let how_to = format!(
        "provide the dataset with --data DIR or {GROCERY_DIR_ENV}=DIR, \
         for example after `git clone --depth 1 {GROCERY_REPOSITORY}` (use its dataset/ folder)"
    );
    progress.status(&format!(
        "downloading the Grocery Store dataset from {GROCERY_REPOSITORY}"
    ));
    let partial = target.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("failed to create {}", parent.display()))?;
    }
    let status = Command::new("git")
        .args(["clone", "--quiet", "--depth", "1", GROCERY_REPOSITORY])
        .arg(&partial)
        .status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => bail!(
            "failed to download the Grocery Store dataset (git exited with {status}); {how_to}"
        ),
        Err(err) => {
            bail!("failed to run git to download the Grocery Store dataset ({err}); {how_to}")
        }
    }
    std::fs::rename(&partial, &target)
        .with_context(|| format!("failed to move the dataset into {}", target.display()))?;
    Ok(target.join("dataset"))
}
