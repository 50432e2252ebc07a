//! The user's cache directory and atomic file writes.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Environment variable that overrides the cache root.
pub const CACHE_DIR_ENV: &str = "PANTRY_CACHE_DIR";

/// Returns the cache root: `$PANTRY_CACHE_DIR`, else `pantry` in the
/// platform's cache directory (`~/.cache/pantry` on Linux).
pub fn cache_root() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(CACHE_DIR_ENV) {
        return Ok(PathBuf::from(dir));
    }
    let base = dirs::cache_dir()
        .context("no cache directory is known for this user; set PANTRY_CACHE_DIR")?;
    Ok(base.join("pantry"))
}

/// Writes `bytes` to `path` so that readers see either the old file or the
/// complete new one: the data goes to a temporary file in the same folder,
/// is synced, then renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("failed to create folder {}", dir.display()))?;
    // Temporary files are created owner-only; the finished file gets the
    // usual permissions so that models and exports can be shared.
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o644));
    }
    let mut file = builder
        .tempfile_in(dir)
        .with_context(|| format!("failed to create a temporary file in {}", dir.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.as_file().sync_all())
        .with_context(|| format!("failed to write {}", path.display()))?;
    file.persist(path).with_context(|| {
        format!(
            "failed to move the new file into place at {}",
            path.display()
        )
    })?;
    Ok(())
}
