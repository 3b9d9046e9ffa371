"""Training speed of the CIFAR-10 recipe on synthetic CIFAR-shaped data (no download needed).

    python -m benchmarks.cifar_speed --out gpu_out/cifar_speed.json

Measures, eager, with torch.compile and with torch.compile(mode="reduce-overhead")
(CUDA graphs):
* the whole loop (``course_lib.train.train`` with the recipe's GPU augmentation:
  per-image crop and flip in one go, the policy per group; mixed precision, fused
  AdamW): images/s of the last epoch, peak memory; also without the policy;
* the model alone (forward + backward + AdamW on one fixed batch): images/s and
  model FLOPs utilisation, MFU = images/s x 3 x forward FLOPs / the GPU's dense
  bf16 (fp16 on a T4) peak, forward FLOPs from ``course_lib.analysis.count_flops``;
* the whole loop with CUDA graphs at batch 256, 512 and 1024: the batch choice is the
  smallest batch within 10% of the fastest (more steps per epoch train better per epoch
  at a fixed number of epochs, so a larger batch must buy real speed);
then projects the recipe's wall time on this GPU and on a T4 (T4 assumptions: 65 TFLOP/s
dense fp16 peak; at this run's MFU, pessimistic for an overhead-bound run, and at 25% MFU,
typical for a compute-bound small transformer in fp16). With ``--results``, the headline
figures are merged into that results file (the benchmark entries' format, with the device).
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

from course_lib.analysis import count_flops
from course_lib.device import describe_device
from course_lib.train import RECIPES, amp_dtype, recipe_data, train
from course_lib.vit import VisionTransformer, vit_config

# Dense (no sparsity) tensor-core peaks in FLOP/s: bf16, or fp16 where the GPU has no bf16 (T4, V100).
PEAK_FLOPS = {"H200": 989e12, "H100 SXM": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12,
              "L4": 121e12, "A10": 125e12, "T4": 65e12, "V100": 125e12, "RTX 3090": 71e12, "RTX 4090": 165e12}
T4_PEAK = PEAK_FLOPS["T4"]


def peak_flops(name: str) -> float | None:
    for key, value in PEAK_FLOPS.items():  # the first match: "H100 SXM" before "H100"
        if key in name:
            return value
    return None


def model_only(cfg, batch: int, steps: int, mode: str | None, device: torch.device) -> dict:
    """Forward + backward + AdamW on one batch, steady state (mode as in ``full_loop``)."""
    model = VisionTransformer(cfg).to(device)
    net = model if mode is None else torch.compile(model, mode=None if mode == "default" else mode)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    dtype = amp_dtype(device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        if mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
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


def full_loop(epochs: int, mode: str | None, device: torch.device, batch_size: int | None = None,
              policy: str | None = None) -> dict:
    """``train`` with the recipe's data pipeline on synthetic data; the last epoch's speed.

    Args:
        mode: None (eager), "default" (torch.compile) or a torch.compile mode ("reduce-overhead").
        batch_size: default the recipe's.
        policy: the augmentation policy (default the recipe's; "none": crop and flip only).
    """
    r = RECIPES["cifar"]
    torch.manual_seed(0)
    model = VisionTransformer(vit_config(r["preset"], **r["model"])).to(device)
    loaders = recipe_data("cifar", device, synthetic=True, batch_size=batch_size, policy=policy)
    torch.cuda.reset_peak_memory_stats()
    cfg = replace(r["train"], epochs=epochs, compile=mode is not None,
                  compile_mode=None if mode in (None, "default") else mode, progress=False)
    t0 = time.perf_counter()
    history = train(model, *loaders, config=cfg, device=device)
    return {"images_per_s": history["images_per_s"][-1], "epoch_s": history["time_s"],
            "total_s": time.perf_counter() - t0, "peak_memory_MiB": torch.cuda.max_memory_allocated() / 2**20,
            "batch_size": batch_size or r["batch_size"], "policy": policy or r["augment"]["policy"]}


def profile_loop(device: torch.device, mode: str | None, steps: int = 40, batch_size: int | None = None) -> str:
    """Where a step of the whole loop spends its time: ``torch.profiler`` over ``steps`` steps of
    ``train`` (after a warm-up pass over the same steps, which compiles and records the graphs).

    Returns:
        two tables, the operators by self GPU time and by self CPU time (top 25 each).
    """
    from torch.profiler import ProfilerActivity, profile

    from course_lib.data import CIFAR10_MEAN, CIFAR10_STD, TensorLoader

    r = RECIPES["cifar"]
    bs = batch_size or r["batch_size"]
    torch.manual_seed(0)
    model = VisionTransformer(vit_config(r["preset"], **r["model"])).to(device)
    full, _ = recipe_data("cifar", device, synthetic=True, batch_size=bs)
    loader = TensorLoader(full.x[:steps * bs], full.y[:steps * bs], bs, drop_last=True, transform=full.transform,
                          normalize=(CIFAR10_MEAN, CIFAR10_STD))
    cfg = replace(r["train"], epochs=1, compile=mode is not None,
                  compile_mode=None if mode in (None, "default") else mode, progress=False)
    train(model, loader, None, cfg, device=device)  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        train(model, loader, None, cfg, device=device)
    table = prof.key_averages()
    gpu = table.table(sort_by="self_device_time_total", row_limit=25) if device.type == "cuda" else ""
    return f"{steps} steps, batch {bs}, mode {mode}\n\nby self GPU time:\n{gpu}\nby self CPU time:\n" + \
        table.table(sort_by="self_cpu_time_total", row_limit=25)


def project(m: dict, flops: int, peak: float | None, epochs: int) -> dict:
    """Add MFU and the projected minutes for ``epochs`` epochs here and on a T4."""
    m["projected_recipe_minutes"] = epochs * 50000 / m["images_per_s"] / 60
    if peak:
        m["mfu"] = m["images_per_s"] * 3 * flops / peak
        for tag, mfu in (("at_this_mfu", m["mfu"]), ("at_25pct_mfu", 0.25)):
            m[f"projected_T4_recipe_minutes_{tag}"] = epochs * 50000 * 3 * flops / (T4_PEAK * mfu) / 60
    return m


def merge_results(path: Path, result: dict) -> None:
    """Replace this device's CIFAR-recipe entries in a ``benchmarks/run.py`` results file."""
    entries = json.loads(path.read_text()) if path.exists() else []
    device = result["device"]
    entries = [e for e in entries if not (e.get("device") == device and e["name"].startswith("CIFAR-10 recipe"))]
    best = result.get("batch_choice", {})
    for key, label in (("full_loop_eager", "eager"), ("full_loop_compiled", "torch.compile"),
                       ("full_loop_cudagraphs", 'torch.compile(mode="reduce-overhead")')):
        m = result.get(key, {})
        if "images_per_s" in m:
            entries.append({"name": f"CIFAR-10 recipe whole-loop throughput, {label}, batch {m['batch_size']}",
                            "value": m["images_per_s"], "unit": "images/s", "mfu": m.get("mfu"),
                            "projected_200_epoch_minutes": m["projected_recipe_minutes"],
                            "projected_T4_200_epoch_minutes_at_25pct_mfu": m.get("projected_T4_recipe_minutes_at_25pct_mfu"),
                            "device": device, "torch": result["torch"], "date": result["date"]})
    if best:
        entries.append({"name": "CIFAR-10 recipe batch choice (smallest batch within 10% of the fastest, CUDA graphs)",
                        "value": best["batch_size"], "unit": "images/batch", "sweep": best["sweep"],
                        "device": device, "torch": result["torch"], "date": result["date"]})
    path.write_text(json.dumps(entries, indent=2) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="gpu_out/cifar_speed.json")
    p.add_argument("--epochs", type=int, default=2, help="epochs of the full-loop measurement")
    p.add_argument("--steps", type=int, default=50, help="steps of the model-only measurement")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--batches", type=int, nargs="*", default=[512, 1024], help="batch sizes of the sweep")
    p.add_argument("--profile", action="store_true", help="also write profile.txt next to --out: where a step's time goes")
    p.add_argument("--results", help="merge the headline figures into this results file (benchmarks/run.py format)")
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
                    "peak_flops": peak, "batch_size": r["batch_size"], "recipe_epochs": r["train"].epochs,
                    "date": time.strftime("%Y-%m-%d"), "T4_peak_flops": T4_PEAK}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    modes = [None] if a.no_compile else [None, "default", "reduce-overhead"]
    tags = {None: "eager", "default": "compiled", "reduce-overhead": "cudagraphs"}
    best = modes[-1]
    # the most wanted figure first (the whole loop in the recipe's mode), so a timeout keeps it (written per job)
    jobs = [(f"full_loop_{tags[m]}", lambda m=m: full_loop(a.epochs, m, device)) for m in reversed(modes)]
    jobs += [(f"full_loop_{tags[best]}_batch{b}", lambda b=b: full_loop(a.epochs, best, device, batch_size=b))
             for b in a.batches if b != r["batch_size"]]
    jobs += [(f"model_only_{tags[m]}", lambda m=m: model_only(cfg, r["batch_size"], a.steps, m, device)) for m in modes]
    jobs.append((f"full_loop_{tags[best]}_no_policy", lambda: full_loop(a.epochs, best, device, policy="none")))
    for key, fn in jobs:
        try:
            m = project(fn(), flops, peak, r["train"].epochs)
        except Exception as e:  # keep the other measurements
            m = {"error": f"{type(e).__name__}: {e}"}
        result[key] = m
        print(key, json.dumps(m), flush=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    sweep = {r["batch_size"]: result.get(f"full_loop_{tags[best]}", {}).get("images_per_s")}
    sweep.update({b: result.get(f"full_loop_{tags[best]}_batch{b}", {}).get("images_per_s") for b in a.batches})
    sweep = {b: v for b, v in sorted(sweep.items()) if v}
    if sweep:
        fastest = max(sweep.values())
        result["batch_choice"] = {"batch_size": min(b for b, v in sweep.items() if v >= 0.9 * fastest),
                                  "sweep": sweep, "rule": "smallest batch within 10% of the fastest"}
    out.write_text(json.dumps(result, indent=2) + "\n")
    if a.results:
        merge_results(Path(a.results), result)
    if a.profile:  # last: a failure here loses none of the figures above
        out.with_name("profile.txt").write_text(profile_loop(device, best))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
