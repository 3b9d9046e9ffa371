"""The course's graded tasks: one registry that the stubs, self-check, tests and grader share.

Each task is a function or method in ``course_lib`` whose docstring starts
with ``Task X.Y:``. In the student edition (``make release``) its body is
``raise not_implemented("X.Y")``, and the docstring stays for the student.

Tests for a task are tagged with its marker, so ``pytest -m task1_4`` runs
only the tests of Task 1.4.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    id: str  # "1.4": exercise 1, task 4
    name: str  # the function or class students complete
    module: str  # file in course_lib/ that holds it
    points: int  # points in the exercise's grade
    checked_against: str  # what the tests compare it with
    hidden: str = ""  # one line: what the task's hidden tests cover (shown on feedback pages)

    @property
    def marker(self) -> str:
        """pytest marker of the task's tests, e.g. ``task1_4``."""
        return "task" + self.id.replace(".", "_")

    @property
    def exercise(self) -> int:
        return int(self.id.split(".")[0])


TASKS: tuple[Task, ...] = (
    Task("1.1", "scaled_dot_product_attention", "attention", 3, "F.scaled_dot_product_attention (masks: bool, additive, causal)",
         "no, one or two leading dimensions, N != M and d_v != d, a single token, batch size 1, float64, broadcast bool masks, finite and -inf additive masks, fully masked rows, gradients of q, k and v"),
    Task("1.2", "causal_mask", "attention", 1, "F.scaled_dot_product_attention(is_causal=True)",
         "N = 1, larger N, device given as a string and as torch.device, dtype bool"),
    Task("1.3", "SingleHeadAttention", "attention", 2, "hand computation of softmax(qk^T/sqrt(d))v; permutation equivariance",
         "a bool mask passed on, permutation equivariance, batch size 1, a single token, d != D, float64 and the gradient of qkv"),
    Task("1.4", "MultiHeadAttention", "attention", 4, "nn.MultiheadAttention (same in_proj/out_proj weights); fused vs manual",
         "qkv_bias=False, one head and d = 1, batch size 1, a single token, additive and per-image bool masks (fused and not), float64 and gradients of x, qkv and proj"),
    Task("1.5", "CrossAttention", "attention", 2, "nn.MultiheadAttention with kdim/vdim (query from x, key/value from context)",
         "context_dim=None, a bool (N, M) mask, M = 1, batch size 1, float64"),
    Task("1.6", "GatedCrossAttention", "attention", 1, "identity at alpha = 0; y + tanh(alpha) * CrossAttention",
         "negative alpha, batch size 1, other N and M, float64"),
    Task("2.1", "MLP", "encoder", 2, "nn.Sequential(Linear, nn.GELU(), Linear)",
         "inputs (D,), (N, D) and (B, N, H, D), the exact GELU, dropout in train() and eval() mode, float64 and the gradients"),
    Task("2.2", "LayerNorm", "encoder", 2, "nn.LayerNorm, F.layer_norm; float64 gradcheck",
         "a large eps inside the square root, D = 4 (biased variance), a constant token, other input ranks, no statistics across images, float64 and gradients of x, weight and bias"),
    Task("2.3", "EncoderBlock", "encoder", 3, "nn.TransformerEncoderLayer(norm_first=True, activation='gelu')",
         "other sizes, batch size 1, a single token, bool and additive masks passed on, float64 and the gradient of the input"),
    Task("2.4", "PostNormEncoderBlock", "encoder", 2, "nn.TransformerEncoderLayer(norm_first=False, activation='gelu')",
         "other sizes, batch size 1, a single token, bool and additive masks passed on, float64 and the gradient of the input"),
    Task("3.1", "patchify", "embeddings", 2, "F.unfold",
         "non-square images, one channel, batch size 1, P = 1, one patch per image, float64"),
    Task("3.2", "PatchEmbedding", "embeddings", 2, "nn.Conv2d equals a linear map of patchify(x)",
         "non-square images, one channel, batch size 1, float64 and the gradients of the weights"),
    Task("3.3", "sinusoidal_position_embedding", "embeddings", 2, "Vaswani et al. formula evaluated elementwise",
         "the formula entry by entry for D = 2, N = 1, N = 64, another base"),
    Task("3.4", "sincos_2d_position_embedding", "embeddings", 2, "big_vision posemb_sincos_2d layout [sin x, cos x, sin y, cos y]",
         "non-square grids, a 1 x 1 grid, D = 8 and 32, another temperature"),
    Task("3.5", "ClassTokenPositionEmbedding", "embeddings", 2, "torchvision Encoder: CLS first, then + pos_embedding",
         "batch size 1, float64, gradients of the class token, position embedding and input, images independent of each other"),
    Task("4.1", "VisionTransformer", "vit", 5, "torchvision.models.VisionTransformer logits with converted weights",
         "grey images, batch size 1, one and three blocks, dropout in eval() mode, float64, forward_head alone, every block's attention, gradient of the images"),
    Task("5.1", "mean_attention_distance", "analysis", 2, "uniform attention on ViT-B/16: 116.49 px; one-hot attention",
         "random attention on a non-square grid, weight on the class token (renormalised), has_cls=False, (h, T, T) input, float32"),
    Task("5.2", "fit_power_law", "analysis", 2, "synthetic Kaplan L(N) data: exponent within 1%",
         "noisy data against numpy.polyfit, Python lists and float32 tensors, two points, a growing power law"),
    Task("5.3", "count_parameters", "analysis", 2, "sum(p.numel()) of torchvision's ViT variants",
         "S/16, B/32, L/16, H/14, the digits preset, other image sizes, depths and numbers of classes"),
    Task("5.4", "count_flops", "analysis", 2, "torch.utils.flop_counter.FlopCounterMode",
         "Ti/16, B/32, the digits and test presets, another MLP width, depth and number of classes"),
)

_BY_ID = {t.id: t for t in TASKS}


def get_task(task_id: str) -> Task:
    """The task with id ``"1.4"`` (``"task1_4"`` and ``"1_4"`` work too)."""
    key = task_id.removeprefix("task").replace("_", ".")
    try:
        return _BY_ID[key]
    except KeyError:
        raise KeyError(f"unknown task {task_id!r}; tasks are {', '.join(_BY_ID)}") from None


def tasks_of_exercise(exercise: int) -> list[Task]:
    return [t for t in TASKS if t.exercise == exercise]


def not_implemented(task_id: str) -> NotImplementedError:
    """The error an untouched stub raises (used by the student edition's stubs)."""
    t = get_task(task_id)
    return NotImplementedError(
        f"Task {t.id} ({t.name}) is not implemented yet: write it in course_lib/{t.module}.py "
        f"between the docstring and the end of the function, then run check('{t.id}')."
    )
