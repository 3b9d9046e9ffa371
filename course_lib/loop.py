"""The training loop for image classifiers (nanoGPT style: no framework).

``train(model, train_loader, test_loader, TrainConfig(...))`` trains any
``nn.Module`` mapping images (B, C, H, W) to logits (B, K) and returns the
per-epoch history: AdamW (fused where torch has it), linear warmup then cosine
decay, label smoothing, gradient clipping, mixed precision on CUDA,
``torch.compile`` (optionally with CUDA graphs), DDP under ``torchrun`` and
bit-identical resume from a checkpoint (``course_lib.checkpoint``).

Import it through ``course_lib.train``, which also holds the recipes and the
command line. Nothing here is an exercise.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from course_lib import distributed as dist_utils
from course_lib.checkpoint import load_checkpoint, save_checkpoint


@dataclass
class TrainConfig:
    epochs: int = 10  # passes over the training set
    lr: float = 1e-3  # peak learning rate, reached at the end of the warmup
    min_lr: float = 1e-5  # learning rate at the end of the cosine decay
    warmup_epochs: float = 1.0  # linear warmup from lr/warmup_steps to lr (may be fractional)
    weight_decay: float = 0.05  # AdamW decay, only for parameters with ndim >= 2 (matrices)
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW moment coefficients
    label_smoothing: float = 0.1  # mass spread uniformly over all classes in the training loss
    grad_clip: float | None = 1.0  # clip the global gradient norm to this (None: off)
    amp: bool = True  # mixed precision on CUDA: bf16 if supported, else fp16 + GradScaler
    compile: bool = False  # torch.compile the model (first steps slower, later ones faster)
    compile_mode: str | None = None  # torch.compile mode; "reduce-overhead" replays CUDA graphs (GPU)
    seed: int = 0  # seeds python, numpy and torch before the model is trained
    eval_every: int = 1  # evaluate the test set every this many epochs and after the last (else NaN)
    progress: bool = True  # show a tqdm progress bar (renders in notebooks too)
    checkpoint: str | None = None  # file to save after every epoch (None: no checkpoints)
    resume: bool = False  # continue from ``checkpoint`` if the file exists


def lr_at(step: int, total_steps: int, warmup_steps: int, lr: float, min_lr: float) -> float:
    """Learning rate of ``step`` (0-based): linear warmup, then cosine decay to ``min_lr``.

    Step 0 uses lr / warmup_steps, step warmup_steps - 1 the full lr; the last
    step (total_steps - 1) ends at min_lr.
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - 1 - warmup_steps)  # 0 -> 1
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay matrices and embeddings (ndim >= 2), not biases, norms or gains, nor the
    parameters the model names in ``no_weight_decay()`` (timm's convention: its [class] token and
    position embedding, which decay would pull towards zero)."""
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in named if p.ndim >= 2 and n not in skip]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": [p for n, p in named if p.ndim < 2 or n in skip], "weight_decay": 0.0}]


def make_adamw(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over ``param_groups``; the fused kernel (one call for all tensors) where torch has it."""
    groups = param_groups(model, config.weight_decay)
    try:
        return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, fused=True)
    except (RuntimeError, TypeError, ValueError):  # e.g. CPU tensors before torch 2.4
        return torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr, betas=config.betas)


