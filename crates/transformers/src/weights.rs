//! Weights: a name → tensor map loaded from a Hugging Face checkpoint directory
//! (`model.safetensors`, or `model.safetensors.index.json` with its shards), or made untrained
//! from a seed as the Python validate does with configs alone. Weights are handed out in one
//! element type, float32 unless [`Weights::with_dtype`] says otherwise: a checkpoint's tensors
//! are converted from whatever type they were saved in, untrained ones are drawn in float32
//! then converted, which is what `model.to(dtype)` does to a float32 model in the Python
//! validate's `--dtype`; [`Weights::with_device`] moves them as `model.to(device)` does.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use onnx_diagnostic_core::Tensor;
use tch::{Device, Kind};

use crate::error::{Error, Result};

/// Named weights of a model, by checkpoint name.
#[derive(Debug, Default)]
pub struct Weights {
    tensors: BTreeMap<String, Tensor>,
    model: String,
    /// Untrained weights are drawn on demand from the seeded generator.
    init: Option<f64>,
    /// The element type of the weights handed out (`None`: float32).
    dtype: Option<Kind>,
    /// Where the weights handed out live (`None`: the CPU).
    device: Option<Device>,
}

impl Weights {
    /// Loads `model.safetensors` (or the shards named by `model.safetensors.index.json`) from a
    /// checkpoint directory.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] naming the file that cannot be read.
    pub fn from_dir(dir: &Path, model: &str) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if single.exists() {
            vec![single]
        } else if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| Error::Checkpoint {
                path: index.clone(),
                message: e.to_string(),
            })?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
                    path: index.clone(),
                    message: e.to_string(),
                })?;
            let mut shards: Vec<String> = json["weight_map"]
                .as_object()
                .map(|m| {
                    m.values()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            shards.sort();
            shards.dedup();
            shards.into_iter().map(|s| dir.join(s)).collect()
        } else {
            return Err(Error::Checkpoint {
                path: dir.to_owned(),
                message: "no model.safetensors nor model.safetensors.index.json".to_owned(),
            });
        };
        let mut tensors = BTreeMap::new();
        for file in files {
            let loaded = tch::Tensor::read_safetensors(&file).map_err(|e| Error::Checkpoint {
                path: file.clone(),
                message: e.to_string(),
            })?;
            tensors.extend(loaded.into_iter().map(|(n, t)| (n, Tensor::from(t))));
        }
        Ok(Self {
            tensors,
            model: model.to_owned(),
            init: None,
            dtype: None,
            device: None,
        })
    }

    /// Untrained weights: matrices and embeddings drawn from N(0, `std`) with libtorch's
    /// generator seeded by `seed`, norms at one (zero for Gemma, whose norms scale by
    /// `1 + weight`), biases at zero (transformers' `_init_weights`).
    pub fn untrained(model: &str, seed: i64, std: f64) -> Self {
        tch::manual_seed(seed);
        Self {
            tensors: BTreeMap::new(),
            model: model.to_owned(),
            init: Some(std),
            dtype: None,
            device: None,
        }
    }

    /// The same weights handed out in `dtype` (float32, float16, bfloat16, float64).
    #[must_use]
    pub fn with_dtype(mut self, dtype: Kind) -> Self {
        self.dtype = Some(dtype);
        self
    }

    /// The element type of the weights handed out.
    pub fn dtype(&self) -> Kind {
        self.dtype.unwrap_or(Kind::Float)
    }

    /// The same weights handed out on `device` (`model.to(device)`); untrained ones are still
    /// drawn on the CPU, so the numbers do not depend on the device.
    #[must_use]
    pub fn with_device(mut self, device: Device) -> Self {
        self.device = Some(device);
        self
    }

    /// Where the weights handed out live.
    pub fn device(&self) -> Device {
        self.device.unwrap_or(Device::Cpu)
    }

    /// The weight `name` of `shape`.
    ///
    /// # Errors
    /// [`Error::Weight`] when it is missing or has another shape.
    pub fn get(&mut self, name: &str, shape: &[i64]) -> Result<Tensor> {
        if let Some(t) = self.tensors.get(name) {
            if t.concrete_shape() != shape {
                return Err(Error::Weight {
                    model: self.model.clone(),
                    name: name.to_owned(),
                    message: format!(
                        "the checkpoint has shape {:?}, the config implies {shape:?}",
                        t.concrete_shape()
                    ),
                });
            }
            return t
                .as_tch()
                .f_to_kind(self.dtype())
                .and_then(|t| t.f_to_device(self.device()))
                .map(Tensor::from)
                .map_err(|e| Error::Weight {
                    model: self.model.clone(),
                    name: name.to_owned(),
                    message: e.to_string(),
                });
        }
        let Some(std) = self.init else {
            return Err(Error::Weight {
                model: self.model.clone(),
                name: name.to_owned(),
                message: "missing from the checkpoint".to_owned(),
            });
        };
        let opts = (Kind::Float, Device::Cpu);
        let t = if name.ends_with("norm.weight") && self.model.starts_with("Gemma") {
            // Gemma's norms scale by 1 + weight: transformers initialises them at zero.
            tch::Tensor::zeros(shape, opts)
        } else if name.ends_with("norm.weight") {
            tch::Tensor::ones(shape, opts)
        } else if name.ends_with(".bias") {
            tch::Tensor::zeros(shape, opts)
        } else {
            tch::Tensor::randn(shape, opts) * std
        };
        let t = Tensor::from(t);
        self.tensors.insert(name.to_owned(), t.clone());
        t.as_tch()
            .f_to_kind(self.dtype())
            .and_then(|t| t.f_to_device(self.device()))
            .map(Tensor::from)
            .map_err(|e| Error::Weight {
                model: self.model.clone(),
                name: name.to_owned(),
                message: e.to_string(),
            })
    }

    /// Whether the checkpoint holds `name` (always false for untrained weights not yet drawn).
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}
