//! Patches: export-friendly replacements of `#[patchable]` functions, applied together inside
//! a scoped guard, [`torch_export_patches`], as the seeds' `with torch_export_patches(...)`.
//!
//! - A `#[patchable]` function (crates/macros) asks [`lookup`] whether a patch of its target
//!   is active in the calling thread; with no guard alive this is one thread-local read.
//! - A `#[patch(target = ...)]` function is a [`PatchEntry`] collected at link time; run-time
//!   patches ([`CustomPatch`]: the API's `custom_patches`, and the patches of plugins loaded
//!   by crates/plugins) go through the same path. A custom patch replaces a built-in one of
//!   the same target; one of family `custom` declared with `#[patch]` runs behind a panic
//!   catcher ([`catch_patch_panic`]).
//! - The guard registers the serializers of its families, then activates the patches of its
//!   families plus the custom ones, and undoes everything when dropped: on success, on error
//!   and on panic. It is scoped to the calling thread (two threads exporting at once get what
//!   each asked for) and nests (an inner guard's patches win while it lives). The Python
//!   package patches globally and leaves patches in place when a step fails; this does not.
//! - [`PatchDetails`] lists what a guard applied and gives the diffs (`format_diff`) and the
//!   nodes each patch produced in an exported graph (`patches_involved_in_graph`, from the
//!   node provenance the engine records while a patch runs).

use std::{
    any::Any,
    cell::{Cell, RefCell},
    sync::Arc,
};

use crate::{
    error::{Error, Result},
    program::ExportedProgram,
    serialization::{SerializationGuard, register_families_with},
    state::Slot,
};

#[doc(hidden)]
pub use inventory as __inventory;

pub use crate::serialization::Family as PatchFamily;

/// A patch declared with `#[patch]` (collected at link time).
pub struct PatchEntry {
    /// `patched_LlamaRotaryEmbedding.forward`.
    pub name: &'static str,
    /// `LlamaRotaryEmbedding.forward` (`Type.method`, or a function's name).
    pub target: &'static str,
    /// The family that applies it.
    pub family: PatchFamily,
    /// What it replaces, why export needs it, when it can go.
    pub doc: &'static str,
    /// The patch's source.
    pub patch_source: &'static str,
    /// The target's source.
    pub target_source: &'static str,
    /// The patch, a function pointer with the target's signature.
    pub func: &'static (dyn Any + Sync),
    /// The option of [`PatchOptions`] that must also be on for the guard to apply it
    /// (`catch_constraints`, `stop_if_static`), besides its family's.
    pub when: Option<&'static str>,
}

impl std::fmt::Debug for PatchEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatchEntry")
            .field("name", &self.name)
            .field("target", &self.target)
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

inventory::collect!(PatchEntry);

/// Every patch declared in the linked crates, sorted by name.
pub fn registered_patches() -> Vec<&'static PatchEntry> {
    let mut all: Vec<&'static PatchEntry> = inventory::iter::<PatchEntry>.into_iter().collect();
    all.sort_by_key(|p| p.name);
    all
}

/// A patch supplied at run time (the seeds' `custom_patches`): the same fields as a
/// [`PatchEntry`], owned.
#[derive(Clone)]
pub struct CustomPatch {
    /// Its name (`patched_MyModel.forward`).
    pub name: String,
    /// The `#[patchable]` target (`MyModel.forward`).
    pub target: String,
    /// Usually [`PatchFamily::Custom`] (or `Rewrite` for rewritten methods).
    pub family: PatchFamily,
    /// What it does and why.
    pub doc: String,
    /// Its source, for diffs.
    pub patch_source: String,
    /// The target's source (the `__patchable_source_<name>` constant of the target).
    pub target_source: String,
    /// The function pointer, of the target's signature (`fn(&MyModel, &Tensor) -> ...`).
    pub func: Arc<dyn Any + Send + Sync>,
    /// The plugin that supplied it, if any (shown in [`PatchDetails`]).
    pub plugin: Option<String>,
}

