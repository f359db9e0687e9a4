//! SAM exports only with `patched_SamMaskDecoder.forward`: without it the export stops on the
//! `if` on the prompt tokens' sum; with it the exported program and ONNX Runtime match eager
//! on the mask-generation sets (another batch, another number of prompts and of points), and
//! the `cond` also takes its other branch (no prompt token joined, a shorter token sequence)
//! when the prompt embeddings are zeros.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{export_and_compare, stops_at_read, try_export};
use onnx_diagnostic_core::{
    Dim, DynSpec, DynamicShapes, ExportOptions, FnModule, Inputs, Module, PatchOptions, Value,
    export, torch_export_patches,
};
use onnx_diagnostic_onnx::{LowerOptions, OnnxProgram, lower, max_diff};
use onnx_diagnostic_transformers::{
    models::sam::{SamConfig, SamModel},
    weights::Weights,
};
use tch::{Device, Kind};

/// 64-pixel images in 8-pixel patches (an 8 x 8 grid), windows of 3 and one global layer; a
/// two-layer mask decoder of width 16.
const TINY: &str = r#"{"architectures": ["SamModel"], "model_type": "sam",
 "vision_config": {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
  "image_size": 64, "patch_size": 8, "window_size": 3, "global_attn_indexes": [1],
  "output_channels": 16, "mlp_dim": 24, "num_pos_feats": 8},
 "prompt_encoder_config": {"hidden_size": 16, "image_size": 64, "patch_size": 8,
  "mask_input_channels": 8},
 "mask_decoder_config": {"hidden_size": 16, "num_attention_heads": 2, "mlp_dim": 32,
  "iou_head_hidden_dim": 24}}"#;

fn tiny() -> SamModel {
    let cfg = SamConfig::from_json(TINY).unwrap();
    let mut w = Weights::untrained("SamModel", 7, 0.2);
    SamModel::new(cfg, &mut w).unwrap()
}

#[test]
fn sam_exports_only_with_its_mask_decoder_patch_and_matches_eager_in_ort() {
    let patches = onnx_diagnostic_patch_transformers::patches();
    assert!(
        patches.contains(&"patched_SamMaskDecoder.forward"),
        "{patches:?}"
    );
    assert!(
        onnx_diagnostic_serialization::supported_classes().contains(&"SamImageSegmentationOutput")
    );
    let model = tiny();
    // Without the patch: the `if` on the sum, in the model's file.
    let e = try_export(&model, &["patched_SamMaskDecoder.forward"]).unwrap_err();
    stops_at_read(
        &e,
        "sam/mask_decoder.rs",
        "if sparse_prompt_embeddings.sum().item() != 0",
    );

    // With it: the exported program and ORT match eager on the three sets.
    let sets = export_and_compare(&model);
    let shape = |i: usize, k: &str| match &sets[i].1.iter().find(|(n, _)| n == k).unwrap().1 {
        Value::Tensor(t) => t.concrete_shape(),
        _ => panic!(),
    };
    assert_eq!(shape(0, "input_points"), [2, 2, 10, 2]);
    assert_eq!(shape(1, "input_points"), [3, 2, 10, 2]);
    assert_eq!(shape(2, "input_points"), [1, 3, 4, 2]);
}

