"""The sampler actor: holds the model once and turns a shard's sample ids into HR images.

One actor per GPU (``num_gpus=1``) when the cluster has GPUs, else one per CPU
(``num_cpus=1``, ``cpu_threads`` torch threads: CPU results depend bit for bit on the
thread count, so it is part of the run spec and never derived from the node).
Actors are never pinned to a node: a replacement for a lost one goes wherever Ray
finds room. A shard is sampled in the spec's fixed batches of consecutive ids
(:meth:`RunSpec.batches`), so an image never depends on which actor made it.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass

import numpy as np
import ray

from factory.errors import FactoryError
from factory.pipeline.spec import RunSpec


class SamplerWorker:
    """Ray actor body (see :func:`start_actor`)."""

    def __init__(self, spec: RunSpec):
        import torch

        from factory.device import pick_device
        from factory.diffusion import checkpoint

        self.device = pick_device("auto")
        if self.device.type == "cpu":
            torch.set_num_threads(spec.cpu_threads)
        else:  # deterministic cuDNN kernels: same ids -> same bits on the same GPU model
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        self.ckpt = checkpoint.load(spec.model_path, device=self.device)
        if self.ckpt.model_id != spec.model_id:
            raise FactoryError(f"{spec.model_path} on {socket.gethostname()} is not the model this run was planned "
                               f"with (sha256 {self.ckpt.model_id[:12]} != {spec.model_id[:12]}).")
        self.sampler = spec.sampler_config()

    def ready(self) -> str:
        """Returns once the model is loaded: the actor's host and device."""
        return f"{socket.gethostname()}/{self.device.type}"

    def sample_shard(self, spec: RunSpec, shard: int) -> dict:
        """HR images of shard k: {"hr": (S, H, W) float32 in [0, 1], "device": "cpu"|"cuda"}."""
        from factory.diffusion.sampling import sample_images

        blocks = [sample_images(self.ckpt, batch, spec.seed, self.sampler, size=spec.hr_size, device=self.device,
                                bf16=spec.bf16)
                  for batch in spec.batches(shard)]  # each (B, H, W)
        return {"hr": np.concatenate(blocks).astype(np.float32, copy=False), "device": self.device.type}


SamplerActor = ray.remote(SamplerWorker)


@dataclass
class Worker:
    """The driver's view of one actor: its handle, whether its model is loaded, shards it holds."""

    handle: ray.actor.ActorHandle
    ready_ref: ray.ObjectRef | None
    ready: bool = False
    alive: bool = True
    location: str = ""
    shards: int = 0  # shards submitted and not yet committed or lost


def start_actor(spec: RunSpec, use_gpu: bool) -> Worker:
    """Start one sampler actor (not pinned to any node); ``ready_ref`` resolves when its model is loaded."""
    options = {"num_gpus": 1, "num_cpus": 1} if use_gpu else {"num_cpus": 1}
    handle = SamplerActor.options(**options, max_restarts=0, max_concurrency=1).remote(spec)
    return Worker(handle, handle.ready.remote())
