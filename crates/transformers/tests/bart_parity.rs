//! Parity of the encoder-decoders (`BartForConditionalGeneration`,
//! `PLBartForConditionalGeneration`, `MarianMTModel`) with transformers 5.23 on the same
//! weights: the encoder's states, the prompt step's logits and `EncoderDecoderCache` (self- and
//! cross-attention), then a cached step reading the cross-attention states back, as `generate`
//! runs them; the encoder's input padded on one row.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::{collections::HashMap, path::PathBuf};

use common::{diff, run_reference, t};
use onnx_diagnostic_core::{Module, Tensor};
use onnx_diagnostic_transformers::{
    EncoderDecoderCache,
    models::bart::{BartForConditionalGeneration, Family},
};

/// Runs `tests/parity/make_seq2seq_reference.py` on `config`: the checkpoint and the tensors.
fn reference(
    name: &str,
    config: &str,
    options: &[&str],
) -> (PathBuf, HashMap<String, tch::Tensor>) {
    run_reference(
        "make_seq2seq_reference.py",
        "seq2seq",
        name,
        config,
        options,
    )
}

fn check_cache(
    name: &str,
    cache: &EncoderDecoderCache,
    io: &HashMap<String, tch::Tensor>,
    sfx: &str,
    tol: f64,
) {
    for (which, c) in [
        ("self", &cache.self_attention_cache),
        ("cross", &cache.cross_attention_cache),
    ] {
        for (i, l) in c.layers.iter().enumerate() {
            for (kind, x) in [("key", l.keys()), ("value", l.values())] {
                let d = diff(x.unwrap(), &io[&format!("{which}_{kind}{sfx}_{i}")]);
                assert!(d <= tol, "{name}: {which} {kind} {i}{sfx} differs by {d}");
            }
        }
    }
}

/// The two steps against transformers within `tol`; returns the model.
fn check(name: &str, config: &str, tol: f64) -> BartForConditionalGeneration {
    let (dir, io) = reference(name, config, &[]);
    let model = BartForConditionalGeneration::from_pretrained(&dir).unwrap();
    let (ids, mask) = (t(&io, "input_ids"), t(&io, "attention_mask"));
    let (logits, cache, encoder) = model
        .forward_with_cache(&ids, Some(&mask), &t(&io, "decoder_input_ids"), None, None)
        .unwrap();
    let d = diff(&encoder, &io["encoder_last_hidden_state"]);
    assert!(d <= tol, "{name}: encoder differs by {d}");
    let d = diff(&logits, &io["logits"]);
    assert!(d <= tol, "{name}: prompt logits differ by {d}");
    check_cache(name, &cache, &io, "", tol);
    let (next, cache, _) = model
        .forward_with_cache(
            &ids,
            Some(&mask),
            &t(&io, "decoder_input_ids_next"),
            Some(&encoder),
            Some(cache),
        )
        .unwrap();
    let d = diff(&next, &io["logits_next"]);
    assert!(d <= tol, "{name}: cached-step logits differ by {d}");
    check_cache(name, &cache, &io, "_next", tol);
    model
}

#[test]
fn bart_matches_transformers() {
    let model = check(
        "bart",
        r#"{"architectures":["BartForConditionalGeneration"],"model_type":"bart",
        "vocab_size":64,"d_model":16,"encoder_layers":2,"decoder_layers":2,
        "encoder_attention_heads":4,"decoder_attention_heads":4,"encoder_ffn_dim":24,
        "decoder_ffn_dim":24,"max_position_embeddings":32}"#,
        1e-5,
    );
    assert_eq!(model.config.family, Family::Bart);
    assert!(
        model
            .named_parameters()
            .iter()
            .any(|(n, _)| n == "model.encoder.layernorm_embedding.weight")
    );
}

