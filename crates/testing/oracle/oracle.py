"""Answers requests with the Python package itself (onnx-diagnostic 0.9.3), for the tests that
compare our printed formats, measures, names and lists with it (crates/testing/src/oracle.rs).
The package as a whole does not import with transformers 5.23 (its export patches): its helper
and serialization modules are imported alone (`serialization`), its validate with a stand-in
for one removed transformers class (`whole_package`).

usage: oracle.py REQUESTS.json TENSORS.safetensors ANSWERS.json

REQUESTS is a list of requests, ANSWERS the list of their answers:
- `{"fn": "string_type", "value": V, "options": {...}}`: the string.
- `{"fn": "max_diff", "expected": V, "got": V}`: the dict without `argm` and `dev`.
- `{"fn": "guess_dynamic_shapes" | "move_to_kwargs", "signature": [NAME...], "sets":
  [[[V...], [[NAME, V]...]]...], "auto": B}`: `ModelInputs` on a module of that forward
  signature, the shapes printed by `string_type`; `move_to_kwargs` moves the first set and
  prints `args kwargs dynamic_shapes`.
- `{"fn": "flatten_names", "name": PREFIX, "value": V, "export": B}`: the names torch.export
  gives the tensors of V passed as the argument PREFIX, the package's serializers registered;
  with `export`, a real `torch.export.export` checks them.
- `{"fn": "code_needing_rewriting", "names": [...]}`: `{"known": [...], "rewrites": {NAME:
  [[QUALNAME, PRE_REWRITER, HAS_FILTER]...] | null}}`.
- `{"fn": "validate_summary_keys", "model_id": ID, "onnx": FILE}`: the validate summary's keys.
- `{"fn": "task_sets", "model_id": ID, "task": TASK}`: `{SET: TEXT, "dynamic_shapes": TEXT}`.

V is a value in the form `oracle.rs` writes: `{"tensor": KEY}` (a tensor of TENSORS),
`{"int": 3}`, `{"float": 0.5}`, `{"bool": true}`, `{"str": "x"}`, `{"none": null}`,
`{"list": [V...]}`, `{"tuple": [V...]}`, `{"dict": [[KEY, V]...]}`, `{"DynamicCache": [[K,
V]...]}` (the package's `make_dynamic_cache`), `{"DynamicCacheLayers": {"pairs": [[K, V]...],
"layers": [[CLASS, KWARGS]...]}}` (the same with `cls_layers` / `cls_kwargs`),
`{"StaticCache": {"class": NAME, "layer_types": [...], "sliding_window": N, "max_cache_len": N,
"batch": B, "heads": H, "head_dim": D}}` (a transformers `StaticCache` made from a Llama
config, of a subclass named NAME: see `stand_in`), `{"EncoderDecoderCache": [V, V]}`,
`{"output": [MODULE, CLASS, [[KEY, V]...]]}` (a `ModelOutput` dataclass), `{"MambaCache":
[[V...], [V...]]}` (an object of that name with `conv_states` and `ssm_states`, for
`string_type`).
"""

import importlib
import json
import math
import os
import re
import sys
import types

import torch
import transformers
from safetensors.torch import load_file

import onnx_diagnostic
from onnx_diagnostic.export import ModelInputs
from onnx_diagnostic.helpers import max_diff, string_type
from onnx_diagnostic.helpers.cache_helper import make_dynamic_cache, make_encoder_decoder_cache


def serialization():
    """The package's serialization modules without `torch_export_patches/__init__.py`, which
    imports every export patch (some do not import with transformers 5.23): the parent package
    is declared empty, then its submodules import as usual."""
    name = "onnx_diagnostic.torch_export_patches"
    if name not in sys.modules:
        parent = types.ModuleType(name)
        root = os.path.dirname(onnx_diagnostic.__file__)
        parent.__path__ = [os.path.join(root, "torch_export_patches")]
        sys.modules[name] = parent
    ser = importlib.import_module(f"{name}.onnx_export_serialization")
    impl = importlib.import_module(f"{name}.serialization.transformers_impl")
    return ser, impl


STAND_INS = {}


