//! Nested inputs and outputs: a [`Value`] tree and its structure without tensors, [`TreeSpec`]
//! (torch's `torch.utils._pytree`).
//!
//! Flattening names tensor leaves from their key path as torch.export names the placeholders of
//! nested inputs (what the ONNX inputs of the Python package's exports are called): the
//! top-level name, then `_<index>` for list/tuple items, `_<key>` for dict entries and for the
//! children of a registered custom class (`x`, `pair_0`, `past_key_values_key_0`), each part
//! lower-cased with every character but ASCII letters and digits replaced by `_`
//! ([`leaf_name_part`]): a sliding layer's `key_W4_1` is the input `past_key_values_key_w4_1`.
//! The serializers' keys themselves (the tree spec's context) keep their case. A custom class
//! ([`CustomObject`], e.g. `DynamicCache`) flattens through its [`Serializer`], which must be
//! registered in the calling thread (see [`crate::serialization`]): flattening or rebuilding an
//! unregistered class is [`Error::Serialization`] saying how to register it.

use std::{any::Any, fmt::Debug};

use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    serialization::{Serializer, registered_serializer},
    tensor::Tensor,
};

/// An instance of a custom class that crosses the export boundary (a cache, a model output):
/// the counterpart of a Python object registered with `register_pytree_node`.
///
/// The class owns its data; how it flattens into tensors is the job of its [`Serializer`],
/// registered separately (so that, as in the seeds, serialization can be switched on and off
/// around an export).
pub trait CustomObject: Any + Debug + Send + CloneCustom {
    /// The class name (`DynamicCache`), the key of its serializer.
    fn class_name(&self) -> &str;

    /// The attributes, as `string_type` shows them and `max_diff` compares them (for a
    /// dataclass-like output: its fields that are not `None`).
    fn fields(&self) -> Vec<(String, Value)>;

    /// The `string_type` form; `fmt` formats a child with the caller's options. The default is
    /// the seeds' form of a dataclass: `Class(field:value,...)`.
    fn string_type(&self, fmt: &dyn Fn(&Value) -> String) -> String {
        let rows: Vec<String> = self
            .fields()
            .iter()
            .map(|(k, v)| format!("{k}:{}", fmt(v)))
            .collect();
        format!("{}({})", self.class_name(), rows.join(","))
    }
}

/// Cloning of a boxed [`CustomObject`]; implemented for every `Clone` custom class.
pub trait CloneCustom {
    /// A boxed copy (tensors are shared, as `Tensor::clone` shares them).
    fn clone_custom(&self) -> Box<dyn CustomObject>;
}

impl<T: CustomObject + Clone> CloneCustom for T {
    fn clone_custom(&self) -> Box<dyn CustomObject> {
        Box::new(self.clone())
    }
}

impl Clone for Box<dyn CustomObject> {
    fn clone(&self) -> Self {
        self.clone_custom()
    }
}

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
    /// An instance of a custom class (a cache, a model output).
    Custom(Box<dyn CustomObject>),
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

impl From<Vec<Tensor>> for Value {
    fn from(ts: Vec<Tensor>) -> Self {
        Value::List(ts.into_iter().map(Value::Tensor).collect())
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_owned())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::None, Into::into)
    }
}

/// The structure of a [`Value`] with tensors replaced by slots.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// A custom class flattened by its serializer: the class, the serializer's context (the
    /// children's keys, which also carry what the class needs to be rebuilt, such as a layer's
    /// kind and sliding window) and the children's structures.
    Custom {
        /// The class name.
        class: String,
        /// The children's keys, in flattening order.
        context: Vec<String>,
        /// The children's structures.
        children: Vec<TreeSpec>,
    },
}

