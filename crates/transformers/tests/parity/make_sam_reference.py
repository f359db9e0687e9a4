"""Builds a SamModel with transformers from a config, saves it with `save_pretrained` and runs
it on prompts (compared by tests/sam_parity.rs).

usage: make_sam_reference.py OUT CONFIG --sets=NAME:BATCH:POINT_BATCH:POINTS:BOXES:LABELS:MASKS,...
       [--embeddings=NAME] [--single=NAME]

Each set has BATCH images, POINT_BATCH prompts of POINTS points each (0: no points), boxes
when BOXES is 1 (one per prompt), random labels in {1, 0, -1, -10} when LABELS is 1 (else
none: transformers makes them ones), a mask prompt when MASKS is 1. Points and boxes are pixel
coordinates in [0, image_size). Writes OUT (the saved model) and OUT/io.safetensors: per set
`{name}.{input}` for its inputs, `{name}.iou_scores`, `{name}.pred_masks`; `{name}.image_embeddings`
for the `--embeddings` set (the model is then also run on them: `{name}.emb.*`), and
`{name}.single.*` with `multimask_output=False` for the `--single` set; `n_parameters`.
transformers zeroes `pos_embed` and the relative position tables untrained: they are drawn
here, so that they matter.
"""

import json
import sys

import torch
from safetensors.torch import save_file
from transformers import SamConfig, SamModel


def prompt(config, batch, point_batch, points, boxes, labels, masks):
    size = config.prompt_encoder_config.image_size
    grid = config.prompt_encoder_config.image_size // config.prompt_encoder_config.patch_size
    v = config.vision_config
    x = {"pixel_values": torch.randn(batch, v.num_channels, v.image_size, v.image_size)}
    if points:
        x["input_points"] = torch.rand(batch, point_batch, points, 2) * size
        if labels:
            choice = torch.tensor([1, 0, -1, -10])
            x["input_labels"] = choice[torch.randint(0, 4, (batch, point_batch, points))]
            # every prompt keeps one real point
            x["input_labels"][:, :, 0] = 1
    if boxes:
        corners = torch.rand(batch, point_batch, 2, 2) * size
        lo, hi = corners.min(dim=2).values, corners.max(dim=2).values
        x["input_boxes"] = torch.cat([lo, hi], dim=-1)
    if masks:
        x["input_masks"] = torch.randn(batch, 1, 4 * grid, 4 * grid)
    return x


def main(out: str, config_path: str, *options: str) -> None:
    sets, embeddings, single = [], None, None
    for o in options:
        if o.startswith("--sets="):
            for s in o.split("=", 1)[1].split(","):
                name, *sizes = s.split(":")
                sets.append((name, [int(v) for v in sizes]))
        elif o.startswith("--embeddings="):
            embeddings = o.split("=", 1)[1]
        elif o.startswith("--single="):
            single = o.split("=", 1)[1]
    with open(config_path) as f:
        raw = json.load(f)
    config = SamConfig(**raw)
    torch.manual_seed(0)
    model = SamModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "pos_embed" in name or "rel_pos" in name:
                p.normal_(0.0, 0.5)
            elif "positional_embedding" in name:
                continue
            elif "weight" in name and p.dim() > 1:
                p.normal_(0.0, 0.2)
            elif "bias" in name or "weight" in name:
                p.normal_(0.0, 0.1).add_(1.0 if "norm" in name and "weight" in name else 0.0)
    model.save_pretrained(out)
    io = {"n_parameters": torch.tensor(sum(p.numel() for p in model.parameters()))}
    for name, sizes in sets:
        x = prompt(config, *sizes)
        for k, v in x.items():
            io[f"{name}.{k}"] = v
        with torch.no_grad():
            y = model(**x)
            io[f"{name}.iou_scores"] = y.iou_scores
            io[f"{name}.pred_masks"] = y.pred_masks
            if name == single:
                y = model(**x, multimask_output=False)
                io[f"{name}.single.iou_scores"] = y.iou_scores
                io[f"{name}.single.pred_masks"] = y.pred_masks
            if name == embeddings:
                e = model.get_image_embeddings(x["pixel_values"])
                io[f"{name}.image_embeddings"] = e
                rest = {k: v for k, v in x.items() if k != "pixel_values"}
                y = model(image_embeddings=e, **rest)
                io[f"{name}.emb.iou_scores"] = y.iou_scores
                io[f"{name}.emb.pred_masks"] = y.pred_masks
    save_file({k: v.contiguous() for k, v in io.items()}, f"{out}/io.safetensors")


if __name__ == "__main__":
    main(*sys.argv[1:])