def code_needing_rewriting(names):
    """The package's `code_needing_rewriting` for each name and for every class of its
    `known_transformers_rewritings`: `[qualname, pre_rewriter name, has a filter]` per
    rewriting, None where it knows none; and the known class names."""
    helper = importlib.import_module("onnx_diagnostic.torch_export_patches.patch_module_helper")
    known = sorted(helper.known_transformers_rewritings())
    out = {}
    for name in sorted(set(names) | set(known)):
        found = helper.code_needing_rewriting(name)
        out[name] = None if found is None else [
            [
                f["function"].__qualname__,
                f["pre_rewriter"].__name__ if f.get("pre_rewriter") else None,
                f.get("filter_node") is not None,
            ]
            for f in found
        ]
    return {"known": known, "rewrites": out}


def whole_package():
    """Makes `onnx_diagnostic.torch_export_patches` import as a whole (the package's validate
    and model builders import it): its patches name `IdeficsEmbedding`, removed from
    transformers 5, at import; an empty module class of that name stands in (no patch is
    applied by the oracle). Undoes `serialization`'s empty parent. Returns the package name."""
    import transformers.models.idefics.modeling_idefics as idefics

    if not hasattr(idefics, "IdeficsEmbedding"):
        idefics.IdeficsEmbedding = type("IdeficsEmbedding", (torch.nn.Module,), {})
    name = "onnx_diagnostic.torch_export_patches"
    if name in sys.modules and not hasattr(sys.modules[name], "__file__"):
        for k in [k for k in sys.modules if k.startswith(name)]:
            del sys.modules[k]
    return name


def task_sets(model_id, task):
    """The input sets the package makes for `model_id` and `task` (`get_untrained_model_with_inputs`
    with the second sets) and their dynamic shapes, each printed by `string_type` with shapes.
    The config is the package's preinstalled one, given as `config=`: left to the package, it
    adds `subfolder=None` to a diffusers config, which `UNet2DConditionModel(**config)` then
    refuses (0.9.3)."""
    whole_package()
    mi = importlib.import_module("onnx_diagnostic.torch_models.hghub.model_inputs")
    hub = importlib.import_module("onnx_diagnostic.torch_models.hghub.hub_api")
    config = hub.get_cached_configuration(model_id, exc=True)
    d = mi.get_untrained_model_with_inputs(
        model_id, config=config, task=task, add_second_input=True
    )
    return {
        k: string_type(v, with_shape=True)
        for k, v in d.items()
        if k.startswith("inputs") or k == "dynamic_shapes"
    }


def validate_summary_keys(model_id, onnx_file):
    """Every key the package's validate writes for `model_id`, as far as it runs here: a real
    `validate_model` run (torch.export, the package's serializers registered, its patches off:
    they do not run with transformers 5.23, nor does its ONNX exporter), then its
    `validate_onnx_model` on ONNX_FILE (ours: the package cannot make one here) and its
    `compute_statistics` of that file; plus the keys its source writes literally
    (`summary["..."]`) and the `time_<step>` of each step it times (`_quiet_or_not_quiet`)."""
    import ast

    name = whole_package()
    validate = importlib.import_module("onnx_diagnostic.torch_models.validate")
    ser = importlib.import_module(f"{name}.onnx_export_serialization")
    ser.register_cache_serialization(patch_transformers=True, patch_diffusers=True)
    summary, data = validate.validate_model(
        model_id, do_run=True, exporter="export-nostrict", patch=False, quiet=True, inputs2=1
    )
    keys = set(summary)
    data["onnx_filename"] = onnx_file
    onnx_summary, _ = validate.validate_onnx_model(
        data, quiet=True, second_input_keys=summary["second_input_keys"].split(",")
    )
    keys |= set(onnx_summary)
    keys |= set(validate.compute_statistics(onnx_file))
    with open(validate.__file__) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Name)
            and node.value.id == "summary"
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            keys.add(node.slice.value)
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "_quiet_or_not_quiet"
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
        ):
            keys.add(f"time_{node.args[1].value}")
    return sorted(keys)


