#!/usr/bin/env python3
"""The Python side of the Qwen2.5-VL benchmark: torch.export, then torch.onnx (dynamo), of
transformers 5.23's ``Qwen2_5_VLForConditionalGeneration`` on the catalog's reduced
Qwen/Qwen2.5-VL-7B-Instruct config (the published config reduced as onnx-diagnostic 0.9.3's
``tasks/image_text_to_text.py`` reduces it, with the three fixes the catalog entry lists), on
the same input set as ``validate``'s ``inputs`` (2 rows, images of 4 x 4 and 4 x 8 patches, 4
cached positions, the positions of ``get_rope_index``). onnx-diagnostic 0.9.3 itself does not
import with transformers 5.23, so its exporter calls are made directly, without its patches.

Usage: python qwen25_vl_torch_export.py OUT.onnx [--dynamic]

``--dynamic`` marks batch, sequence, cache, patches and images dynamic (``Dim.DYNAMIC``), as
``validate`` does on our side; without it every shape is static. Prints what each step gives
(its time, or its error's first line), the ONNX node count and the peak resident memory.
torch.onnx's dynamo exporter needs onnxscript (``pip install onnxscript`` in the venv).
"""
import json
import resource
import sys
import time
from pathlib import Path


def config():
    ref = Path(__file__).resolve().parents[3] / "shared/reference/onnx-diagnostic-0.9.3-configs.json"
    d = dict(json.loads(ref.read_text())["Qwen/Qwen2.5-VL-7B-Instruct"])
    d.pop("__class__", None)
    d.update(hidden_size=16, intermediate_size=320, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=2)
    d["rope_scaling"] = {"mrope_section": [2, 1, 1], "type": "mrope"}
    v = dict(d["vision_config"])
    v.update(depth=2, num_heads=4, intermediate_size=1076, patch_size=1, spatial_patch_size=1,
             temporal_patch_size=2, hidden_size=16, out_hidden_size=16)
    d["vision_config"] = v
    return d


def register_dynamic_cache(DynamicCache):
    """What the Python package's ``torch_export_patches`` registers for ``DynamicCache``: its
    keys and its values, as two lists."""
    import torch.utils._pytree as pytree

    def flatten(c):
        return [[l.keys for l in c.layers], [l.values for l in c.layers]], ["key_cache", "value_cache"]

    def flatten_with_keys(c):
        values, names = flatten(c)
        return [(pytree.MappingKey(n), v) for n, v in zip(names, values)], names

    def unflatten(values, context):
        cache = DynamicCache()
        for i, (k, v) in enumerate(zip(*values)):
            cache.update(k, v, i)
        return cache

    pytree.register_pytree_node(
        DynamicCache, flatten, unflatten,
        serialized_type_name="transformers.cache_utils.DynamicCache",
        flatten_with_keys_fn=flatten_with_keys,
    )


def main():
    import torch
    from transformers import DynamicCache, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    register_dynamic_cache(DynamicCache)

    out, dynamic = sys.argv[1], "--dynamic" in sys.argv
    raw = config()
    raw.pop("model_type", None)
    cfg = Qwen2_5_VLConfig(**raw)
    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    grids = [(1, 4, 4), (1, 4, 8)]
    rows, types = [], []
    for (t, h, w) in grids:
        n = t * h * w // 4
        ids = torch.randint(0, 1000, (3,)).tolist()
        rows.append(ids + [cfg.vision_start_token_id] + [cfg.image_token_id] * n + [cfg.vision_end_token_id])
        types.append([0] * 4 + [1] * n + [0])
    longest = max(len(r) for r in rows)
    for r, ty in zip(rows, types):
        r += [7] * (longest - len(r))
        ty += [0] * (longest - len(ty))
    input_ids = torch.tensor(rows)
    grid = torch.tensor(grids)
    pos, _ = model.model.get_rope_index(input_ids, mm_token_type_ids=torch.tensor(types), image_grid_thw=grid)
    past = 4
    txt = cfg.text_config
    head = txt.hidden_size // txt.num_attention_heads
    cache = DynamicCache()
    for i in range(txt.num_hidden_layers):
        cache.update(torch.randn(2, txt.num_key_value_heads, past, head),
                     torch.randn(2, txt.num_key_value_heads, past, head), i)
    patches = sum(t * h * w for t, h, w in grids)
    kwargs = dict(
        input_ids=input_ids,
        attention_mask=torch.ones((2, past + longest), dtype=torch.int64),
        position_ids=pos + past,
        past_key_values=cache,
        pixel_values=torch.randn(patches, 3 * 2 * 1 * 1),
        image_grid_thw=grid,
    )
    ds = None
    if dynamic:
        d = torch.export.Dim.DYNAMIC
        ds = dict(
            input_ids={0: d, 1: d},
            attention_mask={0: d, 1: d},
            position_ids={1: d, 2: d},
            past_key_values=[[{0: d, 2: d}] * txt.num_hidden_layers] * 2,
            pixel_values={0: d},
            image_grid_thw={0: d},
        )
    export_and_report(model, kwargs, ds, out)


def export_and_report(model, kwargs, ds, out):
    """torch.export (non-strict) then torch.onnx (dynamo) of ``model`` on ``kwargs`` with the
    dynamic shapes ``ds``; prints each step's time or its error's first line (and the last
    transformers frame), the ONNX node count and the peak resident memory."""
    import onnx
    import torch

    t0 = time.perf_counter()
    try:
        ep = torch.export.export(model, (), kwargs=kwargs, dynamic_shapes=ds, strict=False)
    except Exception as e:  # noqa: BLE001 - the point is to report it
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"torch.export: FAILED after {time.perf_counter() - t0:.1f} s: {type(e).__name__}: {first}")
        import traceback

        frames = [f for f in traceback.extract_tb(e.__traceback__) if "/transformers/" in f.filename]
        if frames:
            f = frames[-1]
            print(f"  last transformers frame: {f.filename.split('site-packages/')[-1]}:{f.lineno} {f.line}")
        print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
        return
    print(f"torch.export: {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    try:
        prog = torch.onnx.export(ep, (), kwargs=kwargs, dynamo=True)
        prog.save(out)
        m = onnx.load(out)
        print(f"torch.onnx: {time.perf_counter() - t0:.1f} s, {len(m.graph.node)} nodes")
    except Exception as e:  # noqa: BLE001
        root = e
        while root.__cause__ is not None:
            root = root.__cause__
        first = str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__
        print(f"torch.onnx: FAILED after {time.perf_counter() - t0:.1f} s: {type(root).__name__}: {first}")
    print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
