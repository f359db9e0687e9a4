//! The exporter's per-thread state, in one place so that plugins share the host's.
//!
//! Everything an export or a patch guard keeps per thread (the recorder, the active patches,
//! the running patch, the guards' options, the registered serializers) lives in one
//! [`ThreadState`], and the ids of recorded graphs come from one counter. A dynamic library
//! statically links its own copy of this crate, with its own thread-locals and statics: left
//! alone, the ops a plugin's patch runs would be recorded in the plugin's (empty) copy of the
//! state, never in the host's graph. So the host hands each plugin its [`HostContext`] during
//! the handshake (crates/plugins), and the plugin's copy of this crate reads and writes the
//! host's state through it from then on: one exporter state per process.
//!
//! This is sound only when both copies are the same build of this crate (same compiler, same
//! version, same features: the layout of [`ThreadState`] is then identical). The plugin
//! handshake checks that with [`build_fingerprint`] before installing the context.

use std::{
    cell::{Cell, RefCell},
    collections::BTreeMap,
    ffi::c_void,
    sync::{
        Arc,
        atomic::{AtomicPtr, AtomicU64, Ordering},
    },
};

use crate::{context::Recorder, patches::Active, serialization::Serializer};

/// The version of the contract between a host and a plugin's copy of this crate
/// ([`HostContext`], the plugin descriptor of crates/plugins). Bumped on any change of either.
pub const PLUGIN_ABI_VERSION: u32 = 2;

/// What one thread of the exporter keeps.
pub(crate) struct ThreadState {
    pub(crate) recorder: RefCell<Option<Recorder>>,
    pub(crate) active: RefCell<Vec<Active>>,
    pub(crate) n_active: Cell<usize>,
    pub(crate) running: RefCell<Vec<Arc<str>>>,
    pub(crate) next_guard: Cell<u64>,
    /// The `verbose` and `stop_if_static` options of each live guard, innermost last.
    pub(crate) verbose: RefCell<Vec<(u64, u8, u8)>>,
    pub(crate) serializers: RefCell<BTreeMap<String, Arc<dyn Serializer>>>,
}

thread_local! {
    static LOCAL: ThreadState = const {
        ThreadState {
            recorder: RefCell::new(None),
            active: RefCell::new(Vec::new()),
            n_active: Cell::new(0),
            running: RefCell::new(Vec::new()),
            next_guard: Cell::new(1),
            verbose: RefCell::new(Vec::new()),
            serializers: RefCell::new(BTreeMap::new()),
        }
    };
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What a host hands to the plugins it loads: where its exporter state is. `#[repr(C)]` with
/// the ABI version first, so that a plugin of another version can refuse it safely.
#[repr(C)]
#[derive(Debug)]
pub struct HostContext {
    /// [`PLUGIN_ABI_VERSION`] of the host.
    pub abi_version: u32,
    /// The host's [`ThreadState`] of the calling thread (an opaque pointer).
    pub thread_state: extern "C" fn() -> *const c_void,
    /// The next id from the host's graph-id counter.
    pub next_id: extern "C" fn() -> u64,
}

extern "C" fn local_thread_state() -> *const c_void {
    LOCAL.with(|s| std::ptr::from_ref(s).cast())
}

extern "C" fn local_next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

static LOCAL_CONTEXT: HostContext = HostContext {
    abi_version: PLUGIN_ABI_VERSION,
    thread_state: local_thread_state,
    next_id: local_next_id,
};

/// The context of the state this copy of the crate owns: what a host passes to plugins.
pub fn host_context() -> &'static HostContext {
    &LOCAL_CONTEXT
}

/// Set in a plugin's copy of the crate: the host's context. Null in the host.
static HOST: AtomicPtr<HostContext> = AtomicPtr::new(std::ptr::null_mut());

/// Makes this copy of the crate (a plugin's) use the host's exporter state from now on.
///
/// # Safety
/// `host` must come from [`host_context`] of a copy of this crate with the same
/// [`build_fingerprint`] (the plugin handshake checks it), and stays valid for the life of the
/// process (it is a static of the host).
#[allow(unsafe_code)]
pub unsafe fn install_host_context(host: &'static HostContext) -> bool {
    if host.abi_version != PLUGIN_ABI_VERSION {
        return false;
    }
    if std::ptr::eq(host, &LOCAL_CONTEXT) {
        // The host itself (a plugin crate linked statically into its host): nothing to do.
        return true;
    }
    HOST.store(std::ptr::from_ref(host).cast_mut(), Ordering::Release);
    true
}

