//! The rules files and their version: which files a rules path stands for
//! (a file, or a directory's `*.yaml`/`*.yml` entries in name order), their
//! text, and the content hash that names the set ([`version_of`]).
//!
//! Off the request path: read at startup and on every reload poll that
//! finds a change ([`super::reload`]), before the files are compiled
//! ([`super::load_files`]).

use std::path::{Path, PathBuf};

use super::error::LoadError;

/// The rules files under `paths` as `(name, text)` pairs, and the files or
/// directories that could not be read.
pub fn read_paths(paths: &[PathBuf]) -> (Vec<(String, String)>, Vec<LoadError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        match rules_files(path) {
            Ok(found) => {
                for file in found {
                    let name = file.display().to_string();
                    match std::fs::read_to_string(&file) {
                        Ok(text) => files.push((name, text)),
                        Err(e) => {
                            errors.push(LoadError::new(&name, "", format!("cannot read file: {e}")))
                        }
                    }
                }
            }
            Err(e) => errors.push(LoadError::new(&path.display().to_string(), "", e)),
        }
    }
    (files, errors)
}

/// The version of a set of rules files: a hash of their names and texts, in
/// order (16 hex digits). The same files give the same version on every
/// instance, so operators can tell which rules each one serves.
pub fn version_of(files: &[(String, String)]) -> String {
    // FNV-1a, 64 bits: fixed by its definition, so every build and every
    // instance agrees; over each file's own name (not where it is mounted)
    // and text, each with its length, so no two sets of files collide by
    // concatenation.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for (name, text) in files {
        let base = Path::new(name)
            .file_name()
            .map_or(name.as_str(), |n| n.to_str().unwrap_or(name));
        eat(base.as_bytes());
        eat(text.as_bytes());
    }
    format!("{hash:016x}")
}

/// The rules files a path stands for: a file itself, or a directory's
/// `*.yaml`/`*.yml` entries (dotfiles skipped, symlinks followed, so a
/// Kubernetes ConfigMap mount works), sorted by name. A directory without
/// any is an error.
fn rules_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read rules path: {e}"))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries =
        std::fs::read_dir(path).map_err(|e| format!("cannot list rules directory: {e}"))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list rules directory: {e}"))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_yaml = name.ends_with(".yaml") || name.ends_with(".yml");
        let file = entry.path();
        if !is_yaml || name.starts_with('.') {
            continue;
        }
        // Follows symlinks: a dangling one (a ConfigMap mid-update) is an
        // error, not a file that is not there.
        match std::fs::metadata(&file) {
            Ok(meta) if meta.is_file() => files.push(file),
            Ok(_) => {}
            Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
        }
    }
    if files.is_empty() {
        // One rule at startup and on reload: an empty directory is far
        // likelier a mount not (yet) filled or a mistake than a wish to
        // answer OK to every call.
        return Err(
            "no rules files (*.yaml, *.yml) in this directory; an empty rules directory is refused"
                .to_owned(),
        );
    }
    files.sort();
    Ok(files)
}
