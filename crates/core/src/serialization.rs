//! How custom classes flatten into tensors and back: the [`Serializer`] trait, the classes
//! known at link time, and which of them are registered (onnx-diagnostic's
//! `onnx_export_serialization`: `register_class_serialization`,
//! `unregister_class_serialization`, `register_cache_serialization`,
//! `serialization_functions`).
//!
//! - A crate declares a serializer with [`register_serializer!`]; every linked declaration is
//!   *available* ([`available_serializers`]).
//! - A class is *registered* in the calling thread only: between
//!   [`register_cache_serialization`] and the drop of the [`SerializationGuard`] it returns (what
//!   the patches guard does for its families), or by [`register_class_serialization`] until
//!   [`unregister_class_serialization`]. Registration is per thread, never process-wide, so two
//!   exports in two threads get what each asked for (the Python package registers globally).
//! - Flattening or rebuilding an unregistered class is [`Error::Serialization`] naming the class
//!   and how to register it.

use std::{cell::RefCell, collections::BTreeMap, fmt, sync::Arc};

use crate::{
    error::{Error, Result},
    pytree::{CustomObject, Value},
};

#[doc(hidden)]
pub use inventory as __inventory;

/// The ecosystem a class (or a patch) belongs to, as the seeds' options name them
/// (`patch_transformers`, `patch_diffusers`, custom patches).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// torch itself.
    Torch,
    /// transformers' classes.
    Transformers,
    /// diffusers' classes.
    Diffusers,
    /// User classes (plugins, `custom_patches`).
    Custom,
    /// Methods rewritten by the control-flow rewriting (patches only).
    Rewrite,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Torch => "torch",
            Family::Transformers => "transformers",
            Family::Diffusers => "diffusers",
            Family::Custom => "custom",
            Family::Rewrite => "rewrite",
        })
    }
}

/// How one custom class flattens into named children and is rebuilt from them (the
/// `flatten`, `flatten_with_keys` and `unflatten` functions torch's `register_pytree_node`
/// takes).
///
/// The context of the flattened form is the list of the children's keys: as in the seeds, the
/// keys carry what the class needs to be rebuilt (`key_W4096_1`: a sliding-window layer of
/// window 4096).
pub trait Serializer: Send + Sync + 'static {
    /// The class it serializes (`DynamicCache`).
    fn class_name(&self) -> &'static str;

    /// The family registering it.
    fn family(&self) -> Family;

    /// The children with their keys, in flattening order.
    ///
    /// # Errors
    /// [`Error::Serialization`] when the object is not of this class or cannot be flattened.
    fn flatten_with_keys(&self, obj: &dyn CustomObject) -> Result<Vec<(String, Value)>>;

    /// The children and the context (their keys).
    ///
    /// # Errors
    /// As [`Serializer::flatten_with_keys`].
    fn flatten(&self, obj: &dyn CustomObject) -> Result<(Vec<Value>, Vec<String>)> {
        Ok(self
            .flatten_with_keys(obj)?
            .into_iter()
            .map(|(k, v)| (v, k))
            .unzip())
    }

    /// Rebuilds an object from its children and the context.
    ///
    /// # Errors
    /// [`Error::Serialization`] when the children or the context do not describe an object of
    /// this class.
    fn unflatten(&self, values: Vec<Value>, context: &[String]) -> Result<Box<dyn CustomObject>>;
}

impl fmt::Debug for dyn Serializer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serializer({}, {})", self.class_name(), self.family())
    }
}

/// A serializer declared at link time (see [`register_serializer!`]).
#[doc(hidden)]
pub struct SerializerEntry(pub &'static dyn Serializer);

inventory::collect!(SerializerEntry);

/// Declares a serializer at link time: `register_serializer!(DynamicCacheSerializer);` with a
/// unit struct implementing [`Serializer`]. It is then listed by [`available_serializers`] and
/// registered by [`register_cache_serialization`] for its family.
#[macro_export]
macro_rules! register_serializer {
    ($s:expr) => {
        $crate::serialization::__inventory::submit! {
            $crate::serialization::SerializerEntry(&$s)
        }
    };
}

/// Every serializer declared in the linked crates, by class name.
pub fn available_serializers() -> Vec<&'static dyn Serializer> {
    let mut all: Vec<&'static dyn Serializer> = inventory::iter::<SerializerEntry>
        .into_iter()
        .map(|e| e.0)
        .collect();
    all.sort_by_key(|s| s.class_name());
    all
}

/// The serializers registered in this thread (the host's when this copy is a plugin's).
static REGISTERED: crate::state::Slot<RefCell<BTreeMap<String, Arc<dyn Serializer>>>> =
    crate::state::Slot(|s| &s.serializers);

