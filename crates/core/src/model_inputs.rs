//! `ModelInputs`: several valid input sets of a module, from which the dynamic shapes are
//! guessed (onnx-diagnostic's `export.ModelInputs`, seed `004`): a dimension whose size differs
//! between the sets is dynamic, so is a dimension that is 0 in every set (an empty cache);
//! the others are static. Custom classes follow their flattened form.

use std::collections::BTreeMap;

use crate::{
    error::{Error, Result},
    export::{Dim, DynSpec, DynamicShapes, Module},
    pytree::Value,
};

/// One input set: positional and named arguments.
pub type InputSet = (Vec<Value>, Vec<(String, Value)>);

/// An input set moved to named arguments, with its dynamic shapes.
pub type MovedInputs = (Vec<Value>, Vec<(String, Value)>, DynamicShapes);

/// A module's forward signature and several valid input sets.
#[derive(Clone, Debug)]
pub struct ModelInputs {
    signature: Vec<String>,
    /// The input sets.
    pub inputs: Vec<InputSet>,
}

/// The dynamic spec of one input over its values in every set; `path` names it in errors.
fn guess(values: &[&Value], path: &str, dim: &Dim) -> Result<DynSpec> {
    let first = values[0];
    let mismatch = |other: &Value| Error::Input {
        path: path.to_owned(),
        reason: format!(
            "the input sets differ in structure: {} in set 0, {} in another",
            first.kind_name(),
            other.kind_name()
        ),
    };
    match first {
        Value::Tensor(t0) => {
            let shapes = values
                .iter()
                .map(|v| match v {
                    Value::Tensor(t) => Ok(t.concrete_shape()),
                    other => Err(mismatch(other)),
                })
                .collect::<Result<Vec<_>>>()?;
            let rank = t0.rank();
            if let Some(bad) = shapes.iter().find(|s| s.len() != rank) {
                return Err(Error::Input {
                    path: path.to_owned(),
                    reason: format!(
                        "the input sets differ in rank: {rank} in set 0, {} in another",
                        bad.len()
                    ),
                });
            }
            let mut dims = BTreeMap::new();
            for d in 0..rank {
                let sizes: Vec<i64> = shapes.iter().map(|s| s[d]).collect();
                let differs = sizes.iter().any(|s| *s != sizes[0]);
                let all_zero = sizes.iter().all(|s| *s == 0);
                if differs || all_zero {
                    dims.insert(d, dim.clone());
                }
            }
            Ok(DynSpec::Tensor(dims))
        }
        Value::List(items) | Value::Tuple(items) => {
            let mut per_item: Vec<Vec<&Value>> = vec![Vec::new(); items.len()];
            for v in values {
                match v {
                    Value::List(other) | Value::Tuple(other) if other.len() == items.len() => {
                        for (slot, x) in per_item.iter_mut().zip(other) {
                            slot.push(x);
                        }
                    }
                    Value::List(other) | Value::Tuple(other) => {
                        return Err(Error::Input {
                            path: path.to_owned(),
                            reason: format!(
                                "the input sets differ in length: {} in set 0, {} in another",
                                items.len(),
                                other.len()
                            ),
                        });
                    }
                    other => return Err(mismatch(other)),
                }
            }
            let specs = per_item
                .iter()
                .enumerate()
                .map(|(i, vs)| guess(vs, &format!("{path}[{i}]"), dim))
                .collect::<Result<_>>()?;
            Ok(DynSpec::Seq(specs))
        }
        Value::Dict(items) => {
            let mut specs = Vec::with_capacity(items.len());
            for (k, _) in items {
                let vs = values
                    .iter()
                    .map(|v| match v {
                        Value::Dict(other) => other
                            .iter()
                            .find(|(ok, _)| ok == k)
                            .map(|(_, x)| x)
                            .ok_or_else(|| Error::Input {
                                path: format!("{path}[{k:?}]"),
                                reason: "missing from another input set".to_owned(),
                            }),
                        other => Err(mismatch(other)),
                    })
                    .collect::<Result<Vec<_>>>()?;
                specs.push((k.clone(), guess(&vs, &format!("{path}[{k:?}]"), dim)?));
            }
            Ok(DynSpec::Dict(specs))
        }
        Value::Custom(obj) => {
            // A custom class follows its flattened form: one spec per child, as a list.
            let class = obj.class_name();
            let flat = values
                .iter()
                .map(|v| match v {
                    Value::Custom(o) if o.class_name() == class => {
                        crate::pytree::custom_children(o.as_ref())
                    }
                    other => Err(mismatch(other)),
                })
                .collect::<Result<Vec<_>>>()?;
            let keys: Vec<&str> = flat[0].iter().map(|(k, _)| k.as_str()).collect();
            if let Some(bad) = flat
                .iter()
                .find(|f| f.iter().map(|(k, _)| k.as_str()).ne(keys.iter().copied()))
            {
                return Err(Error::Input {
                    path: path.to_owned(),
                    reason: format!(
                        "the input sets differ in structure: {class} flattens to [{}] in set 0, \
                         [{}] in another",
                        keys.join(", "),
                        bad.iter()
                            .map(|(k, _)| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
            let specs = keys
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let vs: Vec<&Value> = flat.iter().map(|f| &f[i].1).collect();
                    guess(&vs, &format!("{path}.{k}"), dim)
                })
                .collect::<Result<_>>()?;
            Ok(DynSpec::Seq(specs))
        }
        _ => {
            if let Some(other) = values
                .iter()
                .find(|v| std::mem::discriminant(**v) != std::mem::discriminant(first))
            {
                return Err(mismatch(other));
            }
            Ok(DynSpec::Static)
        }
    }
}

impl ModelInputs {
    /// The input sets of `module`.
    pub fn new(module: &dyn Module, inputs: Vec<InputSet>) -> Self {
        Self {
            signature: module.forward_signature(),
            inputs,
        }
    }

    /// Guesses the dynamic shapes: `Dim::DYNAMIC` for every dimension that differs between the
    /// sets or is 0 in all of them (`Dim::AUTO` when `auto`). Positional specs for the
    /// positional arguments, named ones for the keyword arguments, as the sets give them.
    ///
    /// # Errors
    /// [`Error::Input`] naming the first path where the sets differ in structure, or when
    /// there is no input set.
    pub fn guess_dynamic_shapes(&self, auto: bool) -> Result<DynamicShapes> {
        let dim = if auto { Dim::AUTO } else { Dim::DYNAMIC };
        let first = self.inputs.first().ok_or_else(|| Error::Input {
            path: "inputs".to_owned(),
            reason: "no input set to guess from".to_owned(),
        })?;
        let mut args = Vec::with_capacity(first.0.len());
        for i in 0..first.0.len() {
            let vs = self
                .inputs
                .iter()
                .enumerate()
                .map(|(k, (a, _))| {
                    a.get(i).ok_or_else(|| Error::Input {
                        path: format!("args[{i}]"),
                        reason: format!("missing from input set {k}"),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let name = self
                .signature
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("args[{i}]"));
            args.push(guess(&vs, &name, &dim)?);
        }
        let mut kwargs = Vec::with_capacity(first.1.len());
        for (name, _) in &first.1 {
            let vs = self
                .inputs
                .iter()
                .enumerate()
                .map(|(k, (_, kw))| {
                    kw.iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v)
                        .ok_or_else(|| Error::Input {
                            path: name.clone(),
                            reason: format!("missing from input set {k}"),
                        })
                })
                .collect::<Result<Vec<_>>>()?;
            kwargs.push((name.clone(), guess(&vs, name, &dim)?));
        }
        Ok(DynamicShapes { args, kwargs })
    }

    /// Names the dynamic shapes of the positional arguments by the forward signature, as the
    /// Python package's `ModelInputs.move_to_kwargs` does: the arguments are returned as
    /// given (positional ones stay positional, named ones in the signature's order) and every
    /// dynamic shape becomes a named one (`torch.export` and [`crate::export`] bind named
    /// shapes to positional arguments by name). The Python package's docstring says it moves
    /// the arguments too; its code moves only the shapes, and so does this.
    ///
    /// # Errors
    /// [`Error::Input`] when there are more positional arguments than parameters.
    pub fn move_to_kwargs(
        &self,
        args: &[Value],
        kwargs: &[(String, Value)],
        ds: &DynamicShapes,
    ) -> Result<MovedInputs> {
        if args.len() > self.signature.len() {
            return Err(Error::Input {
                path: format!("args[{}]", self.signature.len()),
                reason: format!(
                    "forward takes {} arguments ({}), {} were given",
                    self.signature.len(),
                    self.signature.join(", "),
                    args.len()
                ),
            });
        }
        // In the signature's order, then any other name (the Python package's reordering).
        let ordered = |items: Vec<(String, DynSpec)>| {
            let mut out: Vec<(String, DynSpec)> = self
                .signature
                .iter()
                .filter_map(|n| items.iter().find(|(k, _)| k == n).cloned())
                .collect();
            out.extend(
                items
                    .iter()
                    .filter(|(k, _)| !self.signature.contains(k))
                    .cloned(),
            );
            out
        };
        let mut named: Vec<(String, DynSpec)> = self
            .signature
            .iter()
            .zip(&ds.args)
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect();
        named.extend(ds.kwargs.iter().cloned());
        let mut new_kwargs: Vec<(String, Value)> = self
            .signature
            .iter()
            .filter_map(|n| kwargs.iter().find(|(k, _)| k == n).cloned())
            .collect();
        new_kwargs.extend(
            kwargs
                .iter()
                .filter(|(k, _)| !self.signature.contains(k))
                .cloned(),
        );
        Ok((
            args.to_vec(),
            new_kwargs,
            DynamicShapes {
                args: Vec::new(),
                kwargs: ordered(named),
            },
        ))
    }
}
