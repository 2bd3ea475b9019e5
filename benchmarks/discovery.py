"""Circuit discovery (issue 27 part 9): seconds and peak memory of minineo's EAP, EAP-IG-inputs (5 steps),
clean-corrupted, exact over all edges and evaluate per circuit, each also in forward-pass equivalents of the batch,
with EAP-IG itself (hannamw/EAP-IG on TransformerLens 3) measured side by side on the same weights and pairs.

    python -m benchmarks.discovery [--models gpt2-small,gpt-neo-125M,tiny-gpt2,tiny-neo] [--out FILE]
    python -m benchmarks.discovery --quick      # smoke run: tiny-gpt2, 8 IOI pairs (tests/test_benchmarks.py)

Models: GPT-2-small and GPT-Neo-125M shapes (12 x 12 x 768, vocab 50257, random weights from HF's configs, saved once
as safetensors) with 16 random-token pairs of 16 tokens (the corrupted prompt differs at 2 positions); the zoo's
tiny-gpt2 and tiny-neo with 64 IOI pairs (minineo.analysis.ioi_dataset, seed 5; corrupted = the ABC prompt).
Circuits for evaluate: the top int(p E) edges of a fixed random ranking (seed 0) at MIB's fractions p (EAP-IG prunes
inside evaluate_graph; minineo's evaluate needs no pruning), the same masks for both libraries.

Every method runs in its own process (benchmarks/discovery_worker.py for minineo, benchmarks/eap_ig_peer.py in
EAP-IG's venv: MININEO_EAPIG_PYTHON, default /work/venvs/eapig/bin/python), which times it round by round against
one plain forward of the same clean batch (forward-pass equivalents = method time / forward time, a ratio that
depends little on the machine) and samples its peak RSS. minineo's and EAP-IG's processes alternate, method by
method. EAP-IG's exact is one evaluate_graph per edge: it is timed on --peer-exact-sample edges spread over the
edge order (all on the zoo) and extrapolated per edge. The scores of both are compared (parity columns).
"""

from __future__ import annotations


import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

import minineo
from benchmarks import description
from minineo.boundary import ScriptParser, comma_list, run_script
from benchmarks.discovery_report import compare, print_report
from minineo.discovery import Graph

ROOT = Path(__file__).resolve().parent.parent
PEER_PYTHON = os.environ.get("MININEO_EAPIG_PYTHON", "/work/venvs/eapig/bin/python")  # scratch venv, EAP-IG + TL 3
METHODS = ("eap", "eap-ig-inputs", "clean-corrupted", "exact", "evaluate")
MODELS = ("gpt2-small", "gpt-neo-125M", "tiny-gpt2", "tiny-neo")
FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)  # MIB's edge fractions: the zoo's circuits
FULL_FRACTIONS = (0.01, 0.1, 1.0)  # at the full shapes (EAP-IG's evaluate_graph takes two forwards of it each)
ZOO = Path(minineo.__file__).parent / "zoo"


def build_model(name: str, tmp: Path) -> Path:
    """The model's folder: the zoo's own, or a random HF model of the full shape saved once into tmp."""
    if name.startswith("tiny-"):
        return ZOO / name
    from benchmarks.models import hf_configs, save_random_model

    folder = tmp / name
    return folder if (folder / "config.json").is_file() else save_random_model(hf_configs(False)[name], folder)


