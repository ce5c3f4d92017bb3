//! The trained scoring model on disk: JSON, written whole to a temporary file and renamed,
//! so that a robot reading it never sees half a model.

use std::path::{Path, PathBuf};

use crate::domain::scoring::Model;

/// The model file's name inside the data folder, when no other is given.
pub const DEFAULT_NAME: &str = "scoring-model.json";

/// Why the model file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    /// There is none.
    #[error("{0}: no trained model; train one with `sales-robot train --deals FILE.csv`")]
    Missing(PathBuf),
    /// It could not be read or written.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// It is not a model (another file, or from an incompatible version).
    #[error("{0}: not a scoring model of this version ({1}); train it again")]
    NotAModel(PathBuf, serde_json::Error),
}

/// Reads a model.
pub fn load(path: &Path) -> Result<Model, ModelFileError> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ModelFileError::Missing(path.to_owned()),
        _ => ModelFileError::Io(path.to_owned(), e),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ModelFileError::NotAModel(path.to_owned(), e))
}

/// Writes a model, replacing the file at once.
pub fn save(path: &Path, model: &Model) -> Result<(), ModelFileError> {
    let io = |e| ModelFileError::Io(path.to_owned(), e);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let json =
        serde_json::to_vec(model).map_err(|e| ModelFileError::NotAModel(path.to_owned(), e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    std::io::Write::write_all(&mut tmp, &json).map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}
