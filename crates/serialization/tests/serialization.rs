//! The serializers: registration follows a scoped guard per thread, every class flattens into
//! named tensors and back without losing anything, a mixed cache keeps its layer kinds, and
//! the seed `004` cache model exports with dynamic shapes guessed from two input sets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use onnx_diagnostic_core::{
    Error, ExportOptions, Family, FnModule, Inputs, ModelInputs, Module, StringTypeOptions, Tensor,
    Value, export, serialization::is_registered, serialization_functions, string_dynamic_shapes,
    string_type,
};
use onnx_diagnostic_diffusers::UNet2DConditionOutput;
use onnx_diagnostic_serialization::{register_cache_serialization, supported_classes};
use onnx_diagnostic_testing::randn;
use onnx_diagnostic_transformers::{
    BaseModelOutput, CacheLayer, CausalLMOutputWithPast, DynamicCache, LayerKind, Seq2SeqLMOutput,
    make_dynamic_cache, make_dynamic_cache_with_layers, make_encoder_decoder_cache,
    make_hybrid_cache, make_mamba_cache, make_sliding_window_cache, make_static_cache,
};

fn pairs(n: usize, shape: &[i64]) -> Vec<(Tensor, Tensor)> {
    (0..n).map(|_| (randn(shape), randn(shape))).collect()
}

fn shape_string(v: &Value) -> String {
    string_type(v, &StringTypeOptions::with_shape())
}

/// Flattens, checks the leaf names, rebuilds, and checks that nothing was lost: same printed
/// form, same class, same tensors, same structure when flattened again.
fn round_trip(v: &Value, names: &[&str]) -> Value {
    let (leaves, spec) = v.flatten("x").unwrap();
    let got: Vec<&str> = leaves.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(got, names);
    assert_eq!(spec.leaf_names("x"), names);
    let back = spec
        .unflatten(leaves.iter().map(|(_, t)| t.clone()).collect())
        .unwrap();
    assert_eq!(back.class_name(), v.class_name());
    assert_eq!(shape_string(&back), shape_string(v));
    let (leaves2, spec2) = back.flatten("x").unwrap();
    assert_eq!(spec2, spec);
    for ((n, a), (_, b)) in leaves.iter().zip(&leaves2) {
        assert!(a.as_tch().equal(b.as_tch()), "{n} changed");
    }
    back
}

#[test]
fn registration_is_scoped_and_per_thread() {
    let all: Vec<String> = serialization_functions(&[Family::Transformers, Family::Diffusers])
        .into_iter()
        .map(|(c, registered)| {
            assert!(!registered, "{c} registered before the guard");
            c
        })
        .collect();
    // The seed's eight classes (002) and the output classes of the models.
    assert_eq!(
        all,
        [
            "BaseModelOutput",
            "CausalLMOutputWithPast",
            "DynamicCache",
            "EncoderDecoderCache",
            "HybridCache",
            "IdeficsCausalLMOutputWithPast",
            "MambaCache",
            "SamImageSegmentationOutput",
            "Seq2SeqLMOutput",
            "Seq2SeqModelOutput",
            "SlidingWindowCache",
            "StaticCache",
            "UNet2DConditionOutput"
        ]
    );
    assert_eq!(supported_classes(), all);
    let only_diffusers = serialization_functions(&[Family::Diffusers]);
    assert_eq!(
        only_diffusers,
        [("UNet2DConditionOutput".to_owned(), false)]
    );

    let cache = Value::custom(make_dynamic_cache(pairs(1, &[1, 2, 3, 4])));
    let err = cache.flatten("past_key_values").unwrap_err();
    assert!(matches!(&err, Error::Serialization { class, .. } if class == "DynamicCache"));
    assert!(
        err.to_string().contains("register_cache_serialization"),
        "{err}"
    );
    {
        let guard = register_cache_serialization(true, false, 0);
        assert_eq!(guard.registered().len(), 12);
        assert!(is_registered("DynamicCache"));
        assert!(!is_registered("UNet2DConditionOutput"));
        cache.flatten("past_key_values").unwrap();
        // Another thread sees nothing of it.
        std::thread::spawn(|| assert!(!is_registered("DynamicCache")))
            .join()
            .unwrap();
        // Nested: nothing new to register, and the inner drop keeps the outer registrations.
        let inner = register_cache_serialization(true, false, 0);
        assert!(inner.registered().is_empty());
        drop(inner);
        assert!(is_registered("DynamicCache"));
    }
    assert!(!is_registered("DynamicCache"));
    // Undone on panic too.
    let r = std::panic::catch_unwind(|| {
        let _g = register_cache_serialization(true, true, 0);
        panic!("export failed");
    });
    assert!(r.is_err());
    assert!(!is_registered("DynamicCache"));
}

