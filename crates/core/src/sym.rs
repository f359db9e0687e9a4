//! Symbolic integers: the sizes of an export.
//!
//! A [`SymExpr`] is a polynomial with integer coefficients over *atoms*: symbols (`s0`, `batch`)
//! and the operations that are not polynomial (`//`, `%`, `Min`, `Max`). Sums and products are
//! kept in a canonical form (monomials sorted, equal monomials merged, zero terms dropped), so
//! `s0 + s1 - s1` is `s0` and `2*s0 - s0 - s0` is `0`. Floor division and modulo by a constant
//! that divides every coefficient simplify away; with constant operands everything folds.
//!
//! A [`SymInt`] is an expression together with its *hint*: the value it has for the example
//! inputs of the export. Outside an export every size is a constant `SymInt`.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    ops::{Add, Mul, Neg, Sub},
    sync::Arc,
};

/// A non-polynomial factor of a monomial.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Atom {
    /// A symbol, by name.
    Sym(Arc<str>),
    /// `floor(a / b)`.
    FloorDiv(SymExpr, SymExpr),
    /// `a mod b` (Python's sign convention: the result has the sign of `b`).
    Mod(SymExpr, SymExpr),
    /// `min(a, b)`.
    Min(SymExpr, SymExpr),
    /// `max(a, b)`.
    Max(SymExpr, SymExpr),
}

/// A symbolic integer expression in canonical form (see the module doc). Serialised as its list
/// of `(monomial, coefficient)` terms.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(into = "Vec<(Vec<Atom>, i64)>", from = "Vec<(Vec<Atom>, i64)>")]
pub struct SymExpr {
    /// monomial (sorted atoms, repeated for powers) -> coefficient; the empty monomial is the
    /// constant term. No zero coefficient is stored.
    terms: BTreeMap<Vec<Atom>, i64>,
}

impl SymExpr {
    /// The constant `c`.
    pub fn constant(c: i64) -> Self {
        let mut terms = BTreeMap::new();
        if c != 0 {
            terms.insert(Vec::new(), c);
        }
        Self { terms }
    }

    /// The symbol `name`.
    pub fn symbol(name: &str) -> Self {
        Self::atom(Atom::Sym(Arc::from(name)))
    }

    fn atom(atom: Atom) -> Self {
        let mut terms = BTreeMap::new();
        terms.insert(vec![atom], 1);
        Self { terms }
    }

    /// The terms: each monomial (its atoms, sorted, repeated for powers; empty for the constant
    /// term) with its non-zero coefficient, in canonical order. Lowerings walk this to compute
    /// a size at run time.
    pub fn terms(&self) -> impl Iterator<Item = (&[Atom], i64)> {
        self.terms.iter().map(|(m, c)| (m.as_slice(), *c))
    }

    /// The value when the expression is a constant.
    pub fn as_const(&self) -> Option<i64> {
        match self.terms.len() {
            0 => Some(0),
            1 => self.terms.get(&Vec::new()).copied(),
            _ => None,
        }
    }

    /// The name when the expression is exactly one symbol.
    pub fn as_symbol(&self) -> Option<&str> {
        match self.terms.iter().next() {
            Some((mono, 1)) if self.terms.len() == 1 && mono.len() == 1 => match &mono[0] {
                Atom::Sym(name) => Some(name),
                _ => None,
            },
            _ => None,
        }
    }

    /// The symbols the expression depends on, sorted, without repetition.
    pub fn symbols(&self) -> Vec<Arc<str>> {
        let mut out = Vec::new();
        self.collect_symbols(&mut out);
        out.sort();
        out.dedup();
        out
    }

    fn collect_symbols(&self, out: &mut Vec<Arc<str>>) {
        for mono in self.terms.keys() {
            for atom in mono {
                match atom {
                    Atom::Sym(s) => out.push(s.clone()),
                    Atom::FloorDiv(a, b) | Atom::Mod(a, b) | Atom::Min(a, b) | Atom::Max(a, b) => {
                        a.collect_symbols(out);
                        b.collect_symbols(out);
                    }
                }
            }
        }
    }

    fn add_term(&mut self, mono: Vec<Atom>, coef: i64) {
        if coef == 0 {
            return;
        }
        let entry = self.terms.entry(mono);
        match entry {
            std::collections::btree_map::Entry::Occupied(mut e) => {
                *e.get_mut() += coef;
                if *e.get() == 0 {
                    e.remove();
                }
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(coef);
            }
        }
    }

