//! The `Auto*` registry, as transformers' `AutoConfig` / `AutoModelForCausalLM`: a config's
//! `architectures[0]` (the class the Python package's `validate` builds), else its `model_type`,
//! picks the model; the CLI asks the registry and never matches on names itself.
//!
//! Decisions:
//! - The architecture is looked up before any other field is parsed: a GPT-2 config is
//!   [`Error::UnsupportedArchitecture`] naming `GPT2LMHeadModel` and the supported classes,
//!   not a missing `hidden_size`.
//! - A config whose `model_type` belongs to another class than its `architectures[0]` is
//!   refused (which one to build would be a guess).
//! - From a checkpoint directory the weights keep the checkpoint's type
//!   (`from_pretrained(dtype="auto")`, see [`crate::checkpoint`]) unless a type is asked.

use std::path::Path;

use onnx_diagnostic_core::{DynamicShapes, Module, Value};
use tch::{Device, Kind};

use crate::{
    error::{Error, Result},
    models::{
        bart::{self, BartForConditionalGeneration, BartModel},
        gemma::GemmaForCausalLM,
        gemma2::{self, Gemma2ForCausalLM},
        gemma3::{Gemma3Config, Gemma3ForCausalLM, Gemma3ForConditionalGeneration},
        idefics::{IdeficsConfig, IdeficsForVisionText2Text},
        llama::{Config, LlamaForCausalLM},
        mistral::MistralForCausalLM,
        mixtral::MixtralForCausalLM,
        phi::{self, PhiForCausalLM},
        phi3::Phi3ForCausalLM,
        qwen2::Qwen2ForCausalLM,
        qwen2_vl::{self, Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration},
        qwen3::Qwen3ForCausalLM,
        qwen3_moe::Qwen3MoeForCausalLM,
        sam::{SamConfig, SamModel},
        smollm3::SmolLM3ForCausalLM,
    },
    tasks::{DecoderDims, TextGenerationOptions},
    weights::Weights,
};

/// A causal language model of the registry: a [`Module`] taking the text-generation inputs.
pub trait CausalLM: Module {
    /// The sizes the text-generation input sets need.
    fn decoder_dims(&self) -> DecoderDims;
}

impl CausalLM for LlamaForCausalLM {
    fn decoder_dims(&self) -> DecoderDims {
        self.config.decoder_dims()
    }
}

/// Named input sets: `(name, keyword inputs)`.
pub type InputSets = Vec<(&'static str, Vec<(String, Value)>)>;

/// A model of the registry with the task `validate` runs it for: its input sets, their dynamic
/// shapes and its eager-only prompt, as the Python package's `tasks` module makes them.
pub trait TaskModel: Module {
    /// The task its input sets are made for: `text-generation`, `text2text-generation`,
    /// `summarization`, `feature-extraction`, `image-text-to-text`, `mask-generation`,
    /// `text-to-image`.
    fn task(&self) -> &'static str;

    /// Every task the model takes inputs for (the first is its default).
    fn tasks(&self) -> &'static [&'static str] {
        &[]
    }

    /// Makes the input sets for `task` from now on (`-t TASK`, or the task a catalog id is
    /// published with).
    ///
    /// # Errors
    /// [`Error::UnsupportedTask`] naming the tasks the model takes.
    fn set_task(&mut self, task: &str) -> Result<()> {
        if task == self.task() {
            return Ok(());
        }
        Err(Error::UnsupportedTask {
            model: self.class_name(),
            task: task.to_owned(),
            supported: self.task().to_owned(),
        })
    }

    /// The named input sets of `options` (`inputs`, `inputs2`, ...), `increment` growing the
    /// second one (`--inputs2`).
    ///
    /// # Errors
    /// [`Error::InputOption`] for an option the model cannot take.
    fn input_sets(&self, options: &TextGenerationOptions, increment: i64) -> Result<InputSets>;

    /// The dynamic shapes of the input sets.
    fn dynamic_shapes(&self, options: &TextGenerationOptions) -> DynamicShapes;

    /// `inputs_prompt`, run eagerly only.
    ///
    /// # Errors
    /// As the input sets.
    fn prompt(&self) -> Result<Vec<(String, Value)>>;
}