#[test]
fn key_value_caches_round_trip() {
    let _g = register_cache_serialization(true, true, 0);
    let c = Value::custom(make_dynamic_cache(pairs(2, &[2, 4, 3, 7])));
    assert_eq!(
        shape_string(&c),
        "DynamicCache(key_cache=#2[T1s2x4x3x7,T1s2x4x3x7], value_cache=#2[T1s2x4x3x7,T1s2x4x3x7])"
    );
    round_trip(&c, &["x_key_0", "x_value_0", "x_key_1", "x_value_1"]);

    let s = Value::custom(make_static_cache(pairs(2, &[1, 2, 3, 4]), 5).unwrap());
    assert_eq!(
        shape_string(&s),
        "StaticCache(key_cache=#2[T1s1x2x5x4,T1s1x2x5x4], value_cache=#2[T1s1x2x5x4,T1s1x2x5x4])"
    );
    round_trip(&s, &["x_key_0", "x_value_0", "x_key_1", "x_value_1"]);

    let w = Value::custom(make_sliding_window_cache(pairs(1, &[1, 2, 6, 4])).unwrap());
    assert!(shape_string(&w).starts_with("SlidingWindowCache(key_cache=#1[T1s1x2x6x4]"));
    round_trip(&w, &["x_key_0", "x_value_0"]);

    let h = Value::custom(
        make_hybrid_cache(
            pairs(2, &[1, 2, 3, 4]),
            &[LayerKind::StaticSlidingWindow(8, 4), LayerKind::Static(8)],
        )
        .unwrap(),
    );
    let back = round_trip(
        &h,
        &["x_key_X4_0", "x_value_X4_0", "x_key_S_1", "x_value_S_1"],
    );
    let layers = &back
        .downcast_ref::<onnx_diagnostic_transformers::HybridCache>()
        .unwrap()
        .0
        .layers;
    assert_eq!(layers[0].kind(), LayerKind::StaticSlidingWindow(4, 4));
    assert_eq!(layers[1].kind(), LayerKind::Static(8));
}

