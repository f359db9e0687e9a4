//! Diffusers architectures (`UNet2DConditionModel`, ...) written on the engine's `Tensor`.
//! The models arrive with the diffusion models issue; the output class they return is here so
//! that its serializer (crates/serialization) can be registered today.

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

pub use outputs::UNet2DConditionOutput;
