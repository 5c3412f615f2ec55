#!/usr/bin/env bash
# The GPU check: one short script (under 8 minutes on one H200) that a session with a lent GPU runs as is.
#
#   here (with a registry, once):   bash benchmarks/gpu_wheels.sh        # the wheels the GPU image lacks -> .whl/
#   on the GPU machine:             bash benchmarks/gpu_check.sh         # device tool: carry [".whl"], OUT=$OUT
#
# 1. the environment (torch, CUDA, GPU); 2. the tests marked gpu (sampling fp32/bf16 vs CPU, a training step,
# generate with a GPU actor on a real Ray, restore on the GPU); 3. the paper preset at 256x256 with
# DPM-Solver++ 20 steps in fp32 and bf16: images/s and GFLOP/s against the GPU's matmul peak measured in
# the same run; 4. `factory generate --n 512` end to end on the GPU: samples/s and generate / bare sampler.
# Results go to $OUT (default runs/gpu_check): env.txt, pytest_gpu.txt, sampling.txt, pipeline.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .whl ]; then  # no registry on the GPU machine: the project's missing dependencies travel as wheels
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/factory-site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/factory-site"
fi
export RAY_TMPDIR=$(mktemp -d /tmp/rgXXXX); mkdir -p "$RAY_TMPDIR/ray"
status=0
echo "== 1. environment" | tee "$OUT/env.txt"
$PY -c "import torch, factory; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" \
    2>&1 | tee -a "$OUT/env.txt" || status=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$OUT/env.txt"
HAVE_RAY=$($PY -c "import ray, duckdb" >/dev/null 2>&1 && echo 1 || echo 0)
echo "== 2. tests marked gpu" | tee "$OUT/pytest_gpu.txt"
if [ "$HAVE_RAY" = 1 ]; then SELECT=(); else
    SELECT=(-k "not generate"); echo "Ray or DuckDB is not installed here: the generate-on-GPU test is not run" | tee -a "$OUT/pytest_gpu.txt"; status=1; fi
timeout 240 $PY -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider "${SELECT[@]}" 2>&1 | tee -a "$OUT/pytest_gpu.txt" || status=1
echo "== 3. paper preset 256x256, DPM-Solver++ 20 steps, fp32 and bf16" | tee "$OUT/sampling.txt"
timeout 150 $PY benchmarks/gpu_sampling.py --batch 16 --size 256 --steps 20 --repeats 3 2>&1 | tee -a "$OUT/sampling.txt" || status=1
echo "== 4. factory generate --n 512 end to end on the GPU" | tee "$OUT/pipeline.txt"
if [ "$HAVE_RAY" = 1 ]; then
    timeout 150 $PY benchmarks/pipeline.py --gpu --n 512 --steps 20 --batch 64 --shard 64 --workers 1 --hr-size 256 2>&1 \
        | tee -a "$OUT/pipeline.txt" || status=1
else
    echo "Ray or DuckDB is not installed here (their wheels exceed the device tool's 64 MiB carry): not run" | tee -a "$OUT/pipeline.txt"
    status=1
fi
exit $status