impl CustomPatch {
    /// A `#[patch]` entry as a run-time patch (how crates/plugins hands a plugin's entries to
    /// the guard), with the plugin's name.
    pub fn from_entry(e: &'static PatchEntry, plugin: Option<&str>) -> Self {
        Self {
            name: e.name.to_owned(),
            target: e.target.to_owned(),
            family: e.family,
            doc: e.doc.to_owned(),
            patch_source: e.patch_source.to_owned(),
            target_source: e.target_source.to_owned(),
            func: Arc::new(StaticFn(e.func)),
            plugin: plugin.map(str::to_owned),
        }
    }
}

impl std::fmt::Debug for CustomPatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomPatch")
            .field("name", &self.name)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// A patch of a guard, whatever its origin.
#[derive(Clone)]
pub(crate) struct Active {
    name: Arc<str>,
    target: Arc<str>,
    func: Arc<dyn Any + Send + Sync>,
    /// The guard that activated it.
    guard: u64,
}

/// A link-time function pointer behind an `Arc` (copied out of the entry).
struct StaticFn(&'static (dyn Any + Sync));

// The patch state of this thread (the host's when this copy is a plugin's: crate::state).
static ACTIVE: Slot<RefCell<Vec<Active>>> = Slot(|s| &s.active);
static N_ACTIVE: Slot<Cell<usize>> = Slot(|s| &s.n_active);
static RUNNING: Slot<RefCell<Vec<Arc<str>>>> = Slot(|s| &s.running);
static NEXT_GUARD: Slot<Cell<u64>> = Slot(|s| &s.next_guard);
/// The `verbose` and `stop_if_static` options of each live guard, innermost last.
static VERBOSE: Slot<RefCell<Vec<(u64, u8, u8)>>> = Slot(|s| &s.verbose);

/// Whether a patch of `target` (`Type.method`, or a function's name) is active in this thread.
pub fn is_patched(target: &str) -> bool {
    any_active() && ACTIVE.with(|a| a.borrow().iter().any(|p| &*p.target == target))
}

/// The `verbose` option of the innermost live guard of this thread (0 without one): what a
/// patch reads to decide whether to print.
pub fn verbosity() -> u8 {
    VERBOSE.with(|v| v.borrow().last().map_or(0, |(_, level, _)| *level))
}

/// The `stop_if_static` option of the innermost live guard of this thread (0 without one):
/// `export` runs with the larger of it and its own option.
pub fn stop_if_static() -> u8 {
    VERBOSE.with(|v| v.borrow().last().map_or(0, |(_, _, level)| *level))
}

/// Whether any patch is active in this thread (the fast path of `#[patchable]`).
#[inline]
pub fn any_active() -> bool {
    N_ACTIVE.with(Cell::get) != 0
}

/// The last segment of a type's path (`LlamaRotaryEmbedding`).
pub fn short_type_name<T: ?Sized>() -> &'static str {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

/// The active patch of `class.method` (or of `method` for a function) in this thread, with
/// its name; the innermost guard's wins.
pub fn lookup<F: Any + Copy>(class: &str, method: &str) -> Option<(F, Arc<str>)> {
    ACTIVE.with(|a| {
        a.borrow().iter().rev().find_map(|p| {
            let matches = if class.is_empty() {
                &*p.target == method
            } else {
                p.target.len() == class.len() + 1 + method.len()
                    && p.target.starts_with(class)
                    && p.target.ends_with(method)
                    && p.target.as_bytes()[class.len()] == b'.'
            };
            if !matches {
                return None;
            }
            let func: &dyn Any = match p.func.downcast_ref::<StaticFn>() {
                Some(s) => s.0,
                None => &*p.func,
            };
            func.downcast_ref::<F>().map(|f| (*f, p.name.clone()))
        })
    })
}

/// Runs a patch, recording its name as the provenance of the nodes it records.
pub fn run_patch<R>(name: &Arc<str>, f: impl FnOnce() -> R) -> R {
    struct Pop;
    impl Drop for Pop {
        fn drop(&mut self) {
            RUNNING.with(|r| r.borrow_mut().pop());
        }
    }
    RUNNING.with(|r| r.borrow_mut().push(name.clone()));
    let _pop = Pop;
    f()
}

/// The name of the plugin this copy of the crate belongs to (set by the plugin's entry point;
/// none in a host).
static PLUGIN_NAME: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Records the name of the plugin this copy of the crate is linked into (`export_plugin!` of
/// crates/plugins calls it); the first name stays.
pub fn set_plugin_name(name: &'static str) {
    let _ = PLUGIN_NAME.set(name);
}

/// Runs a patch of family `custom` (what `#[patch]` wraps them in), turning a panic into
/// [`Error::PatchPanicked`] naming the patch and its plugin: a panic never unwinds out of a
/// plugin into its host. The patch returns a `Result` whose error converts from [`Error`].
///
/// # Errors
/// The patch's errors; [`Error::PatchPanicked`] when it panics.
pub fn catch_patch_panic<T, E: From<Error>>(
    patch: &'static str,
    f: impl FnOnce() -> std::result::Result<T, E>,
) -> std::result::Result<T, E> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(a panic without a message)".to_owned());
            Err(E::from(Error::PatchPanicked {
                patch: patch.to_owned(),
                plugin: PLUGIN_NAME.get().map(|p| (*p).to_owned()),
                message,
            }))
        }
    }
}

