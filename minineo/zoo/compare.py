"""The zoo page's side-by-side table (docs/zoo.md): GPT-2 and GPT-Neo models compared command by command, one column per model.

    python -m minineo.zoo.compare [--models tiny-neo tiny-gpt2 [gpt2 EleutherAI/gpt-neo-125M]]

Each row is what one `minineo` command shows (COMMANDS), computed with the same analysis calls and
arguments; prints a Markdown table. tests/test_zoo_models.py checks docs/zoo.md quotes it.
"""

from __future__ import annotations

import torch

LENS_TEXT = "When Mary and John went to the store, John gave a drink to Mary."
COMMANDS = {
    "embeddings": "minineo embeddings --model {model}",
    "lens": f'minineo lens "{LENS_TEXT}" --model {{model}}',
    "heads": "minineo heads --seq-len 40 --n-seqs 16 --model {model}",
    "ioi": "minineo ioi --n 64 --model {model}",
}


@torch.no_grad()
def column(name: str) -> dict[str, str]:
    """The table's cells for one model, keyed by row label."""
    import minineo
    from minineo import analysis

    model = minineo.load(name)
    g = analysis.embedding_geometry(model.W_E, "W_E", sample=4096)  # `minineo embeddings`' W_E row
    lens = analysis.logit_lens(model, model.to_tokens(LENS_TEXT))
    hits = (lens.next_token_rank == 0).float().mean(-1)  # (layer + 1,): lens top-1 = the actual next token
    heads = analysis.head_scores(model, analysis.repeated_tokens(model, 40, 16, 0, True), repeated_len=40)
    ioi = analysis.ioi_analysis(model, analysis.ioi_dataset(model, 64, 0), ablation=True)

    def best(scores: torch.Tensor) -> str:
        layer, head = divmod(int(scores.argmax()), model.config.n_heads)
        return f"L{layer}H{head} {float(scores.max()):.2f}"

    mover = int(ioi.head_dla.argmax())
    layer, head = divmod(mover, model.config.n_heads)
    return {
        "W_E: mean norm / norm of the mean row (shared offset)": f"{g.mean_norm:.2f} / {g.mean_vector_norm:.2f}",
        "W_E: mean pairwise cosine, raw / centred": f"{g.mean_cosine:.3f} / {g.mean_cosine_centred:.4f}",
        "logit lens: top-1 = next token, per residual (" + ", ".join(lens.labels) + ")":
            " / ".join(f"{float(h):.0%}" for h in hits),
        "repeated any-token segments: loss 1st -> 2nd half": f"{heads.first_half_loss:.2f} -> {heads.induction_loss:.2f}",
        "best induction head / best previous-token head": f"{best(heads.induction)} / {best(heads.previous_token)}",
        "IOI: accuracy, IO - S logit diff (ABC prompts)": f"{ioi.accuracy:.0%}, {ioi.logit_diff:.2f} ({ioi.abc_logit_diff:.2f})",
        "IOI: top name mover, DLA / mean-ablation effect":
            f"L{layer}H{head} {float(ioi.head_dla.flatten()[mover]):.2f} / {float(ioi.head_ablation.flatten()[mover]):.2f}",
    }


def table(models: list[str]) -> str:
    columns = [column(name) for name in models]
    lines = ["| measured (toy models; commands below) | " + " | ".join(f"`{m}`" for m in models) + " |",
             "| --- |" + " --- |" * len(models)]
    lines += [f"| {label} | " + " | ".join(c[label] for c in columns) + " |" for label in columns[0]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from minineo.boundary import ScriptParser

    parser = ScriptParser("minineo.zoo.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny-neo", "tiny-gpt2"],
                        help="zoo names, hub ids or folders (default: tiny-neo tiny-gpt2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(table(args.models))


if __name__ == "__main__":
    from minineo.boundary import run_script

    run_script(main)
