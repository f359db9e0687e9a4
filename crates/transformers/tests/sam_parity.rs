//! Parity of SAM's image encoder (`SamVisionModel`) with transformers 5.23 on the checkpoint
//! its `save_pretrained` writes: windowed layers whose windows do not divide the grid (padded
//! and cropped), a global layer, relative positions and the neck, within 1e-4 in float32; and
//! the export with a dynamic batch matches eager in ONNX Runtime on other batch sizes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{diff, run_reference, t};
use onnx_diagnostic_core::{
    Dim, DynSpec, DynamicShapes, ExportOptions, Inputs, Module, Value, export,
};
use onnx_diagnostic_onnx::{LowerOptions, OnnxProgram, lower, max_diff};
use onnx_diagnostic_transformers::models::sam::{SamModel, SamVisionModel};

/// 32-pixel images in 4-pixel patches (an 8 x 8 grid), windows of 3 (the grid padded to 9),
/// layer 1 global, 2 heads, the neck to 8 channels.
const TINY: &str = r#"{"hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 2,
  "image_size": 32, "patch_size": 4, "window_size": 3, "global_attn_indexes": [1],
  "output_channels": 8, "mlp_dim": 24}"#;

#[test]
fn sam_vision_encoder_matches_transformers_and_exports_with_a_dynamic_batch() {
    let (dir, io) = run_reference(
        "make_sam_vision_reference.py",
        "sam",
        "vision",
        TINY,
        &["--batches=2,1,3"],
    );
    let model = SamVisionModel::from_pretrained(&dir).unwrap();
    let ours: i64 = model
        .named_parameters()
        .iter()
        .map(|(_, t)| t.as_tch().numel() as i64)
        .sum();
    assert_eq!(ours, io["n_parameters"].int64_value(&[]), "parameter count");
    let set = |b: i64| {
        vec![(
            "pixel_values".to_owned(),
            Value::Tensor(t(&io, &format!("b{b}.pixel_values"))),
        )]
    };
    for b in [2, 1, 3] {
        let out = model
            .forward(&Inputs::bind_for(&model, &[], &set(b)).unwrap())
            .unwrap();
        let Value::Tensor(h) = &out else {
            panic!("not a tensor")
        };
        let d = diff(h, &io[&format!("b{b}.last_hidden_state")]);
        assert!(d <= 1e-4, "batch {b}: {d}");
    }
    // Another image size is refused naming the input.
    let small = vec![(
        "pixel_values".to_owned(),
        Value::from(tch::Tensor::zeros(
            [1, 3, 16, 16],
            (tch::Kind::Float, tch::Device::Cpu),
        )),
    )];
    let e = model
        .forward(&Inputs::bind_for(&model, &[], &small).unwrap())
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("pixel_values has shape [1, 3, 16, 16]"),
        "{e}"
    );

    let ds = DynamicShapes {
        args: Vec::new(),
        kwargs: vec![(
            "pixel_values".to_owned(),
            DynSpec::dims([(0, Dim::new("batch"))]),
        )],
    };
    let ep = export(&model, &[], &set(2), Some(&ds), &ExportOptions::default()).unwrap();
    let onnx = lower(&ep, &LowerOptions::default()).unwrap();
    let mut session = OnnxProgram::from_model(&onnx, &ep).unwrap();
    for b in [1, 3] {
        let eager = model
            .forward(&Inputs::bind_for(&model, &[], &set(b)).unwrap())
            .unwrap();
        for (what, got) in [
            ("exported program", ep.run(&[], &set(b)).unwrap()),
            ("ORT", session.run(&[], &set(b)).unwrap()),
        ] {
            let d = max_diff(&eager, &got);
            assert!(d.abs <= 1e-4 && d.dnan == 0.0, "batch {b} {what}: {d:?}");
        }
    }
}

/// SamModel at width 16: 64-pixel images in 8-pixel patches (an 8 x 8 grid), windows of 3,
/// layer 1 global; a two-layer mask decoder with 2 heads over 8 features (downsample 2).
const SAM: &str = r#"{"vision_config": {"hidden_size": 16, "num_hidden_layers": 2,
  "num_attention_heads": 2, "image_size": 64, "patch_size": 8, "window_size": 3,
  "global_attn_indexes": [1], "output_channels": 16, "mlp_dim": 24, "num_pos_feats": 8},
 "prompt_encoder_config": {"hidden_size": 16, "image_size": 64, "patch_size": 8,
  "mask_input_channels": 8},
 "mask_decoder_config": {"hidden_size": 16, "num_attention_heads": 2, "mlp_dim": 32,
  "iou_head_hidden_dim": 24}}"#;

