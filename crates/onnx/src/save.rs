//! Saving a model: the file appears complete or not at all (written beside, then renamed), and
//! large initializers may go to one external data file next to it (`<file>.data`), as ONNX's
//! external-data format describes.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use prost::Message;

use crate::proto;

/// Errors of [`save_model`].
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Where initializers go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExternalData {
    /// Everything inside the model file.
    Never,
    /// Initializers of at least this many bytes go to `<file>.data`.
    Above(usize),
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SaveError> {
    let io = |source| SaveError::Io {
        path: path.to_owned(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// Saves `model` to `path`, moving initializers to `<file name>.data` as `external` says.
/// Returns the size of the model file in bytes.
///
/// # Errors
/// [`SaveError::Io`] naming the file; no partial file is left behind.
pub fn save_model(
    model: &proto::ModelProto,
    path: &Path,
    external: ExternalData,
) -> Result<u64, SaveError> {
    let mut model = model.clone();
    let data_name = format!(
        "{}.data",
        path.file_name()
            .map_or_else(|| "model.onnx".into(), |n| n.to_string_lossy().into_owned())
    );
    let mut data: Vec<u8> = Vec::new();
    if let (ExternalData::Above(threshold), Some(graph)) = (external, model.graph.as_mut()) {
        for t in &mut graph.initializer {
            let Some(raw) = t.raw_data.as_ref() else {
                continue;
            };
            if raw.len() < threshold {
                continue;
            }
            let raw = t.raw_data.take().unwrap_or_default();
            let entry = |k: &str, v: String| proto::StringStringEntryProto {
                key: Some(k.to_owned()),
                value: Some(v),
            };
            t.external_data = vec![
                entry("location", data_name.clone()),
                entry("offset", data.len().to_string()),
                entry("length", raw.len().to_string()),
            ];
            t.data_location = Some(proto::tensor_proto::DataLocation::External as i32);
            data.extend_from_slice(&raw);
        }
    }
    if !data.is_empty() {
        write_atomically(&path.with_file_name(&data_name), &data)?;
    }
    let bytes = model.encode_to_vec();
    write_atomically(path, &bytes)?;
    Ok(bytes.len() as u64)
}
