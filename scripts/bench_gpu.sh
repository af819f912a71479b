#!/usr/bin/env bash
# Every benchmark of the GPU speed targets in one run (under 8 minutes on one H100), gancollapse beside the
# seeds' own training loops, written as one markdown table with the GPU's name, torch/CUDA versions and date:
#
#   MaEM-GAN full step, DCGAN-32, batch 64 and 256   scripts/bench_train.py --preset maem   (eager, then
#                                                     compile=reduce-overhead + channels_last; the faster counts)
#     seed: github.com/HaozheLiu-ST/MEE train.py      scripts/bench_gpu.py seed-maem
#   MaEM entropy term, S = 65,536, d = 64, B = 64     scripts/bench_maem.py entropy  (seed: its broadcast form)
#   FID of 50,000 generated images, Inception 299²    scripts/bench_gpu.py fid
#   toy ring-8, 10k G steps                           scripts/bench_toy.py (compile=reduce-overhead on a GPU)
#     seed: github.com/ChristophReich1996/Mode_Collapse main.py   scripts/bench_gpu.py seed-toy
#
# Usage:
#   scripts/bench_gpu.sh [--quick] [--out FILE.md]      # default: outputs/bench_gpu.md (+ FILE.json)
#   DEVICE=cpu scripts/bench_gpu.sh --quick             # tiny versions of every case on the CPU (smoke test)
#
# Environment: DEVICE (cuda | cpu; default cuda when available), PYTHON (default .venv/bin/python, else
# python3), BUDGET_S (seconds for all cases, default 450; a case that no longer fits is reported "not
# measured (time budget)"), BENCH_NO_CLONE=1 (do not fetch the seeds), MEE_URL / MODE_COLLAPSE_URL (where to
# clone the seeds from). The seeds are cloned into a temporary folder, never into the project; when that
# fails (no network) their column says "not measured".
set -u

