"""Answers requests with the Python package itself (onnx-diagnostic 0.9.3, its helper modules:
the package as a whole does not import its export patches with transformers 5.23, its helpers
do), for the tests that compare our printed formats and measures with it
(crates/testing/src/oracle.rs).

usage: oracle.py REQUESTS.json TENSORS.safetensors ANSWERS.json

REQUESTS is a list of `{"fn": "string_type", "value": V, "options": {...}}` or
`{"fn": "max_diff", "expected": V, "got": V}` or `{"fn": "guess_dynamic_shapes" |
"move_to_kwargs", "signature": [NAME...], "sets": [[[V...], [[NAME, V]...]]...], "auto": B}`
(`ModelInputs` on a module of that forward signature; `move_to_kwargs` moves the first set
and prints `args kwargs dynamic_shapes`); V is a value in the form `oracle.rs` writes:
`{"tensor": KEY}` (a tensor of TENSORS), `{"int": 3}`, `{"float": 0.5}`, `{"bool": true}`,
`{"str": "x"}`, `{"none": null}`, `{"list": [V...]}`, `{"tuple": [V...]}`,
`{"dict": [[KEY, V]...]}`, `{"DynamicCache": [[K, V]...]}` (built with the package's
`make_dynamic_cache`). ANSWERS is the list of results: a string for `string_type` and the
dynamic shapes (printed by `string_type`), the dict of `max_diff` without its `argm` and `dev`.
"""

import json
import math
import sys

import torch
from safetensors.torch import load_file

from onnx_diagnostic.export import ModelInputs
from onnx_diagnostic.helpers import max_diff, string_type
from onnx_diagnostic.helpers.cache_helper import make_dynamic_cache


def build(v, tensors):
    (kind, x), = v.items()
    if kind == "tensor":
        return tensors[x]
    if kind in ("int", "float", "bool", "str"):
        return x
    if kind == "none":
        return None
    if kind == "list":
        return [build(i, tensors) for i in x]
    if kind == "tuple":
        return tuple(build(i, tensors) for i in x)
    if kind == "dict":
        return {k: build(i, tensors) for k, i in x}
    if kind == "DynamicCache":
        return make_dynamic_cache([(build(k, tensors), build(i, tensors)) for k, i in x])
    raise ValueError(f"unknown value kind {kind!r}")


def module(signature):
    """A module whose forward takes `signature` (ModelInputs reads it)."""
    ns = {}
    exec(f"def forward(self, {', '.join(signature)}):\n    return None", ns)  # noqa: S102
    return type("Model", (torch.nn.Module,), {"forward": ns["forward"]})()


def model_inputs(r, tensors):
    sets = [
        (tuple(build(a, tensors) for a in args), {k: build(v, tensors) for k, v in kwargs})
        for args, kwargs in r["sets"]
    ]
    return ModelInputs(module(r["signature"]), sets), sets


def number(x):
    x = float(x)
    return x if math.isfinite(x) else str(x)


def main(requests_path, tensors_path, answers_path):
    with open(requests_path) as f:
        requests = json.load(f)
    tensors = load_file(tensors_path) if requests and tensors_path else {}
    answers = []
    for r in requests:
        if r["fn"] == "string_type":
            o = r["options"]
            answers.append(
                string_type(
                    build(r["value"], tensors),
                    with_shape=o["with_shape"],
                    with_min_max=o["with_min_max"],
                    with_device=o["with_device"],
                    limit=o["limit"],
                )
            )
        elif r["fn"] == "max_diff":
            d = max_diff(build(r["expected"], tensors), build(r["got"], tensors))
            answers.append({k: number(d[k]) for k in ("abs", "rel", "sum", "n", "dnan")})
        elif r["fn"] == "guess_dynamic_shapes":
            mi, _ = model_inputs(r, tensors)
            answers.append(string_type(mi.guess_dynamic_shapes(auto=r["auto"])))
        elif r["fn"] == "move_to_kwargs":
            mi, sets = model_inputs(r, tensors)
            ds = mi.guess_dynamic_shapes(auto=r["auto"])
            args, kwargs, moved = mi.move_to_kwargs(*sets[0], ds)
            answers.append(
                f"{string_type(args)} {string_type(kwargs, with_shape=True)} {string_type(moved)}"
            )
        else:
            raise ValueError(f"unknown request {r['fn']!r}")
    with open(answers_path, "w") as f:
        json.dump(answers, f)


if __name__ == "__main__":
    torch.manual_seed(0)
    main(*sys.argv[1:])