/// The mask decoder alone, exported with its prompt tokens as an input: the `cond` keeps both
/// lengths of the token sequence, and ORT takes the branch of the values.
#[test]
fn the_mask_decoder_cond_takes_both_branches_in_ort() {
    let model = tiny();
    let decoder = model.mask_decoder().clone();
    let f = FnModule::new(
        "SamMaskDecoder",
        &["image_embeddings", "image_pe", "sparse", "dense"],
        move |i: &Inputs| {
            let (masks, iou) = decoder.forward(
                i.tensor("image_embeddings")?,
                i.tensor("image_pe")?,
                Some(i.tensor("sparse")?),
                i.tensor("dense")?,
                true,
            )?;
            Ok(Value::Tuple(vec![Value::from(masks), Value::from(iou)]))
        },
    );
    let f32 = (Kind::Float, Device::Cpu);
    tch::manual_seed(3);
    let set = |b: i64, p: i64, n: i64, zero: bool| {
        let sparse = if zero {
            tch::Tensor::zeros([b, p, n, 16], f32)
        } else {
            tch::Tensor::randn([b, p, n, 16], f32)
        };
        vec![
            (
                "image_embeddings".to_owned(),
                Value::from(tch::Tensor::randn([b, 16, 8, 8], f32)),
            ),
            (
                "image_pe".to_owned(),
                Value::from(tch::Tensor::randn([b, 16, 8, 8], f32)),
            ),
            ("sparse".to_owned(), Value::from(sparse)),
            (
                "dense".to_owned(),
                Value::from(tch::Tensor::randn([b, 16, 8, 8], f32)),
            ),
        ]
    };
    let batch = Dim::new("batch");
    let image = || DynSpec::dims([(0, batch.clone())]);
    let ds = DynamicShapes {
        args: Vec::new(),
        kwargs: vec![
            ("image_embeddings".to_owned(), image()),
            ("image_pe".to_owned(), image()),
            (
                "sparse".to_owned(),
                DynSpec::dims([
                    (0, batch.clone()),
                    (1, Dim::new("point_batch")),
                    (2, Dim::new("tokens")),
                ]),
            ),
            ("dense".to_owned(), image()),
        ],
    };
    let guard = torch_export_patches(PatchOptions {
        patch_transformers: true,
        ..PatchOptions::default()
    })
    .unwrap();
    let ep = export(
        &f,
        &[],
        &set(2, 2, 3, false),
        Some(&ds),
        &ExportOptions::default(),
    )
    .unwrap();
    let onnx = lower(&ep, &LowerOptions::default()).unwrap();
    assert!(
        onnx.graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .any(|n| n.op_type.as_deref() == Some("If")),
        "no If node"
    );
    let mut session = OnnxProgram::from_model(&onnx, &ep).unwrap();
    let runs: Vec<_> = [(3, 1, 5, false), (1, 2, 2, true), (2, 3, 1, true)]
        .into_iter()
        .map(|(b, p, n, zero)| {
            let s = set(b, p, n, zero);
            let got = (ep.run(&[], &s).unwrap(), session.run(&[], &s).unwrap());
            (s, got)
        })
        .collect();
    drop(guard);
    for (s, (from_ep, from_ort)) in &runs {
        let eager = f.forward(&Inputs::bind_for(&f, &[], s).unwrap()).unwrap();
        for (what, v) in [("exported program", from_ep), ("ORT", from_ort)] {
            let d = max_diff(&eager, v);
            assert!(d.abs <= 1e-4 && d.dnan == 0.0, "{what}: {d:?}");
        }
    }
    // The zero prompts took the other branch: the output differs from the one with the
    // prompt tokens joined (eager on the same zeros, joined by hand, is another result).
    let (s, _) = &runs[1];
    let joined = {
        let sparse = s[2].1.clone();
        let Value::Tensor(sparse) = sparse else {
            panic!()
        };
        let t = |k: usize| match &s[k].1 {
            Value::Tensor(t) => t.clone(),
            _ => panic!(),
        };
        let d = model.mask_decoder();
        let tokens = onnx_diagnostic_core::Tensor::cat(
            &[
                &d.output_tokens(&t(0).size(0).unwrap(), &sparse.size(1).unwrap())
                    .unwrap(),
                &sparse,
            ],
            2,
        )
        .unwrap();
        d.decode(&tokens, &t(0), &t(1), &t(3), true).unwrap().0
    };
    let eager = f.forward(&Inputs::bind_for(&f, &[], s).unwrap()).unwrap();
    let Value::Tuple(v) = &eager else { panic!() };
    let Value::Tensor(masks) = &v[0] else {
        panic!()
    };
    let gap = (masks.as_tch() - joined.as_tch())
        .abs()
        .max()
        .double_value(&[]);
    assert!(gap > 1e-3, "the branches gave the same masks: {gap}");
}
