#!/usr/bin/env python3
"""The Python side of the SAM benchmark: torch.export, then torch.onnx (dynamo), of
transformers 5.23's ``SamModel`` on the catalog's fxmarty/sam-vit-tiny-random config (2 vision
layers, as onnx-diagnostic 0.9.3 reduces mask-generation configs), on the Python package's
mask-generation sets: ``inputs`` (2 images of 1024 pixels, 2 prompts of 10 points and a box
each) and ``inputs2`` (3 images), with its dynamic dims (batch, point_batch_size,
nb_points_per_image). The ONNX file, when there is one, is then run in ONNX Runtime on both
sets and compared with eager. onnx-diagnostic 0.9.3 does not import with transformers 5.23, so
the exporter calls are made directly; 5.23's ``SamMaskDecoder`` has no branch on the data, so
no patch is needed to export it.

Usage: python sam_torch_export.py OUT.onnx
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qwen25_vl_torch_export import export_and_report  # noqa: E402


def config():
    ref = Path(__file__).resolve().parents[3] / "shared/reference/onnx-diagnostic-0.9.3-configs.json"
    d = dict(json.loads(ref.read_text())["fxmarty/sam-vit-tiny-random"])
    d.pop("__class__", None)
    v = dict(d["vision_config"])
    v["num_hidden_layers"] = 2
    d["vision_config"] = v
    return d


def inputs(batch):
    import torch

    return dict(
        pixel_values=torch.randn(batch, 3, 1024, 1024).clamp(-1, 1),
        input_points=torch.randn(batch, 2, 10, 2),
        input_boxes=torch.randn(batch, 2, 4),
    )


def main():
    import torch
    from transformers import SamConfig, SamModel

    out = sys.argv[1]
    raw = config()
    raw.pop("model_type", None)
    torch.manual_seed(0)
    model = SamModel(SamConfig(**raw)).eval()
    batch = torch.export.Dim("batch")
    prompts = torch.export.Dim("point_batch_size")
    points = torch.export.Dim("nb_points_per_image")
    ds = dict(
        pixel_values={0: batch},
        input_points={0: batch, 1: prompts, 2: points},
        input_boxes={0: batch, 1: prompts},
    )
    sets = [("inputs", inputs(2)), ("inputs2", inputs(3))]
    export_and_report(model, sets[0][1], ds, out)
    if not Path(out).exists():
        return
    import onnxruntime as ort

    sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    for name, x in sets:
        with torch.no_grad():
            want = model(**x).pred_masks
        try:
            got = sess.run(None, {k: x[k].numpy() for k in names})
        except Exception as e:  # noqa: BLE001 - the point is to report it
            print(f"ORT {name}: FAILED: {str(e).strip().splitlines()[0]}")
            continue
        masks = [g for g in got if g.shape == tuple(want.shape)]
        d = (torch.from_numpy(masks[0]) - want).abs().max().item() if masks else float("nan")
        print(f"ORT {name}: pred_masks max abs diff {d:.3g}")


if __name__ == "__main__":
    main()