    fn scale(&self, k: i64) -> Self {
        let mut out = Self::default();
        for (m, c) in &self.terms {
            out.add_term(m.clone(), c * k);
        }
        out
    }

    /// `floor(self / other)`.
    pub fn floor_div(&self, other: &Self) -> Self {
        match (self.as_const(), other.as_const()) {
            (Some(a), Some(b)) if b != 0 => return Self::constant(a.div_euclid(b) - adj(a, b)),
            (_, Some(1)) => return self.clone(),
            _ => {}
        }
        if let Some(q) = self.divide_exact(other) {
            return q;
        }
        if let Some((whole, rest)) = self.split_multiples(other) {
            // (d*a + r)//d == a + r//d for integers, as torch's FloorDiv simplifies.
            return &whole + &rest.floor_div(other);
        }
        Self::atom(Atom::FloorDiv(self.clone(), other.clone()))
    }

    /// For a positive constant divisor `d`: `(a, r)` with `self == d*a + r`, where `d*a` holds
    /// the terms whose coefficient `d` divides; `None` when no term or every term does.
    fn split_multiples(&self, divisor: &Self) -> Option<(Self, Self)> {
        let d = divisor.as_const().filter(|d| *d > 1)?;
        let (mut whole, mut rest) = (Self::default(), Self::default());
        for (mono, coef) in &self.terms {
            if coef % d == 0 {
                whole.add_term(mono.clone(), coef / d);
            } else {
                rest.add_term(mono.clone(), *coef);
            }
        }
        (!whole.terms.is_empty() && !rest.terms.is_empty()).then_some((whole, rest))
    }

    /// `self / other` when `other` is one positive monomial dividing every term of `self`
    /// (`(8*s0*s1) / (4*s0)` is `2*s1`), or when both are equal.
    fn divide_exact(&self, other: &Self) -> Option<Self> {
        if self == other && !self.terms.is_empty() {
            return Some(Self::constant(1));
        }
        let mut it = other.terms.iter();
        let (div_mono, &div_coef) = it.next()?;
        if it.next().is_some() || div_coef <= 0 {
            return None;
        }
        let mut out = Self::default();
        for (mono, coef) in &self.terms {
            if coef % div_coef != 0 {
                return None;
            }
            let mut rest = mono.clone();
            for atom in div_mono {
                let pos = rest.iter().position(|a| a == atom)?;
                rest.remove(pos);
            }
            out.add_term(rest, coef / div_coef);
        }
        Some(out)
    }

    /// `self mod other` (sign of `other`).
    pub fn modulo(&self, other: &Self) -> Self {
        match (self.as_const(), other.as_const()) {
            (Some(a), Some(b)) if b != 0 => return Self::constant(py_mod(a, b)),
            (_, Some(1)) => return Self::constant(0),
            _ => {}
        }
        if self.divide_exact(other).is_some() {
            return Self::constant(0);
        }
        if let Some((_, rest)) = self.split_multiples(other) {
            return rest.modulo(other);
        }
        Self::atom(Atom::Mod(self.clone(), other.clone()))
    }

    /// `min(self, other)`.
    pub fn sym_min(&self, other: &Self) -> Self {
        if let (Some(a), Some(b)) = (self.as_const(), other.as_const()) {
            return Self::constant(a.min(b));
        }
        if self == other {
            return self.clone();
        }
        let (a, b) = ordered(self, other);
        Self::atom(Atom::Min(a, b))
    }

    /// `max(self, other)`.
    pub fn sym_max(&self, other: &Self) -> Self {
        if let (Some(a), Some(b)) = (self.as_const(), other.as_const()) {
            return Self::constant(a.max(b));
        }
        if self == other {
            return self.clone();
        }
        let (a, b) = ordered(self, other);
        Self::atom(Atom::Max(a, b))
    }

    /// Evaluates the expression with values for its symbols.
    ///
    /// # Errors
    /// The name of the first symbol that has no value, or a description of a division by zero.
    pub fn eval(&self, bindings: &HashMap<Arc<str>, i64>) -> Result<i64, String> {
        let mut total = 0i64;
        for (mono, coef) in &self.terms {
            let mut v = *coef;
            for atom in mono {
                v *= eval_atom(atom, bindings)?;
            }
            total += v;
        }
        Ok(total)
    }

