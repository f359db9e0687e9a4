//! `ModelInputs::guess_dynamic_shapes`, `move_to_kwargs` and `string_type` on seed `004`'s cases
//! (plot_export_with_dynamic_cache) and more, each compared with what the Python package
//! (onnx-diagnostic 0.9.3, run on the same values by `onnx_diagnostic_testing::oracle`)
//! computes: no expected string is typed here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use onnx_diagnostic_core::{
    Error, ExportOptions, FnModule, Inputs, ModelInputs, StringTypeOptions, Value, export,
    string_dynamic_shapes, string_type,
};
use onnx_diagnostic_testing::{oracle::Oracle, randn};
use tch::{Device, Kind};

fn add() -> FnModule<impl Fn(&Inputs) -> onnx_diagnostic_core::Result<Value>> {
    FnModule::new("Model", &["x", "y"], |i: &Inputs| {
        Ok(i.tensor("x")?.add(i.tensor("y")?)?.into())
    })
}

fn t(shape: &[i64]) -> Value {
    randn(shape).into()
}

/// The seed's three ways of passing the inputs (positional, named, mixed and moved to named),
/// each compared with the Python package's `ModelInputs` on the same sets
/// (`onnx_diagnostic_testing::oracle`).
#[test]
fn positional_named_and_mixed_inputs_give_the_seed_dynamic_shapes() {
    let m = add();
    let named = |x: Value, y: Value| (vec![], vec![("x".to_owned(), x), ("y".to_owned(), y)]);
    let mixed = |x: Value, y: Value| (vec![x], vec![("y".to_owned(), y)]);
    let positional_sets = vec![
        (vec![t(&[5, 6]), t(&[1, 6])], vec![]),
        (vec![t(&[7, 8]), t(&[1, 8])], vec![]),
    ];
    let named_sets = vec![named(t(&[5, 6]), t(&[1, 6])), named(t(&[7, 8]), t(&[1, 8]))];
    let mixed_sets = vec![mixed(t(&[5, 6]), t(&[1, 6])), mixed(t(&[7, 8]), t(&[1, 8]))];
    let mut oracle = Oracle::new();
    let py = [
        oracle.guess_dynamic_shapes(&["x", "y"], &positional_sets, false),
        oracle.guess_dynamic_shapes(&["x", "y"], &named_sets, false),
        oracle.guess_dynamic_shapes(&["x", "y"], &mixed_sets, false),
        oracle.move_to_kwargs(&["x", "y"], &mixed_sets, false),
    ];
    let py: Vec<String> = {
        let answers = oracle.run();
        py.iter().map(|&i| answers[i].text().to_owned()).collect()
    };
    // Positional.
    let mi = ModelInputs::new(&m, positional_sets);
    let ds = mi.guess_dynamic_shapes(false).unwrap();
    assert_eq!(string_dynamic_shapes(&ds), py[0]);
    // The guessed shapes export as the seed shows.
    let args = mi.inputs[0].0.clone();
    let ep = export(&m, &args, &[], Some(&ds), &ExportOptions::default()).unwrap();
    assert!(
        ep.to_string()
            .contains(r#"def forward(self, x: "f32[s0, s1]", y: "f32[1, s1]"):"#)
    );

    // Named.
    let mi = ModelInputs::new(&m, named_sets);
    let ds = mi.guess_dynamic_shapes(false).unwrap();
    assert_eq!(string_dynamic_shapes(&ds), py[1]);

    // Mixed, then moved to named arguments.
    let mi = ModelInputs::new(&m, mixed_sets);
    let ds = mi.guess_dynamic_shapes(false).unwrap();
    assert_eq!(string_dynamic_shapes(&ds), py[2]);
    let (a, k) = mi.inputs[0].clone();
    let (new_args, new_kwargs, new_ds) = mi.move_to_kwargs(&a, &k, &ds).unwrap();
    let shape = StringTypeOptions::with_shape();
    assert_eq!(
        format!(
            "{} {} {}",
            string_type(
                &Value::Tuple(new_args.clone()),
                &StringTypeOptions::default()
            ),
            string_type(&Value::Dict(new_kwargs.clone()), &shape),
            string_dynamic_shapes(&new_ds)
        ),
        py[3]
    );
    // As the seed exports: the positional argument stays positional, its shape named.
    let ep = export(
        &m,
        &new_args,
        &new_kwargs,
        Some(&new_ds),
        &ExportOptions::default(),
    )
    .unwrap();
    assert!(
        ep.to_string()
            .contains(r#"x: "f32[s0, s1]", y: "f32[1, s1]""#)
    );
}

#[test]
fn nested_caches_follow_their_flattened_form_and_empty_dims_are_dynamic() {
    let m = FnModule::new("Model", &["cache", "z"], |i: &Inputs| {
        Ok(i.tensor("z")?.clone().into())
    });
    let cache = |b: i64, s: i64, d: i64| {
        Value::List(vec![
            Value::List(vec![t(&[b, 4, s, d]), t(&[b, 4, s, d])]),
            Value::List(vec![t(&[b, 4, s, d]), t(&[b, 4, s, d])]),
        ])
    };
    let sets = vec![
        (vec![cache(2, 3, 7), t(&[1, 1, 1, 7])], vec![]),
        (vec![cache(3, 4, 8), t(&[1, 1, 1, 8])], vec![]),
    ];
    let empty = vec![
        (vec![cache(2, 0, 7), t(&[1, 1, 1, 7])], vec![]),
        (vec![cache(2, 0, 7), t(&[1, 1, 1, 7])], vec![]),
    ];
    let mut oracle = Oracle::new();
    let asked = [
        oracle.guess_dynamic_shapes(&["cache", "z"], &sets, false),
        oracle.guess_dynamic_shapes(&["cache", "z"], &empty, true),
    ];
    let answers = oracle.run();
    // The seed's cache result: batch, sequence and head size dynamic in every cache tensor.
    let mi = ModelInputs::new(&m, sets);
    let ds = mi.guess_dynamic_shapes(false).unwrap();
    assert_eq!(string_dynamic_shapes(&ds), answers[asked[0]].text());
    // A dimension of size 0 in every set (an empty cache) is dynamic; AUTO on request.
    let mi = ModelInputs::new(&m, empty);
    let ds = mi.guess_dynamic_shapes(true).unwrap();
    assert_eq!(string_dynamic_shapes(&ds), answers[asked[1]].text());
}

#[test]
fn input_sets_of_other_structures_are_refused_naming_the_path() {
    let m = add();
    let mi = ModelInputs::new(
        &m,
        vec![
            (
                vec![t(&[5, 6]), Value::List(vec![t(&[1]), t(&[2])])],
                vec![],
            ),
            (vec![t(&[7, 8]), Value::List(vec![t(&[1])])], vec![]),
        ],
    );
    let err = mi.guess_dynamic_shapes(false).unwrap_err();
    assert!(matches!(err, Error::Input { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("input y:") && msg.contains("length"), "{msg}");
    let mi = ModelInputs::new(
        &m,
        vec![
            (vec![t(&[5, 6]), t(&[1, 6])], vec![]),
            (vec![t(&[7, 8]), Value::Int(3)], vec![]),
        ],
    );
    let msg = mi.guess_dynamic_shapes(false).unwrap_err().to_string();
    assert!(msg.contains("input y:") && msg.contains("an int"), "{msg}");
}

/// `string_type` against the Python package's own (onnx-diagnostic 0.9.3 run on the same
/// values by `onnx_diagnostic_testing::oracle`): ranks and shapes, statistics of integer and
/// float tensors (NaN included), 0-d and empty tensors, dicts of scalars and None, long lists
/// abbreviated, devices (the caches' `string_type` is checked in crates/serialization).
#[test]
fn string_type_prints_like_the_python_package() {
    let shape = StringTypeOptions::with_shape();
    let mm = StringTypeOptions {
        with_shape: true,
        with_min_max: true,
        ..StringTypeOptions::default()
    };
    let with_device = StringTypeOptions {
        with_device: true,
        ..shape
    };
    let short = StringTypeOptions { limit: 3, ..shape };
    let cache = Value::List(vec![t(&[2, 4, 3, 7]), t(&[2, 4, 3, 7])]);
    let inputs = Value::Tuple(vec![cache.clone(), t(&[1, 1, 1, 7])]);
    let ids = Value::from(tch::Tensor::from_slice(&[1i64, 2, 3, 6]).reshape([2, 2]));
    let f = Value::from(tch::Tensor::from_slice(&[0.5f32, f32::NAN, 1.5]));
    let half = Value::from(tch::Tensor::from_slice(&[0.25f32, -3.0]).to_kind(Kind::Half));
    let scalar = Value::from(tch::Tensor::from(2.5f32));
    let empty = Value::from(tch::Tensor::zeros([0, 3], (Kind::Float, Device::Cpu)));
    let d = Value::Dict(vec![
        ("input_ids".to_owned(), ids.clone()),
        ("n".to_owned(), Value::Int(3)),
        ("none".to_owned(), Value::None),
        ("one".to_owned(), Value::Tuple(vec![Value::Float(0.5)])),
        ("flag".to_owned(), Value::Bool(true)),
    ]);
    let long = Value::List((0..25).map(Value::Int).collect());
    let cases: Vec<(&str, Value, StringTypeOptions)> = vec![
        ("nested, shapes", inputs.clone(), shape),
        ("nested, ranks", inputs, StringTypeOptions::default()),
        ("int64 statistics", ids, mm),
        ("float with a NaN", f, mm),
        ("float16", half, mm),
        ("0-d", scalar, mm),
        ("empty", empty, mm),
        ("dict, shapes", d.clone(), shape),
        ("dict, statistics", d, mm),
        ("long list", long.clone(), shape),
        ("limit 3", long, short),
        ("devices", cache, with_device),
    ];
    let mut oracle = Oracle::new();
    let asked: Vec<usize> = cases
        .iter()
        .map(|(_, v, o)| oracle.string_type(v, o))
        .collect();
    let answers = oracle.run();
    for ((what, v, o), i) in cases.iter().zip(asked) {
        assert_eq!(string_type(v, o), answers[i].text(), "{what}");
    }
}