def amp_dtype(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """bf16 on GPUs that have it natively (Ampere+), fp16 otherwise (T4), None off CUDA."""
    if not enabled or device.type != "cuda":
        return None
    try:
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch < 2.3 has no including_emulation
        bf16 = torch.cuda.is_bf16_supported()
    return torch.bfloat16 if bf16 else torch.float16


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device,
             dtype: torch.dtype | None = None) -> tuple[float, float]:
    """Mean cross-entropy (no smoothing) and accuracy of ``model`` over ``loader``."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(x)  # (B, K)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(-1) == y).sum()
        count += len(y)
    model.train(was_training)
    return loss_sum.item() / count, correct.item() / count


def train(model: nn.Module, train_loader: Iterable, test_loader: Iterable | None = None,
          config: TrainConfig = TrainConfig(), device: torch.device | str | None = None,
          stop_after: int | None = None) -> dict[str, list]:
    """Train ``model`` with AdamW, warmup + cosine, label smoothing and mixed precision.

    Under ``torchrun`` (``torch.distributed`` initialised, world size > 1) the
    model is wrapped in ``DistributedDataParallel``; give every rank its own
    slice of each batch (``TensorLoader(rank=..., world_size=...)`` or a
    ``DistributedSampler``). Losses are averaged over ranks.

    Args:
        model: maps (B, C, H, W) to logits (B, K); trained in place.
        train_loader: yields (images, labels) batches; ``set_epoch(e)`` is called if it exists.
        test_loader: evaluated after every epoch (optional).
        config: the hyper-parameters, see ``TrainConfig``.
        device: where to train (default: the model's device).
        stop_after: leave after this many epochs, as if interrupted (the
            schedule still spans ``config.epochs``; resume with ``config.resume``).

    Returns:
        history: dict of lists. Per epoch: "epoch", "train_loss", "test_loss",
        "test_acc", "images_per_s", "lr", "time_s"; per step: "step_loss".
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    rank, world = dist_utils.rank(), dist_utils.world_size()
    dtype = amp_dtype(device, config.amp)
    steps_per_epoch = len(train_loader)  # type: ignore[arg-type]
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = max(1, round(config.warmup_epochs * steps_per_epoch))
    optimizer = make_adamw(model, config)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    keys = ["epoch", "train_loss", "test_loss", "test_acc", "images_per_s", "lr", "time_s", "step_loss"]
    history: dict[str, list] = {k: [] for k in keys}
    start_epoch, step = 0, 0
    if config.resume and config.checkpoint and os.path.exists(config.checkpoint):
        # rank 0's generator states are restored; other ranks draw their own augmentations:
        start_epoch, step, history = load_checkpoint(config.checkpoint, model, optimizer, scaler, device)
        if rank > 0:
            torch.manual_seed(config.seed + rank + 1000 * start_epoch)
    else:
        from course_lib.device import seed_everything

        seed_everything(config.seed + rank)  # ranks differ in augmentation; DDP syncs the weights
    net = dist_utils.wrap_ddp(model, device) if world > 1 else model
    net = torch.compile(net, mode=config.compile_mode) if config.compile else net
    graphs = config.compile and config.compile_mode in ("reduce-overhead", "max-autotune") and device.type == "cuda"
    last_epoch = config.epochs if stop_after is None else min(config.epochs, start_epoch + stop_after)
    bar = tqdm(total=(last_epoch - start_epoch) * steps_per_epoch, disable=not config.progress or rank != 0,
               desc="train", dynamic_ncols=True)
    net.train()
    for epoch in range(start_epoch, last_epoch):
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        t0, images, losses = time.perf_counter(), 0, []
        for x, y in train_loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            lr = lr_at(step, total_steps, warmup_steps, config.lr, config.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if graphs:  # a new step: the CUDA graphs may overwrite the previous step's outputs
                torch.compiler.cudagraph_mark_step_begin()
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = net(x)  # (B, K)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            losses.append(loss.detach())
            images += len(y) * world
            step += 1
            bar.update()
            if config.progress and step % 25 == 0:  # .item() syncs the GPU, so not every step
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", lr=f"{lr:.2e}")
        step_loss = dist_utils.mean_over_ranks(torch.stack(losses))  # (steps,)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        test_loss, test_acc = math.nan, math.nan
        if test_loader is not None and ((epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs):
            test_loss, test_acc = evaluate(net, test_loader, device, dtype)
        row = {"epoch": epoch + 1, "train_loss": step_loss.mean().item(), "test_loss": test_loss,
               "test_acc": test_acc, "images_per_s": images / seconds, "lr": lr, "time_s": seconds}
        for k, v in row.items():
            history[k].append(v)
        history["step_loss"] += step_loss.tolist()
        bar.set_postfix(epoch=epoch + 1, loss=f"{row['train_loss']:.3f}", test_acc=f"{test_acc:.4f}")
        if config.checkpoint and rank == 0:
            save_checkpoint(config.checkpoint, model, optimizer, scaler, epoch + 1, step, history, config)
    bar.close()
    return history


def plot_history(history: dict[str, list], axes=None):
    """Loss curves (train, test) and test accuracy per epoch; returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    fig = axes[0].figure
    tested = [i for i, acc in enumerate(history["test_acc"]) if not math.isnan(acc)]  # see TrainConfig.eval_every
    epochs = [history["epoch"][i] for i in tested]
    axes[0].plot(history["epoch"], history["train_loss"], label="train (label-smoothed)")
    axes[0].plot(epochs, [history["test_loss"][i] for i in tested], label="test", marker=".")
    axes[0].set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    axes[0].legend()
    axes[1].plot(epochs, [100 * history["test_acc"][i] for i in tested], color="C2", marker=".")
    axes[1].set(xlabel="epoch", ylabel="accuracy (%)", title=f"test accuracy (last {100 * history['test_acc'][-1]:.2f}%)")
    fig.tight_layout()
    return fig
