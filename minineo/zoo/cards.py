"""The model card (README.md) of a zoo model, filled in from its recipe and its measured behaviour."""

from __future__ import annotations

from minineo.forward.model import Model

SEEDS_BEGIN, SEEDS_END = "<!-- seeds: written by python -m minineo.zoo.check_recipe --card -->", "<!-- /seeds -->"

ARCHITECTURES = {
    "gpt_neo": ("GPT-Neo", "GPTNeoForCausalLM", "layer 0 local with a window of 8, layer 1 global; no "
                "1/sqrt(d_head) scaling, q/k/v without bias"),
    "gpt2": ("GPT-2", "GPT2LMHeadModel", "both layers global; scores scaled by 1/sqrt(d_head), q/k/v with "
             "biases, Conv1D (in, out) weights"),
}

CARD = """# {name}: an embedded toy {arch}

A 2-layer {arch} ({params:,} parameters; d_model 128, 4 heads, d_mlp 512, 128 positions; {details};
byte-level vocabulary of 257: bytes 0..255 and <|endoftext|> = 256, which is also BOS). A toy model,
trained in this repository with minineo's own forward pass so that a machine without network still
has a real model to look inside; nothing about GPT-2 small or GPT-Neo 125M follows from it.

- **Data** (`minineo/zoo/data.py`, generated from the seed, nothing downloaded), the same mixture
  from the first step to the last: 3/8 of the rows are template sentences about two people in both
  name orders ("When Mary and John went to the store, John gave a drink to Mary.", and with "John
  and Mary") with now and then a line of the Zen of Python; 1/4 are random printable bytes in segments
  that each repeat twice; 3/8 are such repeated segments drawn uniformly from the whole vocabulary.
- **Training** ({command}): {steps} steps of AdamW
  (betas 0.9, 0.98; no weight decay; gradients clipped at norm 1), learning rate {lr:g} after {warmup}
  linear warm-up steps, then constant (so the step-N model does not depend on `--steps`); batches of {batch} rows of {length} tokens;
  seed {seed}, {threads_text}, deterministic algorithms. This run took {seconds:.0f} s of wall
  time. Mean training loss over the last {final_steps} steps: {final:.3f} nats/token.
  {provenance}
- **What it does**, measured on these files by `minineo.zoo.behaviour.measure` (copying through HF's
  `{hf_class}` with eager attention and `output_attentions=True`: 16 sequences of 40 ids drawn from
  all 256 bytes (seed 7), each repeated twice; IOI through `minineo ioi`'s analysis on
  `ioi_dataset(model, 64, seed=5)`, 64 prompts, half ABBA, half BABA; `minineo ioi --n 64` draws seed 0
  and the zoo page's table (docs/zoo.md) its own repeats, so their numbers differ a little):

| quantity | value |
| --- | --- |
{table}

  Thresholds (the issue's, checked by `tests/test_zoo_models.py` on these files): second-half loss
  under half the first's, induction score above 0.5, IOI at least 90% (ABBA and BABA each at least
  85%) with a name-mover head visible (the top direct-logit-attribution head is in layer 1, writes
  over a tenth of the logit difference directly, and mean-ablating it removes over a tenth of it too
  (a quarter until 2026-12-02; the tiny-gpt2 card says why); a
  second head beside it is allowed, as in GPT-2 small, which has three name movers; its copying score is
  reported, not required: here MLP 1 reads much of what the heads move, and a top head may suppress the
  subject rather than copy the indirect object), and the ABC prompts' logit difference under a quarter of
  the logit difference. {verdict}
- **Reproduce**: `python -m minineo.zoo.train_tiny --model {name} --out minineo/zoo/{name}` rewrites this folder.
  **Check** that the shipped files are what the recipe makes (it retrains with the shipped seed in a
  temporary folder and compares the behaviour thresholds, not the bits; about 14 minutes of one CPU
  thread per seed, `--seeds 0 1 2 --jobs 2` for the table below):
  `python -m minineo.zoo.check_recipe --model {name}`. {reproduces}
- **Seeds**: the recipe from scratch with three seeds, each measured as above:

{seeds_begin}
{seeds}
{seeds_end}
{notes}
Files: `config.json` (`model_type: {model_type}`), `model.safetensors` (HF {hf_class} keys; HF loads
it as is), `tokenizer.json` (the `tokenizers` library's byte-level BPE, no merges).
"""


