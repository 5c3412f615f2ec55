"""The structure worker: a Ray actor that holds a structure source once and turns a shard's ids into HR images.

One actor per GPU (``num_gpus=1``) for a DDPM on a cluster with GPUs, else one per CPU (``num_cpus=1``,
``cpu_threads`` torch threads: CPU results depend bit for bit on the thread count, so it is part of the
run spec, never derived from the node). What a source needs (the checkpoint's bytes, the user's
images on the HR grid) reaches the actor through Ray's object store (:func:`source_payload`), so no
shared filesystem is needed. Actors are never pinned to a node: a replacement for a lost one goes
wherever Ray finds room. A shard is made in the spec's fixed batches of consecutive ids
(:meth:`RunSpec.batches`), so an image never depends on which actor made it.
"""
from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass

import numpy as np
import ray

from factory.errors import FactoryError
from factory.store import RunSpec


def source_payload(spec: RunSpec):
    """What the actors need besides the spec, read once by the driver: checkpoint bytes (ddpm), images (images)."""
    kind = spec.structure_kind
    if kind == "ddpm":
        with open(spec.model_path, "rb") as f:
            return f.read()
    if kind == "images":
        from factory.structures.images import load_images

        s = spec.structure
        return load_images(s["paths"], s.get("images_pixel_nm"), s["pixel_nm"])
    return None


class StructureWorker:
    """Ray actor body (see :func:`start_actor`)."""

    def __init__(self, spec: RunSpec, payload):
        from factory.structures import sources

        self.device = "cpu"
        if spec.structure_kind == "ddpm":
            import torch

            from factory.device import pick_device

            self.device = pick_device("auto")
            if self.device.type == "cpu":
                torch.set_num_threads(spec.cpu_threads)
            else:  # deterministic cuDNN kernels: same ids -> same bits on the same GPU model
                torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
            with tempfile.TemporaryDirectory(prefix="factory-model") as tmp:
                path = os.path.join(tmp, "model.safetensors")  # the driver's bytes: no shared filesystem needed
                with open(path, "wb") as f:
                    f.write(payload)
                self.source = sources.DdpmSource({**spec.structure, "model_path": path}, spec.hr_size, self.device)
        elif spec.structure_kind == "images":
            from factory.structures.images import ImageSource

            self.source = ImageSource.from_images(payload, spec.hr_size)
        else:
            self.source = sources.open_source(spec.structure, spec.hr_size)

    def ready(self) -> str:
        """Returns once the source is loaded: "<Ray node id>/<host>/<device>"."""
        return f"{ray.get_runtime_context().get_node_id()}/{socket.gethostname()}/{getattr(self.device, 'type', self.device)}"

    def make_shard(self, spec: RunSpec, shard: int) -> dict:
        """HR images of shard k: {"hr": (S, H, W) float32 in [0, 1], "device": "cpu"|"cuda"}."""
        blocks = [self.source.make(batch, spec.seed) for batch in spec.batches(shard)]  # each (B, H, W)
        hr = np.concatenate(blocks).astype(np.float32, copy=False)
        if not np.isfinite(hr).all():
            raise FactoryError(f"shard {shard}: the structure source produced NaN or infinite HR values "
                               f"(a broken model); nothing was committed.")
        return {"hr": hr, "device": getattr(self.device, "type", self.device)}


StructureActor = ray.remote(StructureWorker)


@dataclass
class Worker:
    """The driver's view of one actor: its handle, whether its source is loaded, shards it holds."""

    handle: ray.actor.ActorHandle
    ready_ref: ray.ObjectRef | None
    ready: bool = False
    alive: bool = True
    location: str = ""
    shards: int = 0  # shards submitted and not yet committed or lost


def start_actor(spec: RunSpec, payload_ref, use_gpu: bool) -> Worker:
    """Start one structure actor (not pinned to any node); ``ready_ref`` resolves when its source is loaded."""
    options = {"num_gpus": 1, "num_cpus": 1} if use_gpu else {"num_cpus": 1}
    handle = StructureActor.options(**options, max_restarts=0, max_concurrency=1).remote(spec, payload_ref)
    return Worker(handle, handle.ready.remote())
