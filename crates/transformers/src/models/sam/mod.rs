//! SAM (`SamModel`, transformers 5.23's `models/sam/modeling_sam.py`). Built so far: the image
//! encoder ([`vision`], `SamVisionEncoder`) and `SamVisionModel` over it; the prompt encoder,
//! the mask decoder and the mask-generation task are not written yet (issue 25).

pub mod vision;

use std::path::Path;

use onnx_diagnostic_core::{Inputs, Module, Result as CoreResult, Tensor, Value};

pub use vision::{
    SamChannelLayerNorm, SamVisionAttention, SamVisionConfig, SamVisionEncoder, SamVisionLayer,
};

use crate::{
    error::{Error, Result},
    weights::Weights,
};

impl SamVisionConfig {
    /// Parses the text of a `SamVisionConfig`'s `config.json` (`model_type`
    /// `sam_vision_model`), the keys left out taking the class's defaults.
    ///
    /// # Errors
    /// [`Error::Config`] for another `model_type`, [`Error::ConfigField`] naming a field.
    pub fn from_json(text: &str) -> Result<Self> {
        Self::parse(text, Path::new("<memory>"))
    }

    /// Reads a `config.json`.
    ///
    /// # Errors
    /// As [`SamVisionConfig::from_json`], naming the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::parse(&crate::error::read_config(path)?, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Self> {
        let raw = crate::error::parse_config(text, path)?;
        if let Some(t) = raw.get("model_type").and_then(serde_json::Value::as_str)
            && t != "sam_vision_model"
        {
            return Err(Error::Config {
                path: path.to_owned(),
                message: format!(
                    "model_type {t:?}: SamVisionModel takes a sam_vision_model config"
                ),
            });
        }
        let cfg: SamVisionConfig = serde_path_to_error::deserialize(raw)
            .map_err(|e| super::llama::parse_error("SamVisionModel", path, &e))?;
        cfg.validate("SamVisionModel", "")?;
        Ok(cfg)
    }
}

/// `SamVisionModel`: the image encoder alone.
#[derive(Clone, Debug)]
pub struct SamVisionModel {
    /// The configuration.
    pub config: SamVisionConfig,
    /// The encoder.
    pub vision_encoder: SamVisionEncoder,
    params: Vec<(String, Tensor)>,
}

impl SamVisionModel {
    /// Builds the model from a config and weights (a checkpoint or untrained).
    ///
    /// # Errors
    /// A missing or misshaped weight, checkpoint tensors no module reads.
    pub fn new(config: SamVisionConfig, weights: &mut Weights) -> Result<Self> {
        let vision_encoder = SamVisionEncoder::load(&weights.root().pp("vision_encoder"), &config)?;
        let params = weights.finish()?;
        Ok(Self {
            config,
            vision_encoder,
            params,
        })
    }

    /// Loads a checkpoint directory (`config.json` + safetensors) in the checkpoint's type.
    ///
    /// # Errors
    /// As [`SamVisionConfig::from_file`], [`Weights::from_dir`] and [`Self::new`].
    pub fn from_pretrained(dir: &Path) -> Result<Self> {
        let config = SamVisionConfig::from_file(&dir.join("config.json"))?;
        let mut weights = Weights::from_dir(dir, "SamVisionModel")?;
        Self::new(config, &mut weights)
    }
}

impl Module for SamVisionModel {
    fn class_name(&self) -> String {
        "SamVisionModel".to_owned()
    }

    fn forward_signature(&self) -> Vec<String> {
        vec!["pixel_values".to_owned()]
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.params.clone()
    }

    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// `last_hidden_state` `[batch, output_channels, grid, grid]`.
    fn forward(&self, inputs: &Inputs) -> CoreResult<Value> {
        Ok(Value::from(
            self.vision_encoder
                .forward(inputs.tensor("pixel_values")?)?,
        ))
    }
}
