//! The one weight source every module loads through.
//!
//! [`Weights`] is where weights come from: a checkpoint directory ([`Weights::from_dir`],
//! memory-mapped, see [`crate::checkpoint`]) or an untrained draw from a seed
//! ([`Weights::untrained`], see [`crate::init`]). [`VarBuilder`] is its hierarchical view, as
//! candle's: `vb.pp("model").pp("layers.0").get("weight", shape, init)` asks for
//! `model.layers.0.weight`. Each weight handed out is shape- and type-checked and recorded, in
//! load order; [`Weights::finish`] ends a build: it returns the recorded `(name, tensor)` pairs,
//! which are the model's `named_parameters` (the weight names are never written a second
//! time), and refuses a checkpoint holding tensors that no module read, except the buffers
//! transformers itself drops on load (`rotary_emb.inv_freq`, see [`Weights::ignore_unread`]).
//!
//! Types: a checkpoint's weights keep the model type of transformers 5.23's
//! `from_pretrained(dtype="auto")` (the config's `dtype`, else the checkpoint's); untrained
//! ones are float32, as a model built from a config is; [`Weights::with_dtype`] converts, as
//! `model.to(dtype)` does, and [`Weights::with_device`] moves, as `model.to(device)` does.

use std::{cell::RefCell, collections::BTreeMap, path::Path};

use onnx_diagnostic_core::Tensor;
use tch::{Device, Kind};

pub use crate::init::Init;
use crate::{
    checkpoint::Checkpoint,
    error::{Error, Result},
    init,
};

/// Where the weights come from.
#[derive(Debug)]
enum Source {
    Checkpoint(Checkpoint),
    Untrained {
        seed: i64,
        std: f64,
    },
    /// A build has finished: the checkpoint's maps are released.
    Finished,
}

#[derive(Debug, Default)]
struct Record {
    order: Vec<String>,
    handed: BTreeMap<String, Tensor>,
    ignored: Vec<String>,
    /// Checkpoint names read for another model name ([`Weights::map_keys`]).
    read_as: Vec<String>,
}

/// Named weights of one model build, by checkpoint name.
#[derive(Debug)]
pub struct Weights {
    source: Source,
    model: String,
    /// The type asked by [`Weights::with_dtype`] (a conversion, `model.to(dtype)`).
    dtype: Option<Kind>,
    /// The checkpoint's type (`from_pretrained(dtype="auto")`).
    auto_dtype: Option<Kind>,
    device: Option<Device>,
    record: RefCell<Record>,
    /// `(model prefix, checkpoint prefix)` pairs ([`Weights::map_keys`]).
    key_mapping: Vec<(String, String)>,
}

impl Weights {
    /// The checkpoint of a directory written by `save_pretrained` (`model.safetensors`, or
    /// `model.safetensors.index.json` with its shards), memory-mapped; `model` names the model
    /// class in errors.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] naming the file that cannot be read.
    pub fn from_dir(dir: &Path, model: &str) -> Result<Self> {
        let checkpoint = Checkpoint::open(dir)?;
        let auto_dtype = checkpoint.auto_dtype;
        Ok(Self {
            source: Source::Checkpoint(checkpoint),
            model: model.to_owned(),
            dtype: None,
            auto_dtype,
            device: None,
            record: RefCell::default(),
            key_mapping: Vec::new(),
        })
    }

    /// Untrained weights as transformers' `_init_weights` makes them (see [`Init`]), drawn
    /// from streams seeded by `seed` and each weight's name ([`crate::init`]): the same bytes
    /// on any thread and in any load order. `std` is the config's `initializer_range`.
    pub fn untrained(model: &str, seed: i64, std: f64) -> Self {
        Self {
            source: Source::Untrained { seed, std },
            model: model.to_owned(),
            dtype: None,
            auto_dtype: None,
            device: None,
            record: RefCell::default(),
            key_mapping: Vec::new(),
        }
    }

