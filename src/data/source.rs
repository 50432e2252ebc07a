//! Reading training, evaluation and prediction inputs into samples.
//!
//! Two layouts are accepted. A folder with one sub-folder per class
//! (`DATA/<label>/<image>`, the torchvision `ImageFolder` layout), where
//! every image at any depth below a class folder belongs to that class. Or a
//! label file: a header row with a `file` column and, for training and
//! evaluation, a `label` column; other columns are ignored. Label files
//! ending in `.csv` are comma-separated, others (`.tsv`, `.txt`) are
//! tab-separated, and both follow RFC 4180 quoting.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// File name extensions (lower case) taken as images without reading them.
pub const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "jpe", "jfif", "png", "webp", "bmp", "gif"];

/// One image and, for labelled data, its class name exactly as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The name to report the image under: the `file` field as written for
    /// label-file rows, else the path.
    pub name: String,
    pub path: PathBuf,
    pub label: Option<String>,
}

/// A file or folder that was left out of a dataset, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: SkipReason,
}

/// Reason a file or folder was left out of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Its name starts with a dot (`.DS_Store`, `._photo.jpg`, `.git`).
    Hidden,
    /// Neither its extension nor its first bytes identify a supported image.
    NotImage,
    /// It lies directly in the dataset folder instead of a class folder.
    OutsideClassFolder,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::Hidden => "hidden file",
            SkipReason::NotImage => "not an image",
            SkipReason::OutsideClassFolder => "not inside a class folder",
        })
    }
}

/// Samples in source order plus the files that were skipped.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    pub samples: Vec<Sample>,
    pub skipped: Vec<Skipped>,
}

impl Dataset {
    /// Returns the distinct labels, sorted by their bytes.
    pub fn labels(&self) -> Vec<String> {
        let mut labels: Vec<String> = self
            .samples
            .iter()
            .filter_map(|sample| sample.label.clone())
            .collect();
        labels.sort();
        labels.dedup();
        labels
    }
}

/// Reads a dataset from a class-per-folder tree or a label file.
///
/// Paths in a label file are resolved against `images_dir` when given, else
/// against the label file's folder; absolute paths are kept. With
/// `require_labels`, a label file without a `label` column or a row with an
/// empty label is an error. Folders always yield labels.
pub fn load(path: &Path, images_dir: Option<&Path>, require_labels: bool) -> Result<Dataset> {
    let metadata = std::fs::metadata(path)
        .with_context(|| format!("failed to read dataset {}", path.display()))?;
    let dataset = if metadata.is_dir() {
        load_folder(path)?
    } else {
        let base = images_dir.map_or_else(|| parent_dir(path), Path::to_path_buf);
        let samples = read_label_file(path, &base, require_labels)?;
        Dataset {
            samples,
            skipped: Vec::new(),
        }
    };
    if dataset.samples.is_empty() {
        bail!(
            "dataset {} contains no images; expected class folders with images or a label file with rows",
            path.display()
        );
    }
    Ok(dataset)
}

/// Expands prediction inputs into samples. A folder gives every image
/// below it, sorted, with hidden and non-image files left out. A `.tsv`,
/// `.csv` or `.txt` file gives the paths in its `file` column in file order,
/// named as written there so that predictions line up with the label file,
/// and resolved against `images` if given, else the label file's folder.
/// Any other path, also one that does not exist, is taken as an image
/// itself, so that a file which cannot be read or decoded still gets a
/// result. Also returns the entries of folders that were left out, and why.
pub fn collect_inputs(
    inputs: &[PathBuf],
    images: Option<&Path>,
) -> Result<(Vec<Sample>, Vec<Skipped>)> {
    let mut collected = Vec::new();
    let mut skipped = Vec::new();
    for input in inputs {
        // A path that cannot be inspected still gets a row, whose error
        // names the cause once reading it fails.
        let is_dir = std::fs::metadata(input).is_ok_and(|metadata| metadata.is_dir());
        if is_dir {
            let mut paths = Vec::new();
            collect_images(input, &mut paths, &mut skipped)?;
            collected.extend(paths.into_iter().map(unlabelled));
        } else if is_label_file(input) && input.is_file() {
            let root = images.map_or_else(|| parent_dir(input), Path::to_path_buf);
            collected.extend(read_label_file(input, &root, false)?);
        } else {
            collected.push(unlabelled(input.clone()));
        }
    }
    Ok((collected, skipped))
}

/// Returns a sample without a label, named by its path.
fn unlabelled(path: PathBuf) -> Sample {
    Sample {
        name: path.display().to_string(),
        path,
        label: None,
    }
}

/// Reports whether `path` is read as a label file (extension `.tsv`, `.csv` or
/// `.txt`, any case).
pub fn is_label_file(path: &Path) -> bool {
    matches!(
        lower_extension(path).as_deref(),
        Some("tsv" | "csv" | "txt")
    )
}

