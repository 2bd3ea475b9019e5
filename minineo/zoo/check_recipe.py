"""Check that a shipped zoo model is what its recipe makes: retrain from scratch, compare the behaviour thresholds.

    python -m minineo.zoo.check_recipe [--model tiny-neo|tiny-gpt2] [--seeds 0] [--jobs 1] [--keep DIR [--reuse]] [--card]

Not run in CI (each seed trains for minutes). Each seed runs `python -m minineo.zoo.train_tiny` with
the recipe's defaults into a temporary folder (seeds in parallel with --jobs), then measures it with
minineo.zoo.behaviour; the shipped files are measured the same way. Exit status 1 when a retrained
model misses a threshold. With --card, the table of seeds is written into the shipped model's card.
With --keep DIR the retrained folders stay in DIR/seed-N (each with training-seconds.txt); --reuse then
measures the folders a finished earlier run left there instead of training them again.
Bits are not compared: round-off differs between machines and torch builds and grows in training.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from minineo.checkpoints.hub import EMBEDDED
from minineo.zoo.behaviour import Behaviour, measure


def row(label: str, b: Behaviour, seconds: float | None) -> str:
    """One Markdown row of the seeds table."""
    took = f"{seconds:.0f}" if seconds is not None else "-"
    return (f"| {label} | {b.first_half_loss:.2f} -> {b.second_half_loss:.2f} | {b.induction_score:.2f} "
            f"(L{b.induction_head[0]}H{b.induction_head[1]}) | {b.ioi_accuracy:.0%} ({b.abba_accuracy:.0%}, "
            f"{b.baba_accuracy:.0%}) | L{b.name_mover[0]}H{b.name_mover[1]} {b.name_mover_dla:.2f} / "
            f"{b.name_mover_ablation:.2f} of {b.logit_diff:.2f} | {took} | "
            f"{'yes' if not b.failures() else 'NO: ' + '; '.join(b.failures())} |")


HEADER = ("| seed | any-token repeats, loss 1st -> 2nd half (HF) | induction score (HF) | IOI (ABBA, BABA) "
          "| name mover: DLA / ablation of logit diff | training s | meets the thresholds |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")


def main(argv: list[str] | None = None) -> None:
    from minineo.boundary import ScriptFailure, ScriptParser

    parser = ScriptParser("minineo.zoo.check_recipe", description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(EMBEDDED), default="tiny-neo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="0 is the shipped seed")
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained at once (one CPU thread each)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the retrained folders here (KEEP/seed-N)")
    parser.add_argument("--reuse", action="store_true",
                        help="with --keep: measure KEEP/seed-N left by an earlier run instead of retraining it")
    parser.add_argument("--card", action="store_true", help="write the seeds table into the shipped card")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1 (got {args.jobs})")
    if any(seed < 0 for seed in args.seeds):
        parser.error(f"--seeds must be non-negative (got {args.seeds})")
    if args.reuse and args.keep is None:
        parser.error("--reuse needs --keep DIR (the folder an earlier run kept its retrained models in)")
    root = args.keep or Path(tempfile.mkdtemp(prefix=f"check-{args.model}-"))
    folders = {seed: root / f"seed-{seed}" for seed in args.seeds}
    seconds: dict[int, float] = {}
    pending = list(args.seeds)
    if args.reuse:
        for seed in list(pending):
            took = folders[seed] / "training-seconds.txt"
            if (folders[seed] / "model.safetensors").is_file() and took.is_file():
                seconds[seed] = float(took.read_text())
                pending.remove(seed)
                print(f"reusing seed {seed}: {folders[seed]} (trained in {seconds[seed]:.0f} s)", flush=True)
    running: dict[int, tuple[subprocess.Popen, float]] = {}
    while pending or running:
        while pending and len(running) < args.jobs:
            seed = pending.pop(0)
            command = [sys.executable, "-m", "minineo.zoo.train_tiny", "--model", args.model, "--seed", str(seed),
                       "--out", str(folders[seed]), "--report", "500"]
            print("running", " ".join(command), flush=True)
            running[seed] = (subprocess.Popen(command), time.time())
        time.sleep(1)
        for seed, (process, began) in list(running.items()):
            if process.poll() is not None:
                if process.returncode:
                    for other, _ in running.values():  # no seed is left training after the report
                        other.terminate()
                    raise ScriptFailure(f"training seed {seed} failed (exit status {process.returncode}; its own "
                                        f"error is above); rerun it alone with python -m minineo.zoo.train_tiny "
                                        f"--model {args.model} --seed {seed}")
                seconds[seed] = time.time() - began
                (folders[seed] / "training-seconds.txt").write_text(f"{seconds[seed]:.1f}\n")
                del running[seed]
    shipped = measure(EMBEDDED[args.model])
    retrained = {seed: measure(folders[seed]) for seed in args.seeds}
    rows = [row(f"{seed}{' (shipped seed)' if seed == 0 else ''}", b, seconds[seed]) for seed, b in retrained.items()]
    table = "\n".join([HEADER, *rows])
    print(f"\n{args.model}, retrained from scratch (folders in {root}):\n{table}\n"
          f"{row('shipped files', shipped, None)}")
    if args.card:
        from minineo.zoo.files import write_seeds_section

        write_seeds_section(EMBEDDED[args.model] / "README.md", table)
    failed = [seed for seed, b in retrained.items() if b.failures()]
    if failed or shipped.failures():
        raise ScriptFailure(f"thresholds missed by seeds {failed}" + (" and by the shipped files" if shipped.failures() else "")
                            + "; the table above marks each missed threshold")


if __name__ == "__main__":
    from minineo.boundary import run_script

    run_script(main)