#[test]
fn plbart_matches_transformers() {
    // The catalog's tiny PLBart shape: scaled embeddings, FFN of 4.
    check(
        "plbart",
        r#"{"architectures":["PLBartForConditionalGeneration"],"model_type":"plbart",
        "vocab_size":80,"d_model":16,"encoder_layers":2,"decoder_layers":2,
        "encoder_attention_heads":4,"decoder_attention_heads":4,"encoder_ffn_dim":4,
        "decoder_ffn_dim":4,"max_position_embeddings":100,"scale_embedding":true,
        "pad_token_id":1}"#,
        1e-5,
    );
}

#[test]
fn marian_matches_transformers() {
    // Sinusoidal positions (not in the checkpoint), no layernorm_embedding, swish.
    let model = check(
        "marian",
        r#"{"architectures":["MarianMTModel"],"model_type":"marian","vocab_size":70,
        "d_model":16,"encoder_layers":2,"decoder_layers":2,"encoder_attention_heads":2,
        "decoder_attention_heads":2,"encoder_ffn_dim":8,"decoder_ffn_dim":8,
        "max_position_embeddings":64,"activation_function":"swish","scale_embedding":true,
        "pad_token_id":69,"decoder_start_token_id":69}"#,
        1e-5,
    );
    assert_eq!(model.config.family, Family::Marian);
    assert!(
        !model
            .named_parameters()
            .iter()
            .any(|(n, _)| n.contains("layernorm_embedding"))
    );
}

#[test]
fn blenderbot_small_matches_transformers_and_exports() {
    // Positions without offset; the decoder's embeddings are not scaled and are normalised
    // before the positions are added (the encoder's after): with scale_embedding, a model
    // written as Bart's would differ.
    let model = check(
        "blenderbot_small",
        r#"{"architectures":["BlenderbotSmallForConditionalGeneration"],
        "model_type":"blenderbot-small","vocab_size":72,"d_model":16,"encoder_layers":2,
        "decoder_layers":2,"encoder_attention_heads":4,"decoder_attention_heads":4,
        "encoder_ffn_dim":24,"decoder_ffn_dim":24,"max_position_embeddings":64,
        "scale_embedding":true}"#,
        1e-5,
    );
    assert_eq!(model.config.family, Family::BlenderbotSmall);
    export_and_check(&model);
}

#[test]
fn shift_tokens_right_is_bart_s_and_plbart_s() {
    let bart = onnx_diagnostic_transformers::models::bart::Config::from_json(
        r#"{"model_type":"bart","vocab_size":16,"d_model":4,"encoder_layers":1,
        "decoder_layers":1,"encoder_attention_heads":1,"decoder_attention_heads":1,
        "encoder_ffn_dim":4,"decoder_ffn_dim":4,"max_position_embeddings":8}"#,
    )
    .unwrap();
    let mut w = onnx_diagnostic_transformers::weights::Weights::untrained(
        "BartForConditionalGeneration",
        0,
        0.02,
    );
    let model = BartForConditionalGeneration::new(bart, &mut w).unwrap();
    let labels = Tensor::from(tch::Tensor::from_slice(&[5i64, -100, 6, 7, 8, 9]).reshape([2, 3]));
    let flat = |t: Tensor| Vec::<i64>::try_from(t.as_tch().reshape([-1])).unwrap();
    // decoder_start_token_id 2 first, -100 turned into the padding token 1.
    assert_eq!(
        flat(model.shift_tokens_right(&labels).unwrap()),
        [2, 5, 1, 2, 7, 8]
    );
    // PLBart starts with the last token that is not padding (its language id).
    let mut cfg = model.config.clone();
    cfg.family = Family::PLBart;
    let mut w = onnx_diagnostic_transformers::weights::Weights::untrained(
        "PLBartForConditionalGeneration",
        0,
        0.02,
    );
    let plbart = BartForConditionalGeneration::new(cfg, &mut w).unwrap();
    let labels = Tensor::from(tch::Tensor::from_slice(&[5i64, 6, 1, 7, 8, 9]).reshape([2, 3]));
    assert_eq!(
        flat(plbart.shift_tokens_right(&labels).unwrap()),
        [6, 5, 6, 9, 7, 8]
    );
}