    /// Replaces symbols by expressions.
    pub fn substitute(&self, map: &HashMap<Arc<str>, SymExpr>) -> SymExpr {
        let mut out = SymExpr::default();
        for (mono, coef) in &self.terms {
            let mut term = SymExpr::constant(*coef);
            for atom in mono {
                let a = match atom {
                    Atom::Sym(s) => map
                        .get(s)
                        .cloned()
                        .unwrap_or_else(|| SymExpr::atom(atom.clone())),
                    Atom::FloorDiv(a, b) => a.substitute(map).floor_div(&b.substitute(map)),
                    Atom::Mod(a, b) => a.substitute(map).modulo(&b.substitute(map)),
                    Atom::Min(a, b) => a.substitute(map).sym_min(&b.substitute(map)),
                    Atom::Max(a, b) => a.substitute(map).sym_max(&b.substitute(map)),
                };
                term = &term * &a;
            }
            out = &out + &term;
        }
        out
    }
}

fn ordered(a: &SymExpr, b: &SymExpr) -> (SymExpr, SymExpr) {
    if a <= b {
        (a.clone(), b.clone())
    } else {
        (b.clone(), a.clone())
    }
}

/// Correction so that `div_euclid` becomes floor division for negative divisors.
fn adj(a: i64, b: i64) -> i64 {
    if b < 0 && a.rem_euclid(b) != 0 { 1 } else { 0 }
}

fn floor_div_i64(a: i64, b: i64) -> i64 {
    a.div_euclid(b) - adj(a, b)
}

fn py_mod(a: i64, b: i64) -> i64 {
    a - b * floor_div_i64(a, b)
}

fn eval_atom(atom: &Atom, bindings: &HashMap<Arc<str>, i64>) -> Result<i64, String> {
    let pair = |a: &SymExpr, b: &SymExpr| -> Result<(i64, i64), String> {
        Ok((a.eval(bindings)?, b.eval(bindings)?))
    };
    Ok(match atom {
        Atom::Sym(s) => *bindings
            .get(s)
            .ok_or_else(|| format!("symbol {s} has no value"))?,
        Atom::FloorDiv(a, b) => {
            let (a, b) = pair(a, b)?;
            if b == 0 {
                return Err(format!(
                    "division by zero in {}",
                    SymExpr::atom(atom.clone())
                ));
            }
            floor_div_i64(a, b)
        }
        Atom::Mod(a, b) => {
            let (a, b) = pair(a, b)?;
            if b == 0 {
                return Err(format!("modulo by zero in {}", SymExpr::atom(atom.clone())));
            }
            py_mod(a, b)
        }
        Atom::Min(a, b) => {
            let (a, b) = pair(a, b)?;
            a.min(b)
        }
        Atom::Max(a, b) => {
            let (a, b) = pair(a, b)?;
            a.max(b)
        }
    })
}

impl Add for &SymExpr {
    type Output = SymExpr;
    fn add(self, rhs: &SymExpr) -> SymExpr {
        let mut out = self.clone();
        for (m, c) in &rhs.terms {
            out.add_term(m.clone(), *c);
        }
        out
    }
}

impl Sub for &SymExpr {
    type Output = SymExpr;
    fn sub(self, rhs: &SymExpr) -> SymExpr {
        self + &rhs.scale(-1)
    }
}

impl Neg for &SymExpr {
    type Output = SymExpr;
    fn neg(self) -> SymExpr {
        self.scale(-1)
    }
}

impl Mul for &SymExpr {
    type Output = SymExpr;
    fn mul(self, rhs: &SymExpr) -> SymExpr {
        let mut out = SymExpr::default();
        for (ma, ca) in &self.terms {
            for (mb, cb) in &rhs.terms {
                let mut m = ma.clone();
                m.extend(mb.iter().cloned());
                m.sort();
                out.add_term(m, ca * cb);
            }
        }
        out
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Atom::Sym(s) => write!(f, "{s}"),
            Atom::FloorDiv(a, b) => write!(f, "({}//{})", Paren(a), Paren(b)),
            Atom::Mod(a, b) => write!(f, "Mod({a}, {b})"),
            Atom::Min(a, b) => write!(f, "Min({a}, {b})"),
            Atom::Max(a, b) => write!(f, "Max({a}, {b})"),
        }
    }
}

/// An operand of `//` as torch's `FloorDiv._sympystr` prints it: in parentheses unless it is a
/// symbol or a non-negative integer (`(s0//2)`, `((s0 + 1)//2)`).
struct Paren<'a>(&'a SymExpr);

