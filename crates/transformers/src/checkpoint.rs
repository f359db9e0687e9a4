//! A checkpoint directory as transformers' `save_pretrained` writes it: `model.safetensors`, or
//! `model.safetensors.index.json` naming its shards (diffusers' `save_pretrained` writes the
//! same files named `diffusion_pytorch_model.*`). Every file is memory-mapped and only its
//! header is parsed up front; a tensor's bytes are read when a module asks for it, straight into
//! the libtorch tensor handed out (one copy, in the checkpoint's type; a second one only when the
//! model's type differs). The maps are released with the checkpoint, right after the model is
//! built, so the file pages do not stay counted in the process's memory.
//!
//! The model's type follows transformers 5.23's `from_pretrained(dtype="auto")`, its default:
//! the config's `dtype` (or the older `torch_dtype`), else the `dtype` of the shard index's
//! metadata, else the type of the first floating tensor of the first file.

use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
};

use tch::Kind;

use crate::error::{Error, Result};

/// Where a tensor's bytes are.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    shard: usize,
    /// The libtorch type of the bytes (`None`: a type libtorch cannot hold, e.g. float8).
    pub(crate) kind: Option<Kind>,
    /// The safetensors name of the type (`BF16`).
    pub(crate) dtype: String,
    pub(crate) shape: Vec<i64>,
    start: usize,
    end: usize,
}

struct Shard {
    path: PathBuf,
    map: memmap2::Mmap,
}

/// The memory-mapped files of a checkpoint and the place of every tensor in them.
pub(crate) struct Checkpoint {
    shards: Vec<Shard>,
    entries: BTreeMap<String, Entry>,
    /// The type of `dtype="auto"`, when the config, the index or a tensor tells one.
    pub(crate) auto_dtype: Option<Kind>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field(
                "shards",
                &self.shards.iter().map(|s| &s.path).collect::<Vec<_>>(),
            )
            .field("tensors", &self.entries.len())
            .finish()
    }
}

/// The libtorch type of a dtype name of config.json (`bfloat16`, `float32`, ...).
pub(crate) fn kind_of_name(name: &str) -> Option<Kind> {
    Some(match name.trim_start_matches("torch.") {
        "float32" | "float" => Kind::Float,
        "float16" | "half" => Kind::Half,
        "bfloat16" => Kind::BFloat16,
        "float64" | "double" => Kind::Double,
        _ => return None,
    })
}

fn kind_of_dtype(d: safetensors::Dtype) -> Option<Kind> {
    use safetensors::Dtype as D;
    Some(match d {
        D::BOOL => Kind::Bool,
        D::U8 => Kind::Uint8,
        D::I8 => Kind::Int8,
        D::I16 => Kind::Int16,
        D::I32 => Kind::Int,
        D::I64 => Kind::Int64,
        D::F16 => Kind::Half,
        D::BF16 => Kind::BFloat16,
        D::F32 => Kind::Float,
        D::F64 => Kind::Double,
        _ => return None,
    })
}

fn is_float(k: Kind) -> bool {
    matches!(k, Kind::Float | Kind::Half | Kind::BFloat16 | Kind::Double)
}

