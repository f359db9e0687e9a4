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

/// Errors of [`read_model`].
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The model file is not an ONNX model.
    #[error("{path} is not an ONNX model: {message}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
    /// An initializer's external data is missing or out of its file's bounds.
    #[error(
        "initializer {tensor} of {path}: {message}; keep the data file beside the model as it \
         was saved"
    )]
    External {
        /// The model file.
        path: PathBuf,
        /// The initializer.
        tensor: String,
        /// What is wrong (the key, the file, the range).
        message: String,
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

fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut fs::File) -> std::io::Result<()>,
) -> Result<(), SaveError> {
    let io = |source| SaveError::Io {
        path: path.to_owned(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        write(&mut f)?;
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
    let data_name = format!(
        "{}.data",
        path.file_name()
            .map_or_else(|| "model.onnx".into(), |n| n.to_string_lossy().into_owned())
    );
    let ExternalData::Above(threshold) = external else {
        let bytes = model.encode_to_vec();
        write_atomically(path, |f| f.write_all(&bytes))?;
        return Ok(bytes.len() as u64);
    };
    // The initializers above the threshold are written to the data file straight from the
    // model; the model file gets a copy of the model without their bytes (no copy of the
    // weights is made).
    let big = |t: &proto::TensorProto| t.raw_data.as_ref().is_some_and(|r| r.len() >= threshold);
    let mut light = clone_without_graph(model);
    let mut offsets = Vec::new();
    if let Some(graph) = &model.graph {
        let data_path = path.with_file_name(&data_name);
        let mut offset = 0usize;
        let any = graph.initializer.iter().any(big);
        if any {
            write_atomically(&data_path, |f| {
                let mut w = std::io::BufWriter::new(f);
                for t in graph.initializer.iter().filter(|t| big(t)) {
                    let raw = t.raw_data.as_deref().unwrap_or_default();
                    w.write_all(raw)?;
                    offsets.push((offset, raw.len()));
                    offset += raw.len();
                }
                w.flush()
            })?;
        }
        let mut g = clone_without_initializers(graph);
        let mut next = offsets.iter();
        for t in &graph.initializer {
            if !big(t) {
                g.initializer.push(t.clone());
                continue;
            }
            let (offset, length) = next.next().copied().unwrap_or_default();
            let entry = |k: &str, v: String| proto::StringStringEntryProto {
                key: Some(k.to_owned()),
                value: Some(v),
            };
            let mut light_t = clone_without_data(t);
            light_t.external_data = vec![
                entry("location", data_name.clone()),
                entry("offset", offset.to_string()),
                entry("length", length.to_string()),
            ];
            light_t.data_location = Some(proto::tensor_proto::DataLocation::External as i32);
            g.initializer.push(light_t);
        }
        light.graph = Some(g);
    }
    let bytes = light.encode_to_vec();
    write_atomically(path, |f| f.write_all(&bytes))?;
    Ok(bytes.len() as u64)
}

/// A copy of `m` without its graph (every other field is named, so a new field of the proto
/// is a compile error here rather than a field silently dropped).
fn clone_without_graph(m: &proto::ModelProto) -> proto::ModelProto {
    proto::ModelProto {
        ir_version: m.ir_version,
        opset_import: m.opset_import.clone(),
        producer_name: m.producer_name.clone(),
        producer_version: m.producer_version.clone(),
        domain: m.domain.clone(),
        model_version: m.model_version,
        doc_string: m.doc_string.clone(),
        graph: None,
        metadata_props: m.metadata_props.clone(),
        training_info: m.training_info.clone(),
        functions: m.functions.clone(),
        configuration: m.configuration.clone(),
    }
}

/// A copy of `g` without its initializers.
fn clone_without_initializers(g: &proto::GraphProto) -> proto::GraphProto {
    proto::GraphProto {
        node: g.node.clone(),
        name: g.name.clone(),
        initializer: Vec::new(),
        sparse_initializer: g.sparse_initializer.clone(),
        doc_string: g.doc_string.clone(),
        input: g.input.clone(),
        output: g.output.clone(),
        value_info: g.value_info.clone(),
        quantization_annotation: g.quantization_annotation.clone(),
        metadata_props: g.metadata_props.clone(),
    }
}

/// A copy of `t` without its `raw_data`.
fn clone_without_data(t: &proto::TensorProto) -> proto::TensorProto {
    proto::TensorProto {
        dims: t.dims.clone(),
        data_type: t.data_type,
        segment: t.segment,
        float_data: t.float_data.clone(),
        int32_data: t.int32_data.clone(),
        string_data: t.string_data.clone(),
        int64_data: t.int64_data.clone(),
        name: t.name.clone(),
        doc_string: t.doc_string.clone(),
        raw_data: None,
        external_data: t.external_data.clone(),
        data_location: t.data_location,
        double_data: t.double_data.clone(),
        uint64_data: t.uint64_data.clone(),
        metadata_props: t.metadata_props.clone(),
    }
}

/// Reads a model saved by [`save_model`] (or by onnx's `save_model`), with the bytes of its
/// external initializers read back into `raw_data` from the files beside it: the whole model
/// in memory, as `onnx.load(path)` gives it.
///
/// # Errors
/// [`ReadError`] naming the file, or the initializer whose data is missing.
pub fn read_model(path: &Path) -> Result<proto::ModelProto, ReadError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ReadError::Io { path, source }
    };
    let bytes = fs::read(path).map_err(io(path))?;
    let mut model = proto::ModelProto::decode(bytes.as_slice()).map_err(|e| ReadError::Decode {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    drop(bytes);
    let mut files: std::collections::HashMap<String, fs::File> = Default::default();
    for t in model
        .graph
        .iter_mut()
        .flat_map(|g| g.initializer.iter_mut())
    {
        if t.data_location != Some(proto::tensor_proto::DataLocation::External as i32) {
            continue;
        }
        let tensor = t.name.clone().unwrap_or_default();
        let bad = |message: String| ReadError::External {
            path: path.to_owned(),
            tensor: tensor.clone(),
            message,
        };
        let get = |k: &str| {
            t.external_data
                .iter()
                .find(|e| e.key.as_deref() == Some(k))
                .and_then(|e| e.value.clone())
        };
        let location = get("location").ok_or_else(|| bad("no location key".to_owned()))?;
        let number = |k: &str| -> Result<Option<u64>, ReadError> {
            get(k)
                .map(|v| {
                    v.parse()
                        .map_err(|_| bad(format!("{k} {v:?} is not a number")))
                })
                .transpose()
        };
        let offset = number("offset")?.unwrap_or(0);
        let data_path = path.with_file_name(&location);
        if !files.contains_key(&location) {
            let f = fs::File::open(&data_path)
                .map_err(|e| bad(format!("{}: {e}", data_path.display())))?;
            files.insert(location.clone(), f);
        }
        let f = &files[&location];
        let size = f.metadata().map_err(io(&data_path))?.len();
        let length = number("length")?.unwrap_or(size.saturating_sub(offset));
        if offset.checked_add(length).is_none_or(|end| end > size) {
            return Err(bad(format!(
                "bytes {offset}..{} are past the end of {} ({size} bytes)",
                offset.saturating_add(length),
                data_path.display()
            )));
        }
        let mut raw = vec![0u8; length as usize];
        std::os::unix::fs::FileExt::read_exact_at(f, &mut raw, offset).map_err(io(&data_path))?;
        t.raw_data = Some(raw);
        t.external_data.clear();
        t.data_location = None;
    }
    Ok(model)
}