fn load_folder(root: &Path) -> Result<Dataset> {
    let mut dataset = Dataset::default();
    for entry in sorted_entries(root)? {
        if is_hidden(&entry) {
            dataset.skipped.push(skip(entry, SkipReason::Hidden));
            continue;
        }
        let metadata = std::fs::metadata(&entry)
            .with_context(|| format!("failed to read {}", entry.display()))?;
        if !metadata.is_dir() {
            dataset
                .skipped
                .push(skip(entry, SkipReason::OutsideClassFolder));
            continue;
        }
        let label = entry
            .file_name()
            .and_then(|name| name.to_str())
            .with_context(|| {
                format!(
                    "class folder name {} is not valid UTF-8; rename the folder",
                    entry.display()
                )
            })?
            .to_string();
        let mut images = Vec::new();
        collect_images(&entry, &mut images, &mut dataset.skipped)?;
        dataset
            .samples
            .extend(images.into_iter().map(|path| Sample {
                name: path.display().to_string(),
                path,
                label: Some(label.clone()),
            }));
    }
    Ok(dataset)
}

/// Appends the images at any depth below `dir` in sorted order, recording
/// hidden entries and non-image files in `skipped`.
fn collect_images(dir: &Path, images: &mut Vec<PathBuf>, skipped: &mut Vec<Skipped>) -> Result<()> {
    for entry in sorted_entries(dir)? {
        if is_hidden(&entry) {
            skipped.push(skip(entry, SkipReason::Hidden));
            continue;
        }
        let metadata = std::fs::metadata(&entry)
            .with_context(|| format!("failed to read {}", entry.display()))?;
        if metadata.is_dir() {
            collect_images(&entry, images, skipped)?;
        } else if looks_like_image(&entry)? {
            images.push(entry);
        } else {
            skipped.push(skip(entry, SkipReason::NotImage));
        }
    }
    Ok(())
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let read = std::fs::read_dir(dir)
        .with_context(|| format!("failed to list folder {}", dir.display()))?;
    let mut entries = Vec::new();
    for entry in read {
        let entry = entry.with_context(|| format!("failed to list folder {}", dir.display()))?;
        entries.push(entry.path());
    }
    entries.sort();
    Ok(entries)
}

/// Reports whether `path` is an image by its extension or, for other
/// names, by its first bytes.
fn looks_like_image(path: &Path) -> Result<bool> {
    if let Some(extension) = lower_extension(path) {
        if IMAGE_EXTENSIONS.contains(&extension.as_str()) {
            return Ok(true);
        }
    }
    let mut head = [0u8; 32];
    let mut file =
        File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
    let mut filled = 0;
    while filled < head.len() {
        let n = file
            .read(&mut head[filled..])
            .with_context(|| format!("failed to read {}", path.display()))?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(super::image::sniff_format(&head[..filled]).is_ok())
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|name| name.as_encoded_bytes().starts_with(b"."))
}

fn lower_extension(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|extension| extension.to_str())
        .map(str::to_ascii_lowercase)
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn skip(path: PathBuf, reason: SkipReason) -> Skipped {
    Skipped { path, reason }
}

/// Reads the `file` (and `label`) columns of a label file. Paths are joined
/// onto `base`. Line numbers in errors count from 1 at the header.
fn read_label_file(path: &Path, base: &Path, require_labels: bool) -> Result<Vec<Sample>> {
    let delimiter = if lower_extension(path).as_deref() == Some("csv") {
        b','
    } else {
        b'\t'
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(true)
        .from_path(path)
        .with_context(|| format!("failed to open label file {}", path.display()))?;
    let headers = reader
        .headers()
        .with_context(|| format!("failed to read the header row of {}", path.display()))?
        .clone();
    if headers.is_empty() || headers.iter().all(str::is_empty) {
        bail!(
            "label file {} is empty; expected a header row with a `file` column",
            path.display()
        );
    }
    let separator = if delimiter == b',' { "comma" } else { "tab" };
    let file_column = headers.iter().position(|h| h == "file").with_context(|| {
        format!(
            "label file {} line 1: no `file` column in the {separator}-separated header {:?}",
            path.display(),
            headers.iter().collect::<Vec<_>>()
        )
    })?;
    let label_column = headers.iter().position(|h| h == "label");
    if require_labels && label_column.is_none() {
        bail!(
            "label file {} line 1: no `label` column in the {separator}-separated header {:?}; labels are needed for training and evaluation",
            path.display(),
            headers.iter().collect::<Vec<_>>()
        );
    }

    let mut samples = Vec::new();
    for record in reader.records() {
        let record =
            record.with_context(|| format!("failed to parse label file {}", path.display()))?;
        let line = record.position().map_or(0, |position| position.line());
        let file = record.get(file_column).unwrap_or("");
        if file.is_empty() {
            bail!(
                "label file {} line {line}: the `file` field is missing or empty",
                path.display()
            );
        }
        let label = label_column.and_then(|column| record.get(column));
        let label = match label {
            Some(text) if !text.is_empty() => Some(text.to_string()),
            _ if require_labels => bail!(
                "label file {} line {line}: the `label` field of {file} is missing or empty",
                path.display()
            ),
            _ => None,
        };
        samples.push(Sample {
            name: file.to_string(),
            path: base.join(file),
            label,
        });
    }
    Ok(samples)
}