/// Another SamModel: the positional embeddings not tied, no absolute or relative positions,
/// a GELU decoder MLP, cross-attention at full width (downsample 1), an IoU head of two
/// layers and 2 multimask outputs, 3 heads.
const SAM_OTHER: &str = r#"{"tie_word_embeddings": false,
 "vision_config": {"hidden_size": 12, "num_hidden_layers": 1, "num_attention_heads": 3,
  "image_size": 48, "patch_size": 8, "window_size": 4, "global_attn_indexes": [],
  "output_channels": 24, "use_abs_pos": false, "use_rel_pos": false, "num_pos_feats": 12},
 "prompt_encoder_config": {"hidden_size": 24, "image_size": 48, "patch_size": 8,
  "mask_input_channels": 4, "hidden_act": "relu"},
 "mask_decoder_config": {"hidden_size": 24, "num_attention_heads": 3, "mlp_dim": 16,
  "hidden_act": "gelu", "attention_downsample_rate": 1, "iou_head_depth": 2,
  "iou_head_hidden_dim": 8, "num_multimask_outputs": 2, "num_hidden_layers": 1}}"#;

/// The inputs of set `name` of the reference.
fn sam_inputs(
    io: &std::collections::HashMap<String, tch::Tensor>,
    name: &str,
) -> Vec<(String, Value)> {
    [
        "pixel_values",
        "input_points",
        "input_labels",
        "input_boxes",
        "input_masks",
    ]
    .iter()
    .filter(|k| io.contains_key(&format!("{name}.{k}")))
    .map(|k| {
        (
            (*k).to_owned(),
            Value::Tensor(t(io, &format!("{name}.{k}"))),
        )
    })
    .collect()
}

/// Checks `(iou_scores, pred_masks)` against the reference's `{prefix}.*` (`config` names
/// the model in failures).
fn check_segmentation(
    model: &SamModel,
    io: &std::collections::HashMap<String, tch::Tensor>,
    inputs: &[(String, Value)],
    (config, prefix): (&str, &str),
) {
    let (iou, masks) = model
        .segment(&Inputs::bind_for(model, &[], inputs).unwrap())
        .unwrap();
    for (what, ours) in [("iou_scores", &iou), ("pred_masks", &masks)] {
        let d = diff(ours, &io[&format!("{prefix}.{what}")]);
        assert!(d <= 1e-4, "{config} {prefix} {what}: {d}");
    }
}

#[test]
fn sam_model_matches_transformers_on_points_labels_boxes_and_masks() {
    // pb: points and boxes; lab: labels 1/0/-1/-10 without boxes (a padding point is added);
    // mask: every prompt kind and a mask; box: boxes alone; none: the image alone.
    let sets = "--sets=pb:2:2:3:1:0:0,lab:2:3:4:0:1:0,mask:1:1:2:1:1:1,box:2:2:0:1:0:0,\
                none:2:1:0:0:0:0";
    for (name, config) in [("sam", SAM), ("sam_other", SAM_OTHER)] {
        let (dir, io) = run_reference(
            "make_sam_reference.py",
            "sam",
            name,
            config,
            &[sets, "--embeddings=pb", "--single=lab"],
        );
        let mut model = SamModel::from_pretrained(&dir).unwrap();
        let ours: i64 = model
            .named_parameters()
            .iter()
            .map(|(_, t)| t.as_tch().numel() as i64)
            .sum();
        assert_eq!(
            ours,
            io["n_parameters"].int64_value(&[]),
            "{name}: parameter count"
        );
        for set in ["pb", "lab", "mask", "box", "none"] {
            check_segmentation(&model, &io, &sam_inputs(&io, set), (name, set));
        }
        // From the image embeddings instead of the pixels.
        let e = t(&io, "pb.image_embeddings");
        let d = diff(
            &model
                .get_image_embeddings(&t(&io, "pb.pixel_values"))
                .unwrap(),
            e.as_tch(),
        );
        assert!(d <= 1e-4, "{name} image embeddings: {d}");
        let mut inputs = sam_inputs(&io, "pb");
        inputs[0] = ("image_embeddings".to_owned(), Value::Tensor(e));
        check_segmentation(&model, &io, &inputs, (name, "pb.emb"));
        // The single mask.
        model.multimask_output = false;
        check_segmentation(&model, &io, &sam_inputs(&io, "lab"), (name, "lab.single"));
        model.multimask_output = true;
    }
}
