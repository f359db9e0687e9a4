#!/usr/bin/env python3
"""The Python side of the Idefics benchmark: torch.export, then torch.onnx (dynamo), of
transformers 5.23's ``IdeficsForVisionText2Text`` on the catalog's
HuggingFaceM4/tiny-random-idefics config (2 vision layers, as onnx-diagnostic 0.9.3 reduces
image-text-to-text configs), on the Python package's ``get_inputs_default`` sets: ``inputs``
(batch 2, 43 new tokens after 43 cached, 2 images of 30 pixels per row, every token attending
every image) and ``inputs2`` (batch 3, one token after one cached, no image), with its dynamic
dims (all ``Dim.DYNAMIC``). Eager is run on both sets first (transformers cannot encode zero
images). onnx-diagnostic 0.9.3 does not import with transformers 5.23, so the exporter calls
are made directly.

Usage: python idefics_torch_export.py OUT.onnx
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qwen25_vl_torch_export import export_and_report, register_dynamic_cache  # noqa: E402


def config():
    ref = Path(__file__).resolve().parents[3] / "shared/reference/onnx-diagnostic-0.9.3-configs.json"
    d = dict(json.loads(ref.read_text())["HuggingFaceM4/tiny-random-idefics"])
    d.pop("__class__", None)
    v = dict(d["vision_config"])
    v["num_hidden_layers"] = 2
    d["vision_config"] = v
    return d


def inputs(cfg, batch, seq, past, images):
    import torch
    from transformers import DynamicCache

    heads = cfg.num_attention_heads
    dim = cfg.hidden_size // heads
    cache = DynamicCache(config=cfg)
    for i in range(cfg.num_hidden_layers):
        cache.update(torch.randn(batch, heads, past, dim), torch.randn(batch, heads, past, dim), i)
    side = cfg.vision_config.image_size
    return dict(
        input_ids=torch.randint(0, cfg.vocab_size, (batch, seq)),
        attention_mask=torch.ones(batch, past + seq, dtype=torch.int64),
        position_ids=torch.arange(past, past + seq).expand(batch, -1).contiguous(),
        past_key_values=cache,
        pixel_values=torch.randn(batch, images, 3, side, side).clamp(-1, 1),
        image_attention_mask=torch.ones(batch, seq, images, dtype=torch.int64),
    )


def main():
    import torch
    from transformers import DynamicCache, IdeficsConfig, IdeficsForVisionText2Text

    register_dynamic_cache(DynamicCache)
    out = sys.argv[1]
    raw = config()
    raw.pop("model_type", None)
    cfg = IdeficsConfig(**raw)
    torch.manual_seed(0)
    model = IdeficsForVisionText2Text(cfg).eval()
    d = torch.export.Dim.DYNAMIC
    ds = dict(
        input_ids={0: d, 1: d},
        attention_mask={0: d, 1: d},
        position_ids={0: d, 1: d},
        past_key_values=[[{0: d, 2: d}] * cfg.num_hidden_layers] * 2,
        pixel_values={0: d, 1: d},
        image_attention_mask={0: d, 1: d, 2: d},
    )
    sets = [("inputs", inputs(cfg, 2, 43, 43, 2)), ("inputs2", inputs(cfg, 3, 1, 1, 0))]
    for name, x in sets:
        try:
            with torch.no_grad():
                model(**inputs(cfg, *{"inputs": (2, 43, 43, 2), "inputs2": (3, 1, 1, 0)}[name]))
            print(f"eager {name}: ok")
        except Exception as e:  # noqa: BLE001 - the point is to report it
            print(f"eager {name}: FAILED: {type(e).__name__}: {str(e).strip().splitlines()[0]}")
    export_and_report(model, sets[0][1], ds, out)


if __name__ == "__main__":
    main()
