//! Diffusers architectures written on the engine's `Tensor`, as diffusers 0.42 writes them:
//! `UNet2DConditionModel` (Stable Diffusion's denoiser) with its blocks and layers, its
//! `config.json` and `diffusion_pytorch_model.safetensors` names, the text-to-image task's
//! inputs ([`text_to_image`]) and a catalog of configs ([`catalog`]).
//!
//! The shared machinery (weights, checkpoint reading, `Linear`, `LayerNorm`, activations,
//! errors, the [`TaskModel`](onnx_diagnostic_transformers::TaskModel) trait) is
//! crates/transformers': a diffusers model reads a checkpoint as a transformers one does, and
//! `validate` runs both through the same trait.

pub mod auto;
pub mod catalog;
pub mod models;
pub mod nn;
pub mod text_to_image;

pub mod outputs {
    //! The output classes of diffusers' models.

    use onnx_diagnostic_core::dataclass;

    dataclass! {
        /// `UNet2DConditionOutput` (`diffusers.models.unets.unet_2d_condition`).
        UNet2DConditionOutput {
            /// The denoised sample `[batch, channels, height, width]`.
            sample,
        }
    }
}

pub use models::unets::unet_2d_condition::{Config as UNet2DConditionConfig, UNet2DConditionModel};
pub use outputs::UNet2DConditionOutput;