/// Exports `model` on the first text2text set with its dynamic shapes, lowers it, runs ONNX
/// Runtime on both sets (other batch, source and target lengths) against eager (≤ 1e-4).
/// Returns the ONNX model.
fn export_and_check(
    model: &BartForConditionalGeneration,
) -> onnx_diagnostic_onnx::proto::ModelProto {
    use onnx_diagnostic_core::{ExportOptions, Inputs, export};
    use onnx_diagnostic_onnx::{LowerOptions, OnnxProgram, lower, max_diff};
    use onnx_diagnostic_transformers::tasks::text2text_generation::{
        INPUT_SETS, Seq2SeqDims, text2text_generation_dynamic_shapes, text2text_generation_inputs,
    };
    let _serialization =
        onnx_diagnostic_serialization::register_cache_serialization(true, false, 0);
    let c = &model.config;
    let dims = Seq2SeqDims {
        vocab_size: c.vocab_size,
        decoder_layers: c.decoder_layers,
        heads: c.decoder_attention_heads,
        head_dim: c.decoder_head_dim(),
    };
    let ds = text2text_generation_dynamic_shapes(&dims);
    let (_, (b, s, q, p)) = INPUT_SETS[0];
    let example = text2text_generation_inputs(&dims, b, s, q, p).unwrap();
    let ep = export(model, &[], &example, Some(&ds), &ExportOptions::default()).unwrap();
    let onnx = lower(&ep, &LowerOptions::default()).unwrap();
    let mut session = OnnxProgram::from_model(&onnx, &ep).unwrap();
    for (name, (b, s, q, p)) in INPUT_SETS {
        let set = text2text_generation_inputs(&dims, *b, *s, *q, *p).unwrap();
        let eager = model
            .forward(&Inputs::bind_for(model, &[], &set).unwrap())
            .unwrap();
        let d = max_diff(&eager, &session.run(&[], &set).unwrap());
        eprintln!("{} {name}: abs {:.3e} n {}", model.class_name(), d.abs, d.n);
        assert!(d.abs <= 1e-4 && d.dnan == 0.0, "{name}: {d:?}");
    }
    onnx
}

#[test]
fn bart_plbart_and_marian_export_with_an_encoder_decoder_cache() {
    for (name, config) in [
        (
            "bart_export",
            r#"{"architectures":["BartForConditionalGeneration"],"model_type":"bart",
            "vocab_size":64,"d_model":16,"encoder_layers":2,"decoder_layers":2,
            "encoder_attention_heads":4,"decoder_attention_heads":4,"encoder_ffn_dim":24,
            "decoder_ffn_dim":24,"max_position_embeddings":64}"#,
        ),
        (
            "plbart_export",
            r#"{"architectures":["PLBartForConditionalGeneration"],"model_type":"plbart",
            "vocab_size":80,"d_model":16,"encoder_layers":2,"decoder_layers":2,
            "encoder_attention_heads":4,"decoder_attention_heads":4,"encoder_ffn_dim":4,
            "decoder_ffn_dim":4,"max_position_embeddings":100,"scale_embedding":true,
            "pad_token_id":1}"#,
        ),
        (
            "marian_export",
            r#"{"architectures":["MarianMTModel"],"model_type":"marian","vocab_size":70,
            "d_model":16,"encoder_layers":2,"decoder_layers":2,"encoder_attention_heads":2,
            "decoder_attention_heads":2,"encoder_ffn_dim":8,"decoder_ffn_dim":8,
            "max_position_embeddings":64,"activation_function":"swish","scale_embedding":true,
            "pad_token_id":69,"decoder_start_token_id":69}"#,
        ),
    ] {
        let (dir, _) = reference(name, config, &[]);
        let model = BartForConditionalGeneration::from_pretrained(&dir).unwrap();
        let onnx = export_and_check(&model);
        let g = onnx.graph.unwrap();
        let names: Vec<&str> = g.input.iter().filter_map(|i| i.name.as_deref()).collect();
        for n in [
            "input_ids",
            "attention_mask",
            "decoder_input_ids",
            "past_key_values_self_attention_cache_key_0",
            "past_key_values_cross_attention_cache_value_1",
        ] {
            assert!(names.contains(&n), "{n} not in {names:?}");
        }
        let outputs: Vec<&str> = g.output.iter().filter_map(|i| i.name.as_deref()).collect();
        assert!(
            outputs.contains(&"logits") && outputs.contains(&"encoder_last_hidden_state"),
            "{outputs:?}"
        );
    }
}

