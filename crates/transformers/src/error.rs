//! Errors of the model crate: each names the model, the file or the weight, and what to do.

use std::path::PathBuf;

/// An error of the model crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `config.json` cannot be read or does not describe a supported model.
    #[error("config {path}: {message}")]
    Config {
        /// The file (or `<memory>`).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A checkpoint lacks a weight or holds one of another shape.
    #[error("{model}: weight {name}: {message}")]
    Weight {
        /// The model class.
        model: String,
        /// The checkpoint name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A config field holds a value no model can be built with (a zero or negative size, heads
    /// that do not divide, ...).
    #[error("{model}: config field {field}: {message}")]
    ConfigField {
        /// The model class.
        model: String,
        /// The `config.json` key.
        field: String,
        /// What is wrong and what it must be.
        message: String,
    },
    /// The config names an architecture this crate does not build.
    #[error(
        "architecture {architecture} is not supported; supported: {}",
        supported.join(", ")
    )]
    UnsupportedArchitecture {
        /// `architectures[0]` (or the `model_type` when the config has no architectures).
        architecture: String,
        /// The classes of the registry.
        supported: Vec<String>,
    },
    /// An activation name (`hidden_act`) this crate does not compute.
    #[error("{model}: activation {name:?} {message}")]
    Activation {
        /// The model class.
        model: String,
        /// The name in the config.
        name: String,
        /// Why, and what is accepted.
        message: String,
    },
    /// Checkpoint tensors that no module of the model read.
    #[error(
        "{model}: the checkpoint holds {} tensor(s) the model does not read: {}; it was written \
         for another architecture or configuration (check architectures, model_type and the \
         sizes in config.json)",
        names.len(),
        names.join(", ")
    )]
    UnusedWeights {
        /// The model class.
        model: String,
        /// The unread tensors.
        names: Vec<String>,
    },
    /// A checkpoint file cannot be read.
    #[error("cannot read checkpoint {path}: {message}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A feature of the config that this crate does not implement yet.
    #[error("{model}: {feature} is not supported yet")]
    Unsupported {
        /// The model class.
        model: String,
        /// The feature (`rope_type 'yarn'`).
        feature: String,
    },
    /// An input option (`--iop KEY=VALUE`) that the task does not know or cannot take.
    #[error("input option {key}={value}: {message}")]
    InputOption {
        /// The option.
        key: String,
        /// Its value as given.
        value: String,
        /// What the task accepts.
        message: String,
    },
    /// A task the model's inputs cannot be made for (`-t TASK`).
    #[error("{model} takes no {task} inputs; its tasks: {supported}")]
    UnsupportedTask {
        /// The model's class.
        model: String,
        /// The task asked for.
        task: String,
        /// The tasks it takes.
        supported: String,
    },
    /// An error of the engine while running the model.
    #[error(transparent)]
    Core(#[from] onnx_diagnostic_core::Error),
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// The text of a `config.json` at `path`.
///
/// # Errors
/// [`Error::Config`] naming the file that cannot be read.
pub(crate) fn read_config(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::Config {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// The JSON object of a config text.
///
/// # Errors
/// [`Error::Config`] naming `path` when the text is not a JSON object.
pub(crate) fn parse_config(text: &str, path: &std::path::Path) -> Result<serde_json::Value> {
    let fail = |message: String| Error::Config {
        path: path.to_owned(),
        message,
    };
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| fail(e.to_string()))?;
    if json.is_object() {
        Ok(json)
    } else {
        Err(fail("not a JSON object".to_owned()))
    }
}

/// An error of the model crate as an engine error naming the model (an engine error stays
/// itself).
pub(crate) fn core_error(model: &str, e: Error) -> onnx_diagnostic_core::Error {
    match e {
        Error::Core(c) => c,
        other => onnx_diagnostic_core::Error::Model {
            model: model.to_owned(),
            message: other.to_string(),
        },
    }
}

/// The family of a config that several classes share (`(model_type, class, family)` rows): its
/// `model_type`, else its `architectures[0]`.
///
/// # Errors
/// [`Error::Config`] naming `path` when neither names one of `families`.
pub(crate) fn config_family<F: Copy>(
    raw: &serde_json::Value,
    path: &std::path::Path,
    families: &[(&str, &str, F)],
) -> Result<F> {
    let fail = |message: String| Error::Config {
        path: path.to_owned(),
        message,
    };
    let types: Vec<&str> = families.iter().map(|(t, _, _)| *t).collect();
    if let Some(t) = raw.get("model_type").and_then(serde_json::Value::as_str) {
        return families
            .iter()
            .find(|(m, _, _)| *m == t)
            .map(|(_, _, f)| *f)
            .ok_or_else(|| {
                fail(format!(
                    "model_type {t:?} is not one of {}",
                    types.join(", ")
                ))
            });
    }
    let arch = raw
        .pointer("/architectures/0")
        .and_then(serde_json::Value::as_str);
    families
        .iter()
        .find(|(_, c, _)| Some(*c) == arch)
        .map(|(_, _, f)| *f)
        .ok_or_else(|| {
            let classes: Vec<&str> = families.iter().map(|(_, c, _)| *c).collect();
            fail(format!(
                "no model_type ({}) nor an architecture of them ({})",
                types.join(", "),
                classes.join(", ")
            ))
        })
}

/// The keys of `defaults` (a JSON object) that `raw` leaves out, added to it: the defaults of
/// the config class, before the config is read.
pub(crate) fn fill_defaults(raw: &mut serde_json::Value, defaults: &serde_json::Value) {
    if let (Some(o), Some(d)) = (raw.as_object_mut(), defaults.as_object()) {
        for (k, v) in d {
            o.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
}

/// Checks a config's sizes: each of `sizes` at least 1, and `heads` dividing `width` (the
/// `hidden_size` / `num_attention_heads` of a vision tower).
///
/// # Errors
/// [`Error::ConfigField`] naming `{prefix}{name}` and what it must be.
pub(crate) fn check_sizes(
    model: &str,
    prefix: &str,
    sizes: &[(&str, i64)],
    (width, heads): (i64, i64),
) -> Result<()> {
    let field = |name: &str, message: String| Error::ConfigField {
        model: model.to_owned(),
        field: format!("{prefix}{name}"),
        message,
    };
    if let Some((name, v)) = sizes.iter().find(|(_, v)| *v < 1) {
        return Err(field(name, format!("{v}: must be at least 1")));
    }
    if heads < 1 || width % heads != 0 {
        return Err(field(
            "num_attention_heads",
            format!("{heads}: must divide hidden_size {width}"),
        ));
    }
    Ok(())
}
