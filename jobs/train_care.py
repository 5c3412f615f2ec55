"""Train a compact CARE U-Net on a factory store, streaming LR/HR pairs through ``factory.data``.

    python jobs/train_care.py --store pairs.zarr --steps 2000 --out care.safetensors          # here, CPU or GPU
    ray job submit --working-dir . -- python jobs/train_care.py --store /shared/pairs.zarr \\
        --out /shared/care.safetensors --steps 20000 --address auto                          # one GPU worker

The network (Weigert et al. 2018, "Content-aware image restoration", residual U-Net) maps the LR
frame, upsampled to the HR grid (bilinear) and percentile-normalized per image, to the HR image
(normalized density in [0, 1]): pred = x + UNet(x). Training streams the store's first shards;
the last ``val_shards`` committed shards are held out (by shard, so no sample of a validation
shard is ever trained on) and scored every ``val_every`` steps with the metrics in
``VALIDATION_METRICS`` (PSNR now; add Fourier ring correlation there). The checkpoint is a
safetensors file of the weights with the config and last validation metrics in its metadata.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from factory.data import DataConfig, Normalization, Upsample, make_loader
from factory.device import pick_device
from factory.errors import FactoryError
from factory.store import Store


@dataclass(frozen=True)
class CareConfig:
    store: str
    out: str = "care.safetensors"
    steps: int = 500
    batch_size: int = 16
    lr: float = 4e-4
    depth: int = 2  # U-Net levels below the top (HR side must be divisible by 2**depth)
    channels: int = 16  # feature maps at the top level, doubled per level
    val_shards: int = 1  # last committed shards held out for validation
    val_every: int = 100  # steps between validations (and at the end)
    where: str | None = None  # SQL condition on manifest columns restricting the training pairs
    seed: int = 0
    num_workers: int = 0  # DataLoader worker processes
    shuffle_buffer: int = 256  # samples
    device: str = "auto"
    threads: int = 0  # torch CPU threads (0 = torch's default; 1 is fastest on a busy machine)


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU(inplace=True))


class CareUNet(nn.Module):
    """Residual U-Net: ``depth`` 2x down/up levels, ``channels`` * 2**level feature maps, 3x3 convs."""

    def __init__(self, depth: int = 2, channels: int = 16):
        super().__init__()
        widths = [channels * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList(conv_block(c_in, c_out) for c_in, c_out in zip([1] + widths[:-2], widths[:-1]))
        self.bottom = conv_block(widths[-2], widths[-1])
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth)))
        self.merge = nn.ModuleList(conv_block(2 * widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, H, W) -> (B, 1, H, W)
        skips, h = [], x
        for block in self.down:
            h = block(h)  # (B, C_l, H / 2**l, W / 2**l)
            skips.append(h)
            h = F.max_pool2d(h, 2)
        h = self.bottom(h)  # (B, C_depth, H / 2**depth, W / 2**depth)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips)):
            h = merge(torch.cat([up(h), skip], dim=1))  # (B, C_l, H / 2**l, W / 2**l)
        return x + self.head(h)  # residual: the network learns the correction to the input


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for targets in [0, 1]: 10 log10(1 / MSE); (B, 1, H, W) -> (B,)."""
    mse = ((pred - target) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-12)
    return -10.0 * torch.log10(mse)


# name -> per-image metric (pred, target) -> (B,); averaged over the validation shards.
VALIDATION_METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"psnr": psnr}


