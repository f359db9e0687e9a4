//! Control-flow rewriting (the seeds' `transform_method`, "Control flow rewriting"): an `if`
//! on a tensor cannot be exported as it is (reading a tensor as a `bool` is a data-dependent
//! error), so the method is rewritten at the source level into the engine's control flow:
//!
//! - `if c { ...; return a } else { ...; return b }` (or the two values as the function's
//!   tail) becomes `return cond_value(c, |ops| { ...; a }, |ops| { ...; b }, &[operands])`;
//!   an `if` without `else` whose branch returns takes the rest of the function as its `else`;
//! - `if c { x = ...; y = ... } [else { ... }]` becomes `let (x, y) = cond_value(...)`, each
//!   branch returning the union of the assigned variables (one not assigned on a side keeps
//!   its value there);
//! - `if c { return Err(..) }` / `if c { panic!(..) }` becomes `check_not(c, message)?`;
//! - `for i in 0..E.guard_int()? { ...; out = out.select_scatter(&row, 0, i)?; ... }` (a loop
//!   over a dynamic size, which as written specialises the graph to the example length: the
//!   seeds' `for i in range(x.shape[0])`) becomes `let (mut out, ..) = for_range(E, (out, ..),
//!   |i, __carries| { let (mut out, ..) = __carries; ...; Ok((out, ..)) })?`, a `scan` over
//!   `arange(E)`. The carries are the variables declared before the loop that the body
//!   assigns with `=`; inside, `i` is a 0-d tensor, which `select` and `select_scatter` take
//!   (any other use of it is reported). The bound may also be a name bound earlier by
//!   `let n = E.guard_int()?` (then `E` is evaluated again at the loop).
//!
//! A condition is a tensor test when it reads a tensor with `.to_bool()` (the default
//! `filter_node`: there are no types in syntax, so tests on other values are left alone).
//! `&&`, `||` and `!` in a condition become [`Cond`](../onnx_diagnostic_core/enum.Cond.html)
//! combinators, which keep Rust's short-circuit on plain booleans (so `h.kind() == Kind::Half
//! && ...` is decided while tracing, as Python's `and` is) and combine tensors with
//! `logical_and`/`logical_or`. The optional pre-rewriter [`or_into_bitor`] (the seeds'
//! `ast_or_into_bitor`) turns `a.to_bool()? || b.to_bool()?` into one tensor test
//! `a.logical_or(&b)?.to_bool()?`.
//!
//! Operands: closures capture what they read, and `cond` lifts captured tensors as torch lifts
//! them, so correctness does not depend on the operand list. The operands given explicitly are
//! the free variables of the branches that syntax shows to be tensors: parameters typed
//! `Tensor` or `&Tensor`, and `let` bindings annotated `: Tensor`.
//!
//! Unsupported code is reported with the reason and the line: a branch that both assigns and
//! returns, a `while` on a tensor test, a tensor test nested in another expression, a loop
//! that breaks, uses its index as a number, pushes into a `Vec` declared outside, or carries
//! nothing. Loops to a plain number are left alone (they unroll), as are loops the
//! `filter_loop` option refuses.
//!
//! The library works on source text (the CLI, `transform_method`) and on syn items (the
//! `#[rewritable]` macro of crates/macros, at compile time).

use std::{collections::BTreeMap, fmt::Write as _};

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote};
use syn::{
    BinOp, Block, Expr, ExprForLoop, ExprIf, FnArg, ImplItemFn, Pat, Stmt, Type, UnOp,
    spanned::Spanned,
    visit::Visit,
    visit_mut::{self, VisitMut},
};

/// Why a method could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    /// The source does not parse.
    #[error("cannot parse {what}: {message}")]
    Parse {
        /// What was parsed.
        what: String,
        /// syn's message.
        message: String,
    },
    /// The method is not in the source.
    #[error("method {method} not found in {file}: give `Type::method` of an `impl Type` block")]
    NotFound {
        /// `Type::method`.
        method: String,
        /// The file.
        file: String,
    },
    /// A construct the rewriter does not handle.
    #[error("line {line}: cannot rewrite {construct}: {reason}")]
    Unsupported {
        /// What it is (`if`, `while`, ...).
        construct: String,
        /// Line in the method's source, from 1.
        line: usize,
        /// Why, and what to do.
        reason: String,
    },
}

/// A result of this crate.
pub type Result<T> = std::result::Result<T, RewriteError>;

/// A syntax-tree function of the pre- or post-rewriter options.
pub type ItemRewriter = fn(ImplItemFn) -> ImplItemFn;

/// The options of [`transform_method`] (the seeds' arguments).
#[derive(Clone, Default)]
pub struct RewriteOptions {
    /// Which tensor tests to rewrite, among those the default rule finds (`.to_bool()`):
    /// `false` leaves the `if` as it is.
    pub filter_node: Option<fn(&ExprIf) -> bool>,
    /// Which loops over a dynamic size to rewrite into `for_range` (a `scan`), among those
    /// the default rule finds (`for i in 0..E.guard_int()?`): `false` leaves the loop as it
    /// is, unrolled to the example length.
    pub filter_loop: Option<fn(&ExprForLoop) -> bool>,
    /// Applied to the method before rewriting (e.g. [`or_into_bitor`]).
    pub pre_rewriter: Option<ItemRewriter>,
    /// Applied to the rewritten method.
    pub post_rewriter: Option<ItemRewriter>,
}

impl std::fmt::Debug for RewriteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RewriteOptions")
            .field("filter_node", &self.filter_node.is_some())
            .field("filter_loop", &self.filter_loop.is_some())
            .field("pre_rewriter", &self.pre_rewriter.is_some())
            .field("post_rewriter", &self.post_rewriter.is_some())
            .finish()
    }
}

