"""Training checkpoints: everything a bit-identical resume needs, written atomically.

``save_checkpoint`` stores the model, optimizer, grad scaler, epoch, step,
history, config and every random number generator's state;
``load_checkpoint`` puts them back. Nothing here is an exercise.
"""
from __future__ import annotations

import os
import random
from dataclasses import asdict
from typing import Any

import torch
from torch import nn


def rng_state() -> dict:
    """The state of Python's, NumPy's, torch's CPU and (if present) CUDA generators."""
    import numpy as np

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what ``rng_state`` returned (tensors may have been mapped to the GPU)."""
    import numpy as np

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())  # map_location may have moved it to the GPU
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_checkpoint(path: str, model: nn.Module, optimizer, scaler, epoch: int, step: int,
                    history: dict, config: Any) -> None:
    """Write everything a bit-identical resume needs, atomically (tmp file, then rename).

    Args:
        path: the file; its folder is created.
        model, optimizer, scaler: saved through their ``state_dict``.
        epoch, step: epochs and optimizer steps done.
        history: ``train``'s history so far.
        config: the ``TrainConfig`` (a dataclass, stored as a dict).
    """
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scaler": scaler.state_dict(), "epoch": epoch, "step": step, "history": history,
             "config": asdict(config), "rng": rng_state()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)


def load_checkpoint(path: str, model: nn.Module, optimizer, scaler,
                    device: torch.device) -> tuple[int, int, dict]:
    """Load ``save_checkpoint``'s file into model, optimizer and scaler; restore the RNGs.

    Returns:
        (epoch, step, history) to continue from.
    """
    state = torch.load(path, map_location=device, weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return state["epoch"], state["step"], state["history"]
