"""The one resumable training loop of t2i: every family and DreamBooth train through it.

:func:`train` runs AdamW on a :class:`~t2i.training.contract.TrainableModel` over batches of
a :class:`~t2i.training.contract.DataSource`, with gradient accumulation, mixed precision,
gradient clipping, an EMA of the weights, learning-rate warm-up and cool-down, a progress
bar and structlog loss lines, data-parallel over the processes ``torchrun`` starts.

SIGINT (Ctrl-C) and SIGTERM stop the run after the step in flight: the state is saved and
:class:`TrainingInterrupted` (a ``KeyboardInterrupt``) raised, so nothing finished is lost.

A :class:`~t2i.training.stepping.SteppedModel` (a GAN: a discriminator's and a generator's
optimizer) makes its own optimizers and steps; the loop keeps the schedule, EMA, logging
(its extra metrics too, in :attr:`TrainResult.metrics`) and the state.

Resumable: every ``save_every`` steps and at the end, rank 0 writes ``OUT/NAME.state.pt``
atomically: model, EMA, optimizer, loss scaler, step, torch's RNG and the data source's
position. A rerun with the same ``out`` continues from it; on one process the resumed run
computes exactly the losses the uninterrupted run would have (under torchrun each rank's
training noise is re-seeded from the step instead).
"""

from __future__ import annotations

import contextlib
import gc
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import structlog
import torch
from torch import nn
from tqdm import tqdm

from t2i.training.config import TrainConfig, check_split
from t2i.training.contract import DataSource, Split, TrainableModel
from t2i.training.distributed import DistributedContext, setup_distributed
from t2i.training.ema import EMA
from t2i.training.precision import allow_tf32, autocast, check_precision, grad_scaler
from t2i.training.schedule import lr_factor, run_progress
from t2i.training.state import (
    load_state,
    remove_stale_temporaries,
    rng_state,
    save_state,
    set_rng_state,
    state_path,
)
from t2i.training.stepping import (
    StepTools,
    check_stepped,
    ema_parameters,
    is_stepped,
    set_lr_factor,
)

log = structlog.get_logger("t2i.training")


@attrs.frozen(eq=False)
class TrainResult:
    """What a run of :func:`train` ended with.

    Attributes:
        model: the trained model (its trained, not averaged, weights).
        ema: the average of its weights, or None.
        step: optimizer steps done in all; ``first_step``: where this run started.
        loss: the smoothed loss at the end (rank 0; None elsewhere or if never logged).
        losses: ``(step, loss)`` of every logged step of this run (rank 0).
        stopped: ``"steps"`` or ``"minutes"``.
        state_path: the state file.
        is_main: whether this process is rank 0.
        metrics: ``(step, {name: value})`` of every logged step of this run (rank 0): a
            stepped model's extra metrics (a GAN's D and G losses ...).
    """

    model: Any
    ema: EMA | None
    step: int
    first_step: int
    loss: float | None
    losses: tuple[tuple[int, float], ...]
    stopped: str
    state_path: Path
    is_main: bool = True
    metrics: tuple[tuple[int, dict[str, float]], ...] = ()

    def save(self, folder: str | Path) -> Path:
        """Export the model (EMA weights, if any) with its ``save``; only rank 0 writes."""
        folder = Path(folder)
        if self.is_main:
            folder.mkdir(parents=True, exist_ok=True)
            with self.ema.applied() if self.ema is not None else contextlib.nullcontext():
                self.model.save(folder)
        return folder


class _LossForward(nn.Module):
    """``forward(batch) = model.loss(batch)``: what data parallelism and compile wrap."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> torch.Tensor:
        return self.model.loss(batch)


def trainable_parameters(model: TrainableModel) -> list[nn.Parameter]:
    """``model.trainable_parameters()``, once each, checked against ``requires_grad``."""
    params = list({id(p): p for p in model.trainable_parameters()}.values())
    mine = {id(p) for p in params}
    what = type(model).__name__
    stray = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in mine]
    if stray:
        raise ValueError(
            f"{what}: parameters {stray[:4]} require grad but trainable_parameters() leaves "
            "them out: freeze them (requires_grad_(False)) or return them"
        )
    if not params or any(not p.requires_grad for p in params):
        raise ValueError(f"{what}: trainable_parameters() must be parameters that require grad")
    return params


def train(
    model: TrainableModel,
    data: DataSource,
    config: TrainConfig,
    out: str | Path,
    *,
    ctx: DistributedContext | None = None,
    on_step: Callable[[int, Any], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``data`` to ``config.steps`` (resuming from ``out``'s state).

    Args:
        model: moved to the context's device; trained in place.
        data: its batches go to ``model.loss``.
        config: the run's options; ``config.name`` names the state file.
        out: the run folder (made if missing).
        ctx: the distributed context; None: :func:`setup_distributed` on
            ``config.device``, closed again at the end.
        on_step: ``on_step(step, model)`` on rank 0 after every optimizer step (and its
            save), e.g. to render validation images; ``step`` counts steps done.

    Raises:
        TrainOptionsError: the batch does not split over the processes x micro-batches, or
            the precision does not fit the device.
    """
    own = ctx is None
    ctx = setup_distributed(config.device) if own else ctx
    try:
        loop = _Loop(model, data, config, Path(out), ctx)
        loop.on_step = on_step
        try:
            return loop.run()
        finally:
            loop.release()
    finally:
        if own:
            ctx.close()


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a run between two steps; its state was saved first."""

    def __init__(self, path: Path, step: int, signal_name: str) -> None:
        super().__init__(f"{signal_name}: stopped at step {step}; resumable state in {path}")
        self.path, self.step, self.signal_name = path, step, signal_name


def _plain_metrics(model: nn.Module) -> dict[str, float] | None:
    """A plain model's optional ``logged_metrics()`` (see :class:`TrainableModel`)."""
    report = getattr(model, "logged_metrics", None)
    return dict(report()) if callable(report) else None


