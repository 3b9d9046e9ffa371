"""Where a training step's time goes: torch.profiler's self CPU time per op for the three ViTs
of ``benchmarks/run.py`` (course_lib, torchvision, timm) at the benchmark's configuration.

    python -m benchmarks.profile_vit                 # top 15 ops per model, 10 profiled steps each
    python -m benchmarks.profile_vit --top 25 --steps 20 --shapes

Same process set-up as the benchmark (one thread, pinned, glibc keeping freed memory), the
same batch for every model, a warm-up, then the models are profiled in turn, ``--rounds``
times (the profiler's clock is wall time: alternating keeps a change in load from landing
on one model only), and the self times are summed over the rounds.
"""
from __future__ import annotations

import argparse
from collections import defaultdict

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from benchmarks import timing
from benchmarks.run import build_models
from course_lib.vit import vit_config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=["course_lib", "torchvision", "timm"])
    p.add_argument("--steps", type=int, default=10, help="profiled steps per model per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--shapes", action="store_true", help="group by input shapes too")
    a = p.parse_args()
    timing.steady_process(1)
    torch.manual_seed(0)
    cfg = vit_config("cifar", depth=3)
    models = {n: m for n, m in build_models(cfg, torch.device("cpu")).items() if n in a.models}
    x = torch.randn(a.batch, cfg.in_channels, cfg.image_size, cfg.image_size)
    y = torch.randint(0, cfg.num_classes, (a.batch,))
    opts = {n: torch.optim.AdamW(m.parameters(), lr=1e-4) for n, m in models.items()}

    def step(name: str) -> None:
        loss = F.cross_entropy(models[name](x), y)
        opts[name].zero_grad(set_to_none=True)
        loss.backward()
        opts[name].step()

    for _ in range(5):
        for name in models:
            step(name)
    self_us: dict[str, dict] = {n: defaultdict(float) for n in models}
    calls: dict[str, dict] = {n: defaultdict(int) for n in models}
    for _ in range(a.rounds):
        for name in models:
            with profile(activities=[ProfilerActivity.CPU], record_shapes=a.shapes) as prof:
                for _ in range(a.steps):
                    step(name)
            for ev in prof.key_averages(group_by_input_shape=a.shapes):
                key = ev.key + (f" {ev.input_shapes}" if a.shapes else "")
                self_us[name][key] += ev.self_cpu_time_total
                calls[name][key] += ev.count
    n_steps = a.steps * a.rounds
    for name in models:
        total = sum(self_us[name].values())
        print(f"\n{name}: {total / n_steps / 1e3:.1f} ms self CPU per step ({n_steps} steps)")
        print(f"  {'op':<60} {'ms/step':>8} {'share':>6} {'calls/step':>10}")
        for key, us in sorted(self_us[name].items(), key=lambda kv: -kv[1])[: a.top]:
            print(f"  {key[:60]:<60} {us / n_steps / 1e3:8.2f} {us / total:6.1%} {calls[name][key] / n_steps:10.1f}")


if __name__ == "__main__":
    main()
