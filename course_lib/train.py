"""Training for the course: the loop, the recipes and the command line, in one import.

    python -m course_lib.train --recipe digits
    python -m course_lib.train --recipe locality --out lectures/assets/locality_vit.pt
    torchrun --nproc_per_node=2 -m course_lib.train --recipe cifar --data data

The code lives in one module per concept: ``course_lib.loop`` (``TrainConfig``,
``train``, ``evaluate``, the schedule and optimizer), ``course_lib.checkpoint``
(save and resume), ``course_lib.recipes`` (digits, CIFAR-10) and
``course_lib.locality`` (the learned-locality ViT of lecture 12). Everything is
re-exported here, so ``from course_lib.train import train, digits_recipe`` works.

Nothing here is an exercise, but the digits and CIFAR-10 recipes need a working ViT (Task 4.1).
"""
from __future__ import annotations

import os

import torch

from course_lib import distributed as dist_utils
from course_lib.checkpoint import load_checkpoint, save_checkpoint
from course_lib.loop import (TrainConfig, amp_dtype, evaluate, lr_at, make_adamw, param_groups,
                             plot_history, train)
from course_lib.recipes import RECIPES, digits_recipe, recipe_data, run_recipe

__all__ = ["TrainConfig", "amp_dtype", "evaluate", "lr_at", "make_adamw", "param_groups", "plot_history",
           "train", "load_checkpoint", "save_checkpoint", "RECIPES", "digits_recipe", "recipe_data",
           "run_recipe", "main"]


def main(argv: list[str] | None = None) -> dict:
    """Command line: ``python -m course_lib.train --recipe digits`` (or under ``torchrun``)."""
    import argparse
    import json

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", choices=sorted([*RECIPES, "locality"]), default="digits")
    p.add_argument("--data", default="data", help="CIFAR-10 folder (downloaded if missing)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    p.add_argument("--epochs", type=int), p.add_argument("--lr", type=float), p.add_argument("--seed", type=int)
    p.add_argument("--batch-size", type=int, help="per process")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--no-augment", action="store_true"), p.add_argument("--no-progress", action="store_true")
    p.add_argument("--synthetic", action="store_true", help="random CIFAR-shaped data (speed checks)")
    p.add_argument("--checkpoint", help="save after every epoch"), p.add_argument("--resume", action="store_true")
    p.add_argument("--history", help="write the history as JSON (rank 0)")
    p.add_argument("--out", help="locality recipe: where to save the model (e.g. lectures/assets/locality_vit.pt)")
    a = p.parse_args(argv)
    overrides = {k: v for k, v in dict(epochs=a.epochs, lr=a.lr, seed=a.seed, compile=a.compile,
                                       checkpoint=a.checkpoint).items() if v is not None}
    if a.recipe in ("digits", "locality"):
        torch.set_num_threads(1)  # models this small train fastest on one thread (see digits_recipe)
    if a.recipe == "locality":  # torchvision's ViT, masked-patch prediction on smooth images (CPU by default)
        from dataclasses import replace

        from course_lib.locality import LocalityConfig, train_locality

        config = replace(LocalityConfig(), **{k: v for k, v in overrides.items() if k in ("lr", "seed")})
        _, history = train_locality(config, out=a.out, device=a.device or "cpu", progress=not a.no_progress)
        print(json.dumps({k: v[-1] for k, v in history.items()}))
        return history
    if "RANK" in os.environ:  # under torchrun: join the process group, one device per process
        device = dist_utils.setup("gloo" if a.device == "cpu" else None)
    else:
        device = torch.device(a.device) if a.device else None
    try:
        _, history = run_recipe(a.recipe, device, a.data, augment=not a.no_augment, synthetic=a.synthetic,
                                batch_size=a.batch_size, progress=not a.no_progress, resume=a.resume, **overrides)
        if dist_utils.rank() == 0:
            print(json.dumps({k: v[-1] for k, v in history.items() if k != "step_loss"}))
            if a.history:
                with open(a.history, "w") as f:
                    json.dump(history, f)
    finally:
        dist_utils.cleanup()
    return history


if __name__ == "__main__":
    main()