/// A causal LM as a [`TaskModel`] of `text-generation`.
pub struct TextGeneration(pub Box<dyn CausalLM>);

impl Module for TextGeneration {
    fn class_name(&self) -> String {
        self.0.class_name()
    }
    fn forward_signature(&self) -> Vec<String> {
        self.0.forward_signature()
    }
    fn named_parameters(&self) -> Vec<(String, onnx_diagnostic_core::Tensor)> {
        self.0.named_parameters()
    }
    fn named_buffers(&self) -> Vec<(String, onnx_diagnostic_core::Tensor)> {
        self.0.named_buffers()
    }
    fn forward(
        &self,
        inputs: &onnx_diagnostic_core::Inputs,
    ) -> onnx_diagnostic_core::Result<Value> {
        self.0.forward(inputs)
    }
}

impl TaskModel for TextGeneration {
    fn task(&self) -> &'static str {
        "text-generation"
    }

    fn input_sets(&self, options: &TextGenerationOptions, increment: i64) -> Result<InputSets> {
        let dims = self.0.decoder_dims();
        options.check(&dims, increment)?;
        options
            .input_sets(increment)
            .into_iter()
            .map(|(name, sizes)| {
                tch::manual_seed(0);
                Ok((name, options.inputs(&dims, sizes, increment)?))
            })
            .collect()
    }

    fn dynamic_shapes(&self, options: &TextGenerationOptions) -> DynamicShapes {
        options.dynamic_shapes(&self.0.decoder_dims())
    }

    fn prompt(&self) -> Result<Vec<(String, Value)>> {
        tch::manual_seed(0);
        crate::tasks::text_generation_prompt(&self.0.decoder_dims())
    }
}

/// Builds a causal LM from its config text on weights.
type Build = fn(&str, &mut Weights) -> Result<Box<dyn CausalLM>>;

/// Builds a model of another task from its config text on weights.
type BuildTask = fn(&str, &mut Weights) -> Result<Box<dyn TaskModel>>;

/// How an entry builds its class.
#[derive(Debug)]
enum Builder {
    CausalLM(Build),
    Other(BuildTask),
}

/// One architecture of the registry.
#[derive(Debug)]
struct Entry {
    class: &'static str,
    model_type: &'static str,
    task: &'static str,
    build: Builder,
}

macro_rules! entry {
    ($ty:ident, $config:ty, $model_type:literal) => {
        Entry {
            class: stringify!($ty),
            model_type: $model_type,
            task: "text-generation",
            build: Builder::CausalLM(|text, w| {
                Ok(Box::new($ty::new(<$config>::from_json(text)?, w)?))
            }),
        }
    };
    ($class:literal, $ty:ty, $config:ty, $model_type:literal, $task:literal) => {
        Entry {
            class: $class,
            model_type: $model_type,
            task: $task,
            build: Builder::Other(|text, w| {
                Ok(Box::new(<$ty>::new(<$config>::from_json(text)?, w)?))
            }),
        }
    };
}