    /// Checkpoints that store a weight of the model under another prefix: the model's
    /// `MODEL_PREFIX...` is read as `CHECKPOINT_PREFIX...` when the checkpoint does not hold
    /// the model's name, as transformers' `_checkpoint_conversion_mapping` renames the hub's
    /// layout on load (and `save_pretrained` writes it back: Qwen2-VL's `visual.*` and
    /// `model.*` are the model's `model.visual.*` and `model.language_model.*`). The model's
    /// names are what `named_parameters` reports.
    pub fn map_keys(&mut self, mapping: &[(&str, &str)]) {
        self.key_mapping = mapping
            .iter()
            .map(|(m, c)| ((*m).to_owned(), (*c).to_owned()))
            .collect();
    }

    /// The checkpoint's name of the model's weight `name` ([`Weights::map_keys`]).
    fn checkpoint_name(&self, c: &Checkpoint, name: &str) -> String {
        if c.entry(name).is_some() {
            return name.to_owned();
        }
        self.key_mapping
            .iter()
            .find_map(|(m, k)| {
                let mapped = format!("{k}{}", name.strip_prefix(m.as_str())?);
                c.entry(&mapped).is_some().then_some(mapped)
            })
            .unwrap_or_else(|| name.to_owned())
    }

    /// The same weights handed out in `dtype` (float32, float16, bfloat16, float64): the model
    /// is converted as `model.to(dtype)` converts a built model, buffers included (see
    /// [`Weights::buffer_dtype`]).
    #[must_use]
    pub fn with_dtype(mut self, dtype: Kind) -> Self {
        self.dtype = Some(dtype);
        self
    }

    /// The element type of the weights handed out: the one asked, else the checkpoint's, else
    /// float32.
    pub fn dtype(&self) -> Kind {
        self.dtype.or(self.auto_dtype).unwrap_or(Kind::Float)
    }

    /// The type float buffers computed at build time (the rotary `inv_freq`) are rounded to:
    /// the type of a conversion ([`Weights::with_dtype`], what `model.to(dtype)` does to the
    /// buffers), else float32: a model built in the checkpoint's type keeps them in float32,
    /// as transformers' `from_pretrained` computes them.
    pub fn buffer_dtype(&self) -> Kind {
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

    /// The model class named in errors.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The root of the weight names.
    pub fn root(&self) -> VarBuilder<'_> {
        VarBuilder {
            weights: self,
            prefix: String::new(),
        }
    }

    /// Whether the checkpoint holds `name` (false for untrained weights).
    pub fn contains(&self, name: &str) -> bool {
        match &self.source {
            Source::Checkpoint(c) => c.entry(&self.checkpoint_name(c, name)).is_some(),
            _ => false,
        }
    }

    /// Checkpoint tensors matching `pattern` may stay unread: a name equal to it or ending with
    /// `.{pattern}` (transformers' `_keys_to_ignore_on_load_unexpected`, and the
    /// `rotary_emb.inv_freq` buffers of older checkpoints it drops).
    pub fn ignore_unread(&self, pattern: &str) {
        self.record.borrow_mut().ignored.push(pattern.to_owned());
    }

    /// Ends the build: the weights handed out, in load order, as `(name, tensor)` (the model's
    /// `named_parameters`). The checkpoint's files are released.
    ///
    /// # Errors
    /// [`Error::UnusedWeights`] naming the checkpoint tensors no module read (a checkpoint of
    /// another architecture or configuration: building without them would give a different
    /// model than the checkpoint's).
    pub fn finish(&mut self) -> Result<Vec<(String, Tensor)>> {
        let record = std::mem::take(&mut *self.record.borrow_mut());
        if let Source::Checkpoint(c) = &self.source {
            let ignored = |n: &str| {
                record
                    .ignored
                    .iter()
                    .any(|p| n == p || n.ends_with(&format!(".{p}")))
            };
            let unused: Vec<String> = c
                .names()
                .filter(|n| {
                    !record.handed.contains_key(*n) && !record.read_as.contains(n) && !ignored(n)
                })
                .cloned()
                .collect();
            if !unused.is_empty() {
                return Err(Error::UnusedWeights {
                    model: self.model.clone(),
                    names: unused,
                });
            }
        }
        if matches!(self.source, Source::Checkpoint(_)) {
            self.source = Source::Finished;
        }
        let mut handed = record.handed;
        Ok(record
            .order
            .into_iter()
            .filter_map(|n| handed.remove(&n).map(|t| (n, t)))
            .collect())
    }

