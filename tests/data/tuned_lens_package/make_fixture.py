"""Writes the fixtures in this folder with the real `tuned-lens` package (not a minineo dependency).

For a tiny random GPT-2 and GPT-Neo: the HF model folder (`model/`), a tuned lens saved by the
package's own `TunedLens.save` (`lens/`: config.json + params.pt) with random translators, and the
package's own lens logits for fixed tokens (`expected.safetensors`: `tokens` (1, pos), `logits`
(layer + 1, pos, d_vocab); the last row is the model's output, which the package reads as is).

Run with the scratch venv that has the package:
    python -m venv /work/venvs/tunedlens && /work/venvs/tunedlens/bin/pip install "torch==2.13.0" tuned-lens
    /work/venvs/tunedlens/bin/python tests/data/tuned_lens_package/make_fixture.py
"""

from pathlib import Path

import torch
import transformers
import tuned_lens
from safetensors.torch import save_file
from tuned_lens import TunedLens
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoConfig, GPTNeoForCausalLM

HERE = Path(__file__).parent
CONFIGS = {
    "gpt2": (GPT2LMHeadModel, GPT2Config(n_layer=3, n_embd=16, n_head=4, vocab_size=48, n_positions=32, bos_token_id=0, eos_token_id=0)),
    "gpt_neo": (GPTNeoForCausalLM, GPTNeoConfig(num_layers=2, hidden_size=16, num_heads=4, vocab_size=48,
                                                max_position_embeddings=32, window_size=4, bos_token_id=0, eos_token_id=0,
                                                attention_types=[[["local", "global"], 1]], intermediate_size=64)),
}

for name, (cls, config) in CONFIGS.items():
    torch.manual_seed(0)
    config._attn_implementation = "eager"
    model = cls(config).eval()
    folder = HERE / name
    model.save_pretrained(folder / "model")
    lens = TunedLens.from_model(model)
    with torch.no_grad():
        for translator in lens.layer_translators:
            translator.weight.normal_(0, 0.3)
            translator.bias.normal_(0, 0.3)
    lens.save(folder / "lens")
    tokens = torch.randint(0, config.vocab_size, (1, 10))
    with torch.no_grad():
        out = model(tokens, output_hidden_states=True)
        rows = [lens(h, idx=i) for i, h in enumerate(out.hidden_states[:-1])] + [out.logits]
    save_file({"tokens": tokens, "logits": torch.stack(rows)[:, 0].contiguous()}, str(folder / "expected.safetensors"),
              metadata={"tuned_lens": tuned_lens.__version__ if hasattr(tuned_lens, "__version__") else "0.2.0",
                        "transformers": transformers.__version__, "torch": torch.__version__})
    print(name, sorted(p.name for p in folder.rglob("*") if p.is_file()))