const REGISTRY: &[Entry] = &[
    entry!(LlamaForCausalLM, Config, "llama"),
    entry!(MistralForCausalLM, Config, "mistral"),
    entry!(Qwen2ForCausalLM, Config, "qwen2"),
    entry!(GemmaForCausalLM, Config, "gemma"),
    entry!(Phi3ForCausalLM, Config, "phi3"),
    entry!(PhiForCausalLM, phi::Config, "phi"),
    entry!(SmolLM3ForCausalLM, Config, "smollm3"),
    entry!(Qwen3ForCausalLM, Config, "qwen3"),
    entry!(Qwen3MoeForCausalLM, Config, "qwen3_moe"),
    entry!(MixtralForCausalLM, Config, "mixtral"),
    entry!(Gemma2ForCausalLM, gemma2::Config, "gemma2"),
    entry!(Gemma3ForCausalLM, gemma2::Config, "gemma3_text"),
    entry!(
        "BartForConditionalGeneration",
        BartForConditionalGeneration,
        bart::Config,
        "bart",
        "text2text-generation"
    ),
    entry!(
        "BartModel",
        BartModel,
        bart::Config,
        "bart",
        "feature-extraction"
    ),
    entry!(
        "PLBartForConditionalGeneration",
        BartForConditionalGeneration,
        bart::Config,
        "plbart",
        "text2text-generation"
    ),
    entry!(
        "BlenderbotSmallForConditionalGeneration",
        BartForConditionalGeneration,
        bart::Config,
        "blenderbot-small",
        "text2text-generation"
    ),
    entry!(
        "Qwen2VLForConditionalGeneration",
        Qwen2VLForConditionalGeneration,
        qwen2_vl::Config,
        "qwen2_vl",
        "image-text-to-text"
    ),
    entry!(
        "Qwen2_5_VLForConditionalGeneration",
        Qwen2_5_VLForConditionalGeneration,
        qwen2_vl::Config,
        "qwen2_5_vl",
        "image-text-to-text"
    ),
    entry!(
        "Gemma3ForConditionalGeneration",
        Gemma3ForConditionalGeneration,
        Gemma3Config,
        "gemma3",
        "image-text-to-text"
    ),
    entry!(
        "IdeficsForVisionText2Text",
        IdeficsForVisionText2Text,
        IdeficsConfig,
        "idefics",
        "image-text-to-text"
    ),
    entry!("SamModel", SamModel, SamConfig, "sam", "mask-generation"),
    entry!(
        "MarianMTModel",
        BartForConditionalGeneration,
        bart::Config,
        "marian",
        "text2text-generation"
    ),
];

/// The classes the registry builds.
pub fn supported_architectures() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.class).collect()
}

/// A `config.json` whose architecture the registry knows; its fields are parsed by the
/// architecture's own config when the model is built.
#[derive(Clone, Debug)]
pub struct AutoConfig {
    entry: &'static Entry,
    json: serde_json::Value,
    path: std::path::PathBuf,
}

impl AutoConfig {
    /// Reads the architecture of a config text.
    ///
    /// # Errors
    /// [`Error::Config`] for text that is not a JSON object,
    /// [`Error::UnsupportedArchitecture`] naming the class (or `model_type`) and the supported
    /// ones, or a `model_type` of another class.
    pub fn from_json(text: &str) -> Result<Self> {
        Self::parse(text, Path::new("<memory>"))
    }

    /// Reads `config.json` at `path`.
    ///
    /// # Errors
    /// As [`AutoConfig::from_json`], naming the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::parse(&crate::error::read_config(path)?, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Self> {
        let fail = |message: String| Error::Config {
            path: path.to_owned(),
            message,
        };
        let json = crate::error::parse_config(text, path)?;
        let class = json.pointer("/architectures/0").and_then(|v| v.as_str());
        let model_type = json.get("model_type").and_then(|v| v.as_str());
        let unsupported = |architecture: String| Error::UnsupportedArchitecture {
            architecture,
            supported: supported_architectures()
                .into_iter()
                .map(str::to_owned)
                .collect(),
        };
        let entry = match (class, model_type) {
            (Some(c), _) => REGISTRY
                .iter()
                .find(|e| e.class == c)
                .ok_or_else(|| unsupported(c.to_owned()))?,
            (None, Some(t)) => REGISTRY
                .iter()
                .find(|e| e.model_type == t)
                .ok_or_else(|| unsupported(format!("model_type {t:?}")))?,
            (None, None) => {
                return Err(fail(
                    "neither \"architectures\" nor \"model_type\": no model can be chosen"
                        .to_owned(),
                ));
            }
        };
        if let Some(t) = model_type
            && t != entry.model_type
        {
            return Err(fail(format!(
                "architectures[0] is {} (model_type {:?}) but model_type is {t:?}",
                entry.class, entry.model_type
            )));
        }
        Ok(Self {
            entry,
            json,
            path: path.to_owned(),
        })
    }

    /// The transformers class (`LlamaForCausalLM`).
    pub fn class_name(&self) -> &'static str {
        self.entry.class
    }

    /// The task of the class (`text-generation`).
    pub fn task(&self) -> &'static str {
        self.entry.task
    }

    /// `initializer_range` (Bart's `init_std`; 0.02 when absent): the scale of untrained
    /// weights.
    pub fn initializer_range(&self) -> f64 {
        self.json
            .get("initializer_range")
            .or_else(|| self.json.get("init_std"))
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.02)
    }

    /// A config error naming this config's file.
    fn name_file(&self, e: Error) -> Error {
        match e {
            Error::Config { message, .. } => Error::Config {
                path: self.path.clone(),
                message,
            },
            other => other,
        }
    }

    /// The causal LM of this config on `weights`.
    fn build(&self, weights: &mut Weights) -> Result<Box<dyn CausalLM>> {
        match &self.entry.build {
            Builder::CausalLM(b) => {
                b(&self.json.to_string(), weights).map_err(|e| self.name_file(e))
            }
            Builder::Other(_) => Err(Error::Config {
                path: self.path.clone(),
                message: format!(
                    "{} is a {} model, not a causal LM: build it with AutoModel",
                    self.entry.class, self.entry.task
                ),
            }),
        }
    }

    /// The model of this config, of any task, on `weights`.
    fn build_task(&self, weights: &mut Weights) -> Result<Box<dyn TaskModel>> {
        match &self.entry.build {
            Builder::CausalLM(b) => b(&self.json.to_string(), weights)
                .map(|m| Box::new(TextGeneration(m)) as Box<dyn TaskModel>)
                .map_err(|e| self.name_file(e)),
            Builder::Other(b) => b(&self.json.to_string(), weights).map_err(|e| self.name_file(e)),
        }
    }
}