    fn weight_error(&self, name: &str, message: String) -> Error {
        Error::Weight {
            model: self.model.clone(),
            name: name.to_owned(),
            message,
        }
    }

    /// The weight `name` of `shape`, initialised by `init` when untrained.
    fn get(&self, name: &str, shape: &[i64], init: Init) -> Result<Tensor> {
        if let Some(t) = self.record.borrow().handed.get(name) {
            if t.concrete_shape() != shape {
                return Err(self.weight_error(
                    name,
                    format!("asked with shape {shape:?} after {:?}", t.concrete_shape()),
                ));
            }
            return Ok(t.clone());
        }
        let raw = match &self.source {
            Source::Checkpoint(c) => {
                let stored = self.checkpoint_name(c, name);
                if stored != name {
                    self.record.borrow_mut().read_as.push(stored.clone());
                }
                let e = c.entry(&stored).ok_or_else(|| {
                    self.weight_error(
                        name,
                        "missing from the checkpoint (a checkpoint of another architecture or \
                         configuration?)"
                            .to_owned(),
                    )
                })?;
                if e.shape != shape {
                    return Err(self.weight_error(
                        name,
                        format!(
                            "the checkpoint ({}) has shape {:?}, the config implies {shape:?}",
                            c.path_of(e).display(),
                            e.shape
                        ),
                    ));
                }
                if !e.kind.is_some_and(|k| {
                    matches!(k, Kind::Float | Kind::Half | Kind::BFloat16 | Kind::Double)
                }) {
                    return Err(self.weight_error(
                        name,
                        format!(
                            "the checkpoint holds it as {}, not a floating type (quantized \
                             checkpoints are not supported)",
                            e.dtype
                        ),
                    ));
                }
                c.read(&stored, e)?
            }
            Source::Untrained { seed, std } => untrained(*seed, *std, name, shape, init)
                .map_err(|e| self.weight_error(name, e.to_string()))?,
            Source::Finished => {
                return Err(self.weight_error(
                    name,
                    "asked after the build finished: a Weights builds one model".to_owned(),
                ));
            }
        };
        let (dtype, device) = (self.dtype(), self.device());
        let t = if raw.kind() == dtype {
            raw
        } else {
            raw.f_to_kind(dtype)
                .map_err(|e| self.weight_error(name, e.to_string()))?
        };
        let t = if device == Device::Cpu {
            t
        } else {
            t.f_to_device(device)
                .map_err(|e| self.weight_error(name, e.to_string()))?
        };
        let t = Tensor::from(t);
        let mut record = self.record.borrow_mut();
        record.order.push(name.to_owned());
        record.handed.insert(name.to_owned(), t.clone());
        Ok(t)
    }
}

/// An untrained weight in float32 on the CPU.
fn untrained(
    seed: i64,
    std: f64,
    name: &str,
    shape: &[i64],
    init: Init,
) -> std::result::Result<tch::Tensor, tch::TchError> {
    let opts = (Kind::Float, Device::Cpu);
    match init {
        Init::Zeros => tch::Tensor::f_zeros(shape, opts),
        Init::Ones => tch::Tensor::f_ones(shape, opts),
        Init::Uniform(bound) => {
            let n = shape.iter().product::<i64>().max(0) as usize;
            tch::Tensor::f_from_slice(&init::uniform(seed, name, n, bound))?.f_reshape(shape)
        }
        Init::Normal | Init::NormalWithZeroRow(_) | Init::NormalStd(_) => {
            let n = shape.iter().product::<i64>().max(0) as usize;
            let std = if let Init::NormalStd(s) = init {
                s
            } else {
                std
            };
            let t =
                tch::Tensor::f_from_slice(&init::normal(seed, name, n, std))?.f_reshape(shape)?;
            if let (Init::NormalWithZeroRow(Some(row)), Some(rows)) = (init, shape.first())
                && row < *rows
            {
                let _ = t.f_get(row)?.f_zero_()?;
            }
            Ok(t)
        }
    }
}

/// A hierarchical view of [`Weights`]: a name prefix.
#[derive(Clone, Debug)]
pub struct VarBuilder<'a> {
    weights: &'a Weights,
    prefix: String,
}