def random_pairs(d_vocab: int, n: int, n_pos: int, seed: int = 0) -> dict:
    """n pairs of n_pos random tokens; the corrupted prompt differs at two positions (as an IOI name swap does)."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, d_vocab, (n, n_pos), generator=g)
    corrupted = clean.clone()
    for position in (n_pos // 4, n_pos // 2):
        corrupted[:, position] = torch.randint(0, d_vocab, (n,), generator=g)
    answer, wrong = torch.randint(0, d_vocab, (2, n), generator=g)
    return {"clean": clean.tolist(), "corrupted": corrupted.tolist(), "answer": answer.tolist(), "wrong": wrong.tolist()}


def ioi_pairs(model: minineo.Model, n: int, seed: int = 5) -> dict:
    """n IOI pairs (clean prompt, its ABC prompt, IO and S first tokens) as unpadded token lists."""
    from minineo.analysis import ioi_dataset

    data = ioi_dataset(model, n=n, seed=seed)
    rows = lambda tokens: [row[mask.bool()].tolist() for row, mask in zip(tokens, data.attention_mask)]  # noqa: E731
    return {"clean": rows(data.tokens), "corrupted": rows(data.abc_tokens), "answer": data.io_tokens.tolist(),
            "wrong": data.s_tokens.tolist()}


def circuits(graph: Graph, fractions: tuple[float, ...], seed: int = 0) -> torch.Tensor:
    """(n_circuits, n_senders, n_receivers) bool: the top int(p E) (at least 1) edges of a random ranking."""
    g = torch.Generator().manual_seed(seed)
    ranking = torch.rand(graph.real_edges.shape, generator=g).masked_fill(~graph.real_edges, -1).flatten()
    order = ranking.argsort(descending=True)
    masks = torch.zeros((len(fractions), ranking.numel()), dtype=torch.bool)
    for i, p in enumerate(fractions):
        masks[i, order[:max(1, int(p * graph.n_edges))]] = True
    return masks.view(len(fractions), *graph.real_edges.shape)


def run_process(cmd: list[str], timeout: float | None) -> dict:
    """One measuring process; its JSON line, or {"error": ...} with the end of its stderr."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s (killed)"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        last = [line for line in done.stderr.splitlines() if line.strip()][-1:] or ["no output"]
        return {"error": f"exit {done.returncode}: {last[0][-300:]}"}
    return json.loads(lines[-1])


def measure_case(name: str, tmp: Path, args) -> dict:
    folder = build_model(name, tmp)
    model = minineo.load(folder)
    zoo = name.startswith("tiny-")
    pairs = ioi_pairs(model, args.ioi_pairs) if zoo else random_pairs(model.config.d_vocab, args.pairs, args.pos)
    work = tmp / f"{name}-files"
    work.mkdir(exist_ok=True)
    torch.save(pairs, work / "pairs.pt")
    graph = Graph.from_model(model)
    fractions = args.fractions or (FRACTIONS if zoo else FULL_FRACTIONS)
    torch.save(circuits(graph, fractions), work / "circuits.pt")
    peer_sample = 0 if zoo else args.peer_exact_sample
    case = {"model": name, "folder": str(folder), "work": str(work), "n_pairs": len(pairs["clean"]), "n_pos": max(map(len, pairs["clean"])),
            "n_edges": graph.n_edges, "n_circuits": len(fractions), "methods": {}}
    for method in args.methods:
        common = [str(folder), str(work / "pairs.pt"), "--method", method, "--rounds", str(args.rounds)]
        if method == "evaluate":
            common += ["--circuits", str(work / "circuits.pt")]
        ours_out, peer_out = work / f"minineo-{method}.pt", work / f"eapig-{method}.pt"
        argv = [*common, "--out", str(ours_out)]
        if method == "exact" and not zoo and args.exact_sample > 1:
            argv += ["--exact-sample", str(args.exact_sample)]
        if args.in_process:
            from benchmarks.discovery_worker import measure

            try:
                ours = measure(argv)
            except Exception as err:  # noqa: BLE001 (reported in the table, the run goes on)
                ours = {"error": f"{type(err).__name__}: {err}"}
        else:
            timeout = args.exact_timeout if method == "exact" else None
            ours = run_process([sys.executable, "-m", "benchmarks.discovery_worker", *argv], timeout)
        peer, peer_json = None, work / f"eapig-{method}.json"
        if args.peer and args.reuse_peer and peer_json.is_file() and peer_out.is_file():
            peer = {**json.loads(peer_json.read_text()), "reused": True}  # measured earlier by this script (--model-dir)
        elif args.peer:
            extra = ["--exact-sample", str(peer_sample)] if method == "exact" else []
            peer = run_process([args.peer, str(ROOT / "benchmarks" / "eap_ig_peer.py"), *common, *extra,
                                "--out", str(peer_out)], None)
            peer_json.write_text(json.dumps(peer))
        entry = {"minineo": ours, "eap_ig": peer}
        if "error" not in ours and peer and "error" not in peer:
            entry["parity"] = compare(method, graph, ours_out, peer_out)
        case["methods"][method] = entry
        print(f"{name} {method}: minineo {ours.get('seconds', ours.get('error'))}"
              + (f", EAP-IG {peer.get('seconds', peer.get('error'))}" if peer else ""), file=sys.stderr, flush=True)
    return case


