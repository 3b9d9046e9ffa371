"""Training speed of the CIFAR-10 recipe on synthetic CIFAR-shaped data (no download needed).

    python benchmarks/cifar_speed.py --out gpu_out/cifar_speed.json

Measures, eager and with torch.compile:
* the whole loop (``course_lib.train.train`` with the recipe's GPU augmentation,
  mixed precision, AdamW): images/s of the last epoch, peak memory;
* the model alone (forward + backward + AdamW on one fixed batch): images/s and
  model FLOPs utilisation, MFU = images/s x 3 x forward FLOPs / the GPU's dense
  bf16 (fp16 on a T4) peak, forward FLOPs from ``course_lib.analysis.count_flops``;
then projects the recipe's wall time on this GPU and on a T4 (at this run's MFU).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from course_lib.analysis import count_flops  # noqa: E402
from course_lib.device import describe_device  # noqa: E402
from course_lib.train import RECIPES, amp_dtype, recipe_data, train  # noqa: E402
from course_lib.vit import VisionTransformer, vit_config  # noqa: E402

# Dense (no sparsity) tensor-core peaks in FLOP/s: bf16, or fp16 where the GPU has no bf16 (T4, V100).
PEAK_FLOPS = {"H200": 989e12, "H100 SXM": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12,
              "L4": 121e12, "A10": 125e12, "T4": 65e12, "V100": 125e12, "RTX 3090": 71e12, "RTX 4090": 165e12}
T4_PEAK = PEAK_FLOPS["T4"]


def peak_flops(name: str) -> float | None:
    for key, value in PEAK_FLOPS.items():  # the first match: "H100 SXM" before "H100"
        if key in name:
            return value
    return None


def model_only(cfg, batch: int, steps: int, compile_: bool, device: torch.device) -> dict:
    """Forward + backward + AdamW on one batch, steady state."""
    model = VisionTransformer(cfg).to(device)
    net = torch.compile(model) if compile_ else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    dtype = amp_dtype(device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        with torch.autocast("cuda", dtype=dtype):
            loss = F.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    t0 = time.perf_counter()
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    warmup = time.perf_counter() - t0
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return {"images_per_s": batch * steps / (time.perf_counter() - t0), "warmup_s": warmup,
            "peak_memory_MiB": torch.cuda.max_memory_allocated() / 2**20}


def full_loop(epochs: int, compile_: bool, device: torch.device) -> dict:
    """``train`` with the recipe's data pipeline on synthetic data; the last epoch's speed."""
    r = RECIPES["cifar"]
    torch.manual_seed(0)
    model = VisionTransformer(vit_config(r["preset"], **r["model"])).to(device)
    loaders = recipe_data("cifar", device, synthetic=True)
    torch.cuda.reset_peak_memory_stats()
    cfg = replace(r["train"], epochs=epochs, compile=compile_, progress=False)
    t0 = time.perf_counter()
    history = train(model, *loaders, config=cfg, device=device)
    return {"images_per_s": history["images_per_s"][-1], "epoch_s": history["time_s"],
            "total_s": time.perf_counter() - t0, "peak_memory_MiB": torch.cuda.max_memory_allocated() / 2**20}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="gpu_out/cifar_speed.json")
    p.add_argument("--epochs", type=int, default=2, help="epochs of the full-loop measurement")
    p.add_argument("--steps", type=int, default=50, help="steps of the model-only measurement")
    p.add_argument("--no-compile", action="store_true")
    a = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("cifar_speed.py needs a CUDA GPU")
    device = torch.device("cuda")
    r = RECIPES["cifar"]
    cfg = vit_config(r["preset"], **r["model"])
    flops = count_flops(cfg)  # forward, one image
    name = torch.cuda.get_device_name()
    peak = peak_flops(name)
    result: dict = {"device": describe_device(device), "torch": torch.__version__, "amp_dtype": str(amp_dtype(device)),
                    "model": cfg.__dict__, "params": sum(p.numel() for p in VisionTransformer(cfg).parameters()),
                    "forward_flops_per_image": flops, "train_flops_per_image": 3 * flops,
                    "peak_flops": peak, "batch_size": r["batch_size"], "recipe_epochs": r["train"].epochs}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for compile_ in ([False] if a.no_compile else [False, True]):
        tag = "compiled" if compile_ else "eager"
        for what, fn in (("model_only", lambda: model_only(cfg, r["batch_size"], a.steps, compile_, device)),
                         ("full_loop", lambda: full_loop(a.epochs, compile_, device))):
            try:
                m = fn()
                if peak:
                    m["mfu"] = m["images_per_s"] * 3 * flops / peak
                m["projected_recipe_minutes"] = r["train"].epochs * 50000 / m["images_per_s"] / 60
                if "mfu" in m:  # a T4 at this run's MFU: a rough projection, not a measurement
                    t4 = m["mfu"] * T4_PEAK / (3 * flops)
                    m["projected_T4_images_per_s"] = t4
                    m["projected_T4_recipe_minutes"] = r["train"].epochs * 50000 / t4 / 60
            except Exception as e:  # keep the other measurements
                m = {"error": f"{type(e).__name__}: {e}"}
            result[f"{what}_{tag}"] = m
            print(tag, what, json.dumps(m), flush=True)
            out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
