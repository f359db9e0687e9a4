//! The diffusers side of the `Auto*` registry: a config whose `_class_name` (diffusers'
//! `ConfigMixin` key) names a class of this crate. The CLI asks [`is_diffusers_config`] first,
//! then builds with [`from_config_json`].

use std::path::Path;

use onnx_diagnostic_transformers::{Error, Result, TaskModel, weights::Weights};

use crate::{UNet2DConditionConfig, UNet2DConditionModel};

/// The classes this crate builds.
pub const SUPPORTED: &[&str] = &["UNet2DConditionModel"];

/// The `_class_name` of a config text, when it has one (a diffusers config).
pub fn class_name(text: &str) -> Option<String> {
    let json: serde_json::Value = serde_json::from_str(text).ok()?;
    json.get("_class_name")?.as_str().map(str::to_owned)
}

/// Whether a config text is a diffusers config (it has `_class_name`).
pub fn is_diffusers_config(text: &str) -> bool {
    class_name(text).is_some()
}

/// The model of a diffusers config on `weights`; `path` names the config in errors.
///
/// # Errors
/// [`Error::UnsupportedArchitecture`] for a class this crate does not build, then any error of
/// the config or of the weights.
pub fn from_config_json(
    text: &str,
    path: &Path,
    weights: &mut Weights,
) -> Result<Box<dyn TaskModel>> {
    match class_name(text).as_deref() {
        Some("UNet2DConditionModel") => {
            let config = UNet2DConditionConfig::from_json(text, path)?;
            Ok(Box::new(UNet2DConditionModel::new(config, weights)?))
        }
        other => Err(Error::UnsupportedArchitecture {
            architecture: other.unwrap_or("<no _class_name>").to_owned(),
            supported: SUPPORTED.iter().map(|s| (*s).to_owned()).collect(),
        }),
    }
}