/// Registers `serializer` for its class in this thread; `false` when the class is already
/// registered (the registration in place is kept, as the seeds do).
pub fn register_class_serialization(serializer: Arc<dyn Serializer>) -> bool {
    REGISTERED.with(|r| {
        let mut r = r.borrow_mut();
        let name = serializer.class_name().to_owned();
        match r.entry(name) {
            std::collections::btree_map::Entry::Occupied(_) => false,
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(serializer);
                true
            }
        }
    })
}

/// Removes the registration of `class` in this thread; `false` when it was not registered.
pub fn unregister_class_serialization(class: &str) -> bool {
    REGISTERED.with(|r| r.borrow_mut().remove(class).is_some())
}

/// Whether `class` is registered in this thread.
pub fn is_registered(class: &str) -> bool {
    REGISTERED.with(|r| r.borrow().contains_key(class))
}

/// The registered serializer of `class`.
///
/// # Errors
/// [`Error::Serialization`] saying how to register the class, or that no serializer for it is
/// linked at all.
pub fn registered_serializer(class: &str) -> Result<Arc<dyn Serializer>> {
    if let Some(s) = REGISTERED.with(|r| r.borrow().get(class).cloned()) {
        return Ok(s);
    }
    let reason = match available_serializers()
        .into_iter()
        .find(|s| s.class_name() == class)
    {
        Some(s) => format!(
            "it is not registered in this thread; wrap the export (or the flattening) in \
             `register_cache_serialization` for family {} (the patches guard does it), or call \
             `register_class_serialization`",
            s.family()
        ),
        None => "no serializer for this class is linked; link the crate that declares it \
                 (onnx-diagnostic-serialization for the transformers and diffusers classes) or \
                 implement `Serializer` and call `register_class_serialization`"
            .to_owned(),
    };
    Err(Error::Serialization {
        class: class.to_owned(),
        reason,
    })
}

/// The classes of the given families that have a serializer, sorted, with whether each is
/// registered in this thread (the seeds' `serialization_functions`).
pub fn serialization_functions(families: &[Family]) -> Vec<(String, bool)> {
    available_serializers()
        .into_iter()
        .filter(|s| families.contains(&s.family()))
        .map(|s| (s.class_name().to_owned(), is_registered(s.class_name())))
        .collect()
}

/// Registrations made by [`register_cache_serialization`], undone on drop (also on error and
/// on panic).
#[derive(Debug)]
#[must_use = "the registrations end when the guard is dropped"]
pub struct SerializationGuard {
    registered: Vec<String>,
    verbose: u8,
}

impl SerializationGuard {
    /// The classes this guard registered (the ones already registered are not listed: they
    /// stay registered after the guard).
    pub fn registered(&self) -> &[String] {
        &self.registered
    }
}

impl Drop for SerializationGuard {
    fn drop(&mut self) {
        for class in self.registered.drain(..) {
            unregister_class_serialization(&class);
            if self.verbose > 0 {
                println!("[unregister_cache_serialization] unregistered {class}");
            }
        }
    }
}

/// Registers, in this thread, every available serializer of the families switched on, until
/// the returned guard is dropped (the seeds' `register_cache_serialization`); `verbose > 0`
/// prints each registration.
pub fn register_cache_serialization(
    patch_transformers: bool,
    patch_diffusers: bool,
    verbose: u8,
) -> SerializationGuard {
    register_families(
        &[
            (Family::Transformers, patch_transformers),
            (Family::Diffusers, patch_diffusers),
            (Family::Custom, true),
        ]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(f, _)| *f)
        .collect::<Vec<_>>(),
        verbose,
    )
}

/// Registers every available serializer of `families` until the guard is dropped.
pub fn register_families(families: &[Family], verbose: u8) -> SerializationGuard {
    register_families_with(families, &[], verbose)
}

/// [`register_families`] after the run-time serializers `extra` (a plugin's), which come first
/// and so win over a linked serializer of the same class.
pub fn register_families_with(
    families: &[Family],
    extra: &[Arc<dyn Serializer>],
    verbose: u8,
) -> SerializationGuard {
    let mut registered = Vec::new();
    let linked = available_serializers()
        .into_iter()
        .filter(|s| families.contains(&s.family()))
        .map(shared_serializer);
    for s in extra.iter().cloned().chain(linked) {
        if register_class_serialization(s.clone()) {
            if verbose > 0 {
                println!(
                    "[register_class_serialization] ---------- register {}",
                    s.class_name()
                );
            }
            registered.push(s.class_name().to_owned());
        } else if verbose > 0 {
            println!(
                "[register_class_serialization] already registered {}",
                s.class_name()
            );
        }
    }
    SerializationGuard {
        registered,
        verbose,
    }
}

/// A link-time serializer (a plugin's) behind an `Arc`, as `PatchOptions::custom_serializers`
/// takes them.
pub fn shared_serializer(s: &'static dyn Serializer) -> Arc<dyn Serializer> {
    Arc::new(StaticSerializer(s))
}