QUICK=0
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if [ -z "${DEVICE:-}" ]; then
  DEVICE=$("$PYTHON" -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
fi
OUT="${OUT:-outputs/bench_gpu.md}"
mkdir -p "$(dirname "$OUT")"
BUDGET_S="${BUDGET_S:-450}"
MEE_URL="${MEE_URL:-https://github.com/HaozheLiu-ST/MEE}"
MODE_COLLAPSE_URL="${MODE_COLLAPSE_URL:-https://github.com/ChristophReich1996/Mode_Collapse}"

if [ "$QUICK" = 1 ]; then
  MODE=quick
  TRAIN_STEPS=2; TRAIN_WARMUP=2; SEED_STEPS=2; SEED_WARMUP=1
  ENT_SIZES=1024; ENT_REPS=3
  FID_N=16; FID_NREAL=16; FID_BATCH=16
  TOY_STEPS=60; SEED_TOY_STEPS=40
  COMPILE=0
else
  MODE=full
  TRAIN_STEPS=300; TRAIN_WARMUP=30; SEED_STEPS=100; SEED_WARMUP=10
  ENT_SIZES=65536; ENT_REPS=50
  FID_N=50000; FID_NREAL=1797; FID_BATCH=500
  TOY_STEPS=10000; SEED_TOY_STEPS=2000
  COMPILE=1
fi
if [ "$DEVICE" != cuda ]; then
  COMPILE=0  # inductor on a CPU takes minutes per net and CUDA graphs need a GPU
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench_gpu.XXXXXX")"
RES="$WORK/results"
mkdir -p "$RES"
cleanup() {
  for pid in ${CLONE_PIDS:-}; do kill "$pid" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT
START=$(date +%s)
echo "bench_gpu: device=$DEVICE mode=$MODE python=$PYTHON work=$WORK"

# --- the seeds, fetched in the background while our cases run
CLONE_PIDS=""
clone() {  # clone NAME URL
  if [ "${BENCH_NO_CLONE:-0}" = 1 ]; then
    echo "not fetched (BENCH_NO_CLONE=1)" > "$WORK/$1.clone_err"
    return
  fi
  ( GIT_TERMINAL_PROMPT=0 timeout 90 git clone -q --depth 1 "$2" "$WORK/$1" > "$WORK/$1.clone_log" 2>&1 \
      || echo "git clone failed (no network?)" > "$WORK/$1.clone_err" ) &
  CLONE_PIDS="$CLONE_PIDS $!"
}
clone MEE "$MEE_URL"
clone Mode_Collapse "$MODE_COLLAPSE_URL"

wait_clone() {  # wait_clone NAME -> 0 when the clone is there
  local waited=0
  while [ ! -d "$WORK/$1/.git" ] && [ ! -f "$WORK/$1.clone_err" ] && [ $waited -lt 100 ]; do
    sleep 1; waited=$((waited + 1))
  done
  [ -d "$WORK/$1/.git" ] && [ ! -f "$WORK/$1.clone_err" ]
}

# run_case NAME TIMEOUT_S COMMAND...: the command writes $RES/NAME.json; on failure $RES/NAME.err says why
run_case() {
  local name="$1" limit="$2"
  shift 2
  local left=$((BUDGET_S - ($(date +%s) - START)))
  if [ "$left" -lt 20 ]; then
    echo "time budget" > "$RES/$name.err"
    echo "[$name] skipped: time budget spent"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "[$name] (limit ${limit}s) $*"
  local t0=$(date +%s)
  timeout "$limit" "$@" > "$WORK/$name.log" 2>&1
  local rc=$?
  if [ $rc -ne 0 ] || [ ! -f "$RES/$name.json" ]; then
    if [ $rc -eq 124 ]; then
      echo "timeout after ${limit}s" > "$RES/$name.err"
    else
      { echo "exit $rc: "; grep -v -i "warn" "$WORK/$name.log" | tail -n 1; } | tr -d '\n' > "$RES/$name.err"
    fi
    echo "[$name] FAILED ($(cat "$RES/$name.err")); last lines of its log:"
    tail -n 5 "$WORK/$name.log"
  else
    echo "[$name] done in $(( $(date +%s) - t0 ))s"
  fi
}

seed_case() {  # seed_case NAME CLONE TIMEOUT_S COMMAND...
  local name="$1" repo="$2" limit="$3"
  shift 3
  if wait_clone "$repo"; then
    run_case "$name" "$limit" "$@"
  else
    cp "$WORK/$repo.clone_err" "$RES/$name.err" 2>/dev/null || echo "seed not fetched" > "$RES/$name.err"
    echo "[$name] not measured: $(cat "$RES/$name.err")"
  fi
}

# --- the cases, cheapest and most important first; the compiled step (minutes of compilation) last
run_case maem_step 180 "$PYTHON" scripts/bench_train.py --preset maem --device "$DEVICE" --batches 64 256 \
  --steps "$TRAIN_STEPS" --warmup "$TRAIN_WARMUP" --json "$RES/maem_step.json"
for B in 64 256; do
  seed_case "seed_maem_b$B" MEE 120 "$PYTHON" scripts/bench_gpu.py seed-maem --repo "$WORK/MEE" --device "$DEVICE" \
    --batch "$B" --steps "$SEED_STEPS" --warmup "$SEED_WARMUP" --json "$RES/seed_maem_b$B.json"
done
run_case entropy 120 "$PYTHON" scripts/bench_maem.py entropy --device "$DEVICE" --sizes "$ENT_SIZES" --dims 64 \
  --reps "$ENT_REPS" --json "$RES/entropy.json"
run_case fid 150 "$PYTHON" scripts/bench_gpu.py fid --device "$DEVICE" --n "$FID_N" --n-real "$FID_NREAL" \
  --batch-size "$FID_BATCH" --json "$RES/fid.json"
TOY_COMPILE=()
[ "$COMPILE" = 1 ] && TOY_COMPILE=(--compile reduce-overhead)
run_case toy 150 "$PYTHON" scripts/bench_toy.py --device "$DEVICE" --steps "$TOY_STEPS" --repeats 1 --no-plain \
  ${TOY_COMPILE[@]+"${TOY_COMPILE[@]}"} --json "$RES/toy.json"
seed_case seed_toy Mode_Collapse 90 "$PYTHON" scripts/bench_gpu.py seed-toy --repo "$WORK/Mode_Collapse" \
  --device "$DEVICE" --steps "$SEED_TOY_STEPS" --json "$RES/seed_toy.json"
if [ "$COMPILE" = 1 ]; then
  run_case maem_step_compiled 300 "$PYTHON" scripts/bench_train.py --preset maem --device "$DEVICE" --batches 64 256 \
    --steps "$TRAIN_STEPS" --warmup "$TRAIN_WARMUP" --compile reduce-overhead --only-compiled --channels-last \
    --json "$RES/maem_step_compiled.json"
else
  echo "not run (compile needs a GPU run in full mode)" > "$RES/maem_step_compiled.err"
fi

"$PYTHON" scripts/bench_gpu.py report --dir "$RES" --out "$OUT" --mode "$MODE" || exit 1
echo "bench_gpu: report in $OUT ($(( $(date +%s) - START ))s)"