#[test]
fn a_cache_mixing_full_and_sliding_layers_keeps_kinds_and_windows() {
    let _g = register_cache_serialization(true, false, 0);
    let c = make_dynamic_cache_with_layers(
        pairs(3, &[1, 2, 3, 4]),
        &[
            LayerKind::Dynamic,
            LayerKind::DynamicSlidingWindow(4),
            LayerKind::DynamicSlidingWindow(16),
        ],
    )
    .unwrap();
    let v = Value::custom(c);
    assert_eq!(
        shape_string(&v),
        "DynamicCache(DynamicLayer(T1s1x2x3x4, T1s1x2x3x4), \
         DynamicSlidingWindowLayer(T1s1x2x3x4, T1s1x2x3x4), \
         DynamicSlidingWindowLayer(T1s1x2x3x4, T1s1x2x3x4))"
    );
    let back = round_trip(
        &v,
        &[
            "x_key_D_0",
            "x_value_D_0",
            "x_key_W4_1",
            "x_value_W4_1",
            "x_key_W16_2",
            "x_value_W16_2",
        ],
    );
    let mut back = back.downcast_ref::<DynamicCache>().unwrap().clone();
    let kinds: Vec<LayerKind> = back.layers.iter().map(CacheLayer::kind).collect();
    assert_eq!(
        kinds,
        [
            LayerKind::Dynamic,
            LayerKind::DynamicSlidingWindow(4),
            LayerKind::DynamicSlidingWindow(16)
        ]
    );
    // The rebuilt layers behave as their kind: two more positions, the window-4 layer keeps
    // the last 3, the others keep all 5; attention reads all 5 everywhere.
    let new = randn(&[1, 2, 2, 4]);
    for i in 0..3 {
        let (k, _) = back.update(&new, &new, i).unwrap();
        assert_eq!(k.concrete_shape(), [1, 2, 5, 4]);
    }
    let lens: Vec<i64> = back
        .layers
        .iter()
        .map(|l| l.keys().unwrap().concrete_shape()[2])
        .collect();
    assert_eq!(lens, [5, 3, 5]);
    assert_eq!(back.layers[1].get_seq_length().unwrap().hint(), 5);
    // An uninitialised layer survives as an empty layer of its kind.
    let empty = Value::custom(DynamicCache::with_layers(&[
        LayerKind::Dynamic,
        LayerKind::DynamicSlidingWindow(4),
    ]));
    let (leaves, spec) = empty.flatten("e").unwrap();
    assert!(leaves.is_empty());
    let back = spec.unflatten(vec![]).unwrap();
    let kinds: Vec<LayerKind> = back
        .downcast_ref::<DynamicCache>()
        .unwrap()
        .layers
        .iter()
        .map(CacheLayer::kind)
        .collect();
    assert_eq!(
        kinds,
        [LayerKind::Dynamic, LayerKind::DynamicSlidingWindow(4)]
    );
}

#[test]
fn nested_caches_and_outputs_round_trip() {
    let _g = register_cache_serialization(true, true, 0);
    let ed = Value::custom(make_encoder_decoder_cache(
        make_dynamic_cache(pairs(1, &[1, 2, 3, 4])),
        make_dynamic_cache(pairs(1, &[1, 2, 5, 4])),
    ));
    assert_eq!(
        shape_string(&ed),
        "EncoderDecoderCache(self_attention_cache=DynamicCache(key_cache=#1[T1s1x2x3x4], \
         value_cache=#1[T1s1x2x3x4]), cross_attention_cache=DynamicCache(\
         key_cache=#1[T1s1x2x5x4], value_cache=#1[T1s1x2x5x4]))"
    );
    round_trip(
        &ed,
        &[
            "x_self_attention_cache_key_0",
            "x_self_attention_cache_value_0",
            "x_cross_attention_cache_key_0",
            "x_cross_attention_cache_value_0",
        ],
    );

    let mamba = Value::custom(make_mamba_cache(vec![
        (randn(&[1, 8, 4]), randn(&[1, 8, 16])),
        (randn(&[1, 8, 4]), randn(&[1, 8, 16])),
    ]));
    assert_eq!(
        shape_string(&mamba),
        "MambaCache(conv_states=#2[T1s1x8x4,T1s1x8x4], ssm_states=#2[T1s1x8x16,T1s1x8x16])"
    );
    round_trip(
        &mamba,
        &[
            "x_conv_states_0",
            "x_conv_states_1",
            "x_ssm_states_0",
            "x_ssm_states_1",
        ],
    );

    let base = Value::custom(BaseModelOutput {
        last_hidden_state: Some(randn(&[2, 3, 8]).into()),
        ..BaseModelOutput::default()
    });
    assert_eq!(
        shape_string(&base),
        "BaseModelOutput(last_hidden_state:T1s2x3x8)"
    );
    round_trip(&base, &["x_last_hidden_state"]);

    let causal = Value::custom(CausalLMOutputWithPast {
        logits: Some(randn(&[2, 3, 10]).into()),
        past_key_values: Some(Value::custom(make_dynamic_cache(pairs(1, &[2, 1, 3, 4])))),
        ..CausalLMOutputWithPast::default()
    });
    round_trip(
        &causal,
        &[
            "x_logits",
            "x_past_key_values_key_0",
            "x_past_key_values_value_0",
        ],
    );
    let (_, spec) = causal.flatten("out").unwrap();
    assert_eq!(
        spec.leaf_names(""),
        ["logits", "past_key_values_key_0", "past_key_values_value_0"]
    );

    let s2s = Value::custom(Seq2SeqLMOutput {
        logits: Some(randn(&[1, 2, 10]).into()),
        encoder_last_hidden_state: Some(randn(&[1, 5, 8]).into()),
        ..Seq2SeqLMOutput::default()
    });
    round_trip(&s2s, &["x_logits", "x_encoder_last_hidden_state"]);

    let unet = Value::custom(UNet2DConditionOutput {
        sample: Some(randn(&[1, 4, 8, 8]).into()),
    });
    assert_eq!(
        shape_string(&unet),
        "UNet2DConditionOutput(sample:T1s1x4x8x8)"
    );
    round_trip(&unet, &["x_sample"]);
}

