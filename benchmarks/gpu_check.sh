#!/usr/bin/env bash
# One short GPU session, most important first (docs/benchmarks.md, "On a GPU"), in at most 9 minutes so that a
# second try fits a session's 15: VCA's fused kernels (the one-kernel core and the fused epilogues) compiled for
# the GPU and compared with the reference path, then the report (training step eager and compiled, the attention
# module, sampling; VCA's three kernel paths against MHSA), the kernels' registers, and the end-to-end check
# (data to FID) in the time left. Every result lands in $OUT as it is made, so a run cut short keeps what it did.
# Run from the repository root on the GPU machine:
#     bash benchmarks/gpu_check.sh                # writes $OUT (default ./gpu_check/)
#     bash benchmarks/gpu_check.sh --dry-run      # the same plan on the CPU at tiny sizes (Triton interpreted)
# Missing packages (diffusers, torch-fidelity on a machine without network) install from wheels in .whl/ if present.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_check}"
mkdir -p "$OUT"
DRY_RUN=()
[[ "${1:-}" == "--dry-run" ]] && DRY_RUN=(--dry-run)
PYTHON="${PYTHON:-python3}"
[[ -x .venv/bin/python && ${#DRY_RUN[@]} -gt 0 ]] && PYTHON=.venv/bin/python
SLOW=1
[[ ${#DRY_RUN[@]} -gt 0 ]] && SLOW=4  # a dry run's budgets are the GPU's times 4, as gpu_report.py's
DEADLINE=$((SECONDS + SLOW * ${GPU_CHECK_BUDGET_S:-540}))  # the whole check's budget
left() { local rest=$((DEADLINE - SECONDS)) want=$((SLOW * $1)); echo $((rest < want ? rest : want)); }

if compgen -G ".whl/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
        > "$OUT/install.log" 2>&1 || echo "wheel install failed: see $OUT/install.log"
    export PYTHONPATH="/tmp/site:$PWD"
else
    export PYTHONPATH="$PWD"
fi

{ date; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null;
  "$PYTHON" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } \
    > "$OUT/machine.txt" 2>&1

# 1. Both fused paths against the float64 reference, forward and every gradient, float32 and bf16 (~1 min).
timeout "$(left 120)" "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_vca_fused.py > "$OUT/test_vca_fused.txt" 2>&1
echo "test_vca_fused: exit $? (see $OUT/test_vca_fused.txt)"

# 2. The report: training step (eager and compiled; VCA's one-kernel core, fused epilogues and torch paths against
#    MHSA; compiled rows take the first), profile, attention module, sampling, Inception; each under its budget.
REPORT_S=$(left 300)
timeout $((REPORT_S + 20)) "$PYTHON" benchmarks/gpu_report.py --out "$OUT/gpu_report.md" --budget-s $((REPORT_S / SLOW)) \
    --vca-kernels triton-core triton torch "${DRY_RUN[@]}" > /dev/null 2> "$OUT/gpu_report.stderr"
echo "gpu_report: exit $? (see $OUT/gpu_report.md)"

# 3. Registers and spills of the kernels as this machine's Triton compiles them (~30 s).
timeout "$(left 60)" "$PYTHON" benchmarks/kernel_resources.py > "$OUT/kernel_resources.md" 2>&1
echo "kernel_resources: exit $?"

# 4. End to end in the time left (it needs about 6 min; skipped under 2): images -> latents -> DiT-S/2-VCA trained
#    in bf16 with an evaluation, stopped and resumed -> samples -> FID, then SiT-S/2-VCA; a log per stage in
#    $OUT/gpu_e2e_logs/. The work folder is temporary. E2E_SAMPLE_ARGS is appended to sample.py's command.
E2E_S=$(left 400)
if (( E2E_S >= 120 * SLOW )); then
    timeout $((E2E_S + 20)) "$PYTHON" benchmarks/gpu_e2e.py --out "$OUT/gpu_e2e.md" --budget-s "$E2E_S" \
        --extra-sample-args "${E2E_SAMPLE_ARGS:-}" "${DRY_RUN[@]}" > /dev/null 2> "$OUT/gpu_e2e.stderr"
    echo "gpu_e2e: exit $? (see $OUT/gpu_e2e.md)"
else
    echo "gpu_e2e: skipped, ${E2E_S} s left of the check's budget (run benchmarks/gpu_e2e.py alone)"
fi
