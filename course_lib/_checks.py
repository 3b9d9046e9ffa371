"""Loud input checks shared by the modules: every error names who complained,
the layout that was expected and the shape (or dtype) that came."""
from __future__ import annotations

import torch


def shape_error(where: str, expected: str, x: torch.Tensor, hint: str = "") -> ValueError:
    msg = f"{where}: expected {expected}, got a tensor of shape {tuple(x.shape)}"
    return ValueError(msg + (f" ({hint})" if hint else ""))


def expect_floating(x: torch.Tensor, where: str, name: str = "input") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where}: expected {name} to be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{where}: expected a floating-point {name}, got dtype {x.dtype} "
            f"(convert with .float(); images as uint8 need .float() / 255)"
        )


def expect_rank(x: torch.Tensor, rank: int, where: str, layout: str) -> None:
    if x.dim() != rank:
        raise shape_error(where, f"{layout} ({rank} dimensions)", x)


def expect_size(x: torch.Tensor, dim: int, size: int, where: str, layout: str, what: str) -> None:
    if x.shape[dim] != size:
        raise shape_error(where, layout, x, f"{what} must be {size}, not {x.shape[dim]}")
