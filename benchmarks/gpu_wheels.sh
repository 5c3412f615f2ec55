#!/usr/bin/env bash
# Download, on a machine WITH a package registry, the wheels that benchmarks/gpu_check.sh needs on a GPU
# machine WITHOUT one (this project's lent H200: its image has torch, numpy, pyarrow, tensorstore, xxhash,
# typer, rich, scipy, scikit-image, tifffile, safetensors, fsspec, pytest, ... but not these).
# They land in .whl/ (git-ignored through .git/info/exclude); carry .whl to the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PLATFORMS="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLATFORMS -d .whl \
    zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 \
    jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
# Not ray (a 79 MB wheel) nor duckdb (25 MB): the device tool carries at most 64 MiB with the repository.
# On a GPU machine without Ray, gpu_check.sh runs everything but the two Ray checks and says so.
ls -la .whl
