"""Train CARE on a factory store: streamed, resumable, held-out shards scored by PSNR and FRC.

    result = train(CareTrainConfig(store="pairs.zarr", out="care.safetensors", steps=2000))

**Data.** The store's committed shards stream through :mod:`factory.data` as raw LR (ADU) and HR
(normalized density); each batch goes through :func:`factory.care.transform.model_input` (the
function ``factory care apply`` uses) and, with ``augment``, one of the 8 flips/rotations drawn
from a torch generator seeded by ``seed``. The last ``val_shards`` committed shards are held out
(by shard, so no held-out sample is ever trained on) and scored every ``val_every`` steps and at
the end: PSNR of the prediction clipped to [0, 1] against HR (dB, mean over images) and the FRC
resolution at 1/7 (:mod:`factory.metrics.frc`, pooled over the held-out images, in nm of the HR
pixel). Loss: MSE; Adam with a cosine decay of the learning rate to 0 over ``steps``.

**Resume.** ``<out>.state.pt`` (``torch.load(weights_only=True)``) holds the network, optimizer,
scheduler and augmentation generator states, the step, the epoch and the batches of it already
used, written every ``checkpoint_every`` steps, at the end and when ``max_minutes`` runs out.
Rerunning the same command continues from it; the weights then equal those of an uninterrupted
run bit for bit on the same machine and thread count (the data order is a function of seed and
epoch, and the batches of the interrupted epoch are skipped). A state made with other settings is
refused in one sentence naming them. The checkpoint (``out``) is rewritten at the same times.

**Failure.** A non-finite loss stops training with one sentence (nothing is saved over the last
good state). Progress goes to ``log`` as plain lines (every ``log_every_s`` seconds and at each
validation), readable in a log file.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from factory.care import checkpoint
from factory.care.network import NetworkConfig, build
from factory.care.transform import InputNorm, InputTransform, model_input
from factory.data import DataConfig, Normalization, distributed_rank, make_loader
from factory.device import pick_device
from factory.errors import FactoryError
from factory.files import atomic_write
from factory.metrics.frc import frc_curve
from factory.normalize import CAMERA_FIELDS
from factory.store import Store

# fields that define the run: a state made with other values is refused (the rest may change between sittings)
IDENTITY = ("store", "steps", "batch_size", "lr", "network", "norm", "val_shards", "where", "seed", "shuffle_buffer", "augment")


@dataclass(frozen=True)
class CareTrainConfig:
    store: str
    out: str = "care.safetensors"
    steps: int = 2000
    batch_size: int = 16
    lr: float = 4e-4  # Adam, cosine decay to 0
    network: NetworkConfig = NetworkConfig()
    norm: InputNorm = InputNorm.percentile
    val_shards: int = 1  # last committed shards held out
    val_every: int = 250  # steps between validations (and at the end)
    checkpoint_every: int = 250  # steps between saved states and checkpoints
    where: str | None = None  # SQL condition on manifest columns restricting the training pairs
    seed: int = 0  # weights, shard order, shuffle buffer and augmentation
    shuffle_buffer: int = 256  # samples
    augment: bool = True  # random flips/rotations (the 8 of the dihedral group), one per batch
    num_workers: int = 0  # DataLoader worker processes
    device: str = "auto"
    threads: int = 0  # torch CPU threads (0 = torch's default)
    max_minutes: float | None = None  # stop cleanly (state saved) after this long; rerun to continue
    log_every_s: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", InputNorm(self.norm))
        if isinstance(self.network, dict):
            object.__setattr__(self, "network", NetworkConfig(**self.network))
        for name in ("steps", "batch_size", "val_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise FactoryError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise FactoryError(f"--lr must be a positive number, got {self.lr}.")

    def identity(self) -> dict:
        d = dataclasses.asdict(self)
        d["store"] = self.store if "://" in str(self.store) else str(Path(self.store).resolve())  # a URL stays as given
        d["norm"] = self.norm.value
        return {k: d[k] for k in IDENTITY}


@dataclass
class TrainResult:
    checkpoint: Path
    step: int
    loss: float
    metrics: dict
    samples_per_s: float
    resumed_from: int = 0
    finished: bool = True
    history: list = field(default_factory=list)
    rank: int = 0  # this process's rank (0 without DDP)
    world_size: int = 1
    rank_shards: tuple[int, ...] = ()  # the training shards this rank read in the first epoch of this sitting


def state_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".state.pt")


def split_shards(store: Store, val_shards: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(train shards, validation shards): the last ``val_shards`` committed shards are held out."""
    committed = store.committed_shards()
    if not 0 <= val_shards < len(committed):
        raise FactoryError(f"--val-shards {val_shards} must leave at least one of the {len(committed)} committed shards of "
                           f"{store.loc} for training.")
    cut = len(committed) - val_shards
    return tuple(committed[:cut]), tuple(committed[cut:])


def _data(cfg: CareTrainConfig, shards: tuple[int, ...], train: bool) -> DataConfig:
    return DataConfig(store=cfg.store, where=cfg.where if train else None, shards=shards, shuffle=train, seed=cfg.seed,
                      shuffle_buffer=cfg.shuffle_buffer, fields=CAMERA_FIELDS if cfg.norm is InputNorm.camera else ())