/// One part of a leaf's name as torch.export writes it (`_extract_pytree_key` then `lower()` in
/// its `placeholder_naming_pass`): ASCII letters lower-cased, digits kept, anything else `_`.
pub fn leaf_name_part(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The name of the child `key` (a dict key, an index, a serializer's key) of the leaf path
/// `parent` ([`leaf_name_part`] of the key appended with `_`).
pub fn child_leaf_name(parent: &str, key: &str) -> String {
    format!("{parent}_{}", leaf_name_part(key))
}

/// The children of a custom object through its registered serializer.
pub(crate) fn custom_children(obj: &dyn CustomObject) -> Result<Vec<(String, Value)>> {
    let s = registered_serializer(obj.class_name())?;
    s.flatten_with_keys(obj)
}

impl Value {
    /// A value holding a custom object.
    pub fn custom(obj: impl CustomObject) -> Value {
        Value::Custom(Box::new(obj))
    }

    /// Flattens into `(name, tensor)` leaves named from `prefix` (see the module doc) and the
    /// structure.
    ///
    /// # Errors
    /// [`Error::Serialization`] for a custom class without a registered serializer, or one its
    /// serializer refuses.
    pub fn flatten(&self, prefix: &str) -> Result<(Vec<(String, Tensor)>, TreeSpec)> {
        let mut leaves = Vec::new();
        let spec = self.flatten_into(&leaf_name_part(prefix), &mut leaves)?;
        Ok((leaves, spec))
    }

    /// The tensors in flattening order.
    ///
    /// # Errors
    /// As [`Value::flatten`].
    pub fn leaves(&self) -> Result<Vec<Tensor>> {
        Ok(self.flatten("")?.0.into_iter().map(|(_, t)| t).collect())
    }

    fn flatten_into(&self, name: &str, leaves: &mut Vec<(String, Tensor)>) -> Result<TreeSpec> {
        let seq = |items: &[Value], leaves: &mut Vec<(String, Tensor)>| {
            items
                .iter()
                .enumerate()
                .map(|(i, v)| v.flatten_into(&format!("{name}_{i}"), leaves))
                .collect::<Result<Vec<_>>>()
        };
        Ok(match self {
            Value::Tensor(t) => {
                leaves.push((name.to_owned(), t.clone()));
                TreeSpec::Tensor
            }
            Value::Int(v) => TreeSpec::Int(*v),
            Value::Float(v) => TreeSpec::Float(*v),
            Value::Bool(v) => TreeSpec::Bool(*v),
            Value::Str(v) => TreeSpec::Str(v.clone()),
            Value::None => TreeSpec::None,
            Value::List(items) => TreeSpec::List(seq(items, leaves)?),
            Value::Tuple(items) => TreeSpec::Tuple(seq(items, leaves)?),
            Value::Dict(items) => TreeSpec::Dict(
                items
                    .iter()
                    .map(|(k, v)| {
                        Ok((
                            k.clone(),
                            v.flatten_into(&child_leaf_name(name, k), leaves)?,
                        ))
                    })
                    .collect::<Result<_>>()?,
            ),
            Value::Custom(obj) => {
                let children = custom_children(obj.as_ref())?;
                let mut context = Vec::with_capacity(children.len());
                let mut specs = Vec::with_capacity(children.len());
                for (k, v) in &children {
                    specs.push(v.flatten_into(&child_leaf_name(name, k), leaves)?);
                    context.push(k.clone());
                }
                TreeSpec::Custom {
                    class: obj.class_name().to_owned(),
                    context,
                    children: specs,
                }
            }
        })
    }

    /// Rebuilds the same structure with every tensor replaced by `f(tensor)` (custom objects
    /// go through their serializer).
    ///
    /// # Errors
    /// What `f` returns, or [`Error::Serialization`] for an unregistered custom class.
    pub fn map_tensors(&self, f: &mut dyn FnMut(&Tensor) -> Result<Tensor>) -> Result<Value> {
        Ok(match self {
            Value::Tensor(t) => Value::Tensor(f(t)?),
            Value::List(items) => Value::List(
                items
                    .iter()
                    .map(|v| v.map_tensors(f))
                    .collect::<Result<_>>()?,
            ),
            Value::Tuple(items) => Value::Tuple(
                items
                    .iter()
                    .map(|v| v.map_tensors(f))
                    .collect::<Result<_>>()?,
            ),
            Value::Dict(items) => Value::Dict(
                items
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), v.map_tensors(f)?)))
                    .collect::<Result<_>>()?,
            ),
            Value::Custom(obj) => {
                let s = registered_serializer(obj.class_name())?;
                let children = s.flatten_with_keys(obj.as_ref())?;
                let keys: Vec<String> = children.iter().map(|(k, _)| k.clone()).collect();
                let values = children
                    .iter()
                    .map(|(_, v)| v.map_tensors(f))
                    .collect::<Result<Vec<_>>>()?;
                Value::Custom(s.unflatten(values, &keys)?)
            }
            other => other.clone(),
        })
    }

    /// What the value is, for messages (`a tensor`, `a dict`, `None`, `a DynamicCache`).
    pub fn kind_name(&self) -> String {
        match self {
            Value::Tensor(_) => "a tensor".to_owned(),
            Value::Int(_) => "an int".to_owned(),
            Value::Float(_) => "a float".to_owned(),
            Value::Bool(_) => "a bool".to_owned(),
            Value::Str(_) => "a string".to_owned(),
            Value::None => "None".to_owned(),
            Value::List(_) => "a list".to_owned(),
            Value::Tuple(_) => "a tuple".to_owned(),
            Value::Dict(_) => "a dict".to_owned(),
            Value::Custom(obj) => format!("a {}", obj.class_name()),
        }
    }

    /// The tensor, if this is one.
    pub fn as_tensor(&self) -> Option<&Tensor> {
        match self {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// The custom object of type `T`, if this is one.
    pub fn downcast_ref<T: CustomObject>(&self) -> Option<&T> {
        match self {
            Value::Custom(obj) => {
                let any: &dyn Any = obj.as_ref();
                any.downcast_ref::<T>()
            }
            _ => None,
        }
    }

    /// The class name of a custom object.
    pub fn class_name(&self) -> Option<&str> {
        match self {
            Value::Custom(obj) => Some(obj.class_name()),
            _ => None,
        }
    }
}

impl TreeSpec {
    /// The names of the tensor slots, in flattening order, as [`Value::flatten`] names them
    /// under `prefix`; with an empty prefix, a top-level dict's (or custom object's) keys stand
    /// alone (`logits`, `past_key_values_key_0`), tuple or list items are `output_<i>`, a single
    /// tensor is `output`. This is how output names of a lowered model are made.
    pub fn leaf_names(&self, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        match (self, prefix.is_empty()) {
            (TreeSpec::Dict(items), true) => {
                for (k, s) in items {
                    s.names_into(&leaf_name_part(k), &mut out);
                }
            }
            (
                TreeSpec::Custom {
                    context, children, ..
                },
                true,
            ) => {
                for (k, s) in context.iter().zip(children) {
                    s.names_into(&leaf_name_part(k), &mut out);
                }
            }
            (_, true) => self.names_into("output", &mut out),
            _ => self.names_into(&leaf_name_part(prefix), &mut out),
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
                    s.names_into(&child_leaf_name(name, k), out);
                }
            }
            TreeSpec::Custom {
                context, children, ..
            } => {
                for (k, s) in context.iter().zip(children) {
                    s.names_into(&child_leaf_name(name, k), out);
                }
            }
            _ => {}
        }
    }

    /// The number of tensor slots.
    pub fn num_leaves(&self) -> usize {
        match self {
            TreeSpec::Tensor => 1,
            TreeSpec::List(items) | TreeSpec::Tuple(items) => {
                items.iter().map(TreeSpec::num_leaves).sum()
            }
            TreeSpec::Dict(items) => items.iter().map(|(_, s)| s.num_leaves()).sum(),
            TreeSpec::Custom { children, .. } => children.iter().map(TreeSpec::num_leaves).sum(),
            _ => 0,
        }
    }

    /// Rebuilds a value from tensors in flattening order.
    ///
    /// # Errors
    /// [`Error::Input`] when the number of tensors does not match the slots;
    /// [`Error::Serialization`] for a custom class without a registered serializer.
    pub fn unflatten(&self, tensors: Vec<Tensor>) -> Result<Value> {
        let n = tensors.len();
        let expected = self.num_leaves();
        if n != expected {
            return Err(Error::Input {
                path: "outputs".to_owned(),
                reason: format!("{n} tensors for a structure with {expected} tensor slots"),
            });
        }
        let mut it = tensors.into_iter();
        self.build(&mut it)
    }

    fn build(&self, it: &mut impl Iterator<Item = Tensor>) -> Result<Value> {
        let missing = || Error::Input {
            path: "outputs".to_owned(),
            reason: "fewer tensors than slots".to_owned(),
        };
        Ok(match self {
            TreeSpec::Tensor => Value::Tensor(it.next().ok_or_else(missing)?),
            TreeSpec::Int(v) => Value::Int(*v),
            TreeSpec::Float(v) => Value::Float(*v),
            TreeSpec::Bool(v) => Value::Bool(*v),
            TreeSpec::Str(v) => Value::Str(v.clone()),
            TreeSpec::None => Value::None,
            TreeSpec::List(items) => {
                Value::List(items.iter().map(|s| s.build(it)).collect::<Result<_>>()?)
            }
            TreeSpec::Tuple(items) => {
                Value::Tuple(items.iter().map(|s| s.build(it)).collect::<Result<_>>()?)
            }
            TreeSpec::Dict(items) => Value::Dict(
                items
                    .iter()
                    .map(|(k, s)| Ok((k.clone(), s.build(it)?)))
                    .collect::<Result<_>>()?,
            ),
            TreeSpec::Custom {
                class,
                context,
                children,
            } => {
                let s: std::sync::Arc<dyn Serializer> = registered_serializer(class)?;
                let values = children
                    .iter()
                    .map(|c| c.build(it))
                    .collect::<Result<Vec<_>>>()?;
                Value::Custom(s.unflatten(values, context)?)
            }
        })
    }
}
