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
    /// An error of the engine while running the model.
    #[error(transparent)]
    Core(#[from] onnx_diagnostic_core::Error),
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