/// A link-time serializer behind an `Arc`.
struct StaticSerializer(&'static dyn Serializer);

impl Serializer for StaticSerializer {
    fn class_name(&self) -> &'static str {
        self.0.class_name()
    }
    fn family(&self) -> Family {
        self.0.family()
    }
    fn flatten_with_keys(&self, obj: &dyn CustomObject) -> Result<Vec<(String, Value)>> {
        self.0.flatten_with_keys(obj)
    }
    fn unflatten(&self, values: Vec<Value>, context: &[String]) -> Result<Box<dyn CustomObject>> {
        self.0.unflatten(values, context)
    }
}

/// The object as `T`, or [`Error::Serialization`] naming both classes (for `flatten`
/// implementations).
///
/// # Errors
/// When `obj` is not a `T`.
pub fn downcast<'a, T: CustomObject>(obj: &'a dyn CustomObject, class: &str) -> Result<&'a T> {
    let any: &dyn std::any::Any = obj;
    any.downcast_ref::<T>().ok_or_else(|| Error::Serialization {
        class: class.to_owned(),
        reason: format!("the serializer of {class} was given a {}", obj.class_name()),
    })
}

/// A class made of named optional fields, like transformers' `ModelOutput` dataclasses: it
/// flattens into its fields that are not `None`, keyed by field name (the seeds'
/// `make_serialization_function_for_dataclass`). Declare one with [`crate::dataclass!`].
pub trait Dataclass: CustomObject + Sized {
    /// The class name.
    const CLASS: &'static str;
    /// The field names, in declaration order.
    const FIELDS: &'static [&'static str];
    /// An instance from `(field, value)` pairs; fields not given are `None`.
    ///
    /// # Errors
    /// [`Error::Serialization`] for a field the class does not have.
    fn from_fields(fields: Vec<(String, Value)>) -> Result<Self>;
}

/// The [`Serializer`] of a [`Dataclass`].
pub struct DataclassSerializer<T> {
    family: Family,
    _class: std::marker::PhantomData<fn() -> T>,
}

impl<T> DataclassSerializer<T> {
    /// The serializer of `T`, registered with `family`.
    pub const fn new(family: Family) -> Self {
        Self {
            family,
            _class: std::marker::PhantomData,
        }
    }
}

impl<T: Dataclass> Serializer for DataclassSerializer<T> {
    fn class_name(&self) -> &'static str {
        T::CLASS
    }
    fn family(&self) -> Family {
        self.family
    }
    fn flatten_with_keys(&self, obj: &dyn CustomObject) -> Result<Vec<(String, Value)>> {
        Ok(downcast::<T>(obj, T::CLASS)?.fields())
    }
    fn unflatten(&self, values: Vec<Value>, context: &[String]) -> Result<Box<dyn CustomObject>> {
        if values.len() != context.len() {
            return Err(Error::Serialization {
                class: T::CLASS.to_owned(),
                reason: format!("{} values for {} keys", values.len(), context.len()),
            });
        }
        Ok(Box::new(T::from_fields(
            context.iter().cloned().zip(values).collect(),
        )?))
    }
}

/// Declares a dataclass-like output class: a struct of `Option<Value>` fields implementing
/// [`CustomObject`] (its `string_type` is the seeds' `Class(field:value,...)` over the fields
/// that are set) and [`Dataclass`].
///
/// ```ignore
/// dataclass! {
///     /// transformers' `BaseModelOutput`.
///     BaseModelOutput { last_hidden_state, hidden_states, attentions }
/// }
/// ```
#[macro_export]
macro_rules! dataclass {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, Default)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: Option<$crate::Value>,)+
        }

        impl $crate::CustomObject for $name {
            fn class_name(&self) -> &str {
                stringify!($name)
            }
            fn fields(&self) -> Vec<(String, $crate::Value)> {
                let mut out = Vec::new();
                $(if let Some(v) = &self.$field {
                    out.push((stringify!($field).to_owned(), v.clone()));
                })+
                out
            }
        }

        impl $crate::serialization::Dataclass for $name {
            const CLASS: &'static str = stringify!($name);
            const FIELDS: &'static [&'static str] = &[$(stringify!($field)),+];
            fn from_fields(fields: Vec<(String, $crate::Value)>) -> $crate::Result<Self> {
                let mut out = Self::default();
                for (k, v) in fields {
                    match k.as_str() {
                        $(stringify!($field) => out.$field = Some(v),)+
                        other => {
                            return Err($crate::Error::Serialization {
                                class: stringify!($name).to_owned(),
                                reason: format!("{} has no field {other:?}", stringify!($name)),
                            })
                        }
                    }
                }
                Ok(out)
            }
        }
    };
}
