//! `string_type`: nested inputs at a glance, in the format of onnx-diagnostic's
//! `helpers.string_type` (version 0.9.3), so that prints can be compared with the Python ones.
//!
//! - a tensor: `T{onnx dtype}s{d0}x{d1}` with shapes (`T1s2x3`), `T{dtype}r{rank}` without;
//!   with min/max, `T1s2x3[min,max:Amean]` (a 0-d tensor: `T1s=value`, an empty one:
//!   `T1s0[empty]`; with NaNs `[nan,nan:AnanN{n}nans]`, the statistics of the whole tensor as
//!   the Python package prints them); a `C`/`G` prefix with the device;
//! - lists `#n[a,b]`, tuples `(a,b)` and `(a,)`, dicts `dict(k:v)`, `None`, `int`, `float`,
//!   `bool`, `str` (`int=3` with min/max); sequences of `limit` items or more print their first
//!   item then `...`;
//! - dynamic shapes: `{0:DYN(batch)}`, `{0:DYNAMIC}`, `{0:AUTO}`, nested like the inputs.
//!
//! Floats print as Python's `repr` (`0.5`, `1e-05`), integers as they are. One deliberate
//! difference: with NaNs, min/max/mean are those of the other values (the Python package does
//! this for numpy arrays, but prints `nan` for torch tensors).
//!
//! Custom classes (`DynamicCache(key_cache=...)`) print once the pytree issue registers them;
//! until then a cache prints in its flattened form.

use std::fmt::Write;

use tch::Kind;

use crate::{
    export::{Dim, DynSpec, DynamicShapes},
    pytree::Value,
};

/// Options of [`string_type`].
#[derive(Clone, Copy, Debug)]
pub struct StringTypeOptions {
    /// Print shapes (`T1s2x3`) rather than ranks (`T1r2`).
    pub with_shape: bool,
    /// Print tensor statistics and scalar values.
    pub with_min_max: bool,
    /// Prefix tensors with `C` (CPU) or `G` (GPU).
    pub with_device: bool,
    /// Sequences of this many items or more are abbreviated.
    pub limit: usize,
}

impl Default for StringTypeOptions {
    fn default() -> Self {
        Self {
            with_shape: false,
            with_min_max: false,
            with_device: false,
            limit: 20,
        }
    }
}

impl StringTypeOptions {
    /// Shapes on.
    pub fn with_shape() -> Self {
        Self {
            with_shape: true,
            ..Self::default()
        }
    }
}

/// The ONNX element type code of a libtorch element type (`onnx.TensorProto`: 1 float, 7 int64).
pub fn onnx_dtype(kind: Kind) -> i32 {
    match kind {
        Kind::Float => 1,
        Kind::Uint8 => 2,
        Kind::Int8 => 3,
        Kind::Int16 => 5,
        Kind::Int => 6,
        Kind::Int64 => 7,
        Kind::Bool => 9,
        Kind::Half => 10,
        Kind::Double => 11,
        Kind::ComplexFloat => 14,
        Kind::ComplexDouble => 15,
        Kind::BFloat16 => 16,
        _ => 0,
    }
}

/// A float as Python's `repr` prints it.
pub fn py_float(x: f64) -> String {
    if x.is_nan() {
        return "nan".to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if x == 0.0 || (1e-4..1e16).contains(&x.abs()) {
        let s = format!("{x}");
        return if s.contains('.') { s } else { format!("{s}.0") };
    }
    let s = format!("{x:e}");
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let (sign, digits) = match exp.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', exp),
    };
    format!("{mantissa}e{sign}{digits:0>2}")
}

fn is_float(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16
    )
}

/// A tensor element as Python prints `tensor.item()`.
fn item(t: &tch::Tensor, float: bool) -> String {
    if float {
        t.f_double_value(&[]).map(py_float).unwrap_or_default()
    } else if t.kind() == Kind::Bool {
        let v = t.f_int64_value(&[]).unwrap_or_default();
        if v != 0 { "True" } else { "False" }.to_owned()
    } else {
        t.f_int64_value(&[])
            .map(|v| v.to_string())
            .unwrap_or_default()
    }
}

fn tensor_string(t: &tch::Tensor, o: &StringTypeOptions) -> String {
    let prefix = if o.with_device {
        if t.device().is_cuda() { "G" } else { "C" }
    } else {
        ""
    };
    let code = onnx_dtype(t.kind());
    let size = t.size();
    let s = if o.with_shape {
        let dims: Vec<String> = size.iter().map(i64::to_string).collect();
        format!("{prefix}T{code}s{}", dims.join("x"))
    } else {
        format!("{prefix}T{code}r{}", size.len())
    };
    if !o.with_min_max {
        return s;
    }
    let float = is_float(t.kind());
    if size.is_empty() {
        return format!("{s}={}", item(t, float));
    }
    if t.numel() == 0 {
        return format!("{s}[empty]");
    }
    let flat = t.reshape([-1]);
    let n_nan = if float {
        flat.isnan().sum(Kind::Int64).int64_value(&[])
    } else {
        0
    };
    if n_nan > 0 {
        // onnx-diagnostic 0.9.3 drops the NaNs for its count but prints the statistics of the
        // whole tensor, which torch's min, max and mean make NaN.
        return format!("{s}[nan,nan:AnanN{n_nan}nans]");
    }
    let mean = py_float(
        flat.to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[]),
    );
    let (lo, hi) = (item(&flat.min(), float), item(&flat.max(), float));
    format!("{s}[{lo},{hi}:A{mean}]")
}

