//! Hugging Face transformers architectures written on the engine's `Tensor`, reading
//! `config.json` and safetensors checkpoints as they are. Filled by the models issue.