/// The innermost patch running in this thread (node provenance).
pub(crate) fn running_patch() -> Option<Arc<str>> {
    RUNNING.with(|r| r.borrow().last().cloned())
}

/// The options of [`torch_export_patches`], named and defaulted as in the seeds.
#[derive(Clone, Debug)]
pub struct PatchOptions {
    /// Patches of the engine's own behaviour (family `torch`).
    pub patch_torch: bool,
    /// Serializers and patches of the transformers classes.
    pub patch_transformers: bool,
    /// Serializers and patches of the diffusers classes.
    pub patch_diffusers: bool,
    /// Keep the constraints the export discovers (passed to the export options).
    pub catch_constraints: bool,
    /// 0: specialisations are guards; 1: errors; 2: errors, stricter (passed to the export).
    pub stop_if_static: u8,
    /// Print each patch applied and removed.
    pub verbose: u8,
    /// `false`: serialization only, no patch.
    pub patch: bool,
    /// Patches supplied at run time. One whose target a built-in patch of the guard also
    /// targets replaces it (the seeds apply custom patches last, so theirs is the one in
    /// place); two custom patches of one target are an error.
    pub custom_patches: Vec<CustomPatch>,
    /// Serializers supplied at run time (plugins'), registered with the others.
    pub custom_serializers: Vec<Arc<dyn crate::Serializer>>,
    /// Built-in patches not to apply, by name (`patched_VisionAttention.forward`): to see
    /// what one patch of a family fixes, or to supply another form through `custom_patches`.
    pub skip: Vec<String>,
    /// Methods to rewrite (the control-flow rewriting issue; accepted and kept, unused so far).
    pub rewrite: Vec<String>,
    /// Where to dump the rewritten code (rewriting issue).
    pub dump_rewriting: Option<std::path::PathBuf>,
}

impl Default for PatchOptions {
    fn default() -> Self {
        Self {
            patch_torch: true,
            patch_transformers: false,
            patch_diffusers: false,
            catch_constraints: true,
            stop_if_static: 0,
            verbose: 0,
            patch: true,
            custom_patches: Vec::new(),
            skip: Vec::new(),
            custom_serializers: Vec::new(),
            rewrite: Vec::new(),
            dump_rewriting: None,
        }
    }
}

/// One patch a guard applied.
#[derive(Clone, Debug, PartialEq)]
pub struct AppliedPatch {
    /// The family.
    pub family: PatchFamily,
    /// The target (`LlamaRotaryEmbedding.forward`).
    pub target: String,
    /// The patch (`patched_LlamaRotaryEmbedding.forward`).
    pub name: String,
    /// Its doc.
    pub doc: String,
    /// The target's source.
    pub target_source: String,
    /// The patch's source.
    pub patch_source: String,
    /// The plugin that supplied it (`None` for a patch linked into the program).
    pub plugin: Option<String>,
}

/// How [`PatchDetails::format_diff`] prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiffFormat {
    /// `title` then the unified diff.
    Raw,
    /// A reStructuredText section with a `code-block:: diff`, as the seeds' documentation.
    Rst,
    /// A Markdown section with a fenced `diff` block.
    Markdown,
}