/// float16 as the Python validate's `--dtype float16` makes it: the same logits, encoder states
/// and caches as transformers' converted model, to the bit; then the float16 clamp: on weights
/// that overflow float16 in the last encoder layer, transformers clamps to ±64504 and so do
/// we (the encoder's states equal to the bit, 64504 held as 64512). Exported with the clamp rewritten into a `cond`
/// (the export fails without it), ONNX Runtime takes the same branch as eager on both weights:
/// the clamped states match (an unclamped inf would not).
#[test]
fn bart_in_float16_matches_transformers_with_and_without_the_clamp() {
    use onnx_diagnostic_core::{ExportOptions, PatchOptions, export, torch_export_patches};
    use onnx_diagnostic_onnx::{LowerOptions, OnnxProgram, lower, max_diff};
    use onnx_diagnostic_transformers::{
        tasks::cast_floats,
        tasks::text2text_generation::{
            INPUT_SETS, text2text_generation_dynamic_shapes, text2text_generation_inputs,
        },
        weights::Weights,
    };
    let config = r#"{"architectures":["BartForConditionalGeneration"],"model_type":"bart",
        "vocab_size":64,"d_model":16,"encoder_layers":1,"decoder_layers":2,
        "encoder_attention_heads":4,"decoder_attention_heads":4,"encoder_ffn_dim":24,
        "decoder_ffn_dim":24,"max_position_embeddings":64}"#;
    let _serialization =
        onnx_diagnostic_serialization::register_cache_serialization(true, false, 0);
    for (name, options) in [
        ("bart_fp16", &["--dtype=float16"][..]),
        ("bart_fp16_inf", &["--dtype=float16", "--inf"][..]),
    ] {
        let (dir, io) = reference(name, config, options);
        let clamps = io["clamped"].int64_value(&[]) == 1;
        assert_eq!(
            clamps,
            name.ends_with("inf"),
            "{name}: transformers clamped {clamps}"
        );
        let cfg =
            onnx_diagnostic_transformers::models::bart::Config::from_file(&dir.join("config.json"))
                .unwrap();
        let mut w = Weights::from_dir(&dir, "BartForConditionalGeneration")
            .unwrap()
            .with_dtype(tch::Kind::Half);
        let model = BartForConditionalGeneration::new(cfg, &mut w).unwrap();
        let (ids, mask) = (t(&io, "input_ids"), t(&io, "attention_mask"));
        let (logits, cache, encoder) = model
            .forward_with_cache(&ids, Some(&mask), &t(&io, "decoder_input_ids"), None, None)
            .unwrap();
        let theirs = &io["encoder_last_hidden_state"];
        assert!(
            encoder.as_tch().equal(theirs),
            "{name}: encoder states differ"
        );
        if clamps {
            let top = encoder.as_tch().abs().max().double_value(&[]);
            // finfo(float16).max - 1000 = 64504, which float16 holds as 64512.
            assert_eq!(top, 64512.0, "{name}: clamped to finfo.max - 1000");
        } else {
            assert_eq!(diff(&logits, &io["logits"]), 0.0, "{name}: logits");
            check_cache(name, &cache, &io, "", 0.0);
            let (next, _, _) = model
                .forward_with_cache(
                    &ids,
                    Some(&mask),
                    &t(&io, "decoder_input_ids_next"),
                    Some(&encoder),
                    Some(cache),
                )
                .unwrap();
            assert_eq!(
                diff(&next, &io["logits_next"]),
                0.0,
                "{name}: cached logits"
            );
        }

        // The export: data-dependent without the rewrite, a cond with it.
        let dims = model.config.seq2seq_dims();
        let ds = text2text_generation_dynamic_shapes(&dims);
        let (_, (b, s, q, p)) = INPUT_SETS[0];
        let example = cast_floats(
            &text2text_generation_inputs(&dims, b, s, q, p).unwrap(),
            tch::Kind::Half,
        )
        .unwrap();
        let plain = export(&model, &[], &example, Some(&ds), &ExportOptions::default());
        let e = plain.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e.contains("data-dependent") && e.contains("models/bart/mod.rs"),
            "{e}"
        );
        let guard = torch_export_patches(PatchOptions {
            rewrite: vec!["BartEncoderLayer.forward".to_owned()],
            ..PatchOptions::default()
        })
        .unwrap();
        let ep = export(&model, &[], &example, Some(&ds), &ExportOptions::default()).unwrap();
        drop(guard);
        assert!(
            ep.to_string().contains("cond"),
            "{name}: no cond in the graph"
        );
        let onnx = lower(&ep, &LowerOptions::default()).unwrap();
        let mut session = OnnxProgram::from_model(&onnx, &ep).unwrap();
        for (set_name, (b, s, q, p)) in INPUT_SETS {
            let set = cast_floats(
                &text2text_generation_inputs(&dims, *b, *s, *q, *p).unwrap(),
                tch::Kind::Half,
            )
            .unwrap();
            let eager = model
                .forward(&onnx_diagnostic_core::Inputs::bind_for(&model, &[], &set).unwrap())
                .unwrap();
            let d = max_diff(&eager, &session.run(&[], &set).unwrap());
            eprintln!("{name} {set_name}: abs {:.3e} dnan {}", d.abs, d.dnan);
            assert!(d.abs <= 3e-2 && d.dnan == 0.0, "{name} {set_name}: {d:?}");
        }
    }
}