/// A rewritten method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RewrittenMethod {
    /// The method, as written (normalised by the same printer as `code`).
    pub original: String,
    /// The rewritten method.
    pub code: String,
    /// `--- original` / `+++ rewritten` unified diff.
    pub diff: String,
    /// How many constructs were rewritten.
    pub n_rewritten: usize,
}

/// Rewrites one method given as source text (`fn forward(&self, ...) -> Result<Tensor> {...}`).
///
/// # Errors
/// [`RewriteError::Parse`], [`RewriteError::Unsupported`].
pub fn transform_method(source: &str, options: &RewriteOptions) -> Result<RewrittenMethod> {
    let f: ImplItemFn = syn::parse_str(source).map_err(|e| RewriteError::Parse {
        what: "the method".to_owned(),
        message: e.to_string(),
    })?;
    let original = print_method(&f);
    let (rewritten, n_rewritten) = transform_fn(f, options)?;
    let code = print_method(&rewritten);
    Ok(RewrittenMethod {
        diff: unified_diff(&original, &code),
        original,
        code,
        n_rewritten,
    })
}

/// Finds `Type::method` in a Rust file (`impl Type { fn method ... }`) and returns its
/// source.
///
/// # Errors
/// [`RewriteError::Parse`], [`RewriteError::NotFound`].
pub fn find_method(file_source: &str, file: &str, path: &str) -> Result<String> {
    let not_found = || RewriteError::NotFound {
        method: path.to_owned(),
        file: file.to_owned(),
    };
    let (ty, method) = path.rsplit_once("::").ok_or_else(not_found)?;
    let parsed = syn::parse_file(file_source).map_err(|e| RewriteError::Parse {
        what: file.to_owned(),
        message: e.to_string(),
    })?;
    for item in &parsed.items {
        let syn::Item::Impl(imp) = item else { continue };
        let Type::Path(p) = &*imp.self_ty else {
            continue;
        };
        if p.path.segments.last().map(|s| s.ident.to_string()) != Some(ty.to_owned()) {
            continue;
        }
        for it in &imp.items {
            if let syn::ImplItem::Fn(f) = it
                && f.sig.ident == method
            {
                return Ok(f.to_token_stream().to_string());
            }
        }
    }
    Err(not_found())
}

