#!/usr/bin/env bash
# Check the device-relevant parts of workbench on a GPU machine and write a short report.
#
#   bash scripts/gpu_check.sh [--quick] [--device cuda|cpu] [--wheels DIR] [--out DIR]
#
# Runs (each step with its own time limit; a failed or skipped step does not stop the others):
#   1. the device-relevant tests (CUDA legs of the Laplace core, laplace-torch compat, SpaM,
#      equivariance, TSMixer, video training/resume, LA-NAM, the estimator conventions);
#   2. the benchmarks with --device: Laplace core, forecast baselines, SpaM, video, LA-NAM
#      (10 vs 100 features);
# and writes OUT/report.md (one line per step: status, seconds, the log's last line) plus one log
# per step. Made for a minimal GPU machine (Python, torch with CUDA, numpy, scipy, pandas,
# scikit-learn, xarray, pytest): what the project needs beyond that (zarr, dask, ...) is installed
# with --no-deps from the wheels in --wheels DIR (default: .whl/) into a private folder put on
# PYTHONPATH; steps whose packages are still missing are reported as skipped, not failed.
# --device cpu runs the same steps on the CPU (to try the script, or for the CPU figures).
set -u
QUICK=0; DEVICE=cuda; WHEELS=.whl; OUT_DIR="${OUT:-gpu_check_out}"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --device) DEVICE="$2"; shift ;;
    --wheels) WHEELS="$2"; shift ;;
    --out) OUT_DIR="$2"; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
mkdir -p "$OUT_DIR"
REPORT="$OUT_DIR/report.md"
SITE="$(mktemp -d)/site"
if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install --quiet --no-deps --no-index --target "$SITE" "$WHEELS"/*.whl \
    > "$OUT_DIR/wheels.log" 2>&1 || echo "installing wheels failed (see wheels.log)" >> "$OUT_DIR/wheels.log"
fi
export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export WORKBENCH_DATA_DIR="${WORKBENCH_DATA_DIR:-$(mktemp -d)/data}"

{
  echo "# workbench GPU check ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  "$PY" - "$DEVICE" <<'PYEOF'
import importlib, sys
import torch
dev = sys.argv[1]
name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
print(f"- python {sys.version.split()[0]}, torch {torch.__version__}, device asked: {dev}, GPU: {name}")
missing = []
for mod in ("zarr", "dask", "numba", "panel", "hypothesis", "xdist"):
    try:
        importlib.import_module(mod)
    except Exception:
        missing.append(mod)
print(f"- missing packages (their tests skip): {', '.join(missing) or 'none'}")
PYEOF
  echo
  echo "| step | status | seconds | last line of its log |"
  echo "|---|---|---|---|"
} > "$REPORT"

if [ "$DEVICE" = cuda ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "| (all) | skipped | 0 | torch sees no CUDA device; rerun with --device cpu for CPU figures |" >> "$REPORT"
  cat "$REPORT"; exit 0
fi

step() {  # step NAME LIMIT_S COMMAND...
  local name="$1" limit="$2"; shift 2
  local log="$OUT_DIR/$name.log" t0 rc status last
  t0=$(date +%s)
  timeout "$limit" "$@" > "$log" 2>&1; rc=$?
  case $rc in
    0) status=ok ;;
    124) status="timed out (${limit} s)" ;;
    *) if grep -qE "No module named '(zarr|dask|numcodecs|panel|numba|hypothesis|interpret|pygam|xdist)|unrecognized arguments" "$log"; then status="skipped (rc $rc)"; else status="FAILED (rc $rc)"; fi ;;
  esac
  last="$(grep -v '^\s*$' "$log" | tail -n 1 | cut -c1-160 | tr '|' '/')"
  echo "| $name | $status | $(( $(date +%s) - t0 )) | $last |" >> "$REPORT"
}

XDIST=""
if "$PY" -c "import xdist" 2>/dev/null; then XDIST="-n 4 --dist loadfile"; fi
TESTS=(tests/laplace/test_devices.py tests/laplace/test_compat_devices.py tests/sparsify/test_device.py
       tests/equivariance/test_device.py tests/forecast/test_tsmixer.py tests/test_estimator_conventions.py)
for t in tests/forecast/test_video_training.py tests/forecast/test_video_throughput.py tests/forecast/test_fuzz_data.py \
         tests/forecast/test_video_uncertainty.py tests/nam/test_estimators.py; do
  [ -e "$t" ] && TESTS+=("$t")
done
if [ $QUICK = 1 ]; then
  step tests_device 420 "$PY" -m pytest -q -p no:cacheprovider -x $XDIST "${TESTS[@]}"
else
  step tests_device 420 "$PY" -m pytest -q -p no:cacheprovider $XDIST "${TESTS[@]}"
  step tests_all 900 "$PY" -m pytest -q -p no:cacheprovider $XDIST tests --ignore=tests/ui
fi

R=3; STEPS=400; NEUR=20000; MAXS=2000
if [ $QUICK = 1 ]; then R=1; STEPS=50; NEUR=2000; MAXS=100; fi
step bench_laplace 300 "$PY" benchmarks/bench_laplace.py --device "$DEVICE" --repeats $R
step bench_forecast 300 "$PY" benchmarks/bench_forecast_baselines.py --device "$DEVICE" --neurons $NEUR \
  --max-steps $MAXS --check-every 50 --contexts 4 --repeats 1
step bench_sparsify 300 "$PY" benchmarks/bench_sparsify.py --structured-only --tasks breast_cancer \
  --seeds 1 --device "$DEVICE"
step bench_video 300 "$PY" benchmarks/bench_video.py --device "$DEVICE" --steps $STEPS
if [ $QUICK = 0 ]; then  # release-like s2 volume: float32 vs bf16 steps/s, peak memory, pipeline samples/s
  step bench_video_s2 420 "$PY" benchmarks/bench_video.py --size s2 --device "$DEVICE" --steps 30 --warmup 3 \
    --batch-size 4 --input-downsample 2 --precision float32 bf16 --workers 8
fi
step bench_lanam_features 300 "$PY" benchmarks/bench_lanam.py --skip synthetic cv --device "$DEVICE"

cat "$REPORT"