/// `BartModel` (the base model of facebook/bart-base, no head) against transformers on the
/// feature-extraction inputs: the source only (the decoder's inputs shifted from it, one row
/// padded), without a cache and with an `EncoderDecoderCache` of 5 self-attention and 7
/// cross-attention positions; then exported on the task's sets and run in ONNX Runtime on the
/// second one (other batch, source and cache lengths).
#[test]
fn bart_model_matches_transformers_on_the_feature_extraction_inputs() {
    use onnx_diagnostic_core::{ExportOptions, Inputs, Value, export};
    use onnx_diagnostic_onnx::{LowerOptions, OnnxProgram, lower, max_diff};
    use onnx_diagnostic_transformers::{
        DynamicCache, Seq2SeqModelOutput,
        auto::TaskModel,
        models::bart::BartModel,
        tasks::{TextGenerationOptions, feature_extraction::encoder_dynamic_shapes},
    };
    let (dir, io) = reference(
        "bart_base_model",
        r#"{"architectures":["BartModel"],"model_type":"bart",
        "vocab_size":64,"d_model":16,"encoder_layers":2,"decoder_layers":3,
        "encoder_attention_heads":4,"decoder_attention_heads":2,"encoder_ffn_dim":24,
        "decoder_ffn_dim":20,"max_position_embeddings":64}"#,
        &["--base"],
    );
    let model = BartModel::from_pretrained(&dir).unwrap();
    assert_eq!(model.class_name(), "BartModel");
    assert!(
        model
            .named_parameters()
            .iter()
            .any(|(n, _)| n == "encoder.layernorm_embedding.weight"),
        "BartModel's weights have no model. prefix"
    );
    let src = vec![
        ("input_ids".to_owned(), Value::Tensor(t(&io, "input_ids"))),
        (
            "attention_mask".to_owned(),
            Value::Tensor(t(&io, "attention_mask")),
        ),
    ];
    let run = |set: &[(String, Value)]| -> Seq2SeqModelOutput {
        let out = model
            .forward(&Inputs::bind_for(&model, &[], set).unwrap())
            .unwrap();
        out.downcast_ref::<Seq2SeqModelOutput>().unwrap().clone()
    };
    let tensor = |v: &Option<Value>| match v {
        Some(Value::Tensor(t)) => t.clone(),
        other => panic!("expected a tensor, got {other:?}"),
    };
    let cache_of = |v: &Option<Value>| {
        v.as_ref()
            .and_then(|v| v.downcast_ref::<EncoderDecoderCache>())
            .cloned()
            .unwrap()
    };
    let out = run(&src);
    for (key, got) in [
        ("last_hidden_state", &out.last_hidden_state),
        ("encoder_last_hidden_state", &out.encoder_last_hidden_state),
    ] {
        let d = diff(&tensor(got), &io[key]);
        assert!(d <= 1e-5, "{key} differs by {d}");
    }
    check_cache("bart_model", &cache_of(&out.past_key_values), &io, "", 1e-5);
    let pairs = |which: &str| {
        DynamicCache::from_pairs(
            (0..3)
                .map(|i| {
                    (
                        t(&io, &format!("past_{which}_key_{i}")),
                        t(&io, &format!("past_{which}_value_{i}")),
                    )
                })
                .collect(),
        )
    };
    let mut cached = src.clone();
    cached.push((
        "past_key_values".to_owned(),
        Value::custom(EncoderDecoderCache {
            self_attention_cache: pairs("self"),
            cross_attention_cache: pairs("cross"),
        }),
    ));
    let out = run(&cached);
    let d = diff(
        &tensor(&out.last_hidden_state),
        &io["last_hidden_state_next"],
    );
    assert!(d <= 1e-5, "cached last_hidden_state differs by {d}");
    check_cache(
        "bart_model",
        &cache_of(&out.past_key_values),
        &io,
        "_next",
        1e-5,
    );

    let _serialization =
        onnx_diagnostic_serialization::register_cache_serialization(true, false, 0);
    assert_eq!(model.task(), "feature-extraction");
    let sets = model
        .input_sets(&TextGenerationOptions::default(), 1)
        .unwrap();
    let ds = encoder_dynamic_shapes(&model.config.seq2seq_dims());
    let ep = export(
        &model,
        &[],
        &sets[0].1,
        Some(&ds),
        &ExportOptions::default(),
    )
    .unwrap();
    let onnx = lower(&ep, &LowerOptions::default()).unwrap();
    let outputs: Vec<String> = onnx
        .graph
        .as_ref()
        .unwrap()
        .output
        .iter()
        .filter_map(|o| o.name.clone())
        .collect();
    // Seq2SeqModelOutput's fields in order, the cache flattened as for text2text-generation.
    let mut expected = vec!["last_hidden_state".to_owned()];
    for which in ["self", "cross"] {
        for i in 0..3 {
            for kind in ["key", "value"] {
                expected.push(format!(
                    "present_key_values_{which}_attention_cache_{kind}_{i}"
                ));
            }
        }
    }
    expected.push("encoder_last_hidden_state".to_owned());
    assert_eq!(outputs, expected);
    let mut session = OnnxProgram::from_model(&onnx, &ep).unwrap();
    for (name, set) in &sets {
        let eager = model
            .forward(&Inputs::bind_for(&model, &[], set).unwrap())
            .unwrap();
        let d = max_diff(&eager, &session.run(&[], set).unwrap());
        assert!(d.abs <= 1e-4 && d.dnan == 0.0, "{name}: {d:?}");
    }
}
