"""Train CARE on a factory store as a Ray job: a thin entry point over :mod:`factory.care` (``factory care train``).

    python jobs/train_care.py --store pairs.zarr --steps 2000 --out care.safetensors          # here, CPU or GPU
    ray job submit --working-dir . -- python jobs/train_care.py --store /shared/pairs.zarr \\
        --out /shared/care.safetensors --steps 20000 --address auto                          # one GPU worker

Everything (the network, the shared input normalization, resumable streamed training with
held-out PSNR and FRC, the checkpoint format) lives in ``factory.care``; this script only parses
the options and, with ``--address``, runs the training on the cluster: one Ray task (one GPU when
the cluster has one), or with ``--ray-workers N`` Ray Train's ``TorchTrainer`` with N workers
(DDP: gradients averaged; every worker streams its own whole shards of the store through
``factory.data``, rank 0 validates and writes; each rank writes ``<out>.rank<r>.json``: the shards
it trained on). Rerun the same command to resume from ``<out>.state.pt`` (a path every worker reads).

    ray job submit --working-dir . -- python jobs/train_care.py --store s3://bucket/pairs.zarr \
        --out /shared/care.safetensors --address auto --ray-workers 4
"""
from __future__ import annotations

import argparse
import json
import sys

from factory.care.network import NetworkConfig
from factory.care.train import CareTrainConfig, train
from factory.care.transform import InputNorm
from factory.errors import FactoryError


def parse(argv: list[str] | None = None) -> tuple[CareTrainConfig, str | None]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True, help="factory store (.zarr); on a cluster, a path every node reads")
    ap.add_argument("--out", default="care.safetensors", help="model to write (.safetensors); <out>.state.pt resumes")
    ap.add_argument("--steps", type=int, default=2000, help="total optimizer steps")
    ap.add_argument("--batch-size", type=int, default=16, help="pairs per step")
    ap.add_argument("--lr", type=float, default=4e-4, help="Adam learning rate (cosine decay to 0)")
    ap.add_argument("--depth", type=int, default=2, help="U-Net levels")
    ap.add_argument("--channels", type=int, default=16, help="top-level feature maps")
    ap.add_argument("--normalize", choices=[n.value for n in InputNorm], default=InputNorm.percentile.value,
                    help="LR input normalization (factory.care.transform)")
    ap.add_argument("--val-shards", type=int, default=1, help="last committed shards held out")
    ap.add_argument("--val-every", type=int, default=250, help="steps between held-out scores")
    ap.add_argument("--checkpoint-every", type=int, default=250, help="steps between saved states")
    ap.add_argument("--where", default=None, help="SQL condition on manifest columns for the training pairs")
    ap.add_argument("--seed", type=int, default=0, help="weights, data order and augmentation seed")
    ap.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    ap.add_argument("--shuffle-buffer", type=int, default=256, help="samples in the shuffle buffer")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--max-minutes", type=float, default=None, help="stop cleanly after this long; rerun to continue")
    ap.add_argument("--ray-workers", type=int, default=0, help="with --address: Ray Train TorchTrainer workers (DDP); "
                                                               "0 = one Ray task")
    ap.add_argument("--address", default=None, help="Ray address ('auto', ray://host:port, or 'local'): run as one Ray task "
                                                    "with a GPU when the cluster has one. (default: in this process)")
    a = ap.parse_args(argv)
    cfg = CareTrainConfig(store=a.store, out=a.out, steps=a.steps, batch_size=a.batch_size, lr=a.lr,
                          network=NetworkConfig(a.depth, a.channels), norm=InputNorm(a.normalize), val_shards=a.val_shards,
                          val_every=a.val_every, checkpoint_every=a.checkpoint_every, where=a.where, seed=a.seed,
                          shuffle_buffer=a.shuffle_buffer, num_workers=a.num_workers, device=a.device, threads=a.threads,
                          max_minutes=a.max_minutes)
    if a.ray_workers < 0 or (a.ray_workers and a.address is None):
        raise FactoryError("--ray-workers needs --address (auto, ray://host:port or local) and a count >= 1.")
    return cfg, a.address, a.ray_workers


def run(cfg: CareTrainConfig) -> dict:
    r = train(cfg)
    return {"checkpoint": str(r.checkpoint), "step": r.step, "loss": r.loss, "metrics": r.metrics,
            "samples_per_s": r.samples_per_s, "finished": r.finished, "rank": r.rank, "world_size": r.world_size,
            "rank_shards": list(r.rank_shards)}


def main(argv: list[str] | None = None) -> dict:
    cfg, address, ray_workers = parse(argv)
    if address is None:
        return run(cfg)
    import ray

    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address)
    if ray_workers:
        from factory.care.ray_train import ray_train

        result = ray_train(cfg, ray_workers)
        print(json.dumps(result))
        return result
    gpus = ray.cluster_resources().get("GPU", 0)
    remote = ray.remote(max_retries=0)(run).options(**({"num_gpus": 1} if gpus >= 1 else {"num_cpus": 1}))
    result = ray.get(remote.remote(cfg))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    try:
        main()
    except FactoryError as exc:  # one sentence, no traceback
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