impl fmt::Display for Paren<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let atomic = self.0.as_symbol().is_some() || self.0.as_const().is_some_and(|c| c >= 0);
        if atomic {
            write!(f, "{}", self.0)
        } else {
            write!(f, "({})", self.0)
        }
    }
}

impl fmt::Display for SymExpr {
    /// Prints like sympy does for torch: `s0 + s1`, `2*s0 - 1`, `s0*s1`, `(s0//2)`,
    /// `((s0 + 1)//2)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.terms.is_empty() {
            return write!(f, "0");
        }
        // Non-constant terms first (by monomial order), the constant last, as sympy prints.
        let mut first = true;
        let constant = self.terms.get(&Vec::new()).copied();
        for (mono, coef) in self.terms.iter().filter(|(m, _)| !m.is_empty()) {
            let (sign, abs) = if *coef < 0 {
                ("-", -coef)
            } else {
                ("+", *coef)
            };
            if first {
                if sign == "-" {
                    write!(f, "-")?;
                }
            } else {
                write!(f, " {sign} ")?;
            }
            first = false;
            if abs != 1 {
                write!(f, "{abs}*")?;
            }
            let mut iter = mono.iter().peekable();
            while let Some(atom) = iter.next() {
                let mut power = 1;
                while iter.peek() == Some(&atom) {
                    iter.next();
                    power += 1;
                }
                write!(f, "{atom}")?;
                if power > 1 {
                    write!(f, "**{power}")?;
                }
                if iter.peek().is_some() {
                    write!(f, "*")?;
                }
            }
        }
        if let Some(c) = constant {
            if first {
                write!(f, "{c}")?;
            } else if c < 0 {
                write!(f, " - {}", -c)?;
            } else {
                write!(f, " + {c}")?;
            }
        }
        Ok(())
    }
}

impl From<SymExpr> for Vec<(Vec<Atom>, i64)> {
    fn from(e: SymExpr) -> Self {
        e.terms.into_iter().collect()
    }
}

impl From<Vec<(Vec<Atom>, i64)>> for SymExpr {
    fn from(terms: Vec<(Vec<Atom>, i64)>) -> Self {
        Self {
            terms: terms.into_iter().filter(|(_, c)| *c != 0).collect(),
        }
    }
}

/// A size: a symbolic expression and its value for the example inputs (the hint).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SymInt {
    expr: SymExpr,
    hint: i64,
}

impl SymInt {
    /// A static size.
    pub fn new(value: i64) -> Self {
        Self {
            expr: SymExpr::constant(value),
            hint: value,
        }
    }

    /// A symbolic size with its hint.
    pub fn symbolic(expr: SymExpr, hint: i64) -> Self {
        match expr.as_const() {
            Some(c) => Self::new(c),
            None => Self { expr, hint },
        }
    }

    /// The expression.
    pub fn expr(&self) -> &SymExpr {
        &self.expr
    }

    /// The value for the example inputs. Reading it does not specialise anything: use it only
    /// for decisions that a guard protects, or for eager computations.
    pub fn hint(&self) -> i64 {
        self.hint
    }

    /// The value when the size is static.
    pub fn as_static(&self) -> Option<i64> {
        self.expr.as_const()
    }

    /// Whether the size depends on no symbol.
    pub fn is_static(&self) -> bool {
        self.expr.as_const().is_some()
    }

    /// `floor(self / other)`.
    pub fn floor_div(&self, other: impl Into<SymInt>) -> SymInt {
        let other = other.into();
        let hint = if other.hint == 0 {
            0
        } else {
            floor_div_i64(self.hint, other.hint)
        };
        SymInt::symbolic(self.expr.floor_div(&other.expr), hint)
    }

    /// `self mod other`.
    pub fn modulo(&self, other: impl Into<SymInt>) -> SymInt {
        let other = other.into();
        let hint = if other.hint == 0 {
            0
        } else {
            py_mod(self.hint, other.hint)
        };
        SymInt::symbolic(self.expr.modulo(&other.expr), hint)
    }

    /// `min(self, other)`.
    pub fn min(&self, other: impl Into<SymInt>) -> SymInt {
        let other = other.into();
        SymInt::symbolic(self.expr.sym_min(&other.expr), self.hint.min(other.hint))
    }

    /// `max(self, other)`.
    pub fn max(&self, other: impl Into<SymInt>) -> SymInt {
        let other = other.into();
        SymInt::symbolic(self.expr.sym_max(&other.expr), self.hint.max(other.hint))
    }
}

