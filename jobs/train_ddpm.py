"""Train a DDPM as a Ray job on one GPU worker (CPU worker if the cluster has no GPU).

    ray job submit --working-dir . -- python jobs/train_ddpm.py \
        --data /shared/sr_images/ --out /shared/models/model.safetensors --preset paper --steps 200000 --bf16

Paths must be reachable from the worker (a shared filesystem). The worker resumes from
``<out>.state.pt`` when it exists, so resubmitting the job after a failure continues training.
"""
from __future__ import annotations

import argparse
import dataclasses

import ray

from factory.diffusion.train import TrainConfig, train


@ray.remote(max_retries=0)
def _train_remote(cfg: TrainConfig) -> str:
    return str(train(cfg))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--address", default="auto", help="Ray address; 'local' starts a local Ray.")
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("data", "out", "card") or f.type not in ("int", "float", "str", "bool", "int | None", "float | None", "str | None"):
            continue
        kind = {"int": int, "float": float, "str": str}.get(f.type.split(" |")[0], str)
        if f.type == "bool":
            ap.add_argument(f"--{f.name.replace('_', '-')}", action="store_true")
        else:
            ap.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default)
    args = vars(ap.parse_args())
    address = args.pop("address")
    ray.init(address=None if address == "local" else address)
    gpus = ray.cluster_resources().get("GPU", 0)
    cfg = TrainConfig(**args)
    opts = {"num_gpus": 1} if gpus >= 1 else {"num_cpus": max(1, int(ray.cluster_resources().get("CPU", 1)) // 2)}
    print(ray.get(_train_remote.options(**opts).remote(cfg)))


if __name__ == "__main__":
    main()
