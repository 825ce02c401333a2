#!/usr/bin/env bash
# One call on a GPU machine (torch 2.11 + Triton, Python 3.12, no Rust, no internet), from the
# repository root, with dist/gpu-carry/ made by benches/gpu/prepare.sh (see NOTES.md):
#   1. installs the carried wheels,  2. runs the gpu-marked kernel tests with compiled kernels,
#   3. times lamforge eager / fused / fused + torch.compile and deepmd-kit, printing one table
#      last.  Budget: under 8 minutes; each stage has its own timeout so the table always prints.
set -uo pipefail
cd "$(dirname "$0")/../.."
carry=${CARRY:-dist/gpu-carry}
results=${RESULTS:-${OUT:-/tmp}/gpu-timings.json}
started=$(date +%s)
elapsed() { echo "[run.sh +$(( $(date +%s) - started ))s] $*"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__,
           'cuda', torch.version.cuda, torch.cuda.get_device_name())"

elapsed "installing carried wheels"
python -m pip install --quiet --no-index --no-deps "$carry"/wheels/*.whl \
    || { echo "wheel install failed"; exit 1; }
# The installed package must be the one under test, with its Rust core.
(cd /tmp && python -c "import lamforge, lamforge._core, lamforge.kernels; print('lamforge', lamforge.__file__)") \
    || exit 1

elapsed "gpu tests (compiled Triton kernels on CUDA)"
# The kernel tests run on CUDA with compiled kernels (no interpreter), plus the gpu-marked ones.
LAMFORGE_KERNELS_COMPILED=1 timeout 150 python -m pytest tests/unit/kernels -q -p no:cacheprovider \
    -m "gpu or not slow" --timeout=120 -x || echo "GPU TESTS FAILED (see above)"

elapsed "timings"
timing() {  # timeout per group so that a slow case cannot eat the whole budget
    local limit=$1 name=$2
    shift 2
    timeout "$limit" python benches/gpu/timing.py --device cuda --data "$carry/data" \
        --warmup 2 --repeat 5 --json "$results.$name.json" "$@" > "/tmp/timing-$name.log" 2>&1 \
        || echo "timing group $name stopped (exit $?); its finished rows are in /tmp/timing-$name.log"
    grep -E '^(\{|Traceback|[A-Za-z]+Error)' "/tmp/timing-$name.log" | tail -n 5
}
timing 110 small --presets dpa2_small dpa2_medium --systems water192 water1536 mptrj32 \
    --dtypes float32 float64 --implementations eager fused deepmd
timing 100 large --presets dpa2_medium dpa2_small --systems water12288 \
    --dtypes float32 float64 --implementations eager fused deepmd
timing 120 compile --presets dpa2_medium --systems water1536 water12288 --dtypes float32 \
    --implementations eager compile
elapsed "done"
# One table last, from the rows every group finished (a group cut by its timeout keeps its log).
for name in small large compile; do
    [ -f "$results.$name.json" ] || python - "$name" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(f"/tmp/timing-{sys.argv[1]}.log") if l.startswith("{")]
print(json.dumps(rows), file=open(f"/tmp/timing-{sys.argv[1]}.partial.json", "w"))
PY
done
python benches/gpu/timing.py --table-from "$results".{small,large,compile}.json \
    /tmp/timing-{small,large,compile}.partial.json