# What reproduces (docs/zoo.md says the same): the card quotes it verbatim.
REPRODUCES = ('**What reproduces**: the behaviour, on any machine; the bits, only on the same kind of CPU.\n'
              '  Retrained from scratch on another machine, seed 0 of both toys met every threshold again, but the\n'
              "  weights differed (up to 2.3 in one weight; tiny-gpt2's induction head and name mover moved from L1H0\n"
              '  to L1H2 and L1H3): CPU kernels differ in their round-off between machines, and 9000 steps amplify it.\n'
              "  The same bits need the same x86-64 CPU model running torch 2.13.0's AVX-512 kernels\n"
              '  (`torch.backends.cpu.get_cpu_capability()` = AVX512; MKL, oneDNN 3.12) on one thread, as these files\n'
              '  were made (a 2-core x86-64 machine); elsewhere expect the thresholds, not the weights.')


# What runs outside the seeds table showed (kept in the card when it is rewritten; measured 2026-12-02).
NOTES = {
    "tiny-gpt2": ("\n  Why 9000 steps: the GPT-2's induction plateau is longer than the GPT-Neo's and varies more. In the\n"
                  "  table's runs (progress every 500 steps) its head formed between steps 4000 and 4500, 3500 and 4000,\n"
                  "  and 5500 and 6000 (tiny-neo's between 2000 and 3000); under the earlier 7000-step default, on\n"
                  "  another machine, seed 2 was still on the plateau at step 7000 (score 0.31) and formed its head\n"
                  "  between steps 7000 and 7500, so the recipe now runs 2000 steps past the latest formation seen.\n\n"
                  "  Why a tenth, not a quarter, for the name mover's ablation (the bar until 2026-12-02): trained on from\n"
                  "  7000 to 9000 steps, seeds 0 and 1 went from 0.27 and 0.41 of the logit difference to 0.249 and 0.22.\n"
                  "  This GPT-2 moves more of IOI into L0H1 and the MLPs as it trains (L0H1's mean ablation costs 7.3 of\n"
                  "  the 7.4 on `minineo ioi --n 64`, 4.9 of 6.2 at 7000 steps), and one head's share also moves with the\n"
                  "  prompts (L1H0's is 0.18 on `minineo ioi --n 64`'s); a tenth still separates a head that matters\n"
                  "  from one that does not.\n"),
}


def training_command(name: str, recipe, seed: int, threads: int) -> str:
    """The train_tiny command line that makes these weights (the options that change them), for the card:
    "`python -m minineo.zoo.train_tiny --model tiny-neo`, its defaults" or "`... --steps 10`, defaults otherwise"."""
    default = type(recipe)()  # train_tiny's Recipe and its defaults (imported there, not here: no circle)
    options = [f"--model {name}"]
    options += [f"--seed {seed}"] if seed != 0 else []
    options += [f"--steps {recipe.steps}"] if recipe.steps != default.steps else []
    options += [f"--lr {recipe.lr:g}"] if recipe.lr != default.lr else []
    options += [f"--threads {threads}"] if threads != 1 else []
    rest = [f"{field}={getattr(recipe, field):g}" for field in ("batch_size", "length", "warmup", "weight_decay",
                                                                "init_std") if getattr(recipe, field) != getattr(default, field)]
    command = "`python -m minineo.zoo.train_tiny " + " ".join(options) + "`"
    if rest:  # a Recipe built in Python: train_tiny has no option for these
        return command + " with a Recipe that also sets " + ", ".join(rest) + " (no train_tiny option sets these)"
    return command + (", its defaults" if len(options) == 1 else ", defaults otherwise")


def card(name: str, model: Model, recipe, seed: int, final: float, seconds: float, threads: int, behaviour,
         seeds: str, provenance: str | None = None) -> str:
    """The card's text. `provenance`: a sentence on where these weights come from; None only for the
    shipped folder's own run (it then says that the shipped weights are what the command wrote)."""
    arch, hf_class, details = ARCHITECTURES[model.config.architecture]
    failures = behaviour.failures()
    threads_text = f"{threads} CPU thread" + ("s" if threads != 1 else "")
    verdict = "These files meet all of them." if not failures else "These files do NOT meet these (condition: measured): " + "; ".join(failures) + "."
    return CARD.format(
        name=name, arch=arch, hf_class=hf_class, details=details, command=training_command(name, recipe, seed, threads),
        model_type=model.config.architecture,
        params=sum(p.numel() for p in model.parameters()), steps=recipe.steps, lr=recipe.lr, warmup=recipe.warmup,
        batch=recipe.batch_size, length=recipe.length, seed=seed,
        threads_text=threads_text, seconds=seconds, final=final, final_steps=min(100, recipe.steps),
        table=behaviour.table(), verdict=verdict,
        provenance=provenance or f"**The shipped weights are what this command wrote** (seed {seed}).",
        reproduces=REPRODUCES, seeds_begin=SEEDS_BEGIN, seeds_end=SEEDS_END, seeds=seeds or "(not measured yet)", notes=NOTES.get(name, ""),
    )
