//! Nested inputs and outputs: a [`Value`] tree and its structure without tensors, [`TreeSpec`].
//!
//! Flattening names tensor leaves from their key path, as onnx-diagnostic does: the top-level
//! name, then `_<index>` for list/tuple items and `_<key>` for dict entries (`x`, `pair_0`,
//! `cache_key_0`). Registered custom classes (caches) arrive with the pytree issue.

use crate::tensor::Tensor;

/// A nested input or output.
#[derive(Clone, Debug)]
pub enum Value {
    /// A tensor.
    Tensor(Tensor),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
    /// Python's `None` (an absent optional input).
    None,
    /// A list.
    List(Vec<Value>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A dict with string keys, in insertion order.
    Dict(Vec<(String, Value)>),
}

impl From<Tensor> for Value {
    fn from(t: Tensor) -> Self {
        Value::Tensor(t)
    }
}

impl From<tch::Tensor> for Value {
    fn from(t: tch::Tensor) -> Self {
        Value::Tensor(Tensor::from(t))
    }
}

/// The structure of a [`Value`] with tensors replaced by slots.
#[derive(Clone, Debug, PartialEq)]
pub enum TreeSpec {
    /// A tensor slot.
    Tensor,
    /// A constant integer.
    Int(i64),
    /// A constant float.
    Float(f64),
    /// A constant boolean.
    Bool(bool),
    /// A constant string.
    Str(String),
    /// `None`.
    None,
    /// A list.
    List(Vec<TreeSpec>),
    /// A tuple.
    Tuple(Vec<TreeSpec>),
    /// A dict.
    Dict(Vec<(String, TreeSpec)>),
}

impl Value {
    /// Flattens into `(name, tensor)` leaves named from `prefix` (see the module doc) and the
    /// structure.
    pub fn flatten(&self, prefix: &str) -> (Vec<(String, Tensor)>, TreeSpec) {
        let mut leaves = Vec::new();
        let spec = self.flatten_into(prefix, &mut leaves);
        (leaves, spec)
    }

    fn flatten_into(&self, name: &str, leaves: &mut Vec<(String, Tensor)>) -> TreeSpec {
        match self {
            Value::Tensor(t) => {
                leaves.push((name.to_owned(), t.clone()));
                TreeSpec::Tensor
            }
            Value::Int(v) => TreeSpec::Int(*v),
            Value::Float(v) => TreeSpec::Float(*v),
            Value::Bool(v) => TreeSpec::Bool(*v),
            Value::Str(v) => TreeSpec::Str(v.clone()),
            Value::None => TreeSpec::None,
            Value::List(items) => TreeSpec::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| v.flatten_into(&format!("{name}_{i}"), leaves))
                    .collect(),
            ),
            Value::Tuple(items) => TreeSpec::Tuple(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| v.flatten_into(&format!("{name}_{i}"), leaves))
                    .collect(),
            ),
            Value::Dict(items) => TreeSpec::Dict(
                items
                    .iter()
                    .map(|(k, v)| (k.clone(), v.flatten_into(&format!("{name}_{k}"), leaves)))
                    .collect(),
            ),
        }
    }

    /// What the value is, for messages (`a tensor`, `a dict`, `None`).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Tensor(_) => "a tensor",
            Value::Int(_) => "an int",
            Value::Float(_) => "a float",
            Value::Bool(_) => "a bool",
            Value::Str(_) => "a string",
            Value::None => "None",
            Value::List(_) => "a list",
            Value::Tuple(_) => "a tuple",
            Value::Dict(_) => "a dict",
        }
    }

    /// The tensor, if this is one.
    pub fn as_tensor(&self) -> Option<&Tensor> {
        match self {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }
}

impl TreeSpec {
    /// The names of the tensor slots, in flattening order, as [`Value::flatten`] names them
    /// under `prefix`; with an empty prefix, a top-level dict's keys stand alone (`logits`,
    /// `past_key_values_key_0`), tuple or list items are `output_<i>`, a single tensor is
    /// `output`. This is how output names of a lowered model are made.
    pub fn leaf_names(&self, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        match (self, prefix.is_empty()) {
            (TreeSpec::Dict(items), true) => {
                for (k, s) in items {
                    s.names_into(k, &mut out);
                }
            }
            (_, true) => self.names_into("output", &mut out),
            _ => self.names_into(prefix, &mut out),
        }
        out
    }

    fn names_into(&self, name: &str, out: &mut Vec<String>) {
        match self {
            TreeSpec::Tensor => out.push(name.to_owned()),
            TreeSpec::List(items) | TreeSpec::Tuple(items) => {
                for (i, s) in items.iter().enumerate() {
                    s.names_into(&format!("{name}_{i}"), out);
                }
            }
            TreeSpec::Dict(items) => {
                for (k, s) in items {
                    s.names_into(&format!("{name}_{k}"), out);
                }
            }
            _ => {}
        }
    }

    /// Rebuilds a value from tensors in flattening order.
    ///
    /// # Errors
    /// A message when the number of tensors does not match the slots.
    pub fn unflatten(&self, tensors: Vec<Tensor>) -> Result<Value, String> {
        let n = tensors.len();
        let mut it = tensors.into_iter();
        let v = self.build(&mut it)?;
        if it.next().is_some() {
            return Err(format!("{n} tensors for a structure with fewer slots"));
        }
        Ok(v)
    }

    fn build(&self, it: &mut impl Iterator<Item = Tensor>) -> Result<Value, String> {
        Ok(match self {
            TreeSpec::Tensor => Value::Tensor(it.next().ok_or("fewer tensors than slots")?),
            TreeSpec::Int(v) => Value::Int(*v),
            TreeSpec::Float(v) => Value::Float(*v),
            TreeSpec::Bool(v) => Value::Bool(*v),
            TreeSpec::Str(v) => Value::Str(v.clone()),
            TreeSpec::None => Value::None,
            TreeSpec::List(items) => Value::List(
                items
                    .iter()
                    .map(|s| s.build(it))
                    .collect::<Result<_, _>>()?,
            ),
            TreeSpec::Tuple(items) => Value::Tuple(
                items
                    .iter()
                    .map(|s| s.build(it))
                    .collect::<Result<_, _>>()?,
            ),
            TreeSpec::Dict(items) => Value::Dict(
                items
                    .iter()
                    .map(|(k, s)| Ok((k.clone(), s.build(it)?)))
                    .collect::<Result<_, String>>()?,
            ),
        })
    }
}
