#!/usr/bin/env bash
# The prepared device run, in one command (benchmarks/README.md, "CUDA"):
#
#   bash benchmarks/device_check.sh            # on the GPU machine: install, device tests, ~7 min benchmark
#   bash benchmarks/device_check.sh --smoke    # anywhere (CI): the same steps on the CPU, tiny shapes, < 1 min
#
# Writes into $OUT when set (the device tool's folder), else benchmarks/device_runs/<UTC time>/:
# log.txt, packages.txt (every installed distribution and version), pip_install.txt, tests.txt, device_run.json, device_run.md.
# Environment: MININEO_DEVICE (default cuda), MININEO_BENCH_BUDGET_S (default 400: the benchmark stops
# starting new parts after this), MININEO_TEST_TIMEOUT_S (default 150), PYTHON (the interpreter every step
# runs: default the active virtual environment's, else python3 / python on PATH; a test passes its own).
# The whole run must fit in the device tool's 10 minutes per command: ~1 min tests + 400 s benchmark + start-up.
# Without a GPU (and without --smoke) the first line says so and nothing runs; no report is written.
set -uo pipefail
cd "$(dirname "$0")/.."

SMOKE=0
if [[ "${1:-}" == "--smoke" || "${MININEO_DEVICE_CHECK_SMOKE:-0}" == "1" ]]; then SMOKE=1; fi
if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"
elif [[ -n "${VIRTUAL_ENV:-}" && -x "$VIRTUAL_ENV/bin/python" ]]; then PY="$VIRTUAL_ENV/bin/python"
else PY="$(command -v python3 || command -v python)"; fi
DEVICE="${MININEO_DEVICE:-cuda}"
BUDGET="${MININEO_BENCH_BUDGET_S:-400}"
TEST_TIMEOUT="${MININEO_TEST_TIMEOUT_S:-150}"
if [[ $SMOKE == 1 ]]; then DEVICE=cpu; BUDGET=600; TEST_TIMEOUT=120; fi  # smoke: every part runs, however busy the CPU
if [[ $DEVICE == cuda* ]]; then
  CUDA="$("$PY" -c 'import torch; print(torch.cuda.is_available())' 2> /dev/null)"
  if [[ $CUDA != True ]]; then
    if [[ -z $CUDA ]]; then WHAT="no GPU check possible: $PY cannot import torch (set PYTHON to the interpreter with torch)"
    else WHAT="no CUDA GPU here ($PY: torch.cuda.is_available() is False)"; fi
    echo "[device_check] $WHAT: nothing run, no report written;" \
         "bash benchmarks/device_check.sh --smoke runs the same steps on the CPU"
    exit 2
  fi
fi
OUT="${OUT:-benchmarks/device_runs/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
log() { echo "[device_check $(date -u +%H:%M:%S)] $*" | tee -a "$OUT/log.txt"; }
log "start: smoke=$SMOKE device=$DEVICE budget=${BUDGET}s out=$OUT python=$PY"

# 1. Install without network over the preinstalled packages (no build isolation: it would fetch setuptools).
#    The smoke run does not install: it would re-point this environment's minineo at this checkout.
if [[ $SMOKE == 1 ]]; then
  log "smoke: not installing; importing minineo from $PWD"
elif "$PY" -m pip install --no-deps --no-build-isolation -e . > "$OUT/pip_install.txt" 2>&1; then
  log "installed: $PY -m pip install --no-deps --no-build-isolation -e ."
else
  log "pip install failed (see pip_install.txt); importing minineo from $PWD instead"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# every installed distribution (importlib.metadata: `pip list` takes ~30 s on a busy machine), and which minineo runs
"$PY" - "$OUT/packages.txt" <<'PY' 2>&1 | tee -a "$OUT/log.txt"
import sys
from importlib import metadata
names = sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions() if d.metadata["Name"])
open(sys.argv[1], "w").write("\n".join(names) + "\n")
import minineo, torch
print("minineo from", minineo.__file__, "| torch", torch.__version__, "| cuda available", torch.cuda.is_available())
PY
if command -v nvidia-smi > /dev/null; then nvidia-smi >> "$OUT/log.txt" 2>&1; fi

# 2. The HF-parity tests on the device (part 2): the `device`-marked tests, float32/float16/bfloat16.
TESTS=(tests/test_hf_agreement.py tests/test_device_parity.py tests/test_cuda_graphs.py)
SELECT=(-m "device and not slow")
if [[ $SMOKE == 1 ]]; then TESTS=(tests/test_device_parity.py); SELECT=(-m "device and not slow" -k "bfloat16 and gpt2"); fi
log "tests: MININEO_TEST_DEVICE=$DEVICE $PY -m pytest -q ${SELECT[*]} ${TESTS[*]}"
MININEO_TEST_DEVICE="$DEVICE" timeout "$TEST_TIMEOUT" "$PY" -m pytest -q -p no:cacheprovider "${SELECT[@]}" "${TESTS[@]}" \
  > "$OUT/tests.txt" 2>&1
TESTS_RC=$?
# pytest's own summary line ("3 passed in 9.1s"); a crash or a kill leaves none, and the summary says that instead
LAST="$(grep -E '[0-9]+ (passed|failed|errors?|skipped|deselected)|no tests ran' "$OUT/tests.txt" | tail -n 1)"
SUMMARY="${LAST:-no pytest summary line (see tests.txt)} (exit $TESTS_RC$([[ $TESTS_RC == 124 ]] && echo ': timed out'))"
log "tests: $SUMMARY"

# 3. The benchmark (part 4), time-boxed; it writes device_run.json and device_run.md.
ARGS=(--device "$DEVICE" --out "$OUT" --budget-s "$BUDGET" --tests "$SUMMARY")
if [[ $SMOKE == 1 ]]; then ARGS+=(--smoke); fi
log "benchmark: $PY -m benchmarks.device ${ARGS[*]}"
rm -f "$OUT/device_run.md"  # a report from an earlier run in the same folder must not pass for this one's
"$PY" -m benchmarks.device "${ARGS[@]}" 2>&1 | tee "$OUT/benchmark.txt"
BENCH_RC=${PIPESTATUS[0]}
if [[ -s "$OUT/device_run.md" ]]; then REPORT="report: $OUT/device_run.md"
else REPORT="no report written (the benchmark exited $BENCH_RC; see $OUT/benchmark.txt)"; fi
log "done: tests exit $TESTS_RC, benchmark exit $BENCH_RC; $REPORT"
if [[ $BENCH_RC == 0 && ! -s "$OUT/device_run.md" ]]; then BENCH_RC=1; fi
exit $(( BENCH_RC != 0 ? BENCH_RC : TESTS_RC ))