/// Prints a method with prettyplease (inside an `impl` block, then dedented).
pub fn print_method(f: &ImplItemFn) -> String {
    let file: syn::File = syn::parse_quote! { impl __Rewrite { #f } };
    let text = prettyplease::unparse(&file);
    let lines: Vec<&str> = text.lines().collect();
    let body = lines.get(1..lines.len().saturating_sub(1)).unwrap_or(&[]);
    body.iter()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Rewrites a parsed method: the rewritten method and how many constructs changed.
///
/// # Errors
/// [`RewriteError::Unsupported`].
pub fn transform_fn(f: ImplItemFn, options: &RewriteOptions) -> Result<(ImplItemFn, usize)> {
    let mut f = match options.pre_rewriter {
        Some(pre) => pre(f),
        None => f,
    };
    let tensors = tensor_params(&f);
    let mut rw = Rewriter {
        options,
        tensors,
        sizes: BTreeMap::new(),
        count: 0,
    };
    let stmts = std::mem::take(&mut f.block.stmts);
    f.block.stmts = rw.block_stmts(stmts, true)?;
    let n = rw.count;
    let f = match options.post_rewriter {
        Some(post) => post(f),
        None => f,
    };
    Ok((f, n))
}

/// `a.to_bool()? || b.to_bool()?` into `a.logical_or(&b)?.to_bool()?`, and `&&` into
/// `logical_and` (the seeds' `ast_or_into_bitor`): one tensor test instead of two.
pub fn or_into_bitor(mut f: ImplItemFn) -> ImplItemFn {
    struct Bitor;
    impl VisitMut for Bitor {
        fn visit_expr_mut(&mut self, e: &mut Expr) {
            visit_mut::visit_expr_mut(self, e);
            if let Expr::Binary(b) = e {
                let op = match b.op {
                    BinOp::Or(_) => "logical_or",
                    BinOp::And(_) => "logical_and",
                    _ => return,
                };
                if let (Some(l), Some(r)) = (tensor_test(&b.left), tensor_test(&b.right)) {
                    let op = format_ident!("{op}");
                    *e = syn::parse_quote! { (#l).#op(&(#r))?.to_bool()? };
                }
            }
        }
    }
    Bitor.visit_impl_item_fn_mut(&mut f);
    f
}

/// The tensor of a tensor test `t.to_bool()?` (parentheses allowed).
fn tensor_test(e: &Expr) -> Option<&Expr> {
    match e {
        Expr::Paren(p) => tensor_test(&p.expr),
        Expr::Try(t) => match &*t.expr {
            Expr::MethodCall(m) if m.method == "to_bool" && m.args.is_empty() => Some(&m.receiver),
            _ => None,
        },
        _ => None,
    }
}

/// Whether an expression reads a tensor as a bool anywhere.
fn has_tensor_test(e: &Expr) -> bool {
    struct Find(bool);
    impl<'a> Visit<'a> for Find {
        fn visit_expr_method_call(&mut self, m: &'a syn::ExprMethodCall) {
            if m.method == "to_bool" {
                self.0 = true;
            }
            syn::visit::visit_expr_method_call(self, m);
        }
    }
    let mut f = Find(false);
    f.visit_expr(e);
    f.0
}

/// Parameters typed `Tensor` (owned: `true`) or `&Tensor` (`false`).
fn tensor_params(f: &ImplItemFn) -> BTreeMap<String, bool> {
    let mut out = BTreeMap::new();
    for arg in &f.sig.inputs {
        let FnArg::Typed(t) = arg else { continue };
        let Pat::Ident(id) = &*t.pat else { continue };
        match &*t.ty {
            Type::Reference(r) if is_tensor(&r.elem) => {
                out.insert(id.ident.to_string(), false);
            }
            ty if is_tensor(ty) => {
                out.insert(id.ident.to_string(), true);
            }
            _ => {}
        }
    }
    out
}

fn is_tensor(ty: &Type) -> bool {
    matches!(ty, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "Tensor"))
}

fn line_of(span: Span) -> usize {
    span.start().line
}

fn unsupported(span: Span, construct: &str, reason: &str) -> RewriteError {
    RewriteError::Unsupported {
        construct: construct.to_owned(),
        line: line_of(span),
        reason: reason.to_owned(),
    }
}

/// The free single-segment names an expression or block reads.
fn names_read(tokens: &TokenStream) -> Vec<String> {
    let mut out = Vec::new();
    collect_idents(tokens.clone(), &mut out);
    out
}

fn collect_idents(tokens: TokenStream, out: &mut Vec<String>) {
    for t in tokens {
        match t {
            proc_macro2::TokenTree::Ident(i) => {
                let s = i.to_string();
                if !out.contains(&s) {
                    out.push(s);
                }
            }
            proc_macro2::TokenTree::Group(g) => collect_idents(g.stream(), out),
            _ => {}
        }
    }
}

/// The variables assigned (`x = ...`) in a block, outside closures, in order.
fn assigned(block: &Block) -> Vec<String> {
    struct Find(Vec<String>);
    impl<'a> Visit<'a> for Find {
        fn visit_expr_assign(&mut self, a: &'a syn::ExprAssign) {
            if let Expr::Path(p) = &*a.left
                && let Some(id) = p.path.get_ident()
            {
                let s = id.to_string();
                if !self.0.contains(&s) {
                    self.0.push(s);
                }
            }
            syn::visit::visit_expr_assign(self, a);
        }
        fn visit_expr_closure(&mut self, _: &'a syn::ExprClosure) {}
    }
    let mut f = Find(Vec::new());
    f.visit_block(block);
    f.0
}

/// Whether a block returns (a `return`, outside closures).
fn returns(block: &Block) -> bool {
    struct Find(bool);
    impl<'a> Visit<'a> for Find {
        fn visit_expr_return(&mut self, _: &'a syn::ExprReturn) {
            self.0 = true;
        }
        fn visit_expr_closure(&mut self, _: &'a syn::ExprClosure) {}
    }
    let mut f = Find(false);
    f.visit_block(block);
    f.0
}

/// Whether a block is only an error exit: `return Err(..)` or a `panic!`-like macro.
fn error_exit(block: &Block) -> Option<String> {
    let [stmt] = block.stmts.as_slice() else {
        return None;
    };
    let e = match stmt {
        Stmt::Expr(e, _) => e,
        Stmt::Macro(m) => return panic_message(&m.mac),
        _ => return None,
    };
    match e {
        Expr::Return(r) => match r.expr.as_deref() {
            Some(Expr::Call(c)) if matches!(&*c.func, Expr::Path(p) if p.path.is_ident("Err")) => {
                let tokens = c.args.to_token_stream();
                Some(first_string(tokens.clone()).unwrap_or_else(|| tokens.to_string()))
            }
            _ => None,
        },
        Expr::Macro(m) => panic_message(&m.mac),
        _ => None,
    }
}

/// The string literals of an expression, joined by `: ` (`Error::Model { model: "Toy",
/// message: "negative input" }` gives `Toy: negative input`).
fn first_string(tokens: TokenStream) -> Option<String> {
    fn collect(tokens: TokenStream, out: &mut Vec<String>) {
        for t in tokens {
            match t {
                proc_macro2::TokenTree::Literal(l) => {
                    if let Ok(s) = syn::parse_str::<syn::LitStr>(&l.to_string()) {
                        out.push(s.value());
                    }
                }
                proc_macro2::TokenTree::Group(g) => collect(g.stream(), out),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    collect(tokens, &mut out);
    (!out.is_empty()).then(|| out.join(": "))
}

fn panic_message(m: &syn::Macro) -> Option<String> {
    let name = m.path.segments.last()?.ident.to_string();
    if !["panic", "unreachable", "bail"].contains(&name.as_str()) {
        return None;
    }
    let lit: Option<syn::LitStr> = m
        .parse_body_with(|input: syn::parse::ParseStream<'_>| {
            let l: syn::LitStr = input.parse()?;
            let _: TokenStream = input.parse()?;
            Ok(l)
        })
        .ok();
    Some(lit.map_or_else(|| m.tokens.to_string(), |l| l.value()))
}

struct Rewriter<'o> {
    options: &'o RewriteOptions,
    /// Known tensors: name → owned.
    tensors: BTreeMap<String, bool>,
    /// `let n = E.guard_int()?` bindings: name → `E` (a dynamic size made a plain integer).
    sizes: BTreeMap<String, Expr>,
    count: usize,
}

impl Rewriter<'_> {
    /// Whether an `if` is a tensor test to rewrite.
    fn wanted(&self, i: &ExprIf) -> bool {
        has_tensor_test(&i.cond) && self.options.filter_node.is_none_or(|f| f(i))
    }

    /// The condition as an expression of type `Result<Cond>`.
    fn pred(&self, e: &Expr) -> Result<TokenStream> {
        let core = core_path();
        if let Some(t) = tensor_test(e) {
            return Ok(quote! { #core::Cond::tensor(&(#t)) });
        }
        match e {
            Expr::Paren(p) => self.pred(&p.expr),
            Expr::Binary(b) if matches!(b.op, BinOp::And(_) | BinOp::Or(_)) => {
                let (l, r) = (self.pred(&b.left)?, self.pred(&b.right)?);
                let op = if matches!(b.op, BinOp::And(_)) {
                    quote!(and)
                } else {
                    quote!(or)
                };
                Ok(quote! { (#l)?.#op(|| #r) })
            }
            Expr::Unary(u) if matches!(u.op, UnOp::Not(_)) => {
                let inner = self.pred(&u.expr)?;
                Ok(quote! { (#inner)?.negate() })
            }
            other if !has_tensor_test(other) => Ok(quote! { #core::Cond::from_bool(#other) }),
            other => Err(unsupported(
                other.span(),
                "if",
                "a tensor test (`.to_bool()`) inside another expression; write the test as \
                 `t.to_bool()?`, combined with &&, || and !",
            )),
        }
    }

    /// The operands of branches: the known tensors they read, and the bindings that shadow
    /// them inside the closures.
    fn operands(&self, branches: &[TokenStream]) -> (TokenStream, TokenStream) {
        let mut read = Vec::new();
        for b in branches {
            for n in names_read(b) {
                if self.tensors.contains_key(&n) && !read.contains(&n) {
                    read.push(n);
                }
            }
        }
        let args = read.iter().map(|n| {
            let id = format_ident!("{n}");
            quote!(#id.clone())
        });
        let binds = read.iter().enumerate().map(|(i, n)| {
            let id = format_ident!("{n}");
            if self.tensors[n] {
                quote! { let #id = __ops[#i].clone(); }
            } else {
                quote! { let #id = &__ops[#i]; }
            }
        });
        (quote!(&[#(#args),*]), quote!(#(#binds)*))
    }

    /// Rewrites the statements of a block; `tail` when they end the function (their value
    /// or returns are the function's).
    fn block_stmts(&mut self, stmts: Vec<Stmt>, tail: bool) -> Result<Vec<Stmt>> {
        let mut out = Vec::new();
        let mut it = stmts.into_iter().peekable();
        while let Some(stmt) = it.next() {
            // Annotated tensor bindings become known tensors.
            if let Stmt::Local(l) = &stmt
                && let Pat::Type(pt) = &l.pat
                && let Pat::Ident(id) = &*pt.pat
                && is_tensor(&pt.ty)
            {
                self.tensors.insert(id.ident.to_string(), true);
            }
            // `let n = E.guard_int()?` names a size a loop may run to.
            if let Stmt::Local(l) = &stmt
                && let Some(init) = &l.init
                && let Some(size) = guarded_size(&init.expr)
            {
                let name = match &l.pat {
                    Pat::Ident(id) => Some(&id.ident),
                    Pat::Type(pt) => match &*pt.pat {
                        Pat::Ident(id) => Some(&id.ident),
                        _ => None,
                    },
                    _ => None,
                };
                if let Some(name) = name {
                    self.sizes.insert(name.to_string(), size.clone());
                }
            }
            if let Stmt::Expr(Expr::ForLoop(f), _) = &stmt
                && let Some(bound) = self.loop_bound(f)
            {
                out.push(self.rewrite_for(f, &bound)?);
                continue;
            }
            let (e, semi) = match &stmt {
                Stmt::Expr(Expr::If(i), semi) if self.wanted(i) => (i.clone(), semi.is_some()),
                Stmt::Expr(Expr::While(w), _) if has_tensor_test(&w.cond) => {
                    return Err(unsupported(
                        w.span(),
                        "while",
                        "a loop on a tensor test has no export form; bound it by a size and \
                         use core::scan",
                    ));
                }
                _ => {
                    out.push(stmt);
                    continue;
                }
            };
            let is_last = it.peek().is_none();
            let rest: Vec<Stmt> = if !is_last && returns(&e.then_branch) && e.else_branch.is_none()
            {
                it.by_ref().collect()
            } else {
                Vec::new()
            };
            out.extend(self.rewrite_if(&e, is_last && !semi, rest, tail)?);
        }
        Ok(out)
    }

    fn rewrite_if(
        &mut self,
        e: &ExprIf,
        value_position: bool,
        rest: Vec<Stmt>,
        tail: bool,
    ) -> Result<Vec<Stmt>> {
        let core = core_path();
        let pred = self.pred(&e.cond)?;
        // check
        if e.else_branch.is_none()
            && let Some(message) = error_exit(&e.then_branch)
        {
            self.count += 1;
            let stmt: Stmt = syn::parse_quote! { #core::check_not((#pred)?, #message)?; };
            let mut out = vec![stmt];
            out.extend(self.block_stmts(rest, tail)?);
            return Ok(out);
        }
        let else_block: Option<Block> = match &e.else_branch {
            None => None,
            Some((_, b)) => match &**b {
                Expr::Block(b) => Some(b.block.clone()),
                Expr::If(_) => {
                    return Err(unsupported(
                        b.span(),
                        "else if",
                        "write the inner test as a nested `if` inside `else { }`",
                    ));
                }
                _ => None,
            },
        };
        let then_returns = returns(&e.then_branch);
        let else_returns = else_block.as_ref().is_some_and(returns);
        let then_assigns = assigned(&e.then_branch);
        let else_assigns = else_block.as_ref().map(assigned).unwrap_or_default();
        if (then_returns && !then_assigns.is_empty()) || (else_returns && !else_assigns.is_empty())
        {
            return Err(unsupported(
                e.span(),
                "if",
                "a branch both assigns variables and returns; make both branches return, or \
                 both assign",
            ));
        }
        // Value form: both sides give the function's value.
        let value_form = tail && (then_returns || value_position);
        if value_form {
            let then_stmts = self.block_stmts(e.then_branch.stmts.clone(), true)?;
            let else_stmts = match (else_block, rest.is_empty()) {
                (Some(b), _) => self.block_stmts(b.stmts, true)?,
                (None, false) => self.block_stmts(rest, true)?,
                (None, true) => {
                    return Err(unsupported(
                        e.span(),
                        "if",
                        "the branch returns but nothing follows it to give the other value",
                    ));
                }
            };
            self.count += 1;
            let then_b = quote!(#(#then_stmts)*);
            let else_b = quote!(#(#else_stmts)*);
            let (ops, binds) = self.operands(&[then_b.clone(), else_b.clone()]);
            let call = quote! {
                #core::cond_value(
                    (#pred)?,
                    |__ops: &[#core::Tensor]| { #binds #then_b },
                    |__ops: &[#core::Tensor]| { #binds #else_b },
                    #ops,
                )
            };
            let stmt: Stmt = if value_position && !then_returns {
                Stmt::Expr(syn::parse2(call).map_err(|err| parse_err(&err))?, None)
            } else {
                syn::parse_quote! { return #call; }
            };
            return Ok(vec![stmt]);
        }
        if then_returns || else_returns {
            return Err(unsupported(
                e.span(),
                "if",
                "a branch returns in the middle of the function; only returns that end the \
                 function are rewritten",
            ));
        }
        // Assignment form.
        let mut vars = then_assigns;
        for v in else_assigns {
            if !vars.contains(&v) {
                vars.push(v);
            }
        }
        if vars.is_empty() {
            return Err(unsupported(
                e.span(),
                "if",
                "the branches neither assign a variable nor return a value",
            ));
        }
        self.count += 1;
        let ids: Vec<syn::Ident> = vars.iter().map(|v| format_ident!("{v}")).collect();
        // `x` for one variable, `(a, b)` for several: the pattern, the branches' value and,
        // with tensors for names, the type.
        let (tuple, ty) = if let [id] = ids.as_slice() {
            (quote!(#id), quote!(#core::Tensor))
        } else {
            let tys = ids.iter().map(|_| quote!(#core::Tensor));
            (quote!((#(#ids),*)), quote!((#(#tys),*)))
        };
        let branch = |this: &mut Self, stmts: Vec<Stmt>, assigned: &[String]| -> Result<_> {
            let stmts = this.block_stmts(stmts, false)?;
            let shadows = ids.iter().map(|id| {
                if assigned.contains(&id.to_string()) {
                    quote! { let mut #id = #id.clone(); }
                } else {
                    quote! { let #id = #id.clone(); }
                }
            });
            Ok(quote! { #(#shadows)* #(#stmts)* Ok(#tuple) })
        };
        let then_assigned = assigned(&e.then_branch);
        let then_b = branch(self, e.then_branch.stmts.clone(), &then_assigned)?;
        let (else_stmts, else_assigned) = match &else_block {
            Some(b) => (b.stmts.clone(), assigned(b)),
            None => (Vec::new(), Vec::new()),
        };
        let else_b = branch(self, else_stmts, &else_assigned)?;
        let (ops, binds) = self.operands(&[then_b.clone(), else_b.clone()]);
        let stmt: Stmt = syn::parse_quote! {
            let #tuple = #core::cond_value::<#ty>(
                (#pred)?,
                |__ops: &[#core::Tensor]| { #binds #then_b },
                |__ops: &[#core::Tensor]| { #binds #else_b },
                #ops,
            )?;
        };
        let mut out = vec![stmt];
        out.extend(self.block_stmts(rest, tail)?);
        Ok(out)
    }
}

impl Rewriter<'_> {
    /// The dynamic size a loop runs to, when it is a loop to rewrite: `for i in 0..E` where
    /// `E` is `X.guard_int()?` or a name bound to one.
    fn loop_bound(&self, f: &ExprForLoop) -> Option<Expr> {
        let Expr::Range(r) = &*f.expr else {
            return None;
        };
        let starts_at_zero = matches!(r.start.as_deref(), Some(Expr::Lit(l))
            if matches!(&l.lit, syn::Lit::Int(i) if i.base10_digits() == "0"));
        if !starts_at_zero || !matches!(r.limits, syn::RangeLimits::HalfOpen(_)) {
            return None;
        }
        let end = r.end.as_deref()?;
        let bound = match end {
            Expr::Path(p) => self.sizes.get(&p.path.get_ident()?.to_string()).cloned(),
            other => guarded_size(other).cloned(),
        }?;
        self.options
            .filter_loop
            .is_none_or(|keep| keep(f))
            .then_some(bound)
    }

    /// `for i in 0..n { body }` into `let (carries) = for_range(n, (carries), |i, (carries)|
    /// { body; Ok((carries)) })?;`: the carries are the variables declared before the loop
    /// that the body assigns; `i` becomes a 0-d tensor, which only `select` and
    /// `select_scatter` take.
    fn rewrite_for(&mut self, f: &ExprForLoop, bound: &Expr) -> Result<Stmt> {
        let core = core_path();
        let var = match &*f.pat {
            Pat::Ident(id) if id.by_ref.is_none() && id.subpat.is_none() => Some(id.ident.clone()),
            Pat::Wild(_) => None,
            other => {
                return Err(unsupported(
                    other.span(),
                    "for",
                    "the loop variable is a pattern; loop with one name (`for i in 0..n`)",
                ));
            }
        };
        if f.label.is_some() {
            return Err(unsupported(
                f.span(),
                "for",
                "a labelled loop; scan runs every step, remove the label and its breaks",
            ));
        }
        if let Some(span) = loop_exit(&f.body) {
            return Err(unsupported(
                span,
                "for",
                "`break`, `continue` or `return` in the loop; scan runs every step: compute \
                 the value of each step instead (e.g. with `where_cond`)",
            ));
        }
        if let Some(var) = &var
            && let Some(span) = index_misuse(&f.body, &var.to_string())
        {
            return Err(unsupported(
                span,
                "for",
                &format!(
                    "the loop index `{var}` is used as a number; inside scan it is a 0-d tensor, \
                     which only `t.select(dim, {var})` and `t.select_scatter(&v, dim, {var})` \
                     take"
                ),
            ));
        }
        let local = let_bound(&f.body);
        if let Some((name, span)) = outer_mutation(&f.body, &local) {
            return Err(unsupported(
                span,
                "for",
                &format!(
                    "`{name}` declared before the loop is changed in place (`+=`, `push`, ...); \
                     only tensors reassigned with `=` are carried through scan: write rows \
                     with `{name} = {name}.select_scatter(&row, 0, i)?`"
                ),
            ));
        }
        let vars: Vec<String> = assigned(&f.body)
            .into_iter()
            .filter(|v| !local.contains(v))
            .collect();
        if vars.is_empty() {
            return Err(unsupported(
                f.span(),
                "for",
                "the loop assigns no tensor declared before it, so scan has nothing to carry; \
                 write its results into a tensor allocated before the loop \
                 (`out = out.select_scatter(&row, 0, i)?`)",
            ));
        }
        // Inside the body (only), the index is a `&Tensor` and the carries are tensors: a
        // tensor test there passes them to its branches.
        let outside = self.tensors.clone();
        if let Some(v) = &var {
            self.tensors.insert(v.to_string(), false);
        }
        for v in &vars {
            self.tensors.insert(v.clone(), true);
        }
        let body = self.block_stmts(f.body.stmts.clone(), false);
        self.tensors = outside;
        let body = body?;
        self.count += 1;
        let ids: Vec<syn::Ident> = vars.iter().map(|v| format_ident!("{v}")).collect();
        let (tuple, pat, ty) = if let [id] = ids.as_slice() {
            (quote!(#id), quote!(mut #id), quote!(#core::Tensor))
        } else {
            let tys = ids.iter().map(|_| quote!(#core::Tensor));
            (
                quote!((#(#ids),*)),
                quote!((#(mut #ids),*)),
                quote!((#(#tys),*)),
            )
        };
        let index = var.map_or_else(|| quote!(_), |v| quote!(#v));
        Ok(syn::parse_quote! {
            let #pat = #core::for_range::<#ty>(
                #bound,
                #tuple,
                |#index, __carries| {
                    let #pat = __carries;
                    #(#body)*
                    Ok(#tuple)
                },
            )?;
        })
    }
}

/// `E` of `E.guard_int()?`: a dynamic size made a plain integer.
fn guarded_size(e: &Expr) -> Option<&Expr> {
    match e {
        Expr::Paren(p) => guarded_size(&p.expr),
        Expr::Try(t) => match &*t.expr {
            Expr::MethodCall(m) if m.method == "guard_int" && m.args.is_empty() => {
                Some(&m.receiver)
            }
            _ => None,
        },
        _ => None,
    }
}

/// The first `break`, `continue` (of this loop, not of a nested one) or `return` in a loop
/// body, outside closures.
fn loop_exit(body: &Block) -> Option<Span> {
    struct Find {
        depth: usize,
        found: Option<Span>,
    }
    impl<'a> Visit<'a> for Find {
        fn visit_expr_break(&mut self, b: &'a syn::ExprBreak) {
            if self.depth == 0 || b.label.is_some() {
                self.found.get_or_insert(b.span());
            }
        }
        fn visit_expr_continue(&mut self, c: &'a syn::ExprContinue) {
            if self.depth == 0 || c.label.is_some() {
                self.found.get_or_insert(c.span());
            }
        }
        fn visit_expr_return(&mut self, r: &'a syn::ExprReturn) {
            self.found.get_or_insert(r.span());
        }
        fn visit_expr_closure(&mut self, _: &'a syn::ExprClosure) {}
        fn visit_expr_for_loop(&mut self, l: &'a ExprForLoop) {
            self.depth += 1;
            syn::visit::visit_expr_for_loop(self, l);
            self.depth -= 1;
        }
        fn visit_expr_while(&mut self, l: &'a syn::ExprWhile) {
            self.depth += 1;
            syn::visit::visit_expr_while(self, l);
            self.depth -= 1;
        }
        fn visit_expr_loop(&mut self, l: &'a syn::ExprLoop) {
            self.depth += 1;
            syn::visit::visit_expr_loop(self, l);
            self.depth -= 1;
        }
    }
    let mut f = Find {
        depth: 0,
        found: None,
    };
    f.visit_block(body);
    f.found
}

/// The first use of the loop index `var` other than as the index of `t.select(dim, var)` or
/// `t.select_scatter(&v, dim, var)`.
fn index_misuse(body: &Block, var: &str) -> Option<Span> {
    struct Find<'v> {
        var: &'v str,
        found: Option<Span>,
    }
    impl<'a> Visit<'a> for Find<'_> {
        fn visit_expr_method_call(&mut self, m: &'a syn::ExprMethodCall) {
            let index_at = match m.method.to_string().as_str() {
                "select" => Some(1),
                "select_scatter" => Some(2),
                _ => None,
            };
            self.visit_expr(&m.receiver);
            for (k, a) in m.args.iter().enumerate() {
                let is_index =
                    Some(k) == index_at && matches!(a, Expr::Path(p) if p.path.is_ident(self.var));
                if !is_index {
                    self.visit_expr(a);
                }
            }
        }
        fn visit_expr_path(&mut self, p: &'a syn::ExprPath) {
            if p.path.is_ident(self.var) {
                self.found.get_or_insert(p.span());
            }
        }
    }
    let mut f = Find { var, found: None };
    f.visit_block(body);
    f.found
}

/// The names a block binds with `let` (at any depth, outside closures).
fn let_bound(body: &Block) -> Vec<String> {
    struct Find(Vec<String>);
    impl<'a> Visit<'a> for Find {
        fn visit_pat_ident(&mut self, p: &'a syn::PatIdent) {
            self.0.push(p.ident.to_string());
            syn::visit::visit_pat_ident(self, p);
        }
        fn visit_expr_closure(&mut self, _: &'a syn::ExprClosure) {}
    }
    let mut f = Find(Vec::new());
    f.visit_block(body);
    f.0
}

/// The first variable declared outside `body` that it changes in place: a compound assignment
/// (`k += 1`), or a mutating call (`v.push(..)`, `v.insert(..)`, `v.extend(..)`, ...).
fn outer_mutation(body: &Block, local: &[String]) -> Option<(String, Span)> {
    struct Find<'l> {
        local: &'l [String],
        found: Option<(String, Span)>,
    }
    fn root(e: &Expr) -> Option<String> {
        match e {
            Expr::Path(p) => p.path.get_ident().map(ToString::to_string),
            Expr::Field(f) => root(&f.base),
            Expr::Index(i) => root(&i.expr),
            _ => None,
        }
    }
    impl<'a> Visit<'a> for Find<'_> {
        fn visit_expr_binary(&mut self, b: &'a syn::ExprBinary) {
            let compound = matches!(
                b.op,
                BinOp::AddAssign(_)
                    | BinOp::SubAssign(_)
                    | BinOp::MulAssign(_)
                    | BinOp::DivAssign(_)
                    | BinOp::RemAssign(_)
                    | BinOp::BitAndAssign(_)
                    | BinOp::BitOrAssign(_)
                    | BinOp::BitXorAssign(_)
                    | BinOp::ShlAssign(_)
                    | BinOp::ShrAssign(_)
            );
            if compound
                && let Some(name) = root(&b.left)
                && !self.local.contains(&name)
            {
                self.found.get_or_insert((name, b.span()));
            }
            syn::visit::visit_expr_binary(self, b);
        }
        fn visit_expr_method_call(&mut self, m: &'a syn::ExprMethodCall) {
            const MUTATING: &[&str] = &[
                "push", "insert", "extend", "append", "remove", "pop", "clear", "truncate",
                "copy_", "fill_",
            ];
            if MUTATING.contains(&m.method.to_string().as_str())
                && let Some(name) = root(&m.receiver)
                && !self.local.contains(&name)
            {
                self.found.get_or_insert((name, m.span()));
            }
            syn::visit::visit_expr_method_call(self, m);
        }
        fn visit_expr_closure(&mut self, _: &'a syn::ExprClosure) {}
    }
    let mut f = Find { local, found: None };
    f.visit_block(body);
    f.found
}

fn parse_err(e: &syn::Error) -> RewriteError {
    RewriteError::Parse {
        what: "the rewritten code".to_owned(),
        message: e.to_string(),
    }
}

/// The path of the engine crate in generated code.
fn core_path() -> TokenStream {
    quote!(::onnx_diagnostic_core)
}

/// A unified diff of two texts (`--- original`, `+++ rewritten`, hunks with 3 lines of
/// context), as Python's `difflib.unified_diff` prints it.
pub fn unified_diff(a: &str, b: &str) -> String {
    let a: Vec<&str> = a.trim().lines().collect();
    let b: Vec<&str> = b.trim().lines().collect();
    // Longest common subsequence table.
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // Edit script: (' ' | '-' | '+', line); deletions before insertions, as difflib.
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    if ops.iter().all(|(c, _)| *c == ' ') {
        return String::new();
    }
    // Hunks: changed lines with 3 lines of context, merged when close.
    let changed: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, (c, _))| *c != ' ')
        .map(|(k, _)| k)
        .collect();
    let mut hunks: Vec<(usize, usize)> = Vec::new();
    for k in changed {
        let (lo, hi) = (k.saturating_sub(3), (k + 4).min(ops.len()));
        match hunks.last_mut() {
            Some(h) if lo <= h.1 => h.1 = hi,
            _ => hunks.push((lo, hi)),
        }
    }
    let mut out = String::from("--- original\n+++ rewritten");
    for (lo, hi) in hunks {
        let before = |k: usize, c: char| {
            ops[..k]
                .iter()
                .filter(|(o, _)| *o == ' ' || *o == c)
                .count()
        };
        let (a0, b0) = (before(lo, '-'), before(lo, '+'));
        let a_len = ops[lo..hi].iter().filter(|(o, _)| *o != '+').count();
        let b_len = ops[lo..hi].iter().filter(|(o, _)| *o != '-').count();
        let range = |start: usize, len: usize| match len {
            0 => format!("{start},0"),
            1 => format!("{}", start + 1),
            _ => format!("{},{len}", start + 1),
        };
        let _ = write!(out, "\n@@ -{} +{} @@", range(a0, a_len), range(b0, b_len));
        for (c, l) in &ops[lo..hi] {
            let _ = write!(out, "\n{c}{l}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::unified_diff;

    #[test]
    fn unified_diffs_follow_difflib() {
        // Expected texts printed by Python's difflib.unified_diff(..., lineterm="").
        let a = "a\nb\nc\nd\ne\nf\ng\nh\ni";
        let b = "a\nb\nc\nD\ne\nf\ng\nh\ni\nj";
        assert_eq!(
            unified_diff(a, b),
            "--- original\n+++ rewritten\n@@ -1,9 +1,10 @@\n a\n b\n c\n-d\n+D\n e\n f\n g\n h\n i\n+j"
        );
        let a2 = "a\nb\nc\nd\ne\nf\ng\nh\ni\nk\nl\nm";
        let b2 = "a\nb\nc\nD\ne\nf\ng\nh\ni\nk\nl\nm\nj";
        assert_eq!(
            unified_diff(a2, b2),
            "--- original\n+++ rewritten\n@@ -1,7 +1,7 @@\n a\n b\n c\n-d\n+D\n e\n f\n g\n@@ -10,3 +10,4 @@\n k\n l\n m\n+j"
        );
        assert_eq!(unified_diff(a, a), "");
    }
}

/// The transformers classes whose code needs a rewriting, each mapped to the alias of the
/// rewriting (onnx-diagnostic 0.9.3's `known_transformers_rewritings`, compared with it by the
/// tests): the encoder layers whose `forward` clamps float16 overflows with a data-dependent
/// test (the seeds' `known_transformers_rewritings_clamp_float16`), and ViT's patch
/// embeddings, whose `forward` tests the image size.
pub fn known_transformers_rewritings() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("AutoformerEncoder", "AutoformerEncoderLayer"),
        ("AutoformerEncoderLayer", "AutoformerEncoderLayer"),
        ("AutoformerForPrediction", "AutoformerEncoderLayer"),
        ("AutoformerModel", "AutoformerEncoderLayer"),
        ("BartEncoderLayer", "BartEncoderLayer"),
        ("BartForConditionalGeneration", "BartEncoderLayer"),
        ("BartModel", "BartEncoderLayer"),
        ("BigBirdPegasusForCausalLM", "BigBirdPegasusEncoderLayer"),
        (
            "BigBirdPegasusForConditionalGeneration",
            "BigBirdPegasusEncoderLayer",
        ),
        (
            "BigBirdPegasusForQuestionAnswering",
            "BigBirdPegasusEncoderLayer",
        ),
        ("BlenderbotSmallEncoderLayer", "BlenderbotSmallEncoderLayer"),
        ("BlenderbotSmallForCausalLM", "BlenderbotSmallEncoderLayer"),
        (
            "BlenderbotSmallForConditionalGeneration",
            "BlenderbotSmallEncoderLayer",
        ),
        ("InformerEncoderLayer", "InformerEncoderLayer"),
        ("InformerForPrediction", "InformerEncoderLayer"),
        ("LEDClassificationHead", "LEDEncoderLayer"),
        ("LEDEncoderLayer", "LEDEncoderLayer"),
        ("LEDForConditionalGeneration", "LEDEncoderLayer"),
        ("MarianEncoder", "MarianEncoderLayer"),
        ("MarianEncoderLayer", "MarianEncoderLayer"),
        ("MarianMTModel", "MarianEncoderLayer"),
        ("MarianModel", "MarianEncoderLayer"),
        ("MvpEncoderLayer", "MvpEncoderLayer"),
        ("MvpForCausalLM", "MvpEncoderLayer"),
        ("MvpForConditionalGeneration", "MvpEncoderLayer"),
        ("MvpForQuestionAnswering", "MvpEncoderLayer"),
        ("MvpForSequenceClassification", "MvpEncoderLayer"),
        ("MvpPrompt", "MvpEncoderLayer"),
        ("NllbMoeEncoderLayer", "NllbMoeEncoderLayer"),
        ("NllbMoeForConditionalGeneration", "NllbMoeEncoderLayer"),
        ("PLBartEncoderLayer", "BartEncoderLayer"),
        ("PLBartForConditionalGeneration", "BartEncoderLayer"),
        (
            "TimeSeriesTransformerEncoderLayer",
            "TimeSeriesTransformerEncoderLayer",
        ),
        (
            "TimeSeriesTransformerForPrediction",
            "TimeSeriesTransformerEncoderLayer",
        ),
        ("ViTForImageClassification", "PatchEmbeddings"),
        ("ViTModel", "PatchEmbeddings"),
        ("ViTPatchEmbeddings", "PatchEmbeddings"),
    ])
}

/// The classes sharing each alias's code (the package's `_rewrite_forward`) and which of their
/// tests to rewrite ([`KnownRewrite::filter_node`]).
fn rewritten_classes(alias: &str) -> (&'static [&'static str], &'static str) {
    let classes: &'static [&'static str] = match alias {
        "AutoformerEncoderLayer" => &["AutoformerEncoderLayer"],
        "BartEncoderLayer" => &["BartEncoderLayer", "PLBartEncoderLayer"],
        "BigBirdPegasusEncoderLayer" => &["BigBirdPegasusEncoderLayer"],
        "BlenderbotSmallEncoderLayer" => &["BlenderbotSmallEncoderLayer"],
        "InformerEncoderLayer" => &["InformerEncoderLayer"],
        "LEDEncoderLayer" => &["LEDEncoderLayer"],
        "MarianEncoderLayer" => &["MarianEncoderLayer"],
        "MvpEncoderLayer" => &["MvpEncoderLayer"],
        "NllbMoeEncoderLayer" => &["NllbMoeEncoderLayer"],
        "TimeSeriesTransformerEncoderLayer" => &["TimeSeriesTransformerEncoderLayer"],
        "PatchEmbeddings" => return (&["ViTPatchEmbeddings"], "not_a_name"),
        _ => &[],
    };
    (classes, "clamp_float16")
}

/// A rewriting an architecture needs (the seeds' `code_needing_rewriting` items).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownRewrite {
    /// The method, `Class.method` (the guard's `rewrite` option takes it).
    pub function: String,
    /// Which tests to rewrite: `clamp_float16`, the float16 overflow test only (the encoder
    /// layers; the seeds' filter); `not_a_name`, every `if` whose test is not a bare name
    /// (onnx-diagnostic 0.9.3's filter, kept for ViT's patch embeddings, which have no model
    /// here).
    pub filter_node: &'static str,
    /// The pre-rewriter: [`or_into_bitor`].
    pub pre_rewriter: Option<&'static str>,
}

impl std::fmt::Display for KnownRewrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{{'filter_node': '{}', 'function': '{}', 'pre_rewriter': {}}}",
            self.filter_node,
            self.function,
            self.pre_rewriter
                .map_or_else(|| "None".to_owned(), |p| format!("'{p}'"))
        )
    }
}

/// The methods an architecture needs rewritten before export (the package's
/// `code_needing_rewriting`, compared with onnx-diagnostic 0.9.3 by the tests; its
/// `ast_or_into_bitor` is [`or_into_bitor`] here): the float16 clamps of the encoder layers,
/// ViT's patch embeddings. The decoder-only architectures of crates/transformers (Llama,
/// Mistral, Qwen2, Phi3, Gemma) need none: their only data-dependent code, the dynamic rope,
/// is a patch.
pub fn code_needing_rewriting(arch: &str) -> Vec<KnownRewrite> {
    let known = known_transformers_rewritings();
    let Some(layer) = known.get(arch) else {
        return Vec::new();
    };
    let (classes, filter_node) = rewritten_classes(layer);
    classes
        .iter()
        .map(|c| KnownRewrite {
            function: format!("{c}.forward"),
            filter_node,
            pre_rewriter: Some("or_into_bitor"),
        })
        .collect()
}
