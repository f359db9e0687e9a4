//! `validate` on vision models (vision-language models, SAM): checkpoints saved by
//! transformers validate with other numbers of images (or prompts) than the export's, and
//! without the transformers patches the export stops where the model reads its data.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{
    saved_checkpoint, stops_without_transformers_patches, take_n_parameters, tiny_fails,
    validate_checkpoint, validate_ok,
};

/// A Qwen2-VL directory and a Qwen2.5-VL one (window attention, tied embeddings), each written
/// by transformers' `save_pretrained` (the hub's `visual.*` / `model.*` layout) from a config
/// no other test uses, validate with `-m DIR` for image-text-to-text: every set within 1e-4 in
/// ONNX Runtime, including `inputs2` (no image) and `inputs_images` (three images of other
/// sizes, one of two frames, after exporting on two), with the three vision patches; without
/// the transformers patches the export stops on the position ids' `grid_thw.tolist()`. The
/// catalog entry validates in float16 too.
#[test]
fn a_qwen2_vl_checkpoint_saved_by_transformers_validates_with_other_images() {
    let qwen2 = r#"{"text_config": {"vocab_size": 300, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0,
        "mrope_section": [2, 1, 1]}},
        "vision_config": {"depth": 2, "embed_dim": 32, "hidden_size": 32, "num_heads": 4,
        "patch_size": 2, "temporal_patch_size": 2, "spatial_merge_size": 2},
        "image_token_id": 299, "video_token_id": 298, "vision_start_token_id": 297,
        "vision_end_token_id": 296}"#;
    // Qwen2.5-VL with 3 vision blocks (the middle one full attention), windows of 2 x 2 merged
    // units that the sets' images cut at their edges, one key/value head, tied embeddings.
    let qwen2_5 = r#"{"model_type": "qwen2_5_vl", "tie_word_embeddings": true,
        "text_config": {"vocab_size": 260, "hidden_size": 24, "intermediate_size": 40,
        "num_hidden_layers": 1, "num_attention_heads": 3, "num_key_value_heads": 1,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
        "mrope_section": [2, 1, 1]}},
        "vision_config": {"depth": 3, "hidden_size": 16, "out_hidden_size": 24,
        "intermediate_size": 20, "num_heads": 2, "patch_size": 1, "temporal_patch_size": 2,
        "spatial_merge_size": 2, "window_size": 4, "fullatt_block_indexes": [1]},
        "image_token_id": 259, "video_token_id": 258, "vision_start_token_id": 257,
        "vision_end_token_id": 256}"#;
    let mut checkpoints = Vec::new();
    for (name, config, class, patch_values) in [
        ("qwen2_vl", qwen2, "Qwen2VLForConditionalGeneration", 24),
        (
            "qwen2_5_vl",
            qwen2_5,
            "Qwen2_5_VLForConditionalGeneration",
            6,
        ),
    ] {
        let ckpt = saved_checkpoint(
            &format!("validate_{name}"),
            "make_qwen2_vl_reference.py",
            config,
            &["--sets=x:1:2:0:1x2x2"],
        );
        let n_parameters = take_n_parameters(&ckpt);
        let (_, s) = validate_ok(&["-m".as_ref(), ckpt.as_os_str()]);
        assert_eq!(s["model_source"], "checkpoint");
        assert_eq!(s["model_class"], class);
        assert_eq!(s["model_task"], "image-text-to-text");
        assert_eq!(s["model_nweights"], n_parameters.to_string(), "{name}");
        for p in [
            "patched_VisionAttention.forward",
            "patched_Qwen2VisionTransformerPretrainedModel.forward",
            "patched_Qwen2VLModel.get_image_features",
        ] {
            assert!(s["export_patch"].contains(p), "{}", s["export_patch"]);
        }
        for sfx in ["", "22", "2_images"] {
            let abs: f64 = s[&format!("disc_onnx_ort_run{sfx}_abs")].parse().unwrap();
            assert!(abs <= 1e-4, "{name} {sfx}: {abs}");
            assert_eq!(s[&format!("disc_onnx_ort_run{sfx}_dnan")], "0.0");
        }
        // 2 images of 16 and 32 patches of `patch_values` values each.
        assert!(
            s["model_inputs"].contains(&format!(
                "pixel_values:T1s48x{patch_values},image_grid_thw:T7s2x3"
            )),
            "{}",
            s["model_inputs"]
        );
        checkpoints.push(ckpt);
    }
    let ckpt = &checkpoints[0];
    let err = tiny_fails(
        ckpt.to_str().unwrap(),
        &["--patch", "patch_transformers=False"],
    );
    assert!(
        err.contains("tolist") && err.contains("vision_utils.rs:"),
        "{err}"
    );
    let (_, s) = validate_ok(&[
        "-m".as_ref(),
        "tiny-random/qwen2-vl".as_ref(),
        "--dtype".as_ref(),
        "float16".as_ref(),
    ]);
    for sfx in ["", "22", "2_images"] {
        let abs: f64 = s[&format!("disc_onnx_ort_run{sfx}_abs")].parse().unwrap();
        assert!(abs <= 1.0 / 128.0, "float16 {sfx}: {abs}");
    }
}