impl From<&PatchEntry> for AppliedPatch {
    fn from(e: &PatchEntry) -> Self {
        Self {
            family: e.family,
            target: e.target.to_owned(),
            name: e.name.to_owned(),
            doc: e.doc.to_owned(),
            target_source: e.target_source.to_owned(),
            patch_source: e.patch_source.to_owned(),
            plugin: None,
        }
    }
}

impl AppliedPatch {
    /// The title of its diff: `transformers: LlamaRotaryEmbedding.forward ->
    /// patched_LlamaRotaryEmbedding.forward`.
    pub fn title(&self) -> String {
        match &self.plugin {
            None => format!("{}: {} -> {}", self.family, self.target, self.name),
            Some(p) => format!(
                "{} (plugin {p}): {} -> {}",
                self.family, self.target, self.name
            ),
        }
    }

    /// The unified diff between the target's and the patch's sources
    /// (`--- original` / `+++ rewritten`, as the seeds' `make_diff_code`).
    pub fn diff(&self) -> String {
        unified_diff(&self.target_source, &self.patch_source)
    }

    /// The diff in `format` (see [`DiffFormat`]).
    pub fn format_diff(&self, format: DiffFormat) -> String {
        let title = self.title();
        let diff = self.diff();
        match format {
            DiffFormat::Raw => format!("{title}\n{diff}"),
            DiffFormat::Rst => {
                let refid = format!("patch-{}-{}", self.family, self.name.replace('.', "-"));
                let body: Vec<String> = diff.lines().map(|l| format!("    {l}")).collect();
                format!(
                    "\n.. _{refid}:\n\n{title}\n{}\n\n.. code-block:: diff\n    :linenos:\n\n{}",
                    "=".repeat(title.chars().count()),
                    body.join("\n")
                )
            }
            DiffFormat::Markdown => format!("### {title}\n\n```diff\n{diff}\n```"),
        }
    }
}

/// What a guard applied (the seeds' `PatchDetails`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PatchDetails {
    /// The patches, in application order.
    pub patched: Vec<AppliedPatch>,
}

impl PatchDetails {
    /// The number of patches.
    pub fn n_patches(&self) -> usize {
        self.patched.len()
    }

    /// The names of the patches, in the order they were applied.
    pub fn names(&self) -> Vec<&str> {
        self.patched.iter().map(|p| p.name.as_str()).collect()
    }

    /// The patch of this name (`patched_LlamaRotaryEmbedding.forward`) or target.
    pub fn find(&self, name: &str) -> Option<&AppliedPatch> {
        self.patched
            .iter()
            .find(|p| p.name == name || p.target == name)
    }

    /// The diffs of every patch, one after the other.
    pub fn format_diff(&self, format: DiffFormat) -> String {
        self.patched
            .iter()
            .map(|p| p.format_diff(format))
            .collect::<Vec<_>>()
            .join("\n\n")
    }

    /// For each patch that produced nodes of the program (sub-graphs included), the names of
    /// the values those nodes compute.
    pub fn patches_involved_in_graph(
        &self,
        ep: &ExportedProgram,
    ) -> Vec<(AppliedPatch, Vec<String>)> {
        fn walk(g: &crate::graph::Graph, out: &mut Vec<(String, String)>) {
            for n in &g.nodes {
                if let Some(p) = &n.patch {
                    for o in &n.outputs {
                        out.push((p.to_string(), g.value(*o).name.clone()));
                    }
                }
                for a in &n.attrs {
                    if let crate::graph::Attr::Graph(s) = a {
                        walk(&s.graph, out);
                    }
                }
            }
        }
        let mut produced = Vec::new();
        walk(ep.graph(), &mut produced);
        self.patched
            .iter()
            .filter_map(|p| {
                let values: Vec<String> = produced
                    .iter()
                    .filter(|(n, _)| *n == p.name)
                    .map(|(_, v)| v.clone())
                    .collect();
                (!values.is_empty()).then(|| (p.clone(), values))
            })
            .collect()
    }
}

