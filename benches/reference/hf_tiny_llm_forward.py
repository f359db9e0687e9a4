"""HF transformers' eager forward of arnir0/Tiny-LLM (untrained, catalog config), batch 2,
sequence 3, no cache: the Python side of benches/benches/tiny_llm.rs.

usage: .venv/bin/python benches/reference/hf_tiny_llm_forward.py CONFIG_JSON
(CONFIG_JSON: the catalog's config of arnir0/Tiny-LLM, crates/transformers/src/catalog.rs)
"""

import json
import statistics
import sys
import time

import torch
import transformers

cfg = dict(json.loads(open(sys.argv[1]).read()))
mt = cfg.pop("model_type")
config = transformers.AutoConfig.for_model(mt, **cfg)
model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
ids = torch.randint(0, 32000, (2, 3))
times = []
with torch.no_grad():
    for _ in range(50):
        model(input_ids=ids, use_cache=False)
    for _ in range(30):
        t = time.perf_counter()
        for _ in range(20):
            model(input_ids=ids, use_cache=False)
        times.append((time.perf_counter() - t) / 20)
print(f"threads={torch.get_num_threads()} median {statistics.median(times)*1e3:.3f} ms min {min(times)*1e3:.3f} ms")
