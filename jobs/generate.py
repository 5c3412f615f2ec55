"""Run ``factory generate`` as a Ray job on the cluster it is submitted to.

    ray job submit --working-dir . -- python jobs/generate.py --n 50000 --out /shared/pairs.zarr \
        --model /shared/models/model.safetensors --sampler dpmpp --steps 20 --batch-size 64

Same options as ``factory generate`` (``python jobs/generate.py --help``), with
``--address auto`` implied: the driver joins the job's cluster. The store and model
paths must be reachable from every node (a shared filesystem). Resubmitting the same
job after a failure resumes the store; the exit status is non-zero when shards failed.
"""
from __future__ import annotations

import sys

from factory.cli import app


def main(argv: list[str]) -> None:
    explicit = any(a == "--address" or a.startswith("--address=") for a in argv)
    app(["generate", *([] if explicit else ["--address", "auto"]), *argv], prog_name="jobs/generate.py")


if __name__ == "__main__":
    main(sys.argv[1:])