/// Writes `<Class>.<method>.original.rs`, `.rewritten.rs` and `.diff` for each rewritten
/// method (the seeds' `dump_rewriting`).
fn dump_rewriting<'a>(
    dir: &std::path::Path,
    applied: impl Iterator<Item = &'a AppliedPatch>,
) -> Result<()> {
    let fail = |e: std::io::Error| Error::Patch {
        patch: "dump_rewriting".to_owned(),
        reason: format!("cannot write into {}: {e}", dir.display()),
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    for a in applied.filter(|a| a.family == PatchFamily::Rewrite) {
        let base = dir.join(&a.target);
        let write = |ext: &str, text: &str| {
            std::fs::write(
                base.with_extension(ext_of(&a.target, ext)),
                format!("{text}\n"),
            )
        };
        write("original.rs", &a.target_source).map_err(fail)?;
        write("rewritten.rs", &a.patch_source).map_err(fail)?;
        write("diff", &a.diff()).map_err(fail)?;
    }
    Ok(())
}

/// `Class.method` + `ext` as an extension that keeps the method (`with_extension` would
/// replace `method`).
fn ext_of(target: &str, ext: &str) -> String {
    match target.rsplit_once('.') {
        Some((_, method)) => format!("{method}.{ext}"),
        None => ext.to_owned(),
    }
}

/// The guard of [`torch_export_patches`]: everything it did is undone when it drops.
#[must_use = "the patches end when the guard is dropped"]
pub struct PatchGuard {
    id: u64,
    details: PatchDetails,
    options: PatchOptions,
    _serialization: SerializationGuard,
}

impl PatchGuard {
    /// What it applied.
    pub fn details(&self) -> &PatchDetails {
        &self.details
    }

    /// The export options its `stop_if_static` asks for.
    pub fn export_options(&self) -> crate::export::ExportOptions {
        crate::export::ExportOptions {
            stop_if_static: self.options.stop_if_static,
        }
    }
}

impl std::fmt::Debug for PatchGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatchGuard")
            .field("patches", &self.details.n_patches())
            .finish_non_exhaustive()
    }
}

impl Drop for PatchGuard {
    fn drop(&mut self) {
        let id = self.id;
        let removed = ACTIVE.with(|a| {
            let mut a = a.borrow_mut();
            let before = a.len();
            a.retain(|p| p.guard != id);
            before - a.len()
        });
        N_ACTIVE.with(|n| n.set(n.get().saturating_sub(removed)));
        VERBOSE.with(|v| v.borrow_mut().retain(|(g, _, _)| *g != id));
        if self.options.verbose > 0 {
            for p in self.details.patched.iter().rev() {
                println!("[torch_export_patches] remove {}", p.name);
            }
        }
    }
}