class StopRequest:
    """SIGINT / SIGTERM ask the loop to stop after the step in flight (which then saves).

    A second SIGINT interrupts at once (Python's default). Installed only in the main
    thread (signal handlers live there); elsewhere it never asks.
    """

    def __init__(self) -> None:
        self.requested, self.signal_name = False, ""
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._ask)

    def _ask(self, signum: int, _frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        # no logging here: a handler that writes to stderr while the interrupted code is
        # writing to it can deadlock on the stream's lock; the loop logs when it stops
        self.requested, self.signal_name = True, signal.Signals(signum).name

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


class _Loop:
    """The state of one run of :func:`train` and its steps."""

    def __init__(
        self, model: Any, data: DataSource, config: TrainConfig, out: Path, ctx: Any
    ) -> None:
        check_split(config.batch_size, ctx.world_size, config.grad_accum)
        check_precision(config.precision, ctx.device)
        allow_tf32(ctx.device)
        self.stepped = is_stepped(model)
        if self.stepped:
            check_stepped(config, ctx.world_size)
        self.model, self.data, self.config, self.ctx = model.to(ctx.device), data, config, ctx
        self.params = trainable_parameters(model)
        if self.stepped:
            self.optimizers = dict(model.make_optimizers(config.lr))
            set_lr_factor(self.optimizers.values(), 1.0)
        else:
            self.optimizer = torch.optim.AdamW(
                self.params, lr=config.lr, weight_decay=config.weight_decay
            )
        self.scaler = grad_scaler(config.precision, ctx.device)
        self.ema_params = ema_parameters(model, self.params)
        self.ema = EMA(self.ema_params, config.ema_decay) if config.ema_decay > 0 else None
        self.ddp = ctx.wrap(_LossForward(model))
        self.forward = torch.compile(self.ddp) if config.compile else self.ddp
        out.mkdir(parents=True, exist_ok=True)
        self.path = state_path(out, config.name)
        self.step, self.loss_avg, self.losses, self.metrics = 0, None, [], []
        self.on_step: Callable[[int, Any], None] | None = None
        self._restore()

    # -- state ------------------------------------------------------------------------------
    def _snapshot(self) -> dict[str, Any]:
        return {
            "name": self.config.name,
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "optimizer": self._optimizer_state(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(self.ctx.device),
            "data": self.data.state_dict(),
            "loss_avg": self.loss_avg,
        }

    def _restore(self) -> None:
        ctx, seed = self.ctx, self.config.seed
        if ctx.is_main:
            remove_stale_temporaries(self.path)
        state = load_state(self.path)
        if state is None:  # a fresh run: training noise differs between ranks
            torch.manual_seed(seed + 1_000_003 * ctx.rank)
            return
        self.model.load_state_dict(state["model"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        elif self.ema is not None:  # the saved run kept none: average from the saved weights
            self.ema = EMA(self.ema_params, self.config.ema_decay)
        if self.stepped:
            for name, optimizer in self.optimizers.items():
                optimizer.load_state_dict(state["optimizer"][name])
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.data.load_state_dict(state["data"])
        self.step, self.loss_avg = int(state["step"]), state["loss_avg"]
        if ctx.distributed:  # rank 0's generator was saved; each rank needs its own
            torch.manual_seed(seed + 1_000_003 * ctx.rank + 7919 * self.step)
        else:
            set_rng_state(state["rng"], ctx.device)
        if ctx.is_main:
            log.info("resumed", stage=self.config.name, step=self.step, state=str(self.path))

    def _optimizer_state(self) -> dict[str, Any]:
        if self.stepped:
            return {name: opt.state_dict() for name, opt in self.optimizers.items()}
        return self.optimizer.state_dict()

    def _save(self) -> None:
        if self.ctx.is_main:
            save_state(self.path, self._snapshot())

    # -- steps ------------------------------------------------------------------------------
    def _optimizer_step(self, batches: list[Any], lr: float) -> torch.Tensor:
        """One optimizer step over this rank's micro-batches; returns their mean loss."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.ctx.device)
        for i, batch in enumerate(batches):
            syncs = i == len(batches) - 1 or not self.ctx.distributed
            with contextlib.nullcontext() if syncs else self.ddp.no_sync():
                with autocast(self.config.precision, self.ctx.device):
                    loss = self.forward(batch).float() / len(batches)
                self.scaler.scale(loss).backward()
            total += loss.detach()
        if self.config.clip_grad is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.config.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return total

    def _stepped_step(self, batches: list[Any], factor: float) -> dict[str, torch.Tensor]:
        """One step of a stepped model on this rank's (only) micro-batch."""
        set_lr_factor(self.optimizers.values(), factor)
        tools = StepTools(
            self.optimizers,
            self.scaler,
            self.config.precision,
            self.ctx.device,
            self.config.clip_grad,
            self.step,
        )
        out = dict(self.model.train_step(batches[0], tools))
        if "loss" not in out:
            raise ValueError(f"{type(self.model).__name__}.train_step must return a 'loss'")
        return out

    def _log(self, loss: torch.Tensor, lr: float, bar: tqdm, extra: dict | None = None) -> None:
        value = float(loss.item())
        metrics = {k: float(v) for k, v in (extra or {}).items() if k != "loss"}
        if metrics:
            self.metrics.append((self.step, metrics))
        self.loss_avg = value if self.loss_avg is None else 0.9 * self.loss_avg + 0.1 * value
        self.losses.append((self.step, value))
        bar.set_postfix(loss=f"{self.loss_avg:.4f}")
        log.info(
            self.config.name, step=self.step, loss=value, loss_avg=self.loss_avg, lr=lr, **metrics
        )

    def run(self) -> TrainResult:
        cfg, ctx = self.config, self.ctx
        first, stopped = self.step, "steps"
        split = Split(cfg.batch_size, ctx.rank, ctx.world_size, cfg.grad_accum)
        bar_options = {} if ctx.is_main else {"disable": True}  # {}: TQDM_DISABLE holds
        bar = tqdm(total=cfg.steps, initial=self.step, desc=cfg.name, unit="step", **bar_options)
        deadline = None if cfg.minutes is None else cfg.started + 60 * cfg.minutes
        # rank 0's clock decides when to stop; ranks share it every 20 steps (a host sync)
        check_every, start, clock = (20 if ctx.distributed else 1), time.time(), 0.0
        stop = StopRequest()
        try:
            while self.step < cfg.steps:
                if self.step % check_every == 0 and ctx.share(float(stop.requested)):
                    stopped = "signal"
                    log.warning("training_stopped", signal=stop.signal_name, step=self.step)
                    break
                if deadline is not None and self.step % check_every == 0:
                    clock = ctx.share((time.time() - start) / max(deadline - start, 1e-6))
                    if clock >= 1.0:
                        stopped = "minutes"
                        break
                progress = run_progress(self.step, cfg.steps, clock)
                lr = cfg.lr * lr_factor(
                    self.step, progress, warmup=cfg.warmup, cooldown=cfg.cooldown
                )
                extra = None
                if self.stepped:
                    extra = self._stepped_step(self.data.next(split), lr / cfg.lr)
                    loss = extra["loss"].detach()
                else:
                    loss = self._optimizer_step(self.data.next(split), lr)
                    if self.step % cfg.log_every == cfg.log_every - 1:
                        extra = _plain_metrics(self.model)
                if self.ema is not None:
                    self.ema.update(self.step)
                self.step += 1
                bar.update(1)
                if ctx.is_main and self.step % cfg.log_every == 0:
                    self._log(loss, lr, bar, extra)
                if self.step % cfg.save_every == 0:
                    self._save()
                if self.on_step is not None and ctx.is_main:
                    self.on_step(self.step, self.model)
        finally:
            stop.restore()
            bar.close()
        if self.step > first or not self.path.is_file():
            self._save()
        if stopped == "signal":
            raise TrainingInterrupted(self.path, self.step, stop.signal_name)
        ctx.check_in_sync(self.model)
        return TrainResult(
            model=self.model,
            ema=self.ema,
            step=self.step,
            first_step=first,
            loss=self.loss_avg if ctx.is_main else None,
            losses=tuple(self.losses),
            stopped=stopped,
            state_path=self.path,
            is_main=ctx.is_main,
            metrics=tuple(self.metrics),
        )

    def release(self) -> None:
        """Drop the data-parallel wrapper while its process group lives (else it can hang)."""
        self.ddp = self.forward = None
        if self.ctx.distributed:
            gc.collect()