def split_shards(store_path: str, val_shards: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(train shards, validation shards): the last ``val_shards`` committed shards are held out."""
    committed = Store.open(store_path).committed_shards()
    if not 0 <= val_shards < len(committed):
        raise FactoryError(f"--val-shards {val_shards} must leave at least one of the {len(committed)} committed shards for training.")
    cut = len(committed) - val_shards
    return tuple(committed[:cut]), tuple(committed[cut:])


def data_config(cfg: CareConfig, shards: tuple[int, ...], train: bool) -> DataConfig:
    return DataConfig(store=cfg.store, where=cfg.where if train else None, shards=shards, shuffle=train, seed=cfg.seed,
                      shuffle_buffer=cfg.shuffle_buffer, upsample=Upsample.bilinear, normalize=Normalization.percentile)


@torch.no_grad()
def validate(model: nn.Module, loader, device: torch.device) -> dict[str, float]:
    model.eval()
    sums, count = {name: 0.0 for name in VALIDATION_METRICS}, 0
    for lr, hr in loader:
        pred = model(lr.to(device)).clamp(0, 1)  # (B, 1, H, W)
        for name, metric in VALIDATION_METRICS.items():
            sums[name] += float(metric(pred, hr.to(device)).sum())
        count += len(hr)
    model.train()
    return {name: s / max(count, 1) for name, s in sums.items()}


def save(model: nn.Module, cfg: CareConfig, step: int, metrics: dict) -> Path:
    from safetensors.torch import save_file

    out = Path(cfg.out)
    tmp = out.with_name(out.name + ".tmp")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp), metadata={"config": json.dumps(dataclasses.asdict(cfg)), "step": str(step),
                                         "metrics": json.dumps(metrics), "format": "factory-care-unet"})
    os.replace(tmp, out)
    return out


def train(cfg: CareConfig, log: Callable[[str], None] = print) -> dict:
    """Train for ``cfg.steps`` steps; returns {"checkpoint", "step", "loss", "metrics", "samples_per_s"}."""
    train_shards, val_shards = split_shards(cfg.store, cfg.val_shards)
    store = Store.open(cfg.store)
    if store.spec.hr_size % 2**cfg.depth:
        raise FactoryError(f"HR side {store.spec.hr_size} px is not divisible by 2**depth = {2**cfg.depth}.")
    device = pick_device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)  # weight init
    model = CareUNet(cfg.depth, cfg.channels).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
    loader = make_loader(data_config(cfg, train_shards, train=True), cfg.batch_size, cfg.num_workers, drop_last=False)
    val_loader = make_loader(data_config(cfg, val_shards, train=False), cfg.batch_size, 0) if val_shards else None
    log(f"training on {loader.dataset.num_samples} pairs (shards {train_shards[0]}..{train_shards[-1]}), "
        f"validating on {val_loader.dataset.num_samples if val_loader is not None else 0} (shards {list(val_shards)}), device {device}")
    step, epoch, loss, metrics, t0 = 0, 0, float("nan"), {}, time.perf_counter()
    while step < cfg.steps:
        loader.dataset.set_epoch(epoch)
        for lr, hr in loader:  # (B, 1, H, W) each
            loss_t = F.mse_loss(model(lr.to(device)), hr.to(device))
            opt.zero_grad(set_to_none=True)
            loss_t.backward()
            opt.step()
            sched.step()
            step, loss = step + 1, float(loss_t.detach())
            if not math.isfinite(loss):
                raise FactoryError(f"the loss became {loss} at step {step}; lower --lr.")
            if val_loader is not None and (step % cfg.val_every == 0 or step == cfg.steps):
                metrics = validate(model, val_loader, device)
                log(f"step {step} loss {loss:.5f} " + " ".join(f"val_{k} {v:.3f}" for k, v in metrics.items()))
            if step >= cfg.steps:
                break
        epoch += 1
    elapsed = time.perf_counter() - t0
    path = save(model, cfg, step, metrics)
    log(f"saved {path} after {step} steps ({epoch} epoch(s) started) in {elapsed:.1f} s")
    return {"checkpoint": str(path), "step": step, "loss": loss, "metrics": metrics,
            "samples_per_s": step * cfg.batch_size / elapsed if elapsed > 0 else 0.0}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True, help="factory store (.zarr folder); on a cluster, a path every node reads")
    ap.add_argument("--address", default=None, help="Ray address ('auto', ray://host:port, or 'local' to start a local Ray): run as a Ray task with one GPU when the cluster has one. (default: run in this process)")
    helps = {"out": "checkpoint path (.safetensors)", "lr": "Adam learning rate (cosine decay to 0)",
             "depth": "U-Net levels", "channels": "top-level feature maps", "val_shards": "last committed shards held out",
             "val_every": "steps between validations", "where": "SQL condition on manifest columns for training pairs",
             "num_workers": "DataLoader worker processes", "shuffle_buffer": "samples in the shuffle buffer",
             "device": "auto | cpu | cuda | mps", "threads": "torch CPU threads (0 = default)", "batch_size": "pairs per step", "steps": "optimizer steps", "seed": "init and shuffle seed"}
    for f in dataclasses.fields(CareConfig):
        if f.name == "store":
            continue
        kind = {"int": int, "float": float}.get(f.type.split(" |")[0], str)
        ap.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default, help=helps.get(f.name))
    args = vars(ap.parse_args(argv))
    address = args.pop("address")
    cfg = CareConfig(**args)
    if address is None:
        return train(cfg)
    import ray

    ray.init(address=address)
    gpus = ray.cluster_resources().get("GPU", 0)
    remote = ray.remote(max_retries=0)(train).options(**({"num_gpus": 1} if gpus >= 1 else {"num_cpus": 1}))
    result = ray.get(remote.remote(cfg))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    import sys

    try:
        main()
    except FactoryError as exc:  # one sentence, no traceback
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
