//! The diffusers entries of the offline catalog: model id → `config.json` with the values the
//! onnx-diagnostic 0.9.3 wheel caches (`hub_data_cached_configs.py`), reduced as its
//! `tasks/text_to_image.py` reduces them (`sample_size` at most 32, `cross_attention_dim` at
//! most 64; the tiny checker's values are already within).

/// `(model id, config.json)` pairs.
const CONFIGS: &[(&str, &str)] = &[(
    "diffusers/tiny-torch-full-checker/unet",
    r#"{"_class_name": "UNet2DConditionModel", "_diffusers_version": "0.8.0",
    "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [32, 64],
    "center_input_sample": false, "cross_attention_dim": 32,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"], "downsample_padding": 1,
    "dual_cross_attention": false, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4,
    "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05,
    "norm_num_groups": 32, "out_channels": 4, "sample_size": 32,
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "use_linear_projection": false}"#,
)];

/// The `config.json` of a catalog id.
pub fn config_json(id: &str) -> Option<&'static str> {
    CONFIGS.iter().find(|(k, _)| *k == id).map(|(_, v)| *v)
}

/// The catalog ids.
pub fn model_ids() -> Vec<&'static str> {
    CONFIGS.iter().map(|(k, _)| *k).collect()
}

/// The task a catalog id is published with.
pub fn task(id: &str) -> Option<&'static str> {
    config_json(id).map(|_| "text-to-image")
}
