"""Figure helpers for the lecture notebooks: box diagrams and panel layouts, so each cell shows the idea.

Nothing here computes anything a task asks for: the functions only draw what they are given
(matrices, weights, distances, shapes). Every function takes matplotlib axes or returns a figure
and calls no ``plt.show()``; the notebook does.

Shape legend as in ``course_lib``: N tokens, g patches per side, P patch size in pixels.
"""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.patches as mpatches
import matplotlib.pyplot as plt
import numpy as np

ENC, DEC, CROSS, MLP, NORM = "#9ec9f0", "#f6c28b", "#f4a6a6", "#a8d5ba", "#ffe9a8"


# --- lecture 02: the three Transformer shapes and their masks ----------------------------------

def _stack(ax, x: float, boxes: Sequence[tuple[str, str]], inp: str, out: str) -> list[float]:
    """Boxes from bottom to top at position x, framed as one block repeated L times; returns box centres."""
    ys = [1.0 + 1.1 * i for i in range(len(boxes))]
    ax.add_patch(mpatches.FancyBboxPatch((x - 1.35, 0.5), 2.7, 1.1 * len(boxes), boxstyle="round,pad=0.05",
                                         fc="none", ec="gray", ls="--"))
    ax.text(x + 1.45, 0.55, "× L", color="gray", fontsize=10)
    for y, (text, colour) in zip(ys, boxes):
        ax.add_patch(mpatches.FancyBboxPatch((x - 1.2, y - 0.4), 2.4, 0.8, boxstyle="round,pad=0.04", fc=colour, ec="black"))
        ax.text(x, y, text, ha="center", va="center", fontsize=9)
    for y0, y1 in zip([0.0] + [y + 0.38 for y in ys], [y - 0.38 for y in ys] + [ys[-1] + 0.95]):
        ax.annotate("", xy=(x, y1), xytext=(x, y0 + 0.05), arrowprops=dict(arrowstyle="->"))
    ax.text(x, -0.3, inp, ha="center", va="center", fontsize=9)
    ax.text(x, ys[-1] + 1.2, out, ha="center", va="center", fontsize=9)
    return ys


