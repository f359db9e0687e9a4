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
use onnx_diagnostic_testing::oracle::Oracle;
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

/// Flattens under `prefix`, checks the leaf names, rebuilds, and checks that nothing was lost:
/// same class, same tensors, same structure when flattened again. Returns the rebuilt value.
fn round_trip(v: &Value, prefix: &str, names: &[&str]) -> Value {
    let (leaves, spec) = v.flatten(prefix).unwrap();
    let got: Vec<&str> = leaves.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(got, names);
    assert_eq!(spec.leaf_names(prefix), names);
    let back = spec
        .unflatten(leaves.iter().map(|(_, t)| t.clone()).collect())
        .unwrap();
    assert_eq!(back.class_name(), v.class_name());
    let (leaves2, spec2) = back.flatten(prefix).unwrap();
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

/// One value of the naming test: ours, the Python package's construction of the same value,
/// whether a real `torch.export` of it runs in Python (not for the static caches, whose
/// package serializers do not run with transformers 5.23), and whether the Python value prints
/// as ours (not for a construction that only mirrors the structure).
struct Case {
    name: &'static str,
    ours: Value,
    python: serde_json::Value,
    export: bool,
    prints: bool,
}

fn kv_pairs(oracle: &mut Oracle, pairs: &[(Tensor, Tensor)]) -> serde_json::Value {
    serde_json::Value::Array(
        pairs
            .iter()
            .map(|(k, v)| {
                serde_json::json!([
                    oracle.value(&Value::from(k.clone())),
                    oracle.value(&Value::from(v.clone()))
                ])
            })
            .collect(),
    )
}

/// A dataclass output as the same class of `module` in Python, built from its fields.
fn output_case(oracle: &mut Oracle, module: &str, ours: Value) -> Case {
    let Value::Custom(obj) = &ours else {
        panic!("not an output class")
    };
    let fields: Vec<serde_json::Value> = obj
        .fields()
        .iter()
        .map(|(k, v)| serde_json::json!([k, oracle.value(v)]))
        .collect();
    let python = serde_json::json!({ "output": [module, obj.class_name(), fields] });
    Case {
        name: "x",
        ours,
        python,
        export: true,
        prints: true,
    }
}

/// A transformers `StaticCache` (or a 4.x `HybridCache` / `SlidingWindowCache`) of the same
/// layers, zeros of the same shapes.
fn static_python(
    class: &str,
    layer_types: &[&str],
    window: i64,
    max_len: i64,
) -> serde_json::Value {
    serde_json::json!({ "StaticCache": {
        "class": class, "layer_types": layer_types, "sliding_window": window,
        "max_cache_len": max_len, "batch": 1, "heads": 2, "head_dim": 4,
    }})
}

/// Every serializer's flattened names, and the printed form of its class, are the Python
/// package's: onnx-diagnostic 0.9.3's serializers registered in Python (its
/// `register_cache_serialization`), the names torch.export gives the placeholders (checked by a
/// real `torch.export.export` where the package's serializer runs with transformers 5.23), and
/// `string_type` with shapes. Each value then rebuilds from its flattened form unchanged.
#[test]
fn every_serializer_flattens_as_the_python_package_names_it() {
    let _g = register_cache_serialization(true, true, 0);
    tch::manual_seed(7);
    let mut o = Oracle::new();
    let mut cases = Vec::new();

    let p = pairs(2, &[2, 4, 3, 7]);
    let py = kv_pairs(&mut o, &p);
    let dynamic = Value::custom(make_dynamic_cache(p));
    for name in ["x", "past_key_values"] {
        cases.push(Case {
            name,
            ours: dynamic.clone(),
            python: serde_json::json!({ "DynamicCache": py.clone() }),
            export: true,
            prints: true,
        });
    }

    let p = pairs(3, &[1, 2, 3, 4]);
    let py = kv_pairs(&mut o, &p);
    cases.push(Case {
        name: "past_key_values",
        ours: Value::custom(
            make_dynamic_cache_with_layers(
                p,
                &[
                    LayerKind::Dynamic,
                    LayerKind::DynamicSlidingWindow(4),
                    LayerKind::DynamicSlidingWindow(16),
                ],
            )
            .unwrap(),
        ),
        python: serde_json::json!({ "DynamicCacheLayers": { "pairs": py, "layers": [
            ["DynamicLayer", {}],
            ["DynamicSlidingWindowLayer", { "sliding_window": 4 }],
            ["DynamicSlidingWindowLayer", { "sliding_window": 16 }],
        ]}}),
        export: true,
        prints: true,
    });

    cases.push(Case {
        name: "x",
        ours: Value::custom(make_static_cache(pairs(2, &[1, 2, 5, 4]), 5).unwrap()),
        python: static_python("StaticCache", &["full_attention", "full_attention"], 5, 5),
        export: false,
        prints: true,
    });
    cases.push(Case {
        name: "x",
        ours: Value::custom(make_sliding_window_cache(pairs(1, &[1, 2, 6, 4])).unwrap()),
        python: static_python("SlidingWindowCache", &["sliding_attention"], 6, 6),
        export: false,
        prints: true,
    });
    cases.push(Case {
        name: "past_key_values",
        ours: Value::custom(
            make_hybrid_cache(
                vec![
                    (randn(&[1, 2, 4, 4]), randn(&[1, 2, 4, 4])),
                    (randn(&[1, 2, 8, 4]), randn(&[1, 2, 8, 4])),
                ],
                &[LayerKind::StaticSlidingWindow(8, 4), LayerKind::Static(8)],
            )
            .unwrap(),
        ),
        python: static_python(
            "HybridCache",
            &["sliding_attention", "full_attention"],
            4,
            8,
        ),
        export: false,
        prints: true,
    });

    let (s, c) = (pairs(1, &[1, 2, 3, 4]), pairs(1, &[1, 2, 5, 4]));
    let (pys, pyc) = (kv_pairs(&mut o, &s), kv_pairs(&mut o, &c));
    let ed = Value::custom(make_encoder_decoder_cache(
        make_dynamic_cache(s),
        make_dynamic_cache(c),
    ));
    cases.push(Case {
        name: "past_key_values",
        ours: ed,
        python: serde_json::json!({ "EncoderDecoderCache": [
            { "DynamicCache": pys }, { "DynamicCache": pyc }
        ]}),
        export: true,
        prints: true,
    });

    // MambaCache has no serializer in the package (nor a class in transformers 5): its names
    // are those of the dict of its two lists; it prints as the package prints the 4.x class.
    let (conv, ssm): (Vec<Value>, Vec<Value>) = (0..2)
        .map(|_| {
            (
                Value::from(randn(&[1, 8, 4])),
                Value::from(randn(&[1, 8, 16])),
            )
        })
        .unzip();
    let mamba = Value::custom(make_mamba_cache(
        conv.iter()
            .zip(&ssm)
            .map(|(c, s)| {
                (
                    c.as_tensor().unwrap().clone(),
                    s.as_tensor().unwrap().clone(),
                )
            })
            .collect(),
    ));
    let as_dict = Value::Dict(vec![
        ("conv_states".to_owned(), Value::List(conv.clone())),
        ("ssm_states".to_owned(), Value::List(ssm.clone())),
    ]);
    cases.push(Case {
        name: "cache_params",
        ours: mamba.clone(),
        python: o.value(&as_dict),
        export: true,
        prints: false,
    });
    let mamba_python = {
        let c: Vec<serde_json::Value> = conv.iter().map(|v| o.value(v)).collect();
        let s: Vec<serde_json::Value> = ssm.iter().map(|v| o.value(v)).collect();
        serde_json::json!({ "MambaCache": [c, s] })
    };
    let mamba_printed = o.string_type_of(mamba_python, &StringTypeOptions::with_shape());

    let tf = "transformers.modeling_outputs";
    let outputs = [
        (
            tf,
            Value::custom(BaseModelOutput {
                last_hidden_state: Some(randn(&[2, 3, 8]).into()),
                ..BaseModelOutput::default()
            }),
        ),
        (
            tf,
            Value::custom(CausalLMOutputWithPast {
                logits: Some(randn(&[2, 3, 10]).into()),
                past_key_values: Some(Value::custom(make_dynamic_cache(pairs(1, &[2, 1, 3, 4])))),
                ..CausalLMOutputWithPast::default()
            }),
        ),
        (
            tf,
            Value::custom(Seq2SeqLMOutput {
                logits: Some(randn(&[1, 2, 10]).into()),
                encoder_last_hidden_state: Some(randn(&[1, 5, 8]).into()),
                ..Seq2SeqLMOutput::default()
            }),
        ),
        (
            "diffusers.models.unets.unet_2d_condition",
            Value::custom(UNet2DConditionOutput {
                sample: Some(randn(&[1, 4, 8, 8]).into()),
            }),
        ),
    ];
    for (module, ours) in outputs {
        cases.push(output_case(&mut o, module, ours));
    }

    // Nested builtin containers, keys torch.export rewrites (case, punctuation).
    let nested = Value::Dict(vec![
        (
            "Hidden.States".to_owned(),
            Value::List(vec![
                Value::from(randn(&[2])),
                Value::Tuple(vec![Value::from(randn(&[3])), Value::from(randn(&[1]))]),
            ]),
        ),
        ("past_key_values".to_owned(), dynamic.clone()),
    ]);
    let nested_python = {
        let Value::Dict(items) = &nested else {
            unreachable!()
        };
        let first = o.value(&items[0].1);
        let p: Vec<(Tensor, Tensor)> = dynamic
            .downcast_ref::<DynamicCache>()
            .unwrap()
            .layers
            .iter()
            .map(|l| (l.keys().unwrap().clone(), l.values().unwrap().clone()))
            .collect();
        serde_json::json!({ "dict": [
            ["Hidden.States", first],
            ["past_key_values", { "DynamicCache": kv_pairs(&mut o, &p) }],
        ]})
    };
    cases.push(Case {
        name: "Inputs",
        ours: nested,
        python: nested_python,
        export: true,
        prints: true,
    });

    let asked: Vec<(usize, Option<usize>)> = cases
        .iter()
        .map(|c| {
            let names = o.flatten_names(c.name, c.python.clone(), c.export);
            let printed = c
                .prints
                .then(|| o.string_type_of(c.python.clone(), &StringTypeOptions::with_shape()));
            (names, printed)
        })
        .collect();
    let answers = o.run();
    for (c, (names, printed)) in cases.iter().zip(asked) {
        let what = c.ours.class_name().unwrap_or("a container");
        let back = round_trip(&c.ours, c.name, &answers[names].names());
        assert_eq!(shape_string(&back), shape_string(&c.ours), "{what} rebuilt");
        if let Some(i) = printed {
            assert_eq!(shape_string(&c.ours), answers[i].text(), "{what} printed");
        }
    }
    assert_eq!(shape_string(&mamba), answers[mamba_printed].text());
}

/// A rebuilt cache keeps each layer's kind and window (what its flattened keys carry), and the
/// layers behave as their kind afterwards.
#[test]
fn rebuilt_caches_keep_their_layer_kinds_and_windows() {
    let _g = register_cache_serialization(true, false, 0);
    let rebuild = |v: &Value| {
        let (leaves, spec) = v.flatten("x").unwrap();
        spec.unflatten(leaves.into_iter().map(|(_, t)| t).collect())
            .unwrap()
    };
    let c = make_dynamic_cache_with_layers(
        pairs(3, &[1, 2, 3, 4]),
        &[
            LayerKind::Dynamic,
            LayerKind::DynamicSlidingWindow(4),
            LayerKind::DynamicSlidingWindow(16),
        ],
    )
    .unwrap();
    let back = rebuild(&Value::custom(c));
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

    // A hybrid cache: the sliding layer's slots are its window.
    let h = make_hybrid_cache(
        pairs(2, &[1, 2, 3, 4]),
        &[LayerKind::StaticSlidingWindow(8, 4), LayerKind::Static(8)],
    )
    .unwrap();
    let back = rebuild(&Value::custom(h));
    let layers = &back
        .downcast_ref::<onnx_diagnostic_transformers::HybridCache>()
        .unwrap()
        .0
        .layers;
    assert_eq!(layers[0].kind(), LayerKind::StaticSlidingWindow(4, 4));
    assert_eq!(layers[1].kind(), LayerKind::Static(8));

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

/// The output names of a lowered model: the flattened names without the top-level prefix
/// (our convention; torch.onnx names outputs after the nodes that compute them).
#[test]
fn output_names_leave_out_the_prefix() {
    let _g = register_cache_serialization(true, false, 0);
    let causal = Value::custom(CausalLMOutputWithPast {
        logits: Some(randn(&[2, 3, 10]).into()),
        past_key_values: Some(Value::custom(make_dynamic_cache(pairs(1, &[2, 1, 3, 4])))),
        ..CausalLMOutputWithPast::default()
    });
    let (leaves, spec) = causal.flatten("out").unwrap();
    let with_prefix: Vec<String> = leaves.into_iter().map(|(n, _)| n).collect();
    let without: Vec<String> = spec.leaf_names("");
    assert_eq!(without.len(), 3);
    for (w, n) in with_prefix.iter().zip(&without) {
        assert_eq!(w, &format!("out_{n}"));
    }
    assert_eq!(without[0], "logits");
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
    // The printed set, the guessed shapes (the seed's dims, {0,2,3} on every cache tensor, {3}
    // on z, in the flattened form of onnx-diagnostic >= 0.8) and the placeholders' names are
    // those of the Python package on the same values.
    let mut o = Oracle::new();
    let printed_set = o.string_type(
        &Value::Tuple(inputs[0].0.clone()),
        &StringTypeOptions::with_shape(),
    );
    let guessed = o.guess_dynamic_shapes(&["cache", "z"], &inputs, false);
    let cache = o.value(&inputs[0].0[0]);
    let cache_names = o.flatten_names("cache", cache, true);
    let answers = o.run();
    assert_eq!(
        shape_string(&Value::Tuple(inputs[0].0.clone())),
        answers[printed_set].text()
    );
    let mi = ModelInputs::new(&model, inputs.clone());
    let ds = mi.guess_dynamic_shapes(false).unwrap();
    assert_eq!(string_dynamic_shapes(&ds), answers[guessed].text());
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
    let mut expected: Vec<&str> = answers[cache_names].names();
    expected.push("z");
    assert_eq!(names, expected);
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
