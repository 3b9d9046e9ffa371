"""course_lib: the Vision Transformer, built piece by piece in the course's exercises.

Shape legend, used in every docstring and shape comment of the course:

    B   batch size                      C   image channels (3 RGB, 1 grey)
    H   image height                    W   image width
    P   patch size (patches are P x P)  N   tokens (patches: N = HW / P²; + 1 with [class])
    D   model width                     h   attention heads
    d   head width, D / h               M   context tokens (cross-attention)
    K   classes                         L   encoder blocks (depth)

Modules, one concept each (the exercise tasks are marked "Task X.Y" in docstrings):

    attention    Tasks 1.1-1.6  scaled dot-product, causal mask, single/multi-head, cross, gated cross
    encoder      Tasks 2.1-2.4  MLP, LayerNorm, pre-norm and post-norm encoder blocks
    embeddings   Tasks 3.1-3.5  patchify, patch embedding, 1D/2D sin-cos, [class] + learned positions
    vit          Task 4.1       ViTConfig, vit_config("B/16"), VisionTransformer
    analysis     Tasks 5.1-5.4  mean attention distance, power-law fit, parameter and FLOP counts
    torchvision_compat          weights to and from torchvision's VisionTransformer
    device                      get_device (CUDA, MPS, CPU), seed_everything
    selfcheck                   check("1.4") / check(): is my task right? (cases and stored outputs in checks/)
    forbidden                   "written by hand": no fused attention / LayerNorm kernels, by any route
    tasks                       the registry of tasks, points and what each is checked against
    bootstrap                   what each notebook's set-up cell calls (Colab: a copy in Google Drive)
    submit, locate, rerun       make_submission(STUDENT_ID): find, re-run and zip a finished exercise
    plots                       the lectures' figure helpers (diagrams, panels)
    data, train, loop, ...      datasets, the training loop, recipes, checkpoints (docs/TRAINING.md)
    locality                    the learned-locality ViT of lecture 12 (torchvision's ViT, shipped checkpoint)
"""
from course_lib.device import describe_device, get_device, seed_everything

__version__ = "0.1.0"
__all__ = ["check", "describe_device", "get_device", "seed_everything"]


def check(task: str | int | None = None, device: str | None = None, verbose: bool = True):
    """Check one task ("1.4"), one exercise (1) or every task (None); see ``course_lib.selfcheck``."""
    from course_lib.selfcheck import check as _check

    return _check(task, device=device, verbose=verbose)