def stand_in(class_name):
    """A `StaticCache` subclass named `class_name`, registered with the function the package's
    serializers of `StaticCache`, `HybridCache` and `SlidingWindowCache` delegate to
    (`_flatten_key_value_cache`, which reads only the class name and the layers).
    `HybridCache` and `SlidingWindowCache` are gone from transformers 5; the package's own
    `StaticCache` flattener first checks `cache.max_cache_len`, gone in transformers 5.23."""
    if class_name not in STAND_INS:
        _, impl = serialization()
        cls = type(class_name, (transformers.cache_utils.StaticCache,), {})
        torch.utils._pytree.register_pytree_node(
            cls,
            impl._flatten_key_value_cache,
            lambda values, context: None,
            serialized_type_name=f"oracle.{class_name}",
            flatten_with_keys_fn=impl._flatten_with_keys_cache,
        )
        STAND_INS[class_name] = cls
    return STAND_INS[class_name]


def static_cache(d):
    config = transformers.LlamaConfig(
        num_hidden_layers=len(d["layer_types"]),
        num_attention_heads=d["heads"],
        num_key_value_heads=d["heads"],
        head_dim=d["head_dim"],
        hidden_size=d["heads"] * d["head_dim"],
        sliding_window=d["sliding_window"],
        layer_types=d["layer_types"],
    )
    cache = stand_in(d["class"])(config=config, max_cache_len=d["max_cache_len"])
    cache.early_initialization(d["batch"], d["heads"], d["head_dim"], torch.float32, "cpu")
    return cache


def pytree_key(k):
    """torch.export's name of one key of a path (`_extract_pytree_key` in
    torch/_export/utils.py `placeholder_naming_pass`, lower-cased there)."""
    if isinstance(k, torch.utils._pytree.MappingKey):
        return re.sub(r"[^a-zA-Z0-9]", "_", str(k.key))
    if isinstance(k, torch.utils._pytree.SequenceKey):
        return str(k.idx)
    if isinstance(k, torch.utils._pytree.GetAttrKey):
        return k.name
    raise TypeError(f"key {k!r}")


def flatten_names(name, value, export):
    leaves, _ = torch.utils._pytree.tree_flatten_with_path({name: value})
    names = ["_".join(pytree_key(k).lower() for k in path) for path, _ in leaves]
    if export:
        ns = {"torch": torch}
        exec(  # noqa: S102
            f"def forward(self, {name}):\n"
            f"    return sum(t.sum() for t in torch.utils._pytree.tree_leaves({name}))",
            ns,
        )
        model = type("Model", (torch.nn.Module,), {"forward": ns["forward"]})()
        ep = torch.export.export(model, (), {name: value})
        exported = [n.name for n in ep.graph.nodes if n.op == "placeholder"]
        if exported != names:
            raise AssertionError(f"torch.export names {exported}, the path rule {names}")
    return names


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
    if kind == "DynamicCacheLayers":
        return make_dynamic_cache(
            [(build(k, tensors), build(i, tensors)) for k, i in x["pairs"]],
            cls_layers=[getattr(transformers.cache_utils, c) for c, _ in x["layers"]],
            cls_kwargs=[kw for _, kw in x["layers"]],
        )
    if kind == "StaticCache":
        return static_cache(x)
    if kind == "MambaCache":
        # transformers 4.x's class (gone from 5): the package reads its two lists by name.
        cache = type("MambaCache", (), {})()
        cache.conv_states = [build(i, tensors) for i in x[0]]
        cache.ssm_states = [build(i, tensors) for i in x[1]]
        return cache
    if kind == "EncoderDecoderCache":
        return make_encoder_decoder_cache(build(x[0], tensors), build(x[1], tensors))
    if kind == "output":
        mod, cls, fields = x
        return getattr(importlib.import_module(mod), cls)(
            **{k: build(i, tensors) for k, i in fields}
        )
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
        elif r["fn"] == "code_needing_rewriting":
            serialization()
            answers.append(code_needing_rewriting(r["names"]))
        elif r["fn"] == "task_sets":
            answers.append(task_sets(r["model_id"], r["task"]))
        elif r["fn"] == "validate_summary_keys":
            answers.append(validate_summary_keys(r["model_id"], r["onnx"]))
        elif r["fn"] == "flatten_names":
            ser, _ = serialization()
            ser.register_cache_serialization(patch_transformers=True, patch_diffusers=True)
            answers.append(flatten_names(r["name"], build(r["value"], tensors), r["export"]))
        else:
            raise ValueError(f"unknown request {r['fn']!r}")
    with open(answers_path, "w") as f:
        json.dump(answers, f)


if __name__ == "__main__":
    torch.manual_seed(0)
    main(*sys.argv[1:])
