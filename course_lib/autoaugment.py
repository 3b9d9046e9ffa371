"""AutoAugment's CIFAR-10 policy drawn per image and applied to a whole batch, on its device.

``v2.AutoAugment`` draws one sub-policy per call: a batch gets one draw (``data.GroupedTransform``
loops over groups for more). ``BatchAutoAugment`` draws a sub-policy, coins and signs per image
and runs each of the two steps in a fixed number of whole-batch operations: the point ops
(Brightness, Contrast, Equalize, ...) through one lookup table per image and channel, Color and
Sharpness on the whole batch, kept where drawn (``torch.where``), the geometric ops in one
``grid_sample`` with a grid per image. No loop over images, no host-device sync (CUDA-graph
friendly). Ops computed for images that did not draw them waste arithmetic, which a GPU has to
spare on 32x32 images and a CPU has not (``benchmarks/augment_speed.py``).

The ops match torchvision's ``v2.functional`` on uint8 images pixel for pixel (the tests compare
image by image): magnitudes in 10 bins, a random sign for the signed ones, shears about the
top-left corner, rotations and translations about the centre, nearest neighbours, 0 filled in.
Nothing here is an exercise.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
       "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize", "Invert")
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
SIGNED = GEOMETRIC + ("Brightness", "Color", "Contrast", "Sharpness")

# AutoAugment's CIFAR-10 policy (Cubuk et al. 2019, as torchvision has it): 25 sub-policies of
# two steps (op, probability, magnitude bin 0..9 or None).
SubPolicy = tuple[tuple[str, float, int | None], tuple[str, float, int | None]]
CIFAR10_POLICY: tuple[SubPolicy, ...] = (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
    (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
    (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
)


def op_argument(op: str, bin: int | None, negative: bool, H: int, W: int) -> float:
    """The argument torchvision's AutoAugment passes to ``op``'s functional at magnitude ``bin`` (0..9).

    Returns: a shear (tan of the angle), shift (whole pixels), angle (degrees), factor (1 + magnitude),
    bits (Posterize) or threshold (Solarize, 0..255); 0 for the ops without one. The magnitudes are
    float32 ``torch.linspace`` values like torchvision's, so the arguments match to the bit.
    """
    if bin is None or op in ("Identity", "AutoContrast", "Equalize", "Invert"):
        return 0.0
    if op == "Posterize":  # 8 bits down to 4
        return float(round(8 - bin / 2.25))
    top = {"ShearX": 0.3, "ShearY": 0.3, "TranslateX": 150 / 331 * W, "TranslateY": 150 / 331 * H, "Rotate": 30.0}
    start, end = (1.0, 0.0) if op == "Solarize" else (0.0, top.get(op, 0.9))
    m = float(torch.linspace(start, end, 10)[bin])
    if op == "Solarize":
        return 255 * m
    m = -m if negative and op in SIGNED else m
    if op in ("ShearX", "ShearY"):  # torchvision goes through the angle in degrees
        return math.tan(math.radians(math.degrees(math.atan(m))))
    if op in ("TranslateX", "TranslateY"):
        return float(int(m))  # truncated towards 0
    return m if op == "Rotate" else 1.0 + m


def inverse_affine(op: str, arg: float, H: int, W: int) -> list[float]:
    """The 2x3 matrix mapping output pixel coordinates to input ones, both centred on the image.

    Args:
        op: a geometric op or "Identity" (any other op: the identity too).
        arg: ``op_argument``'s shear, shift or angle.
    """
    if op == "ShearX":  # x_in = x + t·(y + H/2): sheared about the top-left corner
        return [1.0, arg, arg * H / 2, 0.0, 1.0, 0.0]
    if op == "ShearY":
        return [1.0, 0.0, 0.0, arg, 1.0, arg * W / 2]
    if op == "TranslateX":
        return [1.0, 0.0, -arg, 0.0, 1.0, 0.0]
    if op == "TranslateY":
        return [1.0, 0.0, 0.0, 0.0, 1.0, -arg]
    if op == "Rotate":  # counter-clockwise about the centre
        r = math.radians(-(arg % 360))
        return [math.cos(r), math.sin(r), 0.0, -math.sin(r), math.cos(r), 0.0]
    return [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def affine_grids(theta: Tensor, H: int, W: int) -> Tensor:
    """``grid_sample`` grids (N, H, W, 2) for inverse affine maps theta (N, 2, 3) in centred pixel coordinates."""
    ys = torch.linspace((1 - H) / 2, (H - 1) / 2, H, device=theta.device)
    xs = torch.linspace((1 - W) / 2, (W - 1) / 2, W, device=theta.device)
    base = torch.stack([xs.expand(H, W), ys[:, None].expand(H, W), torch.ones(H, W, device=theta.device)], -1)
    scale = torch.tensor([W / 2, H / 2], device=theta.device)  # to grid_sample's -1..1
    grid = base.view(1, H * W, 3) @ (theta.transpose(1, 2) / scale)  # (N, H·W, 2)
    return grid.view(-1, H, W, 2)


# The colour ops. torchvision's blends compute a·f + b·(1 - f) with one fused multiply-add (CPU
# and CUDA); float64 holds that sum exactly, so rounding it to float32 once gives the same pixels.

def _per_image(v: Tensor) -> Tensor:
    return v.view(-1, 1, 1, 1)


def _to_uint8(x: Tensor) -> Tensor:
    return x.clamp_(0, 255).to(torch.uint8)  # truncates, as torchvision does (x: a temporary, clamped in place)


def _blend(x: Tensor, y: Tensor, factor: Tensor) -> Tensor:
    """x·f + y·(1 - f) per image, rounded like torchvision: x, y float32 integer-valued, factor (B,) float64."""
    f = _per_image(factor)
    out = (x * f.float()).double()  # rounded to float32 first, like torchvision's x.mul(f)
    out += (1 - f) * y.double()
    return _to_uint8(out.float())


def _grayscale(x: Tensor) -> Tensor:
    """ITU-R 601 luma, floored: (B, C, H, W) uint8 -> (B, 1, H, W) float32."""
    if x.shape[1] == 1:
        return x.float()
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return (r * 0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).floor_()


def saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with the grey image: x (B, C, H, W) uint8, factor (B,) float64 -> (B, C, H, W) uint8."""
    return x if x.shape[1] == 1 else _blend(x.float(), _grayscale(x), factor)