fn join<'a>(items: impl Iterator<Item = &'a Value>, o: &StringTypeOptions) -> String {
    items
        .map(|v| string_type(v, o))
        .collect::<Vec<_>>()
        .join(",")
}

/// The compact description of a nested value (see the module doc).
pub fn string_type(value: &Value, o: &StringTypeOptions) -> String {
    match value {
        Value::Tensor(t) => tensor_string(t.as_tch(), o),
        Value::None => "None".to_owned(),
        Value::Int(v) if o.with_min_max => format!("int={v}"),
        Value::Int(_) => "int".to_owned(),
        Value::Float(v) if o.with_min_max => format!("float={}", py_float(*v)),
        Value::Float(_) => "float".to_owned(),
        Value::Bool(v) if o.with_min_max => {
            format!("bool={}", if *v { "True" } else { "False" })
        }
        Value::Bool(_) => "bool".to_owned(),
        Value::Str(_) => "str".to_owned(),
        Value::Tuple(items) if items.len() == 1 => format!("({},)", string_type(&items[0], o)),
        Value::Tuple(items) if items.len() < o.limit => format!("({})", join(items.iter(), o)),
        Value::Tuple(items) => format!("#{}({},...)", items.len(), string_type(&items[0], o)),
        Value::List(items) if items.len() < o.limit => {
            format!("#{}[{}]", items.len(), join(items.iter(), o))
        }
        Value::List(items) => format!("#{}[{},...]", items.len(), string_type(&items[0], o)),
        Value::Dict(items) if items.is_empty() => "{}".to_owned(),
        Value::Dict(items) => {
            let mut s = String::new();
            for (i, (k, v)) in items.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                let _ = write!(s, "{k}:{}", string_type(v, o));
            }
            format!("dict({s})")
        }
        Value::Custom(obj) => obj.string_type(&|v| string_type(v, o)),
    }
}

fn dim_string(d: &Dim) -> String {
    match d {
        Dim::Named { name, .. } => format!("DYN({name})"),
        Dim::Auto => "AUTO".to_owned(),
        Dim::Dynamic => "DYNAMIC".to_owned(),
        Dim::Static => "STATIC".to_owned(),
    }
}

/// Dynamic shapes of one input as `string_type` prints them (`{0:DYN(batch),1:DYNAMIC}`).
pub fn string_spec(spec: &DynSpec) -> String {
    match spec {
        DynSpec::Tensor(dims) if dims.is_empty() => "{}".to_owned(),
        DynSpec::Tensor(dims) => {
            let rows: Vec<String> = dims
                .iter()
                .map(|(k, d)| format!("{k}:{}", dim_string(d)))
                .collect();
            format!("{{{}}}", rows.join(","))
        }
        DynSpec::Seq(items) => {
            let rows: Vec<String> = items.iter().map(string_spec).collect();
            format!("#{}[{}]", rows.len(), rows.join(","))
        }
        DynSpec::Dict(items) => {
            let rows: Vec<String> = items
                .iter()
                .map(|(k, s)| format!("{k}:{}", string_spec(s)))
                .collect();
            format!("dict({})", rows.join(","))
        }
        DynSpec::Static => "None".to_owned(),
    }
}

/// The `(args, kwargs)` pair of dynamic shapes as `string_type` prints it: a tuple of the
/// positional specs (`(a,)` for one) and a dict of the named ones (`{}` when empty).
pub fn string_dynamic_shapes(ds: &DynamicShapes) -> String {
    let args: Vec<String> = ds.args.iter().map(string_spec).collect();
    let args = match args.len() {
        0 => "()".to_owned(),
        1 => format!("({},)", args[0]),
        _ => format!("({})", args.join(",")),
    };
    let kwargs = if ds.kwargs.is_empty() {
        "{}".to_owned()
    } else {
        let rows: Vec<String> = ds
            .kwargs
            .iter()
            .map(|(k, s)| format!("{k}:{}", string_spec(s)))
            .collect();
        format!("dict({})", rows.join(","))
    };
    format!("({args},{kwargs})")
}

#[cfg(test)]
mod tests {
    use super::py_float;

    #[test]
    fn floats_print_as_python_repr() {
        assert_eq!(py_float(0.0), "0.0");
        assert_eq!(py_float(204672.0), "204672.0");
        assert_eq!(py_float(6.556510925292969e-7), "6.556510925292969e-07");
        assert_eq!(py_float(0.00021480971330003638), "0.00021480971330003638");
        assert_eq!(py_float(1e-5), "1e-05");
        assert_eq!(py_float(1e16), "1e+16");
        assert_eq!(py_float(-2.5), "-2.5");
        assert_eq!(py_float(f64::INFINITY), "inf");
    }
}
