#!/usr/bin/env bash
# The GPU checks, for a machine with CUDA: the CUDA tests (skipped on CPU-only machines, CI included) and the GPU rows
# of the CODI and LCA speed benches. Each part has its own time limit and log, so a slow part leaves the others'
# results. Usage: bench/device_checks.sh OUT_DIR [PYTHON]
#   OUT_DIR gets gpu.txt, cuda_tests.log, codi_speed.{json,md,log}, lca_speed.{json,md,log}
# The interpreter needs the project's requirements (a CUDA build of torch); on a machine without package registries,
# carry the missing ones as wheels and put them on PYTHONPATH first.
set -u
OUT=${1:?usage: bench/device_checks.sh OUT_DIR [PYTHON]}
PY=${2:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.version.cuda)" \
    >> "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

CUDA_TESTS=(tests/modules/test_mixers.py tests/learners/test_omar_omiga.py tests/learners/test_misodice.py
            tests/learners/test_omapl.py tests/augmenters/test_codi_stitching.py tests/augmenters/test_codi_diffusion.py
            tests/augmenters/test_codi_dynamics.py tests/run/test_augment.py tests/shapers/test_lca_runs.py)
echo "== CUDA tests"
timeout "${CUDA_TESTS_S:-240}" "$PY" -m pytest -p no:cacheprovider -q -rA -k cuda "${CUDA_TESTS[@]}" \
    > "$OUT/cuda_tests.log" 2>&1
echo "exit $?" >> "$OUT/cuda_tests.log"
grep -E "^(PASSED|FAILED|ERROR|SKIPPED)|^exit" "$OUT/cuda_tests.log"

echo "== bench/codi_speed.py on cuda"
timeout "${CODI_S:-150}" "$PY" bench/codi_speed.py --device cuda --presets cpu paper --threads 4 --budget 10 \
    --out "$OUT" > "$OUT/codi_speed.log" 2>&1
echo "exit $?" | tee -a "$OUT/codi_speed.log"

echo "== bench/lca_speed.py potentials (CPU and CUDA rows)"
timeout "${LCA_S:-120}" "$PY" bench/lca_speed.py --parts potentials --threads 4 --out "$OUT" \
    > "$OUT/lca_speed.log" 2>&1
echo "exit $?" | tee -a "$OUT/lca_speed.log"