impl Checkpoint {
    /// Maps the safetensors files of `dir` and reads their headers.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] naming the file that cannot be read, that is no safetensors file,
    /// or a shard index that names a missing file or a tensor its shard does not hold.
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        // transformers' names, then diffusers' (`ModelMixin.save_pretrained`).
        let stem = ["model", "diffusion_pytorch_model"]
            .into_iter()
            .find(|s| {
                dir.join(format!("{s}.safetensors")).exists()
                    || dir.join(format!("{s}.safetensors.index.json")).exists()
            })
            .unwrap_or("model");
        let single = dir.join(format!("{stem}.safetensors"));
        let index = dir.join(format!("{stem}.safetensors.index.json"));
        let fail = |path: &Path, message: String| Error::Checkpoint {
            path: path.to_owned(),
            message,
        };
        let mut index_dtype = None;
        let mut weight_map: Option<BTreeMap<String, String>> = None;
        let files: Vec<PathBuf> = if single.exists() {
            vec![single]
        } else if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| fail(&index, e.to_string()))?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| fail(&index, e.to_string()))?;
            let map = json
                .get("weight_map")
                .and_then(serde_json::Value::as_object)
                .ok_or_else(|| fail(&index, "no \"weight_map\" object".to_owned()))?;
            let map: BTreeMap<String, String> = map
                .iter()
                .map(|(k, v)| {
                    v.as_str()
                        .map(|f| (k.clone(), f.to_owned()))
                        .ok_or_else(|| {
                            fail(&index, format!("weight_map[{k:?}] is not a file name"))
                        })
                })
                .collect::<Result<_>>()?;
            index_dtype = json
                .pointer("/metadata/dtype")
                .and_then(serde_json::Value::as_str)
                .and_then(kind_of_name);
            let mut shards: Vec<String> = map.values().cloned().collect();
            shards.sort();
            shards.dedup();
            weight_map = Some(map);
            shards.into_iter().map(|s| dir.join(s)).collect()
        } else {
            return Err(fail(
                dir,
                "no model.safetensors nor model.safetensors.index.json (nor diffusers' \
                 diffusion_pytorch_model.safetensors): give a directory written by \
                 save_pretrained with safetensors"
                    .to_owned(),
            ));
        };
        let mut shards = Vec::with_capacity(files.len());
        let mut entries = BTreeMap::new();
        let mut first_float = None;
        for (i, path) in files.into_iter().enumerate() {
            let file = File::open(&path).map_err(|e| fail(&path, e.to_string()))?;
            // SAFETY: the map is read-only and private to this process; like every reader of
            // memory-mapped checkpoints (safetensors, candle, transformers), it assumes the
            // file is not truncated while the model is being built. Bytes are copied out of
            // it into tensors, never handed out as views.
            #[allow(unsafe_code)]
            let map =
                unsafe { memmap2::Mmap::map(&file) }.map_err(|e| fail(&path, e.to_string()))?;
            let (header, meta) = safetensors::SafeTensors::read_metadata(&map)
                .map_err(|e| fail(&path, format!("not a safetensors file: {e}")))?;
            let base = 8 + header;
            let mut infos: Vec<(String, &safetensors::tensor::TensorInfo)> =
                meta.tensors().into_iter().collect();
            infos.sort_by_key(|(_, t)| t.data_offsets.0);
            for (name, t) in infos {
                let kind = kind_of_dtype(t.dtype);
                if first_float.is_none() && kind.is_some_and(is_float) {
                    first_float = kind;
                }
                let entry = Entry {
                    shard: i,
                    kind,
                    dtype: format!("{:?}", t.dtype),
                    shape: t.shape.iter().map(|d| *d as i64).collect(),
                    start: base + t.data_offsets.0,
                    end: base + t.data_offsets.1,
                };
                if entries.insert(name.clone(), entry).is_some() {
                    return Err(fail(&path, format!("tensor {name} is in two shards")));
                }
            }
            shards.push(Shard { path, map });
        }
        if let Some(map) = weight_map {
            for (name, file) in map {
                let held = entries
                    .get(&name)
                    .is_some_and(|e| shards[e.shard].path == dir.join(&file));
                if !held {
                    return Err(fail(
                        &index,
                        format!("weight_map says {name} is in {file}, which does not hold it"),
                    ));
                }
            }
        }
        let config_dtype = std::fs::read_to_string(dir.join("config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|j| {
                ["dtype", "torch_dtype"].iter().find_map(|k| {
                    j.get(*k)
                        .and_then(serde_json::Value::as_str)
                        .and_then(kind_of_name)
                })
            });
        Ok(Self {
            shards,
            entries,
            auto_dtype: config_dtype.or(index_dtype).or(first_float),
        })
    }

    /// The place and type of `name`.
    pub(crate) fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    /// Every tensor name, sorted.
    pub(crate) fn names(&self) -> impl Iterator<Item = &String> {
        self.entries.keys()
    }

    /// The file holding `e`.
    pub(crate) fn path_of(&self, e: &Entry) -> &Path {
        &self.shards[e.shard].path
    }

    /// A new libtorch tensor holding the bytes of `e`, in its own type.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] when the bytes do not fit the header, or libtorch refuses them.
    pub(crate) fn read(&self, name: &str, e: &Entry) -> Result<tch::Tensor> {
        let shard = &self.shards[e.shard];
        let fail = |message: String| Error::Checkpoint {
            path: shard.path.clone(),
            message: format!("tensor {name}: {message}"),
        };
        let kind = e
            .kind
            .ok_or_else(|| fail(format!("type {} has no libtorch equivalent", e.dtype)))?;
        let bytes = shard
            .map
            .get(e.start..e.end)
            .ok_or_else(|| fail("its bytes lie beyond the end of the file".to_owned()))?;
        let expected = e.shape.iter().product::<i64>() as usize * kind.elt_size_in_bytes();
        if bytes.len() != expected {
            return Err(fail(format!(
                "{} bytes for shape {:?} of {}",
                bytes.len(),
                e.shape,
                e.dtype
            )));
        }
        tch::Tensor::f_from_data_size(bytes, &e.shape, kind).map_err(|err| fail(err.to_string()))
    }
}
