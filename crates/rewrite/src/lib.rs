//! Control-flow rewriting: turns `if` on tensors into `cond`, `return Err` into `check` and
//! loops over a dimension into `scan` (DESIGN.md section 3). Filled by the rewrite issue.
