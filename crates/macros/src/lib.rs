//! The proc macros of onnx-diagnostic: `#[patchable]` and `#[patch]` (DESIGN.md §3, "Patches").
//!
//! - `#[patchable]` on a function or a method keeps its body and lets an active patch replace
//!   it: the function first asks `onnx_diagnostic_core::patches` whether a patch of its target
//!   (`Type.method`, or the function name) is active in the calling thread; when none is (one
//!   thread-local read), the original body runs. It also records the source of the function
//!   (`__patchable_source_<name>`), which diffs show.
//! - `#[patch(target = Type::method, family = "transformers")]` on a function registers it as
//!   the patch `patched_Type.method` of that target (`patched_function` for a free function
//!   `module::function`; a type is told from a module by its capital letter); `when =
//!   "catch_constraints"` or `"stop_if_static"` makes the guard apply it only with that option. A compile-time check makes the patch's
//!   signature the target's (the target's `self` becomes the patch's first argument), and the
//!   entry carries both sources and the patch's doc, without the author naming `inventory`.
//!
//! Supported signatures: arguments bound to plain names, no generics, no explicit lifetimes,
//! no `impl Trait` (a patch is stored as a plain function pointer).

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::{format_ident, quote};
use syn::{
    Expr, FnArg, ItemFn, Lit, Meta, Pat, Path, ReturnType, Type, parse::Parser,
    punctuated::Punctuated, spanned::Spanned, token::Comma,
};

/// The source text of an item as written: the lines of its file from its first token to its
/// last, dedented by the first token's column (a method keeps its body's shape). Falls back to
/// the tokens' text when the file cannot be read.
fn source_text(item: &TokenStream) -> String {
    let tokens: Vec<proc_macro::TokenTree> = item.clone().into_iter().collect();
    let (Some(first), Some(last)) = (tokens.first(), tokens.last()) else {
        return String::new();
    };
    let (start, end) = (first.span().start(), last.span().end());
    let from_file = first.span().local_file().and_then(|path| {
        let text = std::fs::read_to_string(path).ok()?;
        let lines: Vec<&str> = text.lines().collect();
        let (l0, l1) = (start.line().checked_sub(1)?, end.line().checked_sub(1)?);
        let indent = start.column().saturating_sub(1);
        let mut out = Vec::new();
        for (k, line) in lines.get(l0..=l1)?.iter().enumerate() {
            let line = if k == l1 - l0 {
                line.get(..end.column().saturating_sub(1)).unwrap_or(line)
            } else {
                line
            };
            let spaces = line.len() - line.trim_start_matches(' ').len();
            out.push(&line[spaces.min(indent)..]);
        }
        Some(out.join("\n"))
    });
    from_file.unwrap_or_else(|| item.to_string())
}

fn error(span: Span, message: &str) -> TokenStream {
    syn::Error::new(span, message).to_compile_error().into()
}

/// The function and its plain arguments (see [`plain_args`]).
fn parse_fn(item: TokenStream) -> Result<(ItemFn, Vec<(syn::Ident, Type)>), syn::Error> {
    let f: ItemFn = syn::parse(item)?;
    let args = plain_args(&f)?;
    Ok((f, args))
}

/// The argument names and types of a signature (the receiver excluded), or an error.
fn plain_args(f: &ItemFn) -> Result<Vec<(syn::Ident, Type)>, syn::Error> {
    if !f.sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            f.sig.generics.span(),
            "a patchable function cannot be generic or have explicit lifetimes (it is stored as a \
             plain function pointer)",
        ));
    }
    let mut out = Vec::new();
    for arg in &f.sig.inputs {
        if let FnArg::Typed(t) = arg {
            let Pat::Ident(id) = &*t.pat else {
                return Err(syn::Error::new(
                    t.pat.span(),
                    "bind each argument to a plain name in a patchable function",
                ));
            };
            if matches!(&*t.ty, Type::ImplTrait(_)) {
                return Err(syn::Error::new(
                    t.ty.span(),
                    "`impl Trait` arguments cannot be patched (use a concrete type)",
                ));
            }
            out.push((id.ident.clone(), (*t.ty).clone()));
        }
    }
    Ok(out)
}

