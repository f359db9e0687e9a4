//! `ModelInputs::guess_dynamic_shapes`, `move_to_kwargs` and `string_type` against seed `004`
//! (plot_export_with_dynamic_cache): the same results as the Python package, printed the way
//! its `string_type` prints them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use onnx_diagnostic_core::{
    Error, ExportOptions, FnModule, Inputs, ModelInputs, StringTypeOptions, Value, export,
    string_dynamic_shapes, string_type,
};
use onnx_diagnostic_testing::randn;
use tch::{Device, Kind};

fn add() -> FnModule<impl Fn(&Inputs) -> onnx_diagnostic_core::Result<Value>> {
    FnModule::new("Model", &["x", "y"], |i: &Inputs| {
        Ok(i.tensor("x")?.add(i.tensor("y")?)?.into())
    })
}

fn t(shape: &[i64]) -> Value {
    randn(shape).into()
}

#[test]
fn positional_named_and_mixed_inputs_give_the_seed_dynamic_shapes() {
    let m = add();
    // Positional.
    let mi = ModelInputs::new(
        &m,
        vec![
            (vec![t(&[5, 6]), t(&[1, 6])], vec![]),
            (vec![t(&[7, 8]), t(&[1, 8])], vec![]),
        ],
    );
    let ds = mi.guess_dynamic_shapes(false).unwrap();
    assert_eq!(
        string_dynamic_shapes(&ds),
        "(({0:DYNAMIC,1:DYNAMIC},{1:DYNAMIC}),{})"
    );
    // The guessed shapes export as the seed shows.
    let args = mi.inputs[0].0.clone();
    let ep = export(&m, &args, &[], Some(&ds), &ExportOptions::default()).unwrap();
    assert!(
        ep.to_string()
            .contains(r#"def forward(self, x: "f32[s0, s1]", y: "f32[1, s1]"):"#)
    );

    // Named.
    let named = |x: Value, y: Value| (vec![], vec![("x".to_owned(), x), ("y".to_owned(), y)]);
    let mi = ModelInputs::new(
        &m,
        vec![named(t(&[5, 6]), t(&[1, 6])), named(t(&[7, 8]), t(&[1, 8]))],
    );
    let ds = mi.guess_dynamic_shapes(false).unwrap();
    assert_eq!(
        string_dynamic_shapes(&ds),
        "((),dict(x:{0:DYNAMIC,1:DYNAMIC},y:{1:DYNAMIC}))"
    );

    // Mixed, then moved to named arguments.
    let mixed = |x: Value, y: Value| (vec![x], vec![("y".to_owned(), y)]);
    let mi = ModelInputs::new(
        &m,
        vec![mixed(t(&[5, 6]), t(&[1, 6])), mixed(t(&[7, 8]), t(&[1, 8]))],
    );
    let ds = mi.guess_dynamic_shapes(false).unwrap();
    assert_eq!(
        string_dynamic_shapes(&ds),
        "(({0:DYNAMIC,1:DYNAMIC},),dict(y:{1:DYNAMIC}))"
    );
    let (a, k) = mi.inputs[0].clone();
    let (new_args, new_kwargs, new_ds) = mi.move_to_kwargs(&a, &k, &ds).unwrap();
    assert!(new_args.is_empty());
    let names: Vec<&str> = new_kwargs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["x", "y"]);
    assert_eq!(
        string_dynamic_shapes(&new_ds),
        "((),dict(x:{0:DYNAMIC,1:DYNAMIC},y:{1:DYNAMIC}))"
    );
    let ep = export(
        &m,
        &[],
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
    let mi = ModelInputs::new(
        &m,
        vec![
            (vec![cache(2, 3, 7), t(&[1, 1, 1, 7])], vec![]),
            (vec![cache(3, 4, 8), t(&[1, 1, 1, 8])], vec![]),
        ],
    );
    // The seed's cache result: batch, sequence and head size dynamic in every cache tensor.
    let ds = mi.guess_dynamic_shapes(false).unwrap();
    let spec = "{0:DYNAMIC,2:DYNAMIC,3:DYNAMIC}";
    assert_eq!(
        string_dynamic_shapes(&ds),
        format!("((#2[#2[{spec},{spec}],#2[{spec},{spec}]],{{3:DYNAMIC}}),{{}})")
    );
    // A dimension of size 0 in every set (an empty cache) is dynamic; AUTO on request.
    let mi = ModelInputs::new(
        &m,
        vec![
            (vec![cache(2, 0, 7), t(&[1, 1, 1, 7])], vec![]),
            (vec![cache(2, 0, 7), t(&[1, 1, 1, 7])], vec![]),
        ],
    );
    let ds = mi.guess_dynamic_shapes(true).unwrap();
    assert!(
        string_dynamic_shapes(&ds).starts_with("((#2[#2[{2:AUTO},"),
        "{ds:?}"
    );
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

#[test]
fn string_type_prints_like_the_python_package() {
    let shape = StringTypeOptions::with_shape();
    let cache = Value::List(vec![t(&[2, 4, 3, 7]), t(&[2, 4, 3, 7])]);
    let inputs = Value::Tuple(vec![cache.clone(), t(&[1, 1, 1, 7])]);
    assert_eq!(
        string_type(&inputs, &shape),
        "(#2[T1s2x4x3x7,T1s2x4x3x7],T1s1x1x1x7)"
    );
    assert_eq!(
        string_type(&inputs, &StringTypeOptions::default()),
        "(#2[T1r4,T1r4],T1r4)"
    );
    let ids = Value::from(tch::Tensor::from_slice(&[1i64, 2, 3, 6]).reshape([2, 2]));
    let mm = StringTypeOptions {
        with_shape: true,
        with_min_max: true,
        ..StringTypeOptions::default()
    };
    assert_eq!(string_type(&ids, &mm), "T7s2x2[1,6:A3.0]");
    let f = Value::from(tch::Tensor::from_slice(&[0.5f32, f32::NAN, 1.5]));
    assert_eq!(string_type(&f, &mm), "T1s3[0.5,1.5:A1.0N1nans]");
    let scalar = Value::from(tch::Tensor::from(2.5f32));
    assert_eq!(string_type(&scalar, &mm), "T1s=2.5");
    let empty = Value::from(tch::Tensor::zeros([0, 3], (Kind::Float, Device::Cpu)));
    assert_eq!(string_type(&empty, &mm), "T1s0x3[empty]");
    let d = Value::Dict(vec![
        ("input_ids".to_owned(), ids),
        ("n".to_owned(), Value::Int(3)),
        ("none".to_owned(), Value::None),
        ("one".to_owned(), Value::Tuple(vec![Value::Float(0.5)])),
    ]);
    assert_eq!(
        string_type(&d, &shape),
        "dict(input_ids:T7s2x2,n:int,none:None,one:(float,))"
    );
    assert_eq!(
        string_type(&d, &mm),
        "dict(input_ids:T7s2x2[1,6:A3.0],n:int=3,none:None,one:(float=0.5,))"
    );
    let long = Value::List((0..25).map(Value::Int).collect());
    assert_eq!(string_type(&long, &shape), "#25[int,...]");
    let with_device = StringTypeOptions {
        with_device: true,
        ..shape
    };
    assert_eq!(
        string_type(&cache, &with_device),
        "#2[CT1s2x4x3x7,CT1s2x4x3x7]"
    );
}
