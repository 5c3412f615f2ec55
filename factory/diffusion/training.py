"""The training machinery both diffusion models share: loop settings, a resumable state, one step, the loop.

A model's trainer resolves its own config and data, then hands this module three
things: how to build its network, a loss function ``loss(net, gen) -> scalar`` that
draws its batch and noise from ``gen`` (a CPU ``torch.Generator``, so the run is the
same on every device and resumes bit for bit), and a ``write_checkpoint(ema, final)``
callback. Everything else is here: AdamW, EMA weights, the resumable state
``<out>.state.pt`` (loaded with ``weights_only=True``: no code runs), periodic
checkpoints, ``max_minutes``, the progress bar, and the stop at the first non-finite
loss (one sentence; the last good checkpoint stays).
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from factory.device import autocast
from factory.errors import FactoryError
from factory.files import atomic_write

LossFn = Callable[[torch.nn.Module, torch.Generator], torch.Tensor]  # (net, gen) -> scalar loss


@dataclass(frozen=True)
class LoopConfig:
    """The settings of a training run that do not depend on the model."""

    steps: int = 20000
    batch_size: int = 16
    lr: float = 2e-4
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    seed: int = 0
    checkpoint_every: int = 250
    max_minutes: float | None = None  # stop cleanly (and checkpoint) after this much wall time in this session
    bf16: bool = False

    def check(self) -> None:
        """FactoryError naming the CLI option unless every setting is usable."""
        for name in ("steps", "batch_size", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise FactoryError(f"--{name.replace('_', '-')} must be at least 1.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise FactoryError(f"--seed must be an integer >= 0, got {self.seed}.")
        if not (math.isfinite(self.lr) and 0 < self.lr <= 1):
            raise FactoryError(f"--lr must be positive and at most 1, got {self.lr}.")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise FactoryError(f"the weight decay must be >= 0, got {self.weight_decay}.")
        if not 0.0 <= self.ema_decay < 1.0:
            raise FactoryError(f"the EMA decay must be in [0, 1), got {self.ema_decay}.")
        if self.max_minutes is not None and not (math.isfinite(self.max_minutes) and self.max_minutes > 0):
            raise FactoryError(f"--max-minutes must be a positive number of minutes, got {self.max_minutes}.")


def state_path(out: Path) -> Path:
    return out.with_name(out.name + ".state.pt")


class TrainingState:
    """Network, EMA copy, optimizer, data generator, step and wall time: everything a resume needs."""

    def __init__(self, build: Callable[[], torch.nn.Module], loop: LoopConfig, device: torch.device):
        with torch.random.fork_rng(devices=[]):  # initialization from the run seed, global RNG untouched
            torch.manual_seed(loop.seed)
            net = build()
        self.net = net.to(device).to(memory_format=torch.channels_last)
        self.ema = copy.deepcopy(self.net).requires_grad_(False)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=loop.lr, weight_decay=loop.weight_decay)
        self.gen = torch.Generator().manual_seed(loop.seed)
        self.step, self.wall_s = 0, 0.0

    def save(self, path: Path, model_config: dict) -> None:
        """Write the state atomically (temp file, then rename)."""
        with atomic_write(path) as tmp:
            torch.save({"net": self.net.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                        "gen": self.gen.get_state(), "step": self.step, "wall_s": self.wall_s,
                        "model_config": json.dumps(model_config)}, tmp)

    def resume(self, path: Path, model_config: dict) -> None:
        """Continue from ``path`` when it exists; refuse a state made with another model config."""
        if not path.exists():
            return
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            raise FactoryError(f"{path}: corrupt training state; delete it to start over.") from None
        if json.loads(state["model_config"]) != json.loads(json.dumps(model_config)):
            raise FactoryError(f"{path}: was made with another model config; delete it or choose another --out.")
        self.net.load_state_dict(state["net"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"])
        self.step, self.wall_s = int(state["step"]), float(state["wall_s"])


def train_step(state: TrainingState, loss_fn: LossFn, loop: LoopConfig, device: torch.device) -> float:
    """One optimizer step and the EMA update; returns the loss. A non-finite loss stops training
    (FactoryError) before it touches the weights."""
    with autocast(device, loop.bf16):
        loss = loss_fn(state.net, state.gen)
    value = loss.item()
    if not math.isfinite(value):
        raise FactoryError(f"training stopped at step {state.step + 1}: the loss is {value} (not finite), so the weights "
                           f"would become garbage; checkpoints written before are kept. Check the training data for "
                           f"NaN or extreme values, or lower --lr.")
    state.opt.zero_grad(set_to_none=True)
    loss.backward()
    state.opt.step()
    state.step += 1
    decay = min(loop.ema_decay, (1 + state.step) / (10 + state.step))
    with torch.no_grad():
        for pe, p in zip(state.ema.parameters(), state.net.parameters()):
            pe.lerp_(p, 1 - decay)
    return value


def run(state: TrainingState, loop: LoopConfig, loss_fn: LossFn, device: torch.device, out: Path, model_config: dict,
        write_checkpoint: Callable[[torch.nn.Module, bool], None], console=None) -> None:
    """Train from ``state.step`` up to ``loop.steps``; every ``checkpoint_every`` steps, at the end and when
    ``max_minutes`` run out, save the state, then call ``write_checkpoint(ema, final)``."""
    t_start, loss_avg = time.time() - state.wall_s, float("nan")
    progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4f}"),
                        TextColumn("{task.fields[rate]:.2f} steps/s"), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=console, transient=False)
    session_t0, session_step0 = time.time(), state.step
    with progress:
        task = progress.add_task("train", total=loop.steps, completed=state.step, loss=loss_avg, rate=0.0)
        while state.step < loop.steps:
            loss = train_step(state, loss_fn, loop, device)
            loss_avg = loss if math.isnan(loss_avg) else 0.98 * loss_avg + 0.02 * loss
            state.wall_s = time.time() - t_start
            progress.update(task, completed=state.step, loss=loss_avg,
                            rate=(state.step - session_step0) / max(time.time() - session_t0, 1e-9))
            out_of_time = loop.max_minutes is not None and (time.time() - session_t0) > 60 * loop.max_minutes
            if state.step % loop.checkpoint_every == 0 or state.step == loop.steps or out_of_time:
                state.save(state_path(out), model_config)
                write_checkpoint(state.ema, state.step == loop.steps)
                if not progress.console.is_terminal:  # a log file gets one line per checkpoint
                    progress.console.print(f"step {state.step}/{loop.steps} loss {loss_avg:.4f} wall {state.wall_s:.0f} s")
            if out_of_time:
                break
