"""Runs transformers' cache layers on the updates of `steps.safetensors` and saves what they
return and store after each update (compared by tests/cache_parity.rs).

usage: cache_reference.py STEPS OUT
STEPS holds k_<i>, v_<i> (the new states of update i) and beam_idx.
"""

import sys

import torch
from safetensors.torch import load_file, save_file
from transformers.cache_utils import (
    DynamicLayer,
    DynamicSlidingWindowLayer,
    StaticLayer,
    StaticSlidingWindowLayer,
)


def main(steps_path: str, out_path: str) -> None:
    steps = load_file(steps_path)
    n = len([k for k in steps if k.startswith("k_")])
    layers = {
        "dynamic": DynamicLayer(),
        "dynamic_sliding": DynamicSlidingWindowLayer(sliding_window=4),
        "static": StaticLayer(max_cache_len=8),
        "static_sliding": StaticSlidingWindowLayer(max_cache_len=8, sliding_window=4),
    }
    out = {}
    for name, layer in layers.items():
        for i in range(n):
            q = steps[f"k_{i}"].shape[-2]
            # The absolute position of the first returned state (`get_mask_sizes`).
            out[f"{name}_ret_offset_{i}"] = torch.tensor(layer.get_mask_sizes(q)[1])
            k, v = layer.update(steps[f"k_{i}"], steps[f"v_{i}"])
            out[f"{name}_ret_k_{i}"] = k.clone()
            out[f"{name}_ret_v_{i}"] = v.clone()
            out[f"{name}_keys_{i}"] = layer.keys.clone()
            out[f"{name}_values_{i}"] = layer.values.clone()
            out[f"{name}_len_{i}"] = torch.tensor(int(layer.get_seq_length()))
        layer.reorder_cache(steps["beam_idx"])
        out[f"{name}_reordered_keys"] = layer.keys.clone()
    crop = DynamicLayer()
    for i in range(n):
        crop.update(steps[f"k_{i}"], steps[f"v_{i}"])
    crop.crop(-2)
    out["dynamic_cropped_keys"] = crop.keys.clone()
    out["dynamic_cropped_len"] = torch.tensor(crop.get_seq_length())
    save_file({k: v.contiguous() for k, v in out.items()}, out_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