/// `AutoModel`: builds the class of a config whatever its task, as a [`TaskModel`].
#[derive(Clone, Copy, Debug)]
pub struct AutoModel;

impl AutoModel {
    /// The model of `config` on `weights` (a checkpoint or untrained).
    ///
    /// # Errors
    /// Any error of the config's fields or of the weights.
    pub fn from_config(config: &AutoConfig, weights: &mut Weights) -> Result<Box<dyn TaskModel>> {
        config.build_task(weights)
    }

    /// The model of a config with untrained weights drawn from `seed`, converted to `dtype`
    /// and moved to `device`.
    ///
    /// # Errors
    /// As [`AutoModel::from_config`].
    pub fn untrained(
        config: &AutoConfig,
        seed: i64,
        dtype: Kind,
        device: Device,
    ) -> Result<Box<dyn TaskModel>> {
        let mut w = Weights::untrained(config.class_name(), seed, config.initializer_range())
            .with_dtype(dtype)
            .with_device(device);
        Self::from_config(config, &mut w)
    }
}

/// `AutoModelForCausalLM`: builds the class of a config.
#[derive(Clone, Copy, Debug)]
pub struct AutoModelForCausalLM;

impl AutoModelForCausalLM {
    /// The model of `config` on `weights` (a checkpoint or untrained).
    ///
    /// # Errors
    /// Any error of the config's fields or of the weights.
    pub fn from_config(config: &AutoConfig, weights: &mut Weights) -> Result<Box<dyn CausalLM>> {
        config.build(weights)
    }

    /// The model of a config with untrained weights drawn from `seed` (see
    /// [`Weights::untrained`]), converted to `dtype` and moved to `device`.
    ///
    /// # Errors
    /// As [`AutoModelForCausalLM::from_config`].
    pub fn untrained(
        config: &AutoConfig,
        seed: i64,
        dtype: Kind,
        device: Device,
    ) -> Result<Box<dyn CausalLM>> {
        let mut w = Weights::untrained(config.class_name(), seed, config.initializer_range())
            .with_dtype(dtype)
            .with_device(device);
        Self::from_config(config, &mut w)
    }

    /// Loads a checkpoint directory written by `save_pretrained`: `config.json` and its
    /// safetensors, in the checkpoint's type unless `dtype` asks another one.
    ///
    /// # Errors
    /// As [`AutoConfig::from_file`], [`Weights::from_dir`] and the model's build.
    pub fn from_pretrained(
        dir: &Path,
        dtype: Option<Kind>,
        device: Device,
    ) -> Result<Box<dyn CausalLM>> {
        let config = AutoConfig::from_file(&dir.join("config.json"))?;
        let mut w = Weights::from_dir(dir, config.class_name())?.with_device(device);
        if let Some(d) = dtype {
            w = w.with_dtype(d);
        }
        Self::from_config(&config, &mut w)
    }
}