impl<'a> VarBuilder<'a> {
    /// The view under `{prefix}.{name}` (`vb.pp("model").pp("layers.3")`).
    #[must_use]
    pub fn pp(&self, name: impl AsRef<str>) -> VarBuilder<'a> {
        VarBuilder {
            weights: self.weights,
            prefix: self.path(name.as_ref()),
        }
    }

    /// The full name of `name` under this view.
    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// The weight `name` under this view, of `shape`, in the model's type and device;
    /// initialised by `init` when untrained. Asking twice gives the same tensor.
    ///
    /// # Errors
    /// [`Error::Weight`] naming the weight when it is missing, misshaped or not floating.
    pub fn get(&self, name: &str, shape: &[i64], init: Init) -> Result<Tensor> {
        self.weights.get(&self.path(name), shape, init)
    }

    /// Whether the checkpoint holds `name` under this view.
    pub fn contains(&self, name: &str) -> bool {
        self.weights.contains(&self.path(name))
    }

    /// A weight the model holds fused (`mlp.experts.gate_up_proj`, `[experts, 2 * inner,
    /// hidden]`) while checkpoints store it in pieces (`mlp.experts.{e}.gate_proj.weight`,
    /// ...), as transformers 5.23's weight conversion fuses them on load and splits them back
    /// on save: `parts[e]` lists the pieces (name under this view, shape) concatenated along
    /// dim 0 into slice `e` of the result, and `stack` stacks the slices along a new dim 0
    /// (else `parts` must hold one slice, the result: a renamed weight). A checkpoint holding
    /// the fused name itself, or none of the pieces, reads the fused name; untrained, the fused
    /// weight is drawn under its own name. The fused name is what `named_parameters` reports;
    /// the pieces count as read.
    ///
    /// # Errors
    /// [`Error::Weight`] naming the missing or misshaped piece (or fused weight); on the fused
    /// name when the pieces do not make `shape`.
    pub fn get_fused(
        &self,
        name: &str,
        shape: &[i64],
        init: Init,
        parts: &[Vec<(String, Vec<i64>)>],
        stack: bool,
    ) -> Result<Tensor> {
        let full = self.path(name);
        let first = parts
            .first()
            .and_then(|p| p.first())
            .map(|(n, _)| self.path(n));
        if self.weights.contains(&full) || !first.is_some_and(|n| self.weights.contains(&n)) {
            return self.weights.get(&full, shape, init);
        }
        let w = self.weights;
        let mut slices = Vec::with_capacity(parts.len());
        let mut read = Vec::new();
        for pieces in parts {
            let mut cat = Vec::with_capacity(pieces.len());
            for (n, sh) in pieces {
                let path = self.path(n);
                cat.push(w.get(&path, sh, init)?.as_tch().shallow_clone());
                read.push(path);
            }
            slices.push(if cat.len() == 1 {
                cat.remove(0)
            } else {
                tch::Tensor::f_cat(&cat, 0).map_err(|e| w.weight_error(&full, e.to_string()))?
            });
        }
        let fused = if stack {
            tch::Tensor::f_stack(&slices, 0).map_err(|e| w.weight_error(&full, e.to_string()))?
        } else if slices.len() == 1 {
            slices.remove(0)
        } else {
            return Err(w.weight_error(&full, "several slices and no stacking".to_owned()));
        };
        if fused.size() != shape {
            return Err(w.weight_error(
                &full,
                format!(
                    "its pieces make shape {:?}, the config implies {shape:?}",
                    fused.size()
                ),
            ));
        }
        let fused = Tensor::from(fused);
        let mut record = w.record.borrow_mut();
        for n in &read {
            record.handed.remove(n);
            record.ignored.push(n.clone());
        }
        record.order.retain(|n| !read.contains(n));
        record.order.push(full.clone());
        record.handed.insert(full, fused.clone());
        Ok(fused)
    }

    /// The element type of the weights handed out.
    pub fn dtype(&self) -> Kind {
        self.weights.dtype()
    }

    /// See [`Weights::buffer_dtype`].
    pub fn buffer_dtype(&self) -> Kind {
        self.weights.buffer_dtype()
    }

    /// Where the weights handed out live.
    pub fn device(&self) -> Device {
        self.weights.device()
    }
}