def sharpness(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with a 3x3 smoothing (weights 1, centre 5, /13) inside the 1-pixel border, which is kept:
    factor 0 smooths, 1 keeps, 2 sharpens. x (B, C, H, W) uint8, factor (B,) float64 -> (B, C, H, W) uint8."""
    xf = x.float()
    inner = xf[:, :, 1:-1, 1:-1]  # (B, C, H - 2, W - 2)
    rows = (xf[:, :, :-2] + xf[:, :, 1:-1]).add_(xf[:, :, 2:])  # (B, C, H - 2, W): 3 rows summed
    box = (rows[..., :-2] + rows[..., 1:-1]).add_(rows[..., 2:])  # (B, C, H - 2, W - 2): 3x3 sums, exact
    # (box + 4·centre) / 13 is never a half-integer, so it rounds like torchvision's float32 convolution
    diff = box.add_(inner, alpha=4).div_(13).round_().sub_(inner)  # smoothed - x
    inner.copy_(diff.double().mul_(1 - _per_image(factor)).add_(inner))  # x + (1 - f)·diff, rounded to float32 once
    return _to_uint8(xf)


PIXEL_OPS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"Color": saturation, "Sharpness": sharpness}


# Point ops: a pixel's new value depends on its value (and on its image's statistics) only, so
# each op is a lookup table on the 256 levels, and a step gathers once. The ops of the value alone
# are tabulated once per policy entry (``BatchAutoAugment.tables``): levels (256,) float32 and
# an argument per entry (N,) float64 -> (N, 256) uint8.

def brightness(v: Tensor, factor: Tensor) -> Tensor:
    return _to_uint8(v * factor.float()[:, None])


def posterize(v: Tensor, bits: Tensor) -> Tensor:
    """Keep the top ``bits`` bits: round down to a multiple of 2^(8 - bits)."""
    q = torch.exp2(8 - bits.float())[:, None]
    return (torch.div(v, q, rounding_mode="floor") * q).to(torch.uint8)


def solarize(v: Tensor, threshold: Tensor) -> Tensor:
    return torch.where(v >= threshold.float()[:, None], 255 - v, v).to(torch.uint8)


def invert(v: Tensor, arg: Tensor) -> Tensor:
    return (255 - v).to(torch.uint8).expand(len(arg), -1)


LEVEL_OPS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "Brightness": brightness, "Posterize": posterize, "Solarize": solarize, "Invert": invert}


# The point ops that read their image's statistics make a table per image (and channel) per batch:
# x (B, C, H, W) uint8, arg (B,) float64 -> (B, C or 1, 1, 256) uint8.

def _levels(x: Tensor) -> Tensor:
    return torch.arange(256.0, device=x.device).view(1, 1, 1, 256)


def contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with the image's mean grey level."""
    return _blend(_levels(x), _grayscale(x).mean(dim=(1, 2, 3), keepdim=True), factor)


def autocontrast(x: Tensor, _: Tensor) -> Tensor:
    """Stretch each channel to 0..255 (a flat channel is kept)."""
    xf = x.float()
    lo, hi = xf.amin(dim=(2, 3), keepdim=True), xf.amax(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    flat = hi == lo
    scale = torch.where(flat, 1.0, (hi - lo) * (1 / 255))
    return _to_uint8((_levels(x) - torch.where(flat, 0.0, lo)) / scale)


def equalize(x: Tensor, _: Tensor) -> Tensor:
    """Histogram equalisation per channel with PIL's lookup table (one histogram per image and channel)."""
    B, C, H, W = x.shape
    flat = x.reshape(B * C, H * W)  # (B·C, H·W)
    hist = torch.zeros(B * C, 256, dtype=torch.int32, device=x.device)
    hist.scatter_add_(1, flat.long(), hist.new_ones(1).expand(B * C, H * W))
    top = hist.gather(1, flat.amax(dim=1, keepdim=True).long())  # (B·C, 1): pixels at the brightest level
    step = (H * W - top) // 255
    lut = (hist.cumsum(1)[:, :-1] + step // 2) // step.clamp(min=1)  # lut[v] from the pixels below v
    lut = F.pad(lut, (1, 0)).clamp(max=255)  # lut[0] = 0
    # step 0 (under 255 pixels below the brightest level, e.g. a flat channel): kept as it is
    return torch.where(step > 0, lut, torch.arange(256, device=x.device)).to(torch.uint8).view(B, C, 1, 256)


STAT_OPS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "Contrast": contrast, "AutoContrast": autocontrast, "Equalize": equalize}


def warp(x: Tensor, grid: Tensor) -> Tensor:
    """Nearest-neighbour resampling of x (B, C, H, W) uint8 on per-image grids (B, H, W, 2), 0 outside."""
    return F.grid_sample(x.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False).to(torch.uint8)


class BatchAutoAugment:
    """AutoAugment with a sub-policy, coins and signs drawn per image, for ``TensorLoader``.

    Args:
        policy: sub-policies of two (op, probability, magnitude bin) steps; default AutoAugment's CIFAR-10 one.
        seed: seeds the transform's own generator (made on the batch's device), so a run is reproducible.
    """

    def __init__(self, policy: Sequence[SubPolicy] = CIFAR10_POLICY, seed: int = 0):
        unknown = {op for sub in policy for op, _, _ in sub} - set(OPS)
        if unknown or any(len(sub) != 2 for sub in policy):
            raise ValueError(f"BatchAutoAugment: sub-policies are two (op, p, bin) steps of {OPS}; got {unknown or policy}")
        self.policy, self.seed = tuple(policy), seed
        self.generator: torch.Generator | None = None
        self._tables: dict[tuple, tuple[Tensor, ...]] = {}
        # per step, the op types it can hold: the others are never computed
        self.step_ops = [sorted({sub[s][0] for sub in self.policy}, key=OPS.index) for s in range(2)]

    def tables(self, H: int, W: int, device: torch.device) -> tuple[Tensor, ...]:
        """The policy as tensors on ``device``, built once per image size and device.

        Returns:
            per (sub-policy, step): the op's index in ``OPS`` and its probability, (P, 2) each;
            per (sub-policy, step, negative?): the op's argument (P, 2, 2) float64, its lookup
            table (P, 2, 2, 256) uint8 if a value-only point op, and its sampling grid
            (P, 2, 2, H, W, 2) if geometric (the identity's otherwise).
        """
        key = (H, W, str(device))
        if key not in self._tables:
            steps = [step for sub in self.policy for step in sub]
            args = [[op_argument(op, bin, neg, H, W) for neg in (False, True)] for op, _, bin in steps]
            theta = [inverse_affine(op, a, H, W) for (op, _, _), pair in zip(steps, args) for a in pair]
            P = len(self.policy)
            arg = torch.tensor(args, dtype=torch.float64, device=device).view(-1)  # (P·2·2,)
            op_index = torch.tensor([OPS.index(op) for op, _, _ in steps for _ in (0, 1)], device=device)[:, None]
            lut = torch.arange(256, dtype=torch.uint8, device=device).expand(len(arg), 256)  # (P·2·2, 256)
            for name, fn in LEVEL_OPS.items():
                lut = torch.where(op_index == OPS.index(name), fn(torch.arange(256.0, device=device), arg), lut)
            self._tables[key] = (
                op_index[::2].view(P, 2),
                torch.tensor([p for _, p, _ in steps], device=device).view(P, 2),
                arg.view(P, 2, 2),
                lut.reshape(P, 2, 2, 256),
                affine_grids(torch.tensor(theta, device=device).view(-1, 2, 3), H, W).view(P, 2, 2, H, W, 2),
            )
        return self._tables[key]

    def draw(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per image of x (B, C, H, W): a sub-policy index (B,), and per step whether its op applies
        and whether its magnitude is negated, (2, B) bool each."""
        if self.generator is None or self.generator.device != x.device:
            self.generator = torch.Generator(device=x.device).manual_seed(self.seed)
        B, _, H, W = x.shape
        index = torch.randint(len(self.policy), (B,), generator=self.generator, device=x.device)
        u = torch.rand(2, 2, B, generator=self.generator, device=x.device)  # (apply?, negative?) per step
        prob = self.tables(H, W, x.device)[1]
        return index, u[0] <= prob[index].T, u[1] <= 0.5

    def apply(self, x: Tensor, index: Tensor, applied: Tensor, negative: Tensor) -> Tensor:
        """Run the drawn sub-policies: x (B, C, H, W) uint8, index (B,), applied and negative (2, B) bool."""
        B, C, H, W = x.shape
        ops, _, args, luts, grids = self.tables(H, W, x.device)
        identity = torch.arange(256, dtype=torch.uint8, device=x.device)
        for s in range(2):
            op = torch.where(applied[s], ops[index, s], 0)  # (B,): 0 is Identity
            neg = negative[s].long()
            arg = args[index, s, neg]  # (B,)
            # the point ops: one table per image and channel (B, C, 1, 256), one gather
            lut = torch.where(applied[s, :, None], luts[index, s, neg], identity).view(B, 1, 1, 256).expand(B, C, 1, 256)
            for name in self.step_ops[s]:
                if name in STAT_OPS:
                    lut = torch.where(_per_image(op == OPS.index(name)), STAT_OPS[name](x, arg), lut)
            out = lut.reshape(B, C, 256).gather(2, x.reshape(B, C, H * W).long()).view(B, C, H, W)
            for name in self.step_ops[s]:
                if name in PIXEL_OPS:
                    out = torch.where(_per_image(op == OPS.index(name)), PIXEL_OPS[name](x, arg), out)
            if any(name in GEOMETRIC for name in self.step_ops[s]):
                geometric = (op >= 1) & (op <= 5)  # GEOMETRIC is OPS[1:6]
                out = torch.where(_per_image(geometric), warp(x, grids[index, s, neg]), out)
            x = out
        return x

    def __call__(self, x: Tensor) -> Tensor:
        if x.dtype != torch.uint8 or x.ndim != 4:
            raise ValueError(f"BatchAutoAugment: expects a (B, C, H, W) uint8 batch, got {x.dtype} {tuple(x.shape)}")
        return self.apply(x, *self.draw(x))

    def __repr__(self) -> str:
        return f"BatchAutoAugment({len(self.policy)} sub-policies, seed={self.seed})"
