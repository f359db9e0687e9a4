"""Builds a SamVisionModel with transformers from a config, saves it with `save_pretrained`
and runs it on images (compared by tests/sam_parity.rs).

usage: make_sam_vision_reference.py OUT CONFIG --batches=2,1

Writes OUT (the saved model) and OUT/io.safetensors: per batch size B, `b{B}.pixel_values`
and `b{B}.last_hidden_state`, and `n_parameters`. transformers zeroes `pos_embed` and the
relative position tables untrained: they are drawn here, so that they matter.
"""

import json
import sys

import torch
from safetensors.torch import save_file
from transformers import SamVisionConfig, SamVisionModel


def main(out: str, config_path: str, *options: str) -> None:
    batches = [2]
    for o in options:
        if o.startswith("--batches="):
            batches = [int(b) for b in o.split("=", 1)[1].split(",")]
    with open(config_path) as f:
        raw = json.load(f)
    raw.pop("model_type", None)
    config = SamVisionConfig(**raw)
    torch.manual_seed(0)
    model = SamVisionModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "pos_embed" in name or "rel_pos" in name:
                p.normal_(0.0, 0.5)
            elif "weight" in name and p.dim() > 1:
                p.normal_(0.0, 0.2)
    model.save_pretrained(out)
    io = {"n_parameters": torch.tensor(sum(p.numel() for p in model.parameters()))}
    for b in batches:
        pv = torch.randn(b, config.num_channels, config.image_size, config.image_size)
        with torch.no_grad():
            io[f"b{b}.pixel_values"] = pv
            io[f"b{b}.last_hidden_state"] = model(pixel_values=pv).last_hidden_state
    save_file({k: v.contiguous() for k, v in io.items()}, f"{out}/io.safetensors")


if __name__ == "__main__":
    main(*sys.argv[1:])
