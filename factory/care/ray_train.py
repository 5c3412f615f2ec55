"""CARE training on Ray Train: ``TorchTrainer`` with N workers (DDP; CPU gloo or one GPU each).

Each worker runs :func:`factory.care.train.train` with torch.distributed set up by Ray Train: the
store's whole shards are split over the ranks by ``factory.data`` (every rank its own), gradients are
averaged, every rank stops an epoch after the fewest batches any rank has, and rank 0 validates and
writes the model and the resumable state. Each rank writes ``<out>.rank<r>.json`` (its rank, steps
and the shards it trained on). The output path must be reachable by every worker (a shared disk, or
one machine) for the state to resume.
"""
from __future__ import annotations

import json
import tempfile

from factory.care.train import CareTrainConfig, train
from factory.errors import FactoryError


def summary(cfg: CareTrainConfig) -> dict:
    """Train (this process's rank) and return a JSON-able summary."""
    r = train(cfg)
    return {"checkpoint": str(r.checkpoint), "step": r.step, "loss": r.loss, "metrics": r.metrics,
            "samples_per_s": r.samples_per_s, "finished": r.finished, "rank": r.rank, "world_size": r.world_size,
            "rank_shards": list(r.rank_shards)}


def train_loop_per_worker(config: dict) -> None:
    """One Ray Train worker: torch.distributed is set up by TorchTrainer; factory.data splits the store by rank."""
    import ray.train

    result = summary(config["cfg"])
    out = config["cfg"].out
    with open(f"{out}.rank{result['rank']}.json", "w") as f:
        json.dump(result, f, indent=1)
    ray.train.report({k: v for k, v in result.items() if k != "metrics"})


def ray_train(cfg: CareTrainConfig, workers: int) -> dict:
    """CARE training on ``workers`` Ray Train workers (one GPU each when the cluster has them)."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    use_gpu = ray.cluster_resources().get("GPU", 0) >= workers
    trainer = TorchTrainer(train_loop_per_worker, train_loop_config={"cfg": cfg},
                           scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                                        resources_per_worker={"GPU": 1} if use_gpu else {"CPU": 1}),
                           run_config=RunConfig(storage_path=tempfile.mkdtemp(prefix="factory-care-train-"), name="care"))
    result = trainer.fit()
    if result.error is not None:
        raise FactoryError(f"Ray Train failed: {str(result.error).splitlines()[0]}.")
    with open(f"{cfg.out}.rank0.json") as f:
        return json.load(f)