def transformer_shapes() -> plt.Figure:
    """Encoder-only, decoder-only and encoder-decoder stacks side by side."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), gridspec_kw={"width_ratios": [1, 1, 2]})
    for ax, title in zip(axes, ["encoder-only (BERT, ViT)", "decoder-only (GPT)", "encoder-decoder (Transformer 2017, T5)"]):
        ax.set_ylim(-0.6, 4.9)
        ax.axis("off")
        ax.set_title(title, fontsize=11)
    axes[0].set_xlim(0, 4.4)
    axes[1].set_xlim(0, 4.4)
    axes[2].set_xlim(0, 8.8)
    _stack(axes[0], 2.0, [("self-attention\n(bidirectional)", ENC), ("MLP", MLP)], "tokens / patches", "one vector per token")
    _stack(axes[1], 2.0, [("self-attention\n(causal)", DEC), ("MLP", MLP)], "tokens so far", "next-token scores")
    _stack(axes[2], 2.0, [("self-attention\n(bidirectional)", ENC), ("MLP", MLP)], "source", "memory")
    ys = _stack(axes[2], 6.2, [("self-attention\n(causal)", DEC), ("cross-attention", CROSS), ("MLP", MLP)],
                "target so far", "next-token scores")
    axes[2].annotate("", xy=(4.95, ys[1]), xytext=(2.6, 3.45),
                     arrowprops=dict(arrowstyle="->", color="tab:red", lw=1.5, connectionstyle="arc3,rad=-0.25"))
    axes[2].text(3.6, 3.55, "K, V", color="tab:red", fontsize=9)
    return fig


def show_mask(ax, mask, rows: Sequence[str], cols: Sequence[str], title: str, cmap: str) -> None:
    """A boolean (len(rows), len(cols)) mask as coloured (may attend) and pale (masked) cells."""
    ax.imshow(np.asarray(mask, dtype=float), cmap=cmap, vmin=0, vmax=1.3)
    ax.set_xticks(range(len(cols)), cols, rotation=50, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xticks(np.arange(len(cols)) - 0.5, minor=True)
    ax.set_yticks(np.arange(len(rows)) - 0.5, minor=True)
    ax.grid(which="minor", color="white", lw=1.5)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("keys (attended to)", fontsize=9)
    ax.set_ylabel("queries (attending)", fontsize=9)
    ax.set_title(title, fontsize=10)


# --- lecture 03: patches, the pipeline, pre- vs post-norm blocks -------------------------------

def patch_sequence(photo, patch_images: Sequence[np.ndarray], grid: int, patch: int, n_show: int = 28) -> plt.Figure:
    """The image with its patch grid, the patches pulled apart and numbered, and the first tokens as a strip.

    Args:
        photo: the (H, W, 3) image.  patch_images: the N patches as (P, P, 3) arrays in reading order.
        grid: g, patches per side.  patch: P in pixels.  n_show: patches in the strip.
    """
    N = len(patch_images)
    fig = plt.figure(figsize=(8.5, 4.6))
    top = fig.add_gridspec(1, 2, bottom=0.22, top=0.95, wspace=0.08)
    ax = fig.add_subplot(top[0, 0])
    ax.imshow(photo)
    for k in range(1, grid):
        ax.axhline(k * patch - 0.5, color="white", lw=0.7)
        ax.axvline(k * patch - 0.5, color="white", lw=0.7)
    ax.set_title(f"{grid * patch}×{grid * patch} image cut into {patch}×{patch} patches")
    ax.axis("off")
    gap = 3
    canvas = np.ones((grid * (patch + gap), grid * (patch + gap), 3))
    for i, img in enumerate(patch_images):
        r, c = divmod(i, grid)
        canvas[r * (patch + gap): r * (patch + gap) + patch, c * (patch + gap): c * (patch + gap) + patch] = img
    ax = fig.add_subplot(top[0, 1])
    ax.imshow(canvas)
    for i in (0, grid - 1, grid, N - 1):
        r, c = divmod(i, grid)
        ax.text(c * (patch + gap) + patch / 2, r * (patch + gap) + patch / 2, str(i + 1), ha="center", va="center",
                fontsize=8, color="yellow", fontweight="bold")
    ax.set_title(f"{N} patches, numbered in reading order")
    ax.axis("off")
    strip = fig.add_gridspec(1, n_show, left=0.03, right=0.97, bottom=0.03, top=0.12, wspace=0.1)
    for j in range(n_show):
        ax = fig.add_subplot(strip[0, j])
        ax.imshow(patch_images[j])
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(str(j + 1), fontsize=7, labelpad=1)
    fig.text(0.5, 0.15, f"the sequence the Transformer sees: tokens 1 to {n_show} of {N} (rows 1 and 2 of the grid)", ha="center")
    return fig


def pipeline(stages: Sequence[tuple[str, tuple]], symbolic: Sequence[str], photo, title: str) -> plt.Figure:
    """One box per stage (name inside, measured shape and symbolic shape below), the image as the first box."""
    colours = ["#dddddd", DEC, DEC, MLP, MLP, ENC, "#d7b5e8", CROSS]
    fig, ax = plt.subplots(figsize=(12, 2.6))
    ax.set_xlim(0.4, len(stages) + 0.4)
    ax.set_ylim(-0.75, 1.0)
    ax.axis("off")
    for i, ((name, shape), colour, sym) in enumerate(zip(stages, colours, symbolic)):
        cx = i + 0.9
        ax.add_patch(mpatches.FancyBboxPatch((cx - 0.42, 0.0), 0.84, 0.8, boxstyle="round,pad=0.02", fc=colour, ec="black", lw=1))
        if i == 0:
            ax.imshow(np.asarray(photo), extent=(cx - 0.3, cx + 0.3, 0.08, 0.72), aspect="auto", zorder=3)
        else:
            ax.text(cx, 0.4, name, ha="center", va="center", fontsize=10)
        ax.text(cx, -0.2, str(shape).replace(" ", ""), ha="center", va="center", fontsize=10, family="monospace")
        ax.text(cx, -0.5, sym, ha="center", va="center", fontsize=9, color="gray")
        if i:
            ax.annotate("", xy=(cx - 0.44, 0.4), xytext=(cx - 0.56, 0.4), arrowprops=dict(arrowstyle="->", lw=1.5))
    ax.set_title(title)
    return fig


def norm_block(ax, title: str, pre: bool) -> None:
    """Box diagram of a pre-norm (ViT) or post-norm (Transformer 2017) encoder block, residual paths in blue."""
    ax.set_xlim(0, 4)
    ax.set_ylim(-0.3, 10.4)
    ax.axis("off")
    ax.set_title(title)

    def box(y, text, colour):
        ax.add_patch(mpatches.FancyBboxPatch((1.2, y - 0.35), 1.6, 0.7, boxstyle="round,pad=0.05", fc=colour, ec="black"))
        ax.text(2, y, text, ha="center", va="center", fontsize=10)

    def plus(y):
        ax.add_patch(mpatches.Circle((2, y), 0.25, fc="white", ec="black"))
        ax.text(2, y, "+", ha="center", va="center", fontsize=12)

    def arrows(pairs):
        for y0, y1 in pairs:
            ax.annotate("", xy=(2, y1), xytext=(2, y0), arrowprops=dict(arrowstyle="->", lw=1.2))

    def skip(y0, y1):
        ax.plot([2, 3.5, 3.5], [y0, y0, y1], color="tab:blue", lw=1.5)
        ax.annotate("", xy=(2.27, y1), xytext=(3.5, y1), arrowprops=dict(arrowstyle="->", lw=1.5, color="tab:blue"))

    ax.text(2, -0.1, "z (tokens in)", ha="center", va="center")
    if pre:
        box(1.5, "LayerNorm", NORM)
        box(2.9, "MSA", DEC)
        plus(4.2)
        box(5.6, "LayerNorm", NORM)
        box(7.0, "MLP", MLP)
        plus(8.3)
        arrows([(0.15, 1.15), (1.85, 2.55), (3.25, 3.95), (4.45, 5.25), (5.95, 6.65), (7.35, 8.05), (8.55, 9.6)])
        skip(0.6, 4.2)
        skip(4.7, 8.3)
    else:
        box(1.5, "MSA", DEC)
        plus(2.9)
        box(4.1, "LayerNorm", NORM)
        box(5.6, "MLP", MLP)
        plus(7.0)
        box(8.3, "LayerNorm", NORM)
        arrows([(0.15, 1.15), (1.85, 2.65), (3.15, 3.75), (4.45, 5.25), (5.95, 6.75), (7.25, 7.95), (8.65, 9.6)])
        skip(0.6, 2.9)
        skip(4.8, 7.0)
    ax.text(2, 9.9, "tokens out", ha="center", va="center")


# --- lectures 04, 05: where a query patch looks ------------------------------------------------

def spotlight(ax, photo: np.ndarray, weights: np.ndarray, query: tuple[int, int], patch: int, title: str) -> None:
    """The photo lit by one query's attention row: bright where it attends (square-root scale); cyan box = query.

    Args:
        photo: (H, W, 3) in [0, 1].  weights: (g, g) one row of A reshaped to the grid.
        query: (row, column) of the query patch.  patch: P in pixels.
    """
    w = np.asarray(weights, dtype=float)
    light = np.sqrt(w / w.max()).repeat(patch, 0).repeat(patch, 1)[..., None]  # (H, W, 1)
    ax.imshow(photo * (0.1 + 0.9 * light))
    ax.add_patch(plt.Rectangle((query[1] * patch - 0.5, query[0] * patch - 0.5), patch, patch, fill=False, ec="cyan", lw=2))
    ax.set_title(title, fontsize=10)
    ax.axis("off")


# --- lecture 08: LayerNorm vs BatchNorm --------------------------------------------------------

def norm_statistics(mats: dict[str, np.ndarray], highlight_row: int = 5, highlight_col: int = 3) -> plt.Figure:
    """Each (tokens, features) matrix with the std of every row (right) and every column (below).

    A red box marks one token (LayerNorm's statistics), a blue box one feature (BatchNorm's).
    """
    n_rows, n_cols = next(iter(mats.values())).shape
    fig = plt.figure(figsize=(15, 7))
    grid = fig.add_gridspec(2, 7, width_ratios=[4, 1.4] * 3 + [0.2], height_ratios=[4, 1.4], wspace=0.3, hspace=0.3)
    for col, (title, m) in enumerate(mats.items()):
        ax = fig.add_subplot(grid[0, 2 * col])
        im = ax.imshow(m, cmap="RdBu_r", vmin=-4, vmax=4, aspect="auto")
        ax.set_title(title, fontsize=11)
        ax.set_xticks([])
        ax.set_ylabel("token (b, n)" if col == 0 else "", fontsize=10)
        ax.tick_params(labelleft=col == 0)
        if col in (0, 1):
            ax.add_patch(mpatches.Rectangle((-0.5, highlight_row - 0.5), n_cols, 1, fill=False, ec="red", lw=2.5))
        if col in (0, 2):
            ax.add_patch(mpatches.Rectangle((highlight_col - 0.5, -0.5), 1, n_rows, fill=False, ec="blue", lw=2.5))
        right = fig.add_subplot(grid[0, 2 * col + 1], sharey=ax)
        right.barh(np.arange(n_rows), m.std(axis=1), color="red")
        right.set(xscale="log", xlim=(0.05, 20))
        right.set_xticks([0.1, 1, 10], ["0.1", "1", "10"])
        right.tick_params(labelleft=False, labelsize=9)
        right.set_xlabel("row std", fontsize=10, color="red")
        below = fig.add_subplot(grid[1, 2 * col], sharex=ax)
        below.bar(np.arange(n_cols), m.std(axis=0), color="blue")
        below.set(yscale="log", ylim=(0.05, 20))
        below.set_yticks([0.1, 1, 10], ["0.1", "1", "10"])
        below.set_xlabel("feature d", fontsize=10)
        below.tick_params(labelsize=9, labelleft=col == 0)
        if col == 0:
            below.set_ylabel("column std", fontsize=10, color="blue")
    fig.colorbar(im, cax=fig.add_subplot(grid[0, 6]))
    return fig


# --- lecture 09: a similarity matrix as a mosaic of maps ---------------------------------------

def mosaic(sim: np.ndarray, grid: int, gap: int = 1) -> np.ndarray:
    """Arrange a (grid², grid²) similarity matrix as a grid × grid mosaic of grid × grid tiles (NaN gaps)."""
    tiles = np.asarray(sim).reshape(grid, grid, grid, grid)  # (row, col, row', col')
    size = grid + gap
    out = np.full((grid * size - gap, grid * size - gap), np.nan)
    for i in range(grid):
        for j in range(grid):
            out[i * size:i * size + grid, j * size:j * size + grid] = tiles[i, j]
    return out


# --- lecture 12: attention distance against depth ----------------------------------------------

def head_distances(ax, dist: np.ndarray, uniform: float, title: str, err: np.ndarray | None = None) -> None:
    """One dot per head at its layer (x) and mean attention distance (y), like ViT Fig. 7; dashed: uniform."""
    layers, heads = dist.shape
    x = np.arange(1, layers + 1)
    for head in range(heads):
        label = f"head {head + 1}" if heads <= 8 else None
        if err is None:
            ax.scatter(x, dist[:, head], s=28, label=label)
        else:
            ax.errorbar(x, dist[:, head], yerr=err[:, head], fmt="o", ms=5, capsize=2, label=label)
    ax.plot(x, dist.mean(1), "k-", lw=0.8, alpha=0.6, label="mean over heads")
    ax.axhline(uniform, color="k", ls="--", lw=1, label=f"uniform attention: {uniform:.2f} px")
    ax.set(xlabel="network depth (layer)", ylabel="mean attention distance (pixels)", title=title, xticks=x)


def sorted_heads(ax, dist: np.ndarray, uniform: float, title: str) -> None:
    """One line per layer: that layer's head distances sorted ascending, against rank 1..h."""
    layers, heads = dist.shape
    colours = plt.cm.viridis(np.linspace(0, 0.9, layers))
    for layer in range(layers):
        ax.plot(np.arange(1, heads + 1), np.sort(dist[layer]), "o-", color=colours[layer], ms=4, label=f"layer {layer + 1}")
    ax.axhline(uniform, color="k", ls="--", lw=1, label="uniform")
    ax.set(xlabel="sorted attention head (rank: 1 = most local head of the layer)",
           ylabel="mean attention distance (pixels)", title=title, xticks=range(1, heads + 1))
