"""Train a sparse autoencoder with SAELens (tested with sae-lens 6.54.12) on a `minineo harvest` folder, offline.

    minineo harvest corpus.txt --names blocks.1.resid_post --out acts/ --context 64
    python examples/train_sae_saelens.py acts/ --out my-sae
    minineo sae-eval my-sae corpus.txt                    # the SAE spliced into the model: loss recovered, L0, ...

sae-lens 6 takes the SAE's own options (d_in, d_sae, l1_coefficient, ...) in `sae=StandardTrainingSAEConfig(...)`,
not in LanguageModelSAERunnerConfig. With use_cached_activations=True its runner still
- builds its ActivationsStore from `dataset_path`, handed to datasets.load_dataset(split="train") (a hub id
  or a local *folder*; a file path is looked up on the hub): here a temporary folder holding the harvest's
  own token rows as a `tokens` column (read for a sample, never iterated: the activations come from the
  cache), and
- loads a TransformerLens model named by `model_name` unless given one: here `override_model` is a tiny
  placeholder HookedTransformer, because the activations come from the harvest folder and the runner only
  uses its model for its periodic CE evaluations, which this recipe leaves off (`minineo sae-eval` does them
  on the real model).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, LoggingConfig, StandardTrainingSAEConfig
from transformer_lens import HookedTransformer, HookedTransformerConfig


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("acts", type=Path, help="the folder `minineo harvest` wrote")
    parser.add_argument("--out", type=Path, required=True, help="where SAELens saves the trained SAE")
    parser.add_argument("--hook", help="the activation column to train on (default: the harvest's only one)")
    parser.add_argument("--model", default="tiny-neo", help="the model the harvest ran (its --model), recorded as the "
                        "SAE's model_name: minineo refuses an SAE on another model")
    parser.add_argument("--expansion", type=int, default=4, help="d_sae = expansion * d_in")
    parser.add_argument("--l1", type=float, default=1.0, help="l1_coefficient")
    parser.add_argument("--training-tokens", type=int, default=None, help="default: every harvested token once")
    parser.add_argument("--batch-tokens", type=int, default=256, help="train_batch_size_tokens")
    args = parser.parse_args(argv)

    manifest = json.loads((args.acts / "harvest.json").read_text())  # written by minineo harvest
    names = manifest["arguments"]["names"]
    hook = args.hook or (names[0] if len(names) == 1 else parser.error(f"the harvest holds {names}: pass --hook"))
    context = manifest["arguments"]["context"]
    import datasets

    acts = datasets.load_from_disk(str(args.acts))
    d_in = acts.features[hook].shape[1]
    tokens = args.training_tokens or len(acts) * context

    with tempfile.TemporaryDirectory() as dataset_path:
        acts.select_columns(["token_ids"]).rename_column("token_ids", "tokens").to_parquet(f"{dataset_path}/tokens.parquet")
        train(args, hook, d_in, context, tokens, dataset_path)
    return args.out


def train(args, hook: str, d_in: int, context: int, tokens: int, dataset_path: str) -> None:
    cfg = LanguageModelSAERunnerConfig(
        sae=StandardTrainingSAEConfig(d_in=d_in, d_sae=args.expansion * d_in, l1_coefficient=args.l1,
                                      apply_b_dec_to_input=True, normalize_activations="none"),
        model_name=args.model, hook_name=hook, context_size=context,
        dataset_path=dataset_path, is_dataset_tokenized=True, streaming=True,
        use_cached_activations=True, cached_activations_path=str(args.acts),
        training_tokens=tokens, train_batch_size_tokens=args.batch_tokens,
        store_batch_size_prompts=4, n_batches_in_buffer=4, lr=1e-3, device="cpu",
        logger=LoggingConfig(log_to_wandb=False, eval_every_n_wandb_logs=10**9),
        n_checkpoints=0, output_path=str(args.out), verbose=False,
    )
    placeholder = HookedTransformer(HookedTransformerConfig(n_layers=1, d_model=16, d_head=4, n_ctx=context,
                                                            d_vocab=2, act_fn="relu"))  # never run: see the docstring
    LanguageModelSAETrainingRunner(cfg, override_model=placeholder).run()


if __name__ == "__main__":
    print(main())
