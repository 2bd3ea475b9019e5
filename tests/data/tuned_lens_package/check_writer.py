"""Reads lens folders that minineo's `TunedLens.save(path, format="tuned-lens")` wrote with the real `tuned-lens`
package's own loader, and compares its lens logits with the package's recorded ones (expected.safetensors).

    /work/venvs/tunedlens/bin/python tests/data/tuned_lens_package/check_writer.py WRITTEN_ROOT
WRITTEN_ROOT holds one folder per architecture (gpt2/, gpt_neo/), each written by minineo from this fixture's
lens; prints the max |difference| per architecture and exits non-zero above 1e-5 or on any package warning.
"""

import logging
import sys
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM
from tuned_lens import TunedLens

HERE = Path(__file__).parent
written = Path(sys.argv[1])
warnings.simplefilter("error")
records: list[logging.LogRecord] = []
logging.getLogger().addHandler(type("Keep", (logging.Handler,), {"emit": lambda self, r: records.append(r)})())
worst = 0.0
for arch in ("gpt2", "gpt_neo"):
    model = AutoModelForCausalLM.from_pretrained(HERE / arch / "model", attn_implementation="eager").eval()
    lens = TunedLens.from_model_and_pretrained(model, str(written / arch))  # the package's loader, a local folder
    expected = load_file(str(HERE / arch / "expected.safetensors"))
    with torch.no_grad():
        out = model(expected["tokens"], output_hidden_states=True)
        rows = [lens(h, idx=i) for i, h in enumerate(out.hidden_states[:-1])] + [out.logits]
    diff = float((torch.stack(rows)[:, 0] - expected["logits"]).abs().max())
    worst = max(worst, diff)
    print(f"{arch}: tuned-lens's own loader reads minineo's folder; max |logits - package's| = {diff:.2e}")
problems = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
print("package warnings:", problems or "none")
sys.exit(0 if worst <= 1e-5 and not problems else 1)