/// Runs `f` on the exporter state of this thread: the host's when this copy is a plugin's.
#[inline]
pub(crate) fn with<R>(f: impl FnOnce(&ThreadState) -> R) -> R {
    let host = HOST.load(Ordering::Acquire);
    if host.is_null() {
        return LOCAL.with(f);
    }
    #[allow(unsafe_code)]
    // SAFETY: `install_host_context` only stores a `'static` context of a build with the same
    // fingerprint, so its `thread_state` returns the live `ThreadState` of this thread in the
    // host, with this crate's layout; it is used within this call, on this thread.
    let state = unsafe {
        let host = &*host;
        &*(host.thread_state)().cast::<ThreadState>()
    };
    f(state)
}

/// A fresh graph id (from the host's counter in a plugin).
pub(crate) fn next_id() -> u64 {
    let host = HOST.load(Ordering::Acquire);
    if host.is_null() {
        return local_next_id();
    }
    #[allow(unsafe_code)]
    // SAFETY: as in `with`.
    let next = unsafe { (*host).next_id };
    next()
}

/// A field of the [`ThreadState`], used like a `thread_local!` key (`with`, `with_borrow`,
/// `with_borrow_mut`), so the modules keep their code as it was.
pub(crate) struct Slot<T: 'static>(pub(crate) fn(&ThreadState) -> &T);

impl<T: 'static> Slot<T> {
    pub(crate) fn with<R>(&'static self, f: impl FnOnce(&T) -> R) -> R {
        with(|s| f((self.0)(s)))
    }
}

impl<T: 'static> Slot<RefCell<T>> {
    pub(crate) fn with_borrow<R>(&'static self, f: impl FnOnce(&T) -> R) -> R {
        with(|s| f(&(self.0)(s).borrow()))
    }

    pub(crate) fn with_borrow_mut<R>(&'static self, f: impl FnOnce(&mut T) -> R) -> R {
        with(|s| f(&mut (self.0)(s).borrow_mut()))
    }
}

/// Identifies the build of this crate: two copies with the same fingerprint lay their types
/// out the same way (same compiler, same crate version, same features and dependencies: the
/// hash of a type's `TypeId` changes with any of them), so they can share state and pass
/// values. Also checked: whether debug assertions are on.
pub fn build_fingerprint() -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::any::TypeId::of::<ThreadState>().hash(&mut h);
    std::any::TypeId::of::<crate::Tensor>().hash(&mut h);
    cfg!(debug_assertions).hash(&mut h);
    env!("CARGO_PKG_VERSION").hash(&mut h);
    h.finish()
}

/// Hash of one `TypeId` (stable within one compiler version for one build of the crate).
fn type_hash<T: ?Sized + 'static>() -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::any::TypeId::of::<T>().hash(&mut h);
    h.finish()
}

/// What a build of this crate is made of, for a plugin handshake that names what differs
/// (crates/plugins compares it field by field when [`build_fingerprint`]s differ).
///
/// One `key=value` per line: `profile` (debug assertions on or off, the optimisation level),
/// `target` (the target triple), then `crate:<name>` for this crate and each dependency whose
/// build decides the layout of what host and plugin share, with the hash of one of its types'
/// `TypeId`: a crate's `TypeId`s change with its version, its features, the profile and the
/// builds of its own dependencies, so the first dependency whose hash differs is the one to
/// align (its version in `Cargo.lock`, or the features the plugin's project enables on it).
pub fn build_info() -> String {
    // Dependencies before their dependents (tch uses serde_json): the first that differs is
    // the one to align.
    let crates: [(&str, u64); 5] = [
        ("serde", type_hash::<serde::de::value::Error>()),
        ("serde_json", type_hash::<serde_json::Value>()),
        ("tch", type_hash::<tch::Tensor>()),
        (
            "onnx-diagnostic-rewrite",
            type_hash::<onnx_diagnostic_rewrite::RewriteError>(),
        ),
        ("onnx-diagnostic-core", type_hash::<ThreadState>()),
    ];
    let mut out = format!(
        "profile=debug-assertions-{} opt-level-{}\ntarget={}\n",
        if cfg!(debug_assertions) { "on" } else { "off" },
        env!("ONNX_DIAGNOSTIC_OPT_LEVEL"),
        env!("ONNX_DIAGNOSTIC_TARGET"),
    );
    for (name, hash) in crates {
        out.push_str(&format!("crate:{name}={hash:016x}\n"));
    }
    out
}

/// The rustc that built this crate (`rustc 1.xx.y (hash date)`), from the build script.
pub const RUSTC_VERSION: &str = env!("ONNX_DIAGNOSTIC_RUSTC_VERSION");

/// The version of this crate, for the plugin handshake.
pub const CORE_VERSION: &str = env!("CARGO_PKG_VERSION");
