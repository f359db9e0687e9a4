//! Clean-up passes over a lowered graph, and the node counts the validate summary reports.
//!
//! The lowering already folds what is static (sizes known at export time are constants, shape
//! computations are made once per expression, weights of `linear` are transposed ahead), so
//! what is left to clean is small: Identity nodes and nodes or initializers nothing reads.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::proto;

/// Runs every pass: identity removal, dead-node removal, unused-initializer removal.
pub fn optimize(graph: &mut proto::GraphProto) {
    remove_identities(graph);
    remove_dead_nodes(graph);
    remove_unused_initializers(graph);
}

fn name(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("")
}

/// The names the sub-graphs of `node` (If branches, Loop bodies, recursively) read from the
/// enclosing scope.
fn implicit_inputs(node: &proto::NodeProto) -> HashSet<String> {
    let mut out = HashSet::new();
    for a in &node.attribute {
        let graphs = a.g.iter().chain(a.graphs.iter());
        for g in graphs {
            let mut defined: HashSet<String> = g
                .input
                .iter()
                .map(|i| name(&i.name).to_owned())
                .chain(g.initializer.iter().map(|t| name(&t.name).to_owned()))
                .collect();
            for n in &g.node {
                for i in n.input.iter().filter(|i| !i.is_empty()) {
                    if !defined.contains(i) {
                        out.insert(i.clone());
                    }
                }
                for i in implicit_inputs(n) {
                    if !defined.contains(&i) {
                        out.insert(i);
                    }
                }
                defined.extend(n.output.iter().cloned());
            }
            for o in &g.output {
                if !defined.contains(name(&o.name)) {
                    out.insert(name(&o.name).to_owned());
                }
            }
        }
    }
    out
}

/// Every name the sub-graphs of the graph's nodes read from it.
fn read_by_subgraphs(graph: &proto::GraphProto) -> HashSet<String> {
    graph.node.iter().flat_map(implicit_inputs).collect()
}

/// Removes Identity nodes: readers of the copy read the original. When the copy is a graph
/// output, the producer of the original writes the output name directly (if the original is
/// produced by a node and is not itself a graph input or output).
pub fn remove_identities(graph: &mut proto::GraphProto) {
    // Values read by sub-graphs keep their names (the passes do not rewrite sub-graphs).
    let outputs: HashSet<String> = graph
        .output
        .iter()
        .map(|o| name(&o.name).to_owned())
        .chain(read_by_subgraphs(graph))
        .collect();
    let graph_inputs: HashSet<String> = graph
        .input
        .iter()
        .map(|i| name(&i.name).to_owned())
        .chain(graph.initializer.iter().map(|t| name(&t.name).to_owned()))
        .collect();
    let mut rename: HashMap<String, String> = HashMap::new();
    let mut keep = Vec::with_capacity(graph.node.len());
    let resolve = |rename: &HashMap<String, String>, n: &str| -> String {
        let mut n = n.to_owned();
        while let Some(r) = rename.get(&n) {
            n = r.clone();
        }
        n
    };
    // Pass 1: identities whose output is not a graph output disappear.
    for node in graph.node.drain(..) {
        if name(&node.op_type) == "Identity" && node.input.len() == 1 && node.output.len() == 1 {
            let out = &node.output[0];
            if !outputs.contains(out) {
                rename.insert(out.clone(), resolve(&rename, &node.input[0]));
                continue;
            }
        }
        keep.push(node);
    }
    for node in &mut keep {
        for i in &mut node.input {
            if !i.is_empty() {
                *i = resolve(&rename, i);
            }
        }
    }
    // Pass 2: an identity writing a graph output from a node's output disappears: the value is
    // renamed to the output's name everywhere (its producer and every reader).
    let produced: HashSet<String> = keep.iter().flat_map(|n| n.output.iter().cloned()).collect();
    let mut redirect: HashMap<String, String> = HashMap::new();
    keep.retain(|node| {
        if name(&node.op_type) == "Identity" && node.input.len() == 1 && node.output.len() == 1 {
            let src = &node.input[0];
            if produced.contains(src)
                && !graph_inputs.contains(src)
                && !outputs.contains(src)
                && !redirect.contains_key(src)
            {
                redirect.insert(src.clone(), node.output[0].clone());
                return false;
            }
        }
        true
    });
    for node in &mut keep {
        for v in node.output.iter_mut().chain(node.input.iter_mut()) {
            if let Some(r) = redirect.get(v) {
                *v = r.clone();
            }
        }
    }
    graph.node = keep;
}

