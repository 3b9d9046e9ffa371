"""Instructors: regenerate ``position_embeddings.npz``, the stored results that lectures 09 and 10 plot.

The lectures show these embeddings without computing them (computing them is Tasks 3.3 and 3.4),
so they are produced here from course_lib's own functions, which hold the solutions only in the
instructor edition. Run from the repository root of the instructor edition::

    python lectures/data/make_position_embeddings.py

``tests/test_lecture_no_solutions.py`` checks that the stored file matches course_lib.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from course_lib.embeddings import sincos_2d_position_embedding, sinusoidal_position_embedding

PATH = Path(__file__).with_name("position_embeddings.npz")


def arrays() -> dict[str, np.ndarray]:
    """Every stored array, by name: (positions, D) tables in float32, (N, N) cosine similarities in float16."""
    with torch.no_grad():
        tables = {
            "sinusoidal_100x128": sinusoidal_position_embedding(100, 128),   # lecture 09, section 2
            "sinusoidal_100x20": sinusoidal_position_embedding(100, 20),     # lecture 09, the learners' question
            "sincos2d_14x14x64": sincos_2d_position_embedding(14, 14, 64),    # lecture 10, cross-attention keys
        }
        wide = {  # lecture 09, section 4: ViT-B/16's 14 x 14 grid at D = 768, stored as similarities (smaller)
            "cosine_sincos2d_14x14x768": sincos_2d_position_embedding(14, 14, 768),
            "cosine_sinusoidal_196x768": sinusoidal_position_embedding(196, 768),  # 1D formula on the raster index
        }
    out = {k: v.float().numpy() for k, v in tables.items()}
    for k, pe in wide.items():
        unit = torch.nn.functional.normalize(pe.double(), dim=1)  # (N, D)
        out[k] = (unit @ unit.T).numpy().astype(np.float16)     # (N, N) cosine similarities
    return out


if __name__ == "__main__":
    np.savez_compressed(PATH, **arrays())
    print(f"wrote {PATH.name}: " + ", ".join(f"{k} {v.shape}" for k, v in np.load(PATH).items()))