impl From<i64> for SymInt {
    fn from(v: i64) -> Self {
        SymInt::new(v)
    }
}

impl From<&SymInt> for SymInt {
    fn from(v: &SymInt) -> Self {
        v.clone()
    }
}

impl fmt::Display for SymInt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.expr)
    }
}

macro_rules! symint_binop {
    ($trait:ident, $method:ident, $op:tt) => {
        impl<R: Into<SymInt>> $trait<R> for &SymInt {
            type Output = SymInt;
            fn $method(self, rhs: R) -> SymInt {
                let rhs = rhs.into();
                SymInt::symbolic(&self.expr $op &rhs.expr, self.hint $op rhs.hint)
            }
        }
        impl<R: Into<SymInt>> $trait<R> for SymInt {
            type Output = SymInt;
            fn $method(self, rhs: R) -> SymInt {
                (&self).$method(rhs)
            }
        }
    };
}
symint_binop!(Add, add, +);
symint_binop!(Sub, sub, -);
symint_binop!(Mul, mul, *);

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: &str) -> SymExpr {
        SymExpr::symbol(n)
    }

    #[test]
    fn sums_cancel() {
        let e = &(&s("s0") + &s("s1")) - &s("s1");
        assert_eq!(e, s("s0"));
        assert_eq!(e.to_string(), "s0");
        let z = &(&s("s0") + &s("s0")) - &s("s0").scale(2);
        assert_eq!(z.as_const(), Some(0));
    }

    #[test]
    fn printing_follows_sympy() {
        let e = &(&s("s0").scale(2) + &SymExpr::constant(-1)) + &(&s("s0") * &s("s1"));
        assert_eq!(e.to_string(), "2*s0 + s0*s1 - 1");
        assert_eq!((&s("s0") * &s("s0")).to_string(), "s0**2");
        assert_eq!(
            s("s0").floor_div(&SymExpr::constant(2)).to_string(),
            "(s0//2)"
        );
    }

    #[test]
    fn division_simplifies_and_evaluates() {
        let four_s = s("s0").scale(4);
        assert_eq!(four_s.floor_div(&SymExpr::constant(2)), s("s0").scale(2));
        assert_eq!(four_s.modulo(&SymExpr::constant(2)).as_const(), Some(0));
        let e = s("s0").floor_div(&SymExpr::constant(3));
        let b: HashMap<Arc<str>, i64> = [(Arc::from("s0"), 7)].into_iter().collect();
        assert_eq!(e.eval(&b), Ok(2));
        assert_eq!(s("s0").modulo(&SymExpr::constant(3)).eval(&b), Ok(1));
        assert_eq!(
            SymExpr::constant(-7)
                .floor_div(&SymExpr::constant(2))
                .as_const(),
            Some(-4)
        );
        assert_eq!(
            SymExpr::constant(-7)
                .modulo(&SymExpr::constant(2))
                .as_const(),
            Some(1)
        );
        assert!(s("s9").eval(&b).unwrap_err().contains("s9"));
        let num = &(&s("s0") * &s("s1")).scale(8) + &s("s0").scale(4);
        let q = num.floor_div(&s("s0").scale(4));
        assert_eq!(q.to_string(), "2*s1 + 1");
        assert_eq!(s("s0").floor_div(&s("s1")).to_string(), "(s0//s1)");
        let two = SymExpr::constant(2);
        let plus = |e: &SymExpr, c: i64| e + &SymExpr::constant(c);
        assert_eq!(
            plus(&s("s0"), 1).floor_div(&two).to_string(),
            "((s0 + 1)//2)"
        );
        // (s0 - 2)//2 + 1 is s0//2, as torch simplifies it.
        let pooled = plus(&plus(&s("s0"), -2).floor_div(&two), 1);
        assert_eq!(pooled.to_string(), "(s0//2)");
        assert_eq!(plus(&s("s0"), 4).modulo(&two).to_string(), "Mod(s0, 2)");
    }

    #[test]
    fn symint_keeps_hints() {
        let a = SymInt::symbolic(s("s0"), 5);
        let b = &a * 2 - 3;
        assert_eq!(b.hint(), 7);
        assert_eq!(b.to_string(), "2*s0 - 3");
        assert!((&a - a.clone()).is_static());
        assert_eq!(a.min(3).hint(), 3);
        let sub = HashMap::from([(Arc::from("s0"), s("batch"))]);
        assert_eq!(b.expr().substitute(&sub).to_string(), "2*batch - 3");
    }
}