/// A Gemma3 directory written by transformers' `save_pretrained` (the hub's
/// `language_model.model.*` / `vision_tower.*` layout, the SigLIP pooling head kept, an untied
/// head, a full layer before a sliding one whose window of 6 cuts the image blocks of 11
/// tokens, soft-capped logits) from a config no other test uses validates with `-m DIR` for
/// image-text-to-text: every set within 1e-4 in ONNX Runtime, including `inputs2` (no image)
/// and `inputs_images` (three images in one row, after exporting on one per row), with
/// `patched_Gemma3Model.get_placeholder_mask`; without the transformers patches the export
/// stops on the placeholder check's `raise`. The catalog's tiny-random/gemma-3 validates in
/// float16 within validate's tolerance.
#[test]
fn a_gemma3_checkpoint_saved_by_transformers_validates_with_other_images() {
    let config = r#"{"text_config": {"vocab_size": 320, "hidden_size": 24,
        "intermediate_size": 40, "num_hidden_layers": 2, "num_attention_heads": 3,
        "num_key_value_heads": 1, "head_dim": 8, "query_pre_attn_scalar": 8,
        "sliding_window": 6, "layer_types": ["full_attention", "sliding_attention"],
        "final_logit_softcapping": 30.0},
        "vision_config": {"hidden_size": 12, "intermediate_size": 20, "num_hidden_layers": 1,
        "num_attention_heads": 3, "image_size": 18, "patch_size": 3},
        "mm_tokens_per_image": 9, "image_token_index": 319, "boi_token_index": 317,
        "eoi_token_index": 318, "tie_word_embeddings": false}"#;
    let ckpt = saved_checkpoint(
        "validate_gemma3",
        "make_gemma3_reference.py",
        config,
        &["--sets=x:1:2:0:0:all"],
    );
    let n_parameters = take_n_parameters(&ckpt);
    let s = validate_checkpoint(
        &ckpt,
        ("Gemma3ForConditionalGeneration", "image-text-to-text"),
        n_parameters,
        &["patched_Gemma3Model.get_placeholder_mask"],
        &["", "22", "2_images"],
    );
    // 2 images of 18 x 18 pixels in the export set, 3 in one row in the last.
    assert!(
        s["model_inputs"].contains("pixel_values:T1s2x3x18x18"),
        "{}",
        s["model_inputs"]
    );
    stops_without_transformers_patches(&ckpt, "gemma3/multimodal.rs");
    let (_, s) = validate_ok(&[
        "-m".as_ref(),
        "tiny-random/gemma-3".as_ref(),
        "--dtype".as_ref(),
        "float16".as_ref(),
    ]);
    for sfx in ["", "22", "2_images"] {
        let abs: f64 = s[&format!("disc_onnx_ort_run{sfx}_abs")].parse().unwrap();
        assert!(abs <= 3e-2, "float16 {sfx}: {abs}");
    }
}

