//! The models and their layers, one file per diffusers module.

pub mod attention;
pub mod embeddings;
pub mod resnet;
pub mod sampling;
pub mod transformer_2d;
pub mod unets;