/// Applies the serializers and the patches the options ask for, in the calling thread, until
/// the returned guard is dropped (see the module doc).
///
/// # Errors
/// [`Error::Patch`] when two patches of this guard target one function (naming both), or a
/// custom patch's target is not a `#[patchable]` function known to the registry or given with
/// its source.
pub fn torch_export_patches(options: PatchOptions) -> Result<PatchGuard> {
    let mut families = Vec::new();
    if options.patch_transformers {
        families.push(PatchFamily::Transformers);
    }
    if options.patch_diffusers {
        families.push(PatchFamily::Diffusers);
    }
    families.push(PatchFamily::Custom);
    let serialization =
        register_families_with(&families, &options.custom_serializers, options.verbose);

    let mut applied: Vec<(AppliedPatch, Arc<dyn Any + Send + Sync>)> = Vec::new();
    for name in &options.skip {
        if !registered_patches().iter().any(|e| e.name == name.as_str()) {
            return Err(Error::Patch {
                patch: name.clone(),
                reason: "asked to skip it, but no linked crate registers a patch of this name"
                    .to_owned(),
            });
        }
    }
    if options.patch {
        for e in registered_patches() {
            if options.skip.iter().any(|s| s == e.name) {
                continue;
            }
            let on = match e.family {
                PatchFamily::Torch => options.patch_torch,
                PatchFamily::Transformers => options.patch_transformers,
                PatchFamily::Diffusers => options.patch_diffusers,
                PatchFamily::Rewrite => options
                    .rewrite
                    .iter()
                    .any(|t| t == e.target || e.target.split('.').next() == Some(t.as_str())),
                PatchFamily::Custom => false,
            };
            let wanted = match e.when {
                None => true,
                Some("catch_constraints") => options.catch_constraints,
                Some("stop_if_static") => options.stop_if_static > 0,
                Some(other) => {
                    return Err(Error::Patch {
                        patch: e.name.to_owned(),
                        reason: format!(
                            "`when = {other:?}` is not an option of torch_export_patches \
                             (catch_constraints, stop_if_static)"
                        ),
                    });
                }
            };
            if on && wanted {
                applied.push((AppliedPatch::from(e), Arc::new(StaticFn(e.func))));
            }
        }
        for c in &options.custom_patches {
            if c.target.is_empty() || c.target_source.is_empty() {
                return Err(Error::Patch {
                    patch: c.name.clone(),
                    reason: format!(
                        "custom patch target {:?} is unknown: give the `#[patchable]` target \
                         (`Type.method`) and its source (`Type::__patchable_source_method`)",
                        c.target
                    ),
                });
            }
            applied.push((
                AppliedPatch {
                    family: c.family,
                    target: c.target.clone(),
                    name: c.name.clone(),
                    doc: c.doc.clone(),
                    target_source: c.target_source.clone(),
                    patch_source: c.patch_source.clone(),
                    plugin: c.plugin.clone(),
                },
                c.func.clone(),
            ));
        }
    }
    for t in &options.rewrite {
        let known = registered_patches().iter().any(|e| {
            e.family == PatchFamily::Rewrite
                && (e.target == t || e.target.split('.').next() == Some(t.as_str()))
        });
        if !known {
            return Err(Error::Patch {
                patch: format!("rewrite {t}"),
                reason: format!(
                    "{t} has no rewritten form: put #[rewritable(method)] on its impl block \
                     (crates/macros), and make sure its crate is linked"
                ),
            });
        }
    }
    if let Some(dir) = &options.dump_rewriting {
        dump_rewriting(dir, applied.iter().map(|(a, _)| a))?;
    }
    // A custom patch replaces a built-in one of the same target.
    let custom_targets: Vec<String> = applied
        .iter()
        .filter(|(a, _)| a.family == PatchFamily::Custom)
        .map(|(a, _)| a.target.clone())
        .collect();
    applied.retain(|(a, _)| {
        let replaced = a.family != PatchFamily::Custom && custom_targets.contains(&a.target);
        if replaced && options.verbose > 0 {
            println!(
                "[torch_export_patches] {} is replaced by a custom patch of {}",
                a.name, a.target
            );
        }
        !replaced
    });
    for (i, (a, _)) in applied.iter().enumerate() {
        if let Some((b, _)) = applied[..i].iter().find(|(b, _)| b.target == a.target) {
            return Err(Error::Patch {
                patch: a.name.clone(),
                reason: format!(
                    "{} and {} both patch {} in one guard; keep one",
                    b.name, a.name, a.target
                ),
            });
        }
    }
    let id = NEXT_GUARD.with(|n| {
        let id = n.get();
        n.set(id + 1);
        id
    });
    ACTIVE.with(|active| {
        let mut active = active.borrow_mut();
        for (a, func) in &applied {
            if options.verbose > 0 {
                println!("[torch_export_patches] patch {} ({})", a.name, a.family);
            }
            active.push(Active {
                name: Arc::from(a.name.as_str()),
                target: Arc::from(a.target.as_str()),
                func: func.clone(),
                guard: id,
            });
        }
    });
    N_ACTIVE.with(|n| n.set(n.get() + applied.len()));
    VERBOSE.with(|v| {
        v.borrow_mut()
            .push((id, options.verbose, options.stop_if_static));
    });
    Ok(PatchGuard {
        id,
        details: PatchDetails {
            patched: applied.into_iter().map(|(a, _)| a).collect(),
        },
        options,
        _serialization: serialization,
    })
}

pub use onnx_diagnostic_rewrite::unified_diff;