/// A SAM checkpoint written by transformers' `save_pretrained` (a grid of 6 patches padded to
/// windows of 4, one global layer, the positional embedding tied) validates through the CLI
/// on the mask-generation sets: one more image in `inputs2`, other numbers of prompts and
/// points in `inputs_points`, with `patched_SamMaskDecoder.forward`; without the transformers
/// patches the export stops on the `if` on the prompt tokens' sum.
#[test]
fn a_sam_checkpoint_saved_by_transformers_validates_with_other_prompts() {
    let config = r#"{"vision_config": {"hidden_size": 16, "num_hidden_layers": 2,
        "num_attention_heads": 2, "image_size": 96, "patch_size": 16, "window_size": 4,
        "global_attn_indexes": [1], "output_channels": 16, "mlp_dim": 20,
        "num_pos_feats": 8},
        "prompt_encoder_config": {"hidden_size": 16, "image_size": 96, "patch_size": 16,
        "mask_input_channels": 4},
        "mask_decoder_config": {"hidden_size": 16, "num_attention_heads": 4, "mlp_dim": 24,
        "iou_head_hidden_dim": 12, "num_hidden_layers": 1}}"#;
    let ckpt = saved_checkpoint(
        "validate_sam",
        "make_sam_reference.py",
        config,
        &["--sets=x:1:1:1:0:0:0"],
    );
    let n_parameters = take_n_parameters(&ckpt);
    let s = validate_checkpoint(
        &ckpt,
        ("SamModel", "mask-generation"),
        n_parameters,
        &["patched_SamMaskDecoder.forward"],
        &["", "22", "2_points"],
    );
    assert_eq!(s["n_node_If"], "1");
    assert!(
        s["model_inputs"].contains("pixel_values:T1s2x3x96x96"),
        "{}",
        s["model_inputs"]
    );
    stops_without_transformers_patches(&ckpt, "sam/mask_decoder.rs");
}

/// An Idefics checkpoint written by transformers' `save_pretrained` (the perceiver, two
/// additional tokens, vector gates, rotary tables of 100 positions) validates through the CLI
/// on the image-text-to-text sets: no image in `inputs2`, three in `inputs_images`, and a
/// length past the rotary tables in `inputs_long`, with `patched_IdeficsAttention.forward` and
/// `patched_IdeficsEmbedding.forward`; without the transformers patches the export stops on
/// the attention's comparison of a value of the data.
#[test]
fn an_idefics_checkpoint_saved_by_transformers_validates_past_its_rotary_tables() {
    let config = r#"{"vocab_size": 120, "additional_vocab_size": 2, "hidden_size": 24,
        "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 3,
        "max_position_embeddings": 100, "alpha_type": "vector", "alpha_initializer": "ones",
        "use_resampler": true, "perceiver_config": {"resampler_depth": 1,
        "resampler_n_heads": 2, "resampler_head_dim": 6, "resampler_n_latents": 5},
        "vision_config": {"embed_dim": 16, "image_size": 12, "patch_size": 4,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 24}}"#;
    let ckpt = saved_checkpoint(
        "validate_idefics",
        "make_idefics_reference.py",
        config,
        &["--sets=x:1:2:1:1:ones:given"],
    );
    let n_parameters = take_n_parameters(&ckpt);
    let s = validate_checkpoint(
        &ckpt,
        ("IdeficsForVisionText2Text", "image-text-to-text"),
        n_parameters,
        &[
            "patched_IdeficsAttention.forward",
            "patched_IdeficsEmbedding.forward",
        ],
        &["", "22", "2_images", "2_long"],
    );
    assert!(
        s["model_inputs"].contains("pixel_values:T1s2x2x3x12x12"),
        "{}",
        s["model_inputs"]
    );
    stops_without_transformers_patches(&ckpt, "idefics/text.rs");
}