/// Marks a function or method as replaceable by a registered patch while a patch guard is
/// active in the calling thread (see the crate doc).
#[proc_macro_attribute]
pub fn patchable(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return error(Span::call_site(), "#[patchable] takes no arguments");
    }
    let source = source_text(&item);
    let (f, args) = match parse_fn(item) {
        Ok(x) => x,
        Err(e) => return e.to_compile_error().into(),
    };
    let name = &f.sig.ident;
    let method = name.to_string();
    let receiver = f.sig.inputs.iter().find_map(|a| match a {
        FnArg::Receiver(r) => Some(r.clone()),
        FnArg::Typed(_) => None,
    });
    let ret = match &f.sig.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, t) => quote!(#t),
    };
    let names: Vec<&syn::Ident> = args.iter().map(|(n, _)| n).collect();
    let types: Vec<&Type> = args.iter().map(|(_, t)| t).collect();
    let source_const = format_ident!("__patchable_source_{}", name);
    let (fn_ty, class, call) = match &receiver {
        Some(r) => {
            let self_ty = if r.mutability.is_some() {
                quote!(&mut Self)
            } else {
                quote!(&Self)
            };
            (
                quote!(fn(#self_ty, #(#types),*) -> #ret),
                quote!(::onnx_diagnostic_core::patches::short_type_name::<Self>()),
                quote!((__patch)(self, #(#names),*)),
            )
        }
        None => (
            quote!(fn(#(#types),*) -> #ret),
            quote!(""),
            quote!((__patch)(#(#names),*)),
        ),
    };
    let attrs = &f.attrs;
    let vis = &f.vis;
    let sig = &f.sig;
    let block = &f.block;
    quote! {
        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        pub const #source_const: &'static str = #source;
        #(#attrs)*
        #vis #sig {
            if ::onnx_diagnostic_core::patches::any_active() {
                if let Some((__patch, __name)) =
                    ::onnx_diagnostic_core::patches::lookup::<#fn_ty>(#class, #method)
                {
                    return ::onnx_diagnostic_core::patches::run_patch(&__name, || #call);
                }
            }
            #block
        }
    }
    .into()
}

/// Registers a function as the patch of a `#[patchable]` target (see the crate doc):
/// `#[patch(target = LlamaRotaryEmbedding::forward, family = "transformers")]`.
#[proc_macro_attribute]
pub fn patch(attr: TokenStream, item: TokenStream) -> TokenStream {
    let source = source_text(&item);
    let metas = match Punctuated::<Meta, Comma>::parse_terminated.parse(attr) {
        Ok(m) => m,
        Err(e) => return e.to_compile_error().into(),
    };
    let mut target: Option<Path> = None;
    let mut family = "custom".to_owned();
    let mut when: Option<String> = None;
    for m in metas {
        let Meta::NameValue(nv) = &m else {
            return error(
                m.span(),
                "expected `target = Type::method` or `family = \"...\"`",
            );
        };
        if nv.path.is_ident("target") {
            match &nv.value {
                Expr::Path(p) => target = Some(p.path.clone()),
                other => return error(other.span(), "target must be a path: Type::method"),
            }
        } else if nv.path.is_ident("family") {
            match &nv.value {
                Expr::Lit(l) => match &l.lit {
                    Lit::Str(s) => family = s.value(),
                    other => return error(other.span(), "family must be a string"),
                },
                other => return error(other.span(), "family must be a string"),
            }
        } else if nv.path.is_ident("when") {
            match &nv.value {
                Expr::Lit(l) => match &l.lit {
                    Lit::Str(s)
                        if ["catch_constraints", "stop_if_static"].contains(&&*s.value()) =>
                    {
                        when = Some(s.value());
                    }
                    other => {
                        return error(
                            other.span(),
                            "when is \"catch_constraints\" or \"stop_if_static\"",
                        );
                    }
                },
                other => return error(other.span(), "when must be a string"),
            }
        } else {
            return error(nv.path.span(), "unknown argument (target, family, when)");
        }
    }
    let Some(target) = target else {
        return error(Span::call_site(), "#[patch] needs `target = Type::method`");
    };
    let family_ident = match family.as_str() {
        "torch" => quote!(Torch),
        "transformers" => quote!(Transformers),
        "diffusers" => quote!(Diffusers),
        "custom" => quote!(Custom),
        "rewrite" => quote!(Rewrite),
        _ => {
            return error(
                Span::call_site(),
                "family is one of torch, transformers, diffusers, custom, rewrite",
            );
        }
    };
    let (f, args) = match parse_fn(item) {
        Ok(x) => x,
        Err(e) => return e.to_compile_error().into(),
    };
    let types: Vec<&Type> = args.iter().map(|(_, t)| t).collect();
    let ret = match &f.sig.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, t) => quote!(#t),
    };
    let segments: Vec<String> = target
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    // `Type::method` (a type is capitalised) or `module::function`.
    let target_id = match segments.len() {
        0 => return error(target.span(), "empty target"),
        1 => segments[0].clone(),
        n if segments[n - 2].starts_with(char::is_uppercase) => {
            format!("{}.{}", segments[n - 2], segments[n - 1])
        }
        n => segments[n - 1].clone(),
    };
    let when = match when {
        Some(w) => quote!(Some(#w)),
        None => quote!(None),
    };
    let mut source_path = target.clone();
    if let Some(last) = source_path.segments.last_mut() {
        last.ident = format_ident!("__patchable_source_{}", last.ident);
        last.arguments = syn::PathArguments::None;
    }
    let doc: Vec<String> = f
        .attrs
        .iter()
        .filter_map(|a| match &a.meta {
            Meta::NameValue(nv) if nv.path.is_ident("doc") => match &nv.value {
                Expr::Lit(l) => match &l.lit {
                    Lit::Str(s) => Some(s.value().trim().to_owned()),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
        .collect();
    let doc = doc.join("\n");
    let name = &f.sig.ident;
    let patch_name = format!("patched_{target_id}");
    // A custom patch (a plugin's, or the user's) runs behind a panic catcher: a panic becomes
    // `Error::PatchPanicked` there, and never unwinds into the host.
    let (wrapper, func) = if family == "custom" {
        let caught = format_ident!("__caught_{}", name);
        let args: Vec<syn::Ident> = (0..types.len())
            .map(|i| format_ident!("__a{}", i))
            .collect();
        (
            quote! {
                #[doc(hidden)]
                #[allow(non_snake_case)]
                fn #caught(#(#args: #types),*) -> #ret {
                    ::onnx_diagnostic_core::patches::catch_patch_panic(
                        #patch_name,
                        || #name(#(#args),*),
                    )
                }
            },
            quote!(#caught),
        )
    } else {
        (quote!(), quote!(#name))
    };
    quote! {
        #f
        #wrapper
        // The patch has the target's signature (checked by the compiler).
        const _: () = {
            let _check: fn(#(#types),*) -> #ret = #target;
        };
        ::onnx_diagnostic_core::patches::__inventory::submit! {
            ::onnx_diagnostic_core::patches::PatchEntry {
                name: #patch_name,
                target: #target_id,
                family: ::onnx_diagnostic_core::patches::PatchFamily::#family_ident,
                doc: #doc,
                patch_source: #source,
                target_source: #source_path,
                func: &(#func as fn(#(#types),*) -> #ret),
                when: #when,
            }
        }
    }
    .into()
}

/// On an `impl` block: `#[rewritable(forward)]` (or `#[rewritable(forward, or_into_bitor)]`)
/// rewrites the named methods' control flow with crates/rewrite at compile time. Each method
/// stays as written and becomes `#[patchable]`; its rewritten form is generated next to it
/// (`__rewritten_<method>`) and registered as the patch `rewritten_<Type>.<method>` of family
/// `rewrite`, applied while a patch guard lists the target in its `rewrite` option. A method
/// the rewriter cannot handle is a compile error giving the reason.
#[proc_macro_attribute]
pub fn rewritable(attr: TokenStream, item: TokenStream) -> TokenStream {
    let names = match Punctuated::<syn::Ident, Comma>::parse_terminated.parse(attr) {
        Ok(n) => n,
        Err(e) => return e.to_compile_error().into(),
    };
    let mut options = onnx_diagnostic_rewrite::RewriteOptions::default();
    let mut methods: Vec<String> = Vec::new();
    for n in names {
        if n == "or_into_bitor" {
            options.pre_rewriter = Some(onnx_diagnostic_rewrite::or_into_bitor);
        } else {
            methods.push(n.to_string());
        }
    }
    let mut imp: syn::ItemImpl = match syn::parse(item) {
        Ok(i) => i,
        Err(e) => return e.to_compile_error().into(),
    };
    let self_ty = imp.self_ty.clone();
    let class = match &*self_ty {
        Type::Path(p) => match p.path.segments.last() {
            Some(s) => s.ident.to_string(),
            None => return error(self_ty.span(), "expected a type name"),
        },
        _ => return error(self_ty.span(), "#[rewritable] goes on `impl Type { ... }`"),
    };
    let mut extra = Vec::new();
    let mut entries = Vec::new();
    for it in &mut imp.items {
        let syn::ImplItem::Fn(f) = it else { continue };
        let name = f.sig.ident.to_string();
        if !methods.contains(&name) {
            continue;
        }
        methods.retain(|m| *m != name);
        let original = f.clone();
        let (mut rewritten, n) = match onnx_diagnostic_rewrite::transform_fn(f.clone(), &options) {
            Ok(r) => r,
            Err(e) => {
                return error(
                    f.sig.ident.span(),
                    &format!("#[rewritable] {class}::{name}: {e}"),
                );
            }
        };
        if n == 0 {
            return error(
                f.sig.ident.span(),
                &format!(
                    "#[rewritable] {class}::{name}: nothing to rewrite (no `if` on `.to_bool()`)"
                ),
            );
        }
        let args = match plain_args(&ItemFn {
            attrs: Vec::new(),
            vis: syn::Visibility::Inherited,
            sig: f.sig.clone(),
            block: Box::new(f.block.clone()),
        }) {
            Ok(a) => a,
            Err(e) => return e.to_compile_error().into(),
        };
        let types: Vec<&Type> = args.iter().map(|(_, t)| t).collect();
        let ret = match &f.sig.output {
            ReturnType::Default => quote!(()),
            ReturnType::Type(_, t) => quote!(#t),
        };
        let self_arg = match f.sig.inputs.first() {
            Some(FnArg::Receiver(r)) if r.mutability.is_some() => quote!(&mut #self_ty,),
            Some(FnArg::Receiver(_)) => quote!(&#self_ty,),
            _ => quote!(),
        };
        let code = onnx_diagnostic_rewrite::print_method(&rewritten);
        let original_text = onnx_diagnostic_rewrite::print_method(&original);
        let new_name = format_ident!("__rewritten_{}", name);
        rewritten.sig.ident = new_name.clone();
        rewritten.attrs.retain(|a| !a.path().is_ident("doc"));
        rewritten.attrs.push(syn::parse_quote!(#[doc(hidden)]));
        rewritten
            .attrs
            .push(syn::parse_quote!(#[allow(unused_mut, unused_variables, clippy::all)]));
        f.attrs
            .push(syn::parse_quote!(#[::onnx_diagnostic_macros::patchable]));
        extra.push(syn::ImplItem::Fn(rewritten));
        let patch_name = format!("rewritten_{class}.{name}");
        let target = format!("{class}.{name}");
        let doc = format!(
            "The control flow of {class}::{name} rewritten by crates/rewrite ({n} construct(s)): \
             `if` on tensors into cond, error exits into check. Applied with the guard's \
             `rewrite` option listing `{target}`."
        );
        entries.push(quote! {
            ::onnx_diagnostic_core::patches::__inventory::submit! {
                ::onnx_diagnostic_core::patches::PatchEntry {
                    name: #patch_name,
                    target: #target,
                    family: ::onnx_diagnostic_core::patches::PatchFamily::Rewrite,
                    doc: #doc,
                    patch_source: #code,
                    target_source: #original_text,
                    func: &(<#self_ty>::#new_name as fn(#self_arg #(#types),*) -> #ret),
                    when: None,
                }
            }
        });
    }
    if let Some(m) = methods.first() {
        return error(
            Span::call_site(),
            &format!("#[rewritable]: no method `{m}` in this impl block"),
        );
    }
    imp.items.extend(extra);
    quote! {
        #imp
        #(#entries)*
    }
    .into()
}
