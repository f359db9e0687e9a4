#!/usr/bin/env python3
"""The Python side of the Gemma3 benchmark: torch.export, then torch.onnx (dynamo), of
transformers 5.23's ``Gemma3ForConditionalGeneration`` on the catalog's reduced
google/gemma-3-4b-it config (the published config reduced as onnx-diagnostic 0.9.3 reduces
Gemma3, plus the catalog entry's 6 text layers and 224-pixel images pooled to 16 tokens), on
the same input set as ``validate``'s ``inputs``: 2 rows of 3 text tokens and one image each,
4 cached positions in a sliding/full ``DynamicCache``, ``token_type_ids`` over the cached and
new positions, the positions after the cache. onnx-diagnostic 0.9.3 does not import with
transformers 5.23, so the exporter calls are made directly, without its patches (5.23's own
``get_placeholder_mask`` exports).

Usage: python gemma3_torch_export.py OUT.onnx [--dynamic]
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qwen25_vl_torch_export import export_and_report, register_dynamic_cache  # noqa: E402


def config():
    ref = Path(__file__).resolve().parents[3] / "shared/reference/onnx-diagnostic-0.9.3-configs.json"
    d = dict(json.loads(ref.read_text())["google/gemma-3-4b-it"])
    d.pop("__class__", None)
    d["mm_tokens_per_image"] = 16
    t = dict(d["text_config"])
    t.update(hidden_size=640, intermediate_size=1280, num_hidden_layers=6)
    d["text_config"] = t
    v = dict(d["vision_config"])
    v.update(num_hidden_layers=4, image_size=224)
    d["vision_config"] = v
    return d


def main():
    import torch
    from transformers import DynamicCache, Gemma3Config, Gemma3ForConditionalGeneration

    register_dynamic_cache(DynamicCache)
    out, dynamic = sys.argv[1], "--dynamic" in sys.argv
    raw = config()
    raw.pop("model_type", None)
    cfg = Gemma3Config(**raw)
    torch.manual_seed(0)
    model = Gemma3ForConditionalGeneration(cfg).eval()
    n, past, batch = cfg.mm_tokens_per_image, 4, 2
    rows = [torch.randint(0, 1000, (3,)).tolist() + [cfg.boi_token_index]
            + [cfg.image_token_index] * n + [cfg.eoi_token_index] for _ in range(batch)]
    seq = len(rows[0])
    types = [[0] * (past + 4) + [1] * n + [0] for _ in range(batch)]
    txt = cfg.text_config
    cache = DynamicCache(config=txt)
    for i in range(txt.num_hidden_layers):
        cache.update(torch.randn(batch, txt.num_key_value_heads, past, txt.head_dim),
                     torch.randn(batch, txt.num_key_value_heads, past, txt.head_dim), i)
    side = cfg.vision_config.image_size
    kwargs = dict(
        input_ids=torch.tensor(rows),
        pixel_values=torch.randn(batch, 3, side, side).clamp(-1, 1),
        attention_mask=torch.ones((batch, past + seq), dtype=torch.int64),
        position_ids=(torch.arange(seq) + past).unsqueeze(0).expand(batch, -1),
        past_key_values=cache,
        token_type_ids=torch.tensor(types),
    )
    ds = None
    if dynamic:
        d = torch.export.Dim.DYNAMIC
        ds = dict(
            input_ids={0: d, 1: d},
            pixel_values={0: d},
            attention_mask={0: d, 1: d},
            position_ids={0: d, 1: d},
            past_key_values=[[{0: d, 2: d}] * txt.num_hidden_layers] * 2,
            token_type_ids={0: d, 1: d},
        )
    export_and_report(model, kwargs, ds, out)


if __name__ == "__main__":
    main()