def combine(paths: list[Path], model_dir: Path | None) -> dict:
    """Several runs' JSON as one report; where a run has no EAP-IG result for a method, the peer's result left in the
    model's work folder by another run of this script (or of eap_ig_peer.py alone) is taken, marked "reused", and
    the parity is computed from both saved score files."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    run = {**runs[0], "cases": [case for r in runs for case in r["cases"]], "combined_from": [str(p) for p in paths],
           "peer": "; ".join(f"{p}: {r['peer']}" for p, r in zip(paths, runs)) + "; EAP-IG results left by earlier runs reused"}
    for case in run["cases"]:
        work = Path(case.get("work") or (model_dir or Path(".")) / f"{case['model']}-files")
        graph = None
        for method, entry in case["methods"].items():
            cached = work / f"eapig-{method}.json"
            if entry["eap_ig"] is None and cached.is_file() and cached.read_text().strip():
                entry["eap_ig"] = {**json.loads(cached.read_text()), "reused": True}
            peer_out, ours_out = work / f"eapig-{method}.pt", work / f"minineo-{method}.pt"
            if (entry["eap_ig"] and "error" not in entry["eap_ig"] and "error" not in entry["minineo"]
                    and peer_out.is_file() and ours_out.is_file()):
                graph = graph or Graph.from_model(minineo.load(case["folder"]))
                entry["parity"] = compare(method, graph, ours_out, peer_out)
    return run


def main(argv: list[str] | None = None) -> dict:
    parser = ScriptParser("benchmarks.discovery", description=description(__doc__))
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny-gpt2, 8 IOI pairs, 3 circuits")
    parser.add_argument("--models", type=comma_list(MODELS), default=None, help=f"comma-separated: {', '.join(MODELS)}")
    parser.add_argument("--methods", type=comma_list(METHODS), default=list(METHODS),
                        help=f"comma-separated: {', '.join(METHODS)} (default: all)")
    parser.add_argument("--pairs", type=int, default=16, help="pairs at the full shapes")
    parser.add_argument("--pos", type=int, default=16, help="tokens per prompt at the full shapes")
    parser.add_argument("--ioi-pairs", type=int, default=64, help="IOI pairs on the zoo models")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--peer", default=PEER_PYTHON, help="EAP-IG venv's python, or 'none'")
    parser.add_argument("--peer-exact-sample", type=int, default=8, help="edges EAP-IG's exact is timed on (full shapes)")
    parser.add_argument("--exact-sample", type=int, default=1,
                        help="at the full shapes, run 1 of every N of minineo's exact forwards per receiver group and "
                             "scale (1: every edge)")
    parser.add_argument("--exact-timeout", type=float, default=3600, help="seconds before minineo's exact is stopped")
    parser.add_argument("--reuse-peer", action="store_true",
                        help="take EAP-IG's results already in --model-dir (from an earlier run) instead of rerunning it")
    parser.add_argument("--in-process", action="store_true", help="minineo's methods in this process (smoke test)")
    parser.add_argument("--model-dir", type=Path, default=None, help="keep the random models here (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    parser.add_argument("--combine", type=Path, nargs="+", help="no measuring: report these runs' JSON together")
    args = parser.parse_args(argv)
    if args.exact_sample < 1:
        parser.error(f"--exact-sample {args.exact_sample}: give a count of 1 or more (1 runs every edge)")
    if args.combine:
        run = combine(args.combine, args.model_dir)
        print_report(run)
        if args.out:
            args.out.write_text(json.dumps(run, indent=1))
        return run
    models = args.models or (["tiny-gpt2"] if args.quick else list(MODELS))
    args.fractions = (0.01, 0.1, 1.0) if args.quick else None
    if args.quick:
        args.ioi_pairs = min(args.ioi_pairs, 8)
    if args.peer == "none":
        args.peer, peer_state = None, "not asked for (--peer none)"
    elif not Path(args.peer).exists():
        peer_state = (f"EAP-IG not measured: no {args.peer} (make the scratch venv as benchmarks/README.md says, "
                      "or set MININEO_EAPIG_PYTHON / --peer)")
        args.peer = None
        print(peer_state, flush=True)
    else:
        peer_state = f"EAP-IG measured with {args.peer}"
    torch.set_num_threads(1)
    run = {"machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": 1,
                       "cpus": os.cpu_count(), "load_average": os.getloadavg()},
           "peer": peer_state, "cases": []}
    with tempfile.TemporaryDirectory() as tmp:
        base = args.model_dir or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        for name in models:
            run["cases"].append(measure_case(name, base, args))
    run["machine"]["load_average_after"] = os.getloadavg()
    print_report(run)
    if args.out:
        args.out.write_text(json.dumps(run, indent=1))
        print(f"wrote {args.out}")
    return run


if __name__ == "__main__":
    run_script(main)
