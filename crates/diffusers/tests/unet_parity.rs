//! Parity of `UNet2DConditionModel` with diffusers 0.42.1: the checkpoint diffusers'
//! `save_pretrained` writes, the same inputs, the denoised sample within 1e-4 in float32 (and
//! within float16's rounding in float16), on the export resolution, another multiple of the up
//! factor and odd sizes (the upsample-to-skip-size path).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{inputs, max_abs, reference, sample_of, tiny_config};
use onnx_diagnostic_core::{Inputs, Module};
use onnx_diagnostic_diffusers::{UNet2DConditionModel, auto};
use onnx_diagnostic_transformers::weights::Weights;

const SETS: &str = "inputs:2:32:32:4,res:2:40:48:5,odd:1:33:35:4";

fn check(
    model: &UNet2DConditionModel,
    io: &std::collections::HashMap<String, tch::Tensor>,
    sets: &[&str],
    atol: f64,
) {
    let ours: i64 = model
        .named_parameters()
        .iter()
        .map(|(_, t)| t.as_tch().numel() as i64)
        .sum();
    assert_eq!(
        ours,
        io["n_parameters"].int64_value(&[0]),
        "parameter count"
    );
    for name in sets {
        let set = inputs(io, name);
        let got = model
            .forward(&Inputs::bind_for(model, &[], &set).unwrap())
            .unwrap();
        let got = sample_of(&got);
        let expected = &io[&format!("{name}.out")];
        let d = max_abs(&got, expected);
        assert!(d <= atol, "{name}: max abs diff {d} > {atol}");
        // Not a trivial output: the sample varies.
        assert!(expected.abs().max().double_value(&[]) > 1e-2, "{name}");
    }
}

#[test]
fn tiny_checker_unet_matches_diffusers_on_three_resolutions() {
    let (dir, io) = reference("tiny", tiny_config(), SETS, &[]);
    let model = UNet2DConditionModel::from_pretrained(&dir).unwrap();
    let names: Vec<String> = model
        .named_parameters()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for n in [
        "conv_in.weight",
        "time_embedding.linear_1.weight",
        "down_blocks.0.resnets.0.norm1.weight",
        "down_blocks.0.downsamplers.0.conv.weight",
        "down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k.weight",
        "down_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj.weight",
        "mid_block.attentions.0.proj_in.weight",
        "up_blocks.0.resnets.2.conv_shortcut.weight",
        "up_blocks.0.upsamplers.0.conv.weight",
        "conv_norm_out.weight",
    ] {
        assert!(names.contains(&n.to_owned()), "{n} not in {names:?}");
    }
    check(&model, &io, &["inputs", "res", "odd"], 1e-4);
}

#[test]
fn linear_projection_head_lists_scale_shift_padding_zero_and_three_blocks_match_diffusers() {
    // Every option the model builds on, away from the tiny checker's values: three blocks (an
    // up factor of 4), heads and cross widths per block, linear projections, two transformer
    // layers, scale-shift time embedding, Downsample2D's (0, 1, 0, 1) padding, only cross
    // attention in one block, a time-embedding activation, an odd timestep width.
    let config = r#"{"_class_name": "UNet2DConditionModel", "sample_size": 16,
    "in_channels": 3, "out_channels": 5, "block_out_channels": [16, 24, 32],
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D", "CrossAttnUpBlock2D"],
    "layers_per_block": [1, 2, 1], "attention_head_dim": [2, 4, 4], "norm_num_groups": 8,
    "cross_attention_dim": 20, "transformer_layers_per_block": 2,
    "use_linear_projection": true, "resnet_time_scale_shift": "scale_shift",
    "downsample_padding": 0, "only_cross_attention": [true, false, false],
    "time_embedding_act_fn": "silu", "flip_sin_to_cos": false, "freq_shift": 1,
    "center_input_sample": true, "mid_block_scale_factor": 2.0, "norm_eps": 1e-6}"#;
    let (dir, io) = reference(
        "options",
        config,
        "a:2:16:16:3,b:1:20:28:6,c:2:13:18:2",
        &[],
    );
    let model = UNet2DConditionModel::from_pretrained(&dir).unwrap();
    check(&model, &io, &["a", "b", "c"], 1e-4);
}

#[test]
fn float16_unet_matches_diffusers_in_float16() {
    let (dir, io) = reference(
        "tiny_fp16",
        tiny_config(),
        "inputs:2:32:32:4,odd:1:33:35:4",
        &["--dtype=float16"],
    );
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let mut w = Weights::from_dir(&dir, "UNet2DConditionModel")
        .unwrap()
        .with_dtype(tch::Kind::Half);
    let model = auto::from_config_json(&text, &dir.join("config.json"), &mut w).unwrap();
    for name in ["inputs", "odd"] {
        let set: Vec<_> = inputs(&io, name)
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    onnx_diagnostic_core::Value::Tensor(t) if t.kind() == tch::Kind::Float => {
                        onnx_diagnostic_core::Value::Tensor(t.to_kind(tch::Kind::Half).unwrap())
                    }
                    other => other,
                };
                (k, v)
            })
            .collect();
        let got = model
            .forward(&Inputs::bind_for(model.as_ref(), &[], &set).unwrap())
            .unwrap();
        let got = sample_of(&got);
        assert_eq!(got.kind(), tch::Kind::Half);
        let d = max_abs(&got, &io[&format!("{name}.out")]);
        // Both compute in float16 with the same kernels: the rounding of a few ulps of values
        // of order 1.
        assert!(d <= 1e-2, "{name}: {d}");
    }
}

#[test]
fn unsupported_configs_are_refused_naming_the_field() {
    let cases = [
        (
            r#"{"_class_name": "UNet2DConditionModel", "addition_embed_type": "text_time"}"#,
            "addition_embed_type",
        ),
        (
            r#"{"_class_name": "UNet2DConditionModel", "num_attention_heads": 8}"#,
            "num_attention_heads",
        ),
        (
            r#"{"_class_name": "UNet2DConditionModel", "block_out_channels": [32, 48], "down_block_types": ["DownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "UpBlock2D"]}"#,
            "norm_num_groups",
        ),
        (
            r#"{"_class_name": "UNet2DConditionModel", "layers_per_block": [1, 2]}"#,
            "layers_per_block",
        ),
        (
            r#"{"_class_name": "UNet2DConditionModel", "mid_block_type": "UNetMidBlock2D"}"#,
            "mid_block_type",
        ),
        (
            r#"{"_class_name": "UNet2DConditionModel", "in_channels": "four"}"#,
            "in_channels",
        ),
        (r#"{"_class_name": "VQModel"}"#, "VQModel"),
    ];
    for (config, field) in cases {
        let mut w = Weights::untrained("UNet2DConditionModel", 0, 0.02);
        let e = auto::from_config_json(config, std::path::Path::new("config.json"), &mut w)
            .err()
            .unwrap_or_else(|| panic!("{config} was accepted"))
            .to_string();
        assert!(e.contains(field), "{config}: {e}");
    }
}
