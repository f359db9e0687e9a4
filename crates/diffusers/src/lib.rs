//! Diffusers architectures (`UNet2DConditionModel`, ...) written on the engine's `Tensor`.
//! Filled by the diffusion models issue.