#[test]
fn a_rebuilt_structure_must_match_its_serializer() {
    let _g = register_cache_serialization(true, false, 0);
    let c = Value::custom(make_dynamic_cache(pairs(2, &[1, 2, 3, 4])));
    let (leaves, spec) = c.flatten("c").unwrap();
    let tensors: Vec<Tensor> = leaves.into_iter().map(|(_, t)| t).collect();
    // One tensor short.
    let err = spec.unflatten(tensors[..3].to_vec()).unwrap_err();
    assert!(err.to_string().contains("3 tensors"), "{err}");
    // A context that does not describe layers.
    let bad = match spec {
        onnx_diagnostic_core::TreeSpec::Custom {
            class, children, ..
        } => onnx_diagnostic_core::TreeSpec::Custom {
            class,
            context: ["key_0", "value_0", "key_Q_1", "value_Q_1"]
                .map(str::to_owned)
                .to_vec(),
            children,
        },
        other => panic!("{other:?}"),
    };
    let err = bad.unflatten(tensors).unwrap_err();
    assert!(
        matches!(&err, Error::Serialization { class, reason } if class == "DynamicCache" && reason.contains("unknown layer tag \"Q\"")),
        "{err}"
    );
}

/// Seed 004, "DynamicCache": `z + key_cache[0] + key_cache[1] + value_cache[0] +
/// value_cache[1]`, dynamic shapes guessed from two input sets, exported, run on the second set.
#[test]
fn the_seed_cache_model_exports_with_guessed_dynamic_shapes() {
    let _g = register_cache_serialization(true, false, 0);
    let model = FnModule::new("Model", &["cache", "z"], |i: &Inputs| {
        let cache = i
            .get("cache")
            .downcast_ref::<DynamicCache>()
            .expect("a DynamicCache");
        let k = |l: usize| cache.layers[l].keys().unwrap();
        let v = |l: usize| cache.layers[l].values().unwrap();
        Ok(i.tensor("z")?
            .add(k(0))?
            .add(k(1))?
            .add(v(0))?
            .add(v(1))?
            .into())
    });
    let (b, h, s, d) = (2, 4, 3, 7);
    let set = |b: i64, s: i64, d: i64| {
        (
            vec![
                Value::custom(make_dynamic_cache(pairs(2, &[b, h, s, d]))),
                randn(&[1, 1, 1, d]).into(),
            ],
            vec![],
        )
    };
    let inputs = vec![set(b, s, d), set(b + 1, s + 1, d + 1)];
    assert_eq!(
        shape_string(&Value::Tuple(inputs[0].0.clone())),
        "(DynamicCache(key_cache=#2[T1s2x4x3x7,T1s2x4x3x7], value_cache=#2[T1s2x4x3x7,T1s2x4x3x7]),T1s1x1x1x7)"
    );
    let mi = ModelInputs::new(&model, inputs.clone());
    let ds = mi.guess_dynamic_shapes(false).unwrap();
    // The seed's dims ({0,2,3} on every cache tensor, {3} on z), in the flattened form of
    // onnx-diagnostic >= 0.8 (key_0, value_0, key_1, value_1).
    let t = "{0:DYNAMIC,2:DYNAMIC,3:DYNAMIC}";
    assert_eq!(
        string_dynamic_shapes(&ds),
        format!("((#4[{t},{t},{t},{t}],{{3:DYNAMIC}}),{{}})")
    );
    let ep = export(
        &model,
        &inputs[0].0,
        &[],
        Some(&ds),
        &ExportOptions::default(),
    )
    .unwrap();
    let names: Vec<String> = ep
        .user_inputs()
        .iter()
        .map(|u| ep.graph().value(u.value).name.clone())
        .collect();
    assert_eq!(
        names,
        [
            "cache_key_0",
            "cache_value_0",
            "cache_key_1",
            "cache_value_1",
            "z"
        ]
    );
    let printed = ep.to_string();
    assert!(
        printed.contains(r#"cache_key_0: "f32[s0, 4, s1, s2]""#),
        "{printed}"
    );
    // Run on the other set: the same as eager.
    let eager = model
        .forward(&Inputs::bind_for(&model, &inputs[1].0, &[]).unwrap())
        .unwrap();
    let got = ep.run(&inputs[1].0, &[]).unwrap();
    assert!(eager.as_tensor().unwrap().as_tch().allclose(
        got.as_tensor().unwrap().as_tch(),
        1e-6,
        1e-6,
        false
    ));
}

#[test]
fn tree_specs_serialize_to_json_and_back() {
    let _g = register_cache_serialization(true, false, 0);
    let v = Value::Tuple(vec![
        Value::custom(
            make_dynamic_cache_with_layers(
                pairs(2, &[1, 2, 3, 4]),
                &[LayerKind::Dynamic, LayerKind::DynamicSlidingWindow(8)],
            )
            .unwrap(),
        ),
        Value::Dict(vec![
            ("n".to_owned(), 3i64.into()),
            ("mask".to_owned(), Option::<Tensor>::None.into()),
            ("ids".to_owned(), vec![randn(&[2])].into()),
        ]),
    ]);
    let (leaves, spec) = v.flatten("inputs").unwrap();
    let json = serde_json::to_string(&spec).unwrap();
    assert!(json.contains(r#""class":"DynamicCache""#), "{json}");
    assert!(json.contains(r#""key_W8_1""#), "{json}");
    let back: onnx_diagnostic_core::TreeSpec = serde_json::from_str(&json).unwrap();
    assert_eq!(back, spec);
    let rebuilt = back
        .unflatten(leaves.into_iter().map(|(_, t)| t).collect())
        .unwrap();
    assert_eq!(shape_string(&rebuilt), shape_string(&v));
}

/// A `DynamicCache`, alone and among other inputs, prints as the Python package prints the
/// cache its `make_dynamic_cache` builds from the same tensors (onnx-diagnostic 0.9.3 run by
/// `onnx_diagnostic_testing::oracle`), with shapes and with statistics.
#[test]
fn dynamic_caches_print_like_the_python_package() {
    use onnx_diagnostic_testing::oracle::Oracle;
    tch::manual_seed(4);
    let cache = Value::custom(make_dynamic_cache(pairs(2, &[1, 2, 3, 4])));
    let inputs = Value::Dict(vec![
        ("input_ids".to_owned(), Value::from(randn(&[1, 3]))),
        ("past_key_values".to_owned(), cache.clone()),
    ]);
    let mm = StringTypeOptions {
        with_shape: true,
        with_min_max: true,
        ..StringTypeOptions::default()
    };
    let cases = [
        (cache.clone(), StringTypeOptions::with_shape()),
        (cache, mm),
        (inputs, StringTypeOptions::with_shape()),
    ];
    let mut oracle = Oracle::new();
    let asked: Vec<usize> = cases
        .iter()
        .map(|(v, o)| oracle.string_type(v, o))
        .collect();
    let answers = oracle.run();
    for ((v, o), i) in cases.iter().zip(asked) {
        assert_eq!(string_type(v, o), answers[i].text());
    }
}