/// Removes nodes none of whose outputs is read by a kept node or is a graph output.
pub fn remove_dead_nodes(graph: &mut proto::GraphProto) {
    let mut needed: HashSet<String> = graph
        .output
        .iter()
        .map(|o| name(&o.name).to_owned())
        .collect();
    let mut alive = vec![false; graph.node.len()];
    for (k, node) in graph.node.iter().enumerate().rev() {
        if node.output.iter().any(|o| needed.contains(o)) {
            alive[k] = true;
            needed.extend(node.input.iter().filter(|i| !i.is_empty()).cloned());
            needed.extend(implicit_inputs(node));
        }
    }
    let mut k = 0;
    graph.node.retain(|_| {
        k += 1;
        alive[k - 1]
    });
}

/// Removes initializers no node reads and no output names.
pub fn remove_unused_initializers(graph: &mut proto::GraphProto) {
    let used: HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .chain(graph.output.iter().map(|o| name(&o.name)))
        .collect();
    let mut used: HashSet<String> = used.into_iter().map(str::to_owned).collect();
    used.extend(read_by_subgraphs(graph));
    graph.initializer.retain(|t| used.contains(name(&t.name)));
}

/// Stores a tied weight once. The lowering gives every `linear` weight a transposed
/// initializer (`W.T`) so that `linear` is one MatMul; when the weight itself is still read
/// (a tied `lm_head` reads the token embedding that a Gather also reads), keeping both would
/// store its bytes twice (2.4 GB for google/gemma-2-2b's embedding in float32). Such a
/// transposed copy becomes a `Transpose` node of the weight at the head of the graph, which
/// ONNX Runtime folds once at session creation; `transposed` maps each weight to its copy.
/// Returns the names of the weights shared that way.
pub fn share_tied_transposes(
    graph: &mut proto::GraphProto,
    transposed: &HashMap<String, String>,
) -> Vec<String> {
    let mut read: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .chain(graph.output.iter().map(|o| name(&o.name).to_owned()))
        .collect();
    read.extend(read_by_subgraphs(graph));
    let stored: HashSet<String> = graph
        .initializer
        .iter()
        .map(|t| name(&t.name).to_owned())
        .collect();
    let mut tied: Vec<(&String, &String)> = transposed
        .iter()
        .filter(|(w, t)| read.contains(*w) && stored.contains(*w) && stored.contains(*t))
        .collect();
    tied.sort();
    if tied.is_empty() {
        return Vec::new();
    }
    let drop: HashSet<&str> = tied.iter().map(|(_, t)| t.as_str()).collect();
    graph.initializer.retain(|t| !drop.contains(name(&t.name)));
    let heads = tied.iter().map(|(w, t)| proto::NodeProto {
        input: vec![(*w).clone()],
        output: vec![(*t).clone()],
        name: Some(format!("{t}_Transpose")),
        op_type: Some("Transpose".to_owned()),
        attribute: vec![proto::AttributeProto {
            name: Some("perm".to_owned()),
            r#type: Some(proto::attribute_proto::AttributeType::Ints as i32),
            ints: vec![1, 0],
            ..Default::default()
        }],
        ..Default::default()
    });
    let mut nodes: Vec<proto::NodeProto> = heads.collect();
    nodes.append(&mut graph.node);
    graph.node = nodes;
    tied.into_iter().map(|(w, _)| w.clone()).collect()
}

/// Node counts per op type (`MatMul` → 14) of the graph itself, sorted by op type.
pub fn node_counts(graph: &proto::GraphProto) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for node in &graph.node {
        *counts.entry(name(&node.op_type).to_owned()).or_default() += 1;
    }
    counts
}

/// Node counts per op type of the graph and of every subgraph in its nodes' graph attributes
/// (`If` branches, `Scan` / `Loop` bodies), as the validate summary's `n_node_*` keys report
/// them (onnx-diagnostic's `compute_statistics` walks the same nodes).
pub fn node_counts_with_subgraphs(graph: &proto::GraphProto) -> BTreeMap<String, usize> {
    fn walk(graph: &proto::GraphProto, counts: &mut BTreeMap<String, usize>) {
        for node in &graph.node {
            *counts.entry(name(&node.op_type).to_owned()).or_default() += 1;
            for a in &node.attribute {
                if let Some(g) = &a.g {
                    walk(g, counts);
                }
            }
        }
    }
    let mut counts = BTreeMap::new();
    walk(graph, &mut counts);
    counts
}