def _camera(batch: tuple) -> dict | None:
    if len(batch) < 3:
        return None
    return {name: np.asarray(batch[2][name], np.float64) for name in CAMERA_FIELDS}


def electron_scale(cfg: CareTrainConfig, shards: tuple[int, ...], samples: int = 512) -> float:
    """The training set's median 99.8 % percentile in photo-electrons (the ``camera`` input scale)."""
    loader = make_loader(DataConfig(cfg.store, where=cfg.where, shards=shards, shuffle=False, normalize=Normalization.camera),
                         batch_size=64)
    highs, seen = [], 0
    for lr, _ in loader:  # (B, 1, h, w) photo-electrons
        highs.append(np.percentile(lr[:, 0].numpy(), 99.8, axis=(1, 2)))
        seen += len(lr)
        if seen >= samples:
            break
    return float(max(np.median(np.concatenate(highs)), 1.0))


def psnr_db(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for targets in [0, 1]: 10 log10(1 / MSE); (B, 1, H, W) -> (B,)."""
    mse = ((pred - target) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-12)
    return -10.0 * torch.log10(mse)


@torch.no_grad()
def validate(net: torch.nn.Module, loader, t: InputTransform, hr_pixel_nm: float, device: torch.device) -> dict:
    """Held-out PSNR (dB, mean) and FRC at 1/7 (pooled over the images; nm and HR px; None: finer than 2 px)."""
    net.eval()
    psnr_sum, preds, targets = 0.0, [], []
    for batch in loader:
        x = model_input(batch[0][:, 0].numpy(), t, _camera(batch)).to(device)
        pred = net(x).float().cpu()  # (B, 1, H, W)
        psnr_sum += float(psnr_db(pred.clamp(0, 1), batch[1]).sum())
        preds.append(pred[:, 0].numpy())
        targets.append(batch[1][:, 0].numpy())
    net.train()
    count = sum(len(p) for p in preds)
    if count == 0:
        return {}
    frc_px = frc_curve(np.concatenate(preds), np.concatenate(targets)).resolution_px()
    return {"psnr_db": psnr_sum / count, "frc_px": frc_px, "frc_nm": None if frc_px is None else frc_px * hr_pixel_nm,
            "images": count}


def _augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One of the 8 flips/rotations, applied to input and target alike."""
    k = int(torch.randint(8, (1,), generator=gen))
    x, y = torch.rot90(x, k % 4, dims=(2, 3)), torch.rot90(y, k % 4, dims=(2, 3))
    return (x.flip(3), y.flip(3)) if k >= 4 else (x, y)


def _load_state(path: Path, cfg: CareTrainConfig) -> dict | None:
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise FactoryError(f"{path}: corrupt training state; delete it to start over.") from None
    saved, now = json.loads(state["config"]), json.loads(json.dumps(cfg.identity()))
    differ = [k for k in IDENTITY if saved.get(k) != now.get(k)]
    if differ:
        raise FactoryError(f"{path} was made with other settings ({', '.join(differ)} differ); rerun with them to resume, "
                           f"or choose another --out.")
    return state


def train(cfg: CareTrainConfig, log: Callable[[str], None] = print, stop_after: int | None = None) -> TrainResult:
    """Train (or resume) up to ``cfg.steps``; ``stop_after`` ends this sitting after that many steps (state saved)."""
    store = Store.open(cfg.store)
    spec = store.spec
    k = spec.hr_size // spec.lr_size
    if spec.hr_size % cfg.network.multiple:
        raise FactoryError(f"the store's HR side {spec.hr_size} px is not divisible by 2**depth = {cfg.network.multiple}; lower --depth.")
    train_shards, val_shards = split_shards(store, cfg.val_shards)
    out, spath = Path(cfg.out), state_path(cfg.out)
    if not out.resolve().parent.is_dir():
        raise FactoryError(f"cannot write {out}: folder {out.resolve().parent} does not exist.")
    device = pick_device(cfg.device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    rank, world = distributed_rank()  # under Ray Train / torchrun: every rank trains on its own shards (DDP)
    main = rank == 0
    state = _load_state(spath, cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = build(cfg.network)
    net.to(device)
    model = net if world == 1 else torch.nn.parallel.DistributedDataParallel(net)  # gradients averaged over ranks
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
    gen = torch.Generator().manual_seed(cfg.seed)
    step = epoch = batch_in_epoch = 0
    wall_s, metrics, history, loss = 0.0, {}, [], float("nan")
    if state is not None:
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        step, epoch, batch_in_epoch = int(state["step"]), int(state["epoch"]), int(state["batch"])
        wall_s, scale_e = float(state["wall_s"]), float(state["scale_e"])
        metrics, history, loss = json.loads(state["metrics"]), json.loads(state["history"]), float(state["loss"])
    else:
        scale_e = electron_scale(cfg, train_shards) if cfg.norm is InputNorm.camera else 1.0
    transform = InputTransform(cfg.norm, k, scale_e=scale_e)
    resumed_from, first_epoch = step, epoch
    loader = make_loader(_data(cfg, train_shards, True), cfg.batch_size, cfg.num_workers)
    val_loader = make_loader(_data(cfg, val_shards, False), cfg.batch_size) if val_shards else None
    if loader.dataset.num_samples == 0:
        raise FactoryError(f"no training pairs in {cfg.store}" + (f" match {cfg.where!r}" if cfg.where else "") + ".")
    per_epoch = None  # batches per epoch; under DDP every rank stops after the fewest any rank has (no rank waits forever)
    if world > 1:
        per_epoch = min(loader.dataset.rank_counts(0)) // cfg.batch_size
        if per_epoch < 1:
            raise FactoryError(f"{world} ranks need at least {world} training shards of {cfg.batch_size} pairs each; "
                               f"use fewer workers, a smaller --batch-size or a larger store.")
    if not main:
        log = lambda line: None  # noqa: E731  (rank 0 speaks for the job)
    log(f"care train: {loader.dataset.num_samples} pairs in shards {train_shards[0]}..{train_shards[-1]}, "
        f"{val_loader.dataset.num_samples if val_loader is not None else 0} held out (shards {list(val_shards)}), {cfg.norm.value} "
        f"normalization, device {device}" + (f"; resuming at step {step}" if step else ""))

    def save(final: bool) -> None:
        if not main:  # one writer: rank 0 (the weights are the same on every rank)
            return
        with atomic_write(spath) as tmp:
            torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "gen": gen.get_state(), "step": step, "epoch": epoch, "batch": batch_in_epoch, "wall_s": wall_s,
                        "scale_e": scale_e, "loss": loss, "metrics": json.dumps(metrics),
                        "history": json.dumps(history), "config": json.dumps(cfg.identity())}, tmp)
        training = {**cfg.identity(), "network": cfg.network.to_dict(), "steps_done": step, "final": final,
                    "train_shards": len(train_shards), "val_shards": list(val_shards), "wall_s": round(wall_s, 1),
                    "store_model_id": spec.model_id, "hr_size": spec.hr_size, "lr_size": spec.lr_size}
        checkpoint.save(checkpoint.CareModel(net, cfg.network, transform, spec.hr_pixel_nm, spec.lr_pixel_nm, training, metrics), out)

    t0, session_t0, last_log, session_steps = time.time() - wall_s, time.time(), time.time(), 0
    stopped = False
    while step < cfg.steps and not stopped:
        loader.dataset.set_epoch(epoch)
        for b, batch in enumerate(loader):
            if per_epoch is not None and b >= per_epoch:
                break
            if b < batch_in_epoch:
                continue  # used before the interruption
            x = model_input(batch[0][:, 0].numpy(), transform, _camera(batch))  # (B, 1, H, W)
            y = batch[1]  # (B, 1, H, W) normalized density
            if cfg.augment:
                x, y = _augment(x, y, gen)
            loss_t = F.mse_loss(model(x.to(device)), y.to(device))
            loss = float(loss_t.detach())
            if not math.isfinite(loss):
                raise FactoryError(f"the loss became {loss} at step {step + 1}; lower --lr (the last saved state, if any, "
                                   f"is kept in {spath}).")
            opt.zero_grad(set_to_none=True)
            loss_t.backward()
            opt.step()
            sched.step()
            step, batch_in_epoch, session_steps = step + 1, b + 1, session_steps + 1
            wall_s = time.time() - t0
            if main and val_loader is not None and (step % cfg.val_every == 0 or step == cfg.steps):
                metrics = {**validate(net, val_loader, transform, spec.hr_pixel_nm, device), "step": step}
                history.append({"step": step, "loss": loss, **metrics})
                log(f"step {step}/{cfg.steps} loss {loss:.5f} held-out PSNR {metrics['psnr_db']:.2f} dB, FRC "
                    + (f"{metrics['frc_nm']:.0f} nm" if metrics["frc_nm"] else "< 2 px"))
            elif time.time() - last_log >= cfg.log_every_s:
                rate = session_steps / max(time.time() - session_t0, 1e-9)
                log(f"step {step}/{cfg.steps} loss {loss:.5f} ({rate:.2f} steps/s, about {(cfg.steps - step) / rate / 60:.1f} min left)")
                last_log = time.time()
            out_of_time = cfg.max_minutes is not None and time.time() - t0 > 60 * cfg.max_minutes
            stopped = out_of_time or (stop_after is not None and session_steps >= stop_after)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or stopped:
                save(final=step == cfg.steps)
            if step >= cfg.steps or stopped:
                break
        if not stopped and step < cfg.steps:
            epoch, batch_in_epoch = epoch + 1, 0
    if session_steps == 0 and step >= cfg.steps and not out.exists():
        save(final=True)
    log(f"care train: {'finished' if step >= cfg.steps else 'stopped'} at step {step}/{cfg.steps}; model {out}, state {spath}")
    rate = session_steps * cfg.batch_size / max(time.time() - session_t0, 1e-9)
    return TrainResult(out, step, loss, metrics, rate, resumed_from, step >= cfg.steps, history, rank, world,
                       tuple(loader.dataset.rank_shards(first_epoch)))
