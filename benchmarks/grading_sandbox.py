"""Sandboxed grading vs plain nbgrader: ``python -m benchmarks.grading_sandbox [--n 50] [--jobs 2]``.

1. ``make grade``'s command (course_grading.cli, every kernel in bubblewrap) on N submissions of
   Exercise 1 with ``--jobs 2``;
2. serial plain ``nbgrader autograde`` of the same submissions (nbgrader's own command in the course
   directory that step 1 staged; nbgrader's unsandboxed kernel manager);
3. the sandbox's own cost per kernel: start-up until the kernel answers, a notebook of one cell,
   shutdown, sandboxed and plain, interleaved.

Prints one JSON object (and writes it to benchmarks/grading_sandbox.json). Timed claims live here,
never in tests.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
A = "01_attention"


def corpus(out: Path, n: int) -> None:
    """N submissions: the solutions, an alternative correct one, and stubs, in turn."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("grading_corpus", ROOT / "tests" / "grading_corpus.py")
    c = importlib.util.module_from_spec(spec)  # the corpus builder lives with the tests
    sys.modules["grading_corpus"] = c
    spec.loader.exec_module(c)

    kinds = [{}, {"bodies": {"1.1": c.EINSUM_SDPA}}, {"default": c.STUB}]
    c.build(out, [c.Scenario(f"s{i:03d}", A, "benchmark", **kinds[i % 3]) for i in range(n)])


def sandboxed_batch(subs: Path, out: Path, jobs: int) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "course_grading.cli", str(subs), "--out", str(out), "--jobs", str(jobs),
                    "--quiet"], cwd=ROOT, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return time.perf_counter() - t


def plain_nbgrader(staged: Path, out: Path, sandboxed: bool = False) -> float:
    """``nbgrader autograde``, serial, in a copy of the course directory (source/, release/, submitted/,
    gradebook.db) that step 1 staged: the course's nbgrader_config.py, nbgrader's own kernel manager
    unless ``sandboxed``."""
    course = out / ("course_sandboxed" if sandboxed else "course")
    shutil.copytree(staged, course, ignore=shutil.ignore_patterns("autograded", "feedback", "logs"))
    cmd = [sys.executable, "-m", "nbgrader", "autograde", A, "--force"]
    if not sandboxed:
        cmd.append("--GuardedExecute.kernel_manager_class=jupyter_client.manager.AsyncKernelManager")
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True,
                   env={**os.environ, "COURSE_GRADING_ROOT": str(course), "OMP_NUM_THREADS": "1"})
    return time.perf_counter() - t


async def _one_kernel(sandboxed: bool, cwd: str) -> dict[str, float]:
    from jupyter_client.manager import AsyncKernelManager

    from course_grading.sandbox import SandboxedKernelManager

    km = (SandboxedKernelManager if sandboxed else AsyncKernelManager)(kernel_name="python3")
    t0 = time.perf_counter()
    await km.start_kernel(cwd=cwd)
    kc = km.client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=60)
    t1 = time.perf_counter()
    await kc.execute_interactive("import torch; x = torch.ones(3).sum()", timeout=60)
    t2 = time.perf_counter()
    kc.stop_channels()
    await km.shutdown_kernel()
    t3 = time.perf_counter()
    return {"startup_s": t1 - t0, "cell_s": t2 - t1, "shutdown_s": t3 - t2, "total_s": t3 - t0}


def kernel_overhead(repeats: int) -> dict:
    cwd = tempfile.mkdtemp(prefix="bench-kernel-")
    runs: dict[str, list[dict]] = {"sandboxed": [], "plain": []}
    for _ in range(repeats):
        for kind in ("sandboxed", "plain"):
            runs[kind].append(asyncio.run(_one_kernel(kind == "sandboxed", cwd)))
    shutil.rmtree(cwd, ignore_errors=True)
    med = {k: {m: round(statistics.median(r[m] for r in v), 3) for m in v[0]} for k, v in runs.items()}
    med["overhead_s"] = {m: round(med["sandboxed"][m] - med["plain"][m], 3) for m in med["plain"]}
    return med


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5, help="kernels per kind for the overhead")
    p.add_argument("--plain-sandboxed", action="store_true", help="also serial nbgrader autograde with the sandbox")
    args = p.parse_args(argv)
    result: dict = {"n": args.n, "jobs": args.jobs, "cpus": os.cpu_count()}
    result["kernel"] = kernel_overhead(args.repeats)
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        work = Path(tmp)
        corpus(work / "subs", args.n)
        result["sandboxed_jobs_s"] = round(sandboxed_batch(work / "subs", work / "grading", args.jobs), 1)
        result["plain_serial_s"] = round(plain_nbgrader(work / "grading", work), 1)
        if args.plain_sandboxed:
            result["plain_serial_sandboxed_s"] = round(plain_nbgrader(work / "grading", work, sandboxed=True), 1)
    result["speedup"] = round(result["plain_serial_s"] / result["sandboxed_jobs_s"], 2)
    result["per_submission_s"] = {"sandboxed_jobs": round(result["sandboxed_jobs_s"] / args.n, 2),
                                  "plain_serial": round(result["plain_serial_s"] / args.n, 2)}
    print(json.dumps(result, indent=1))
    (ROOT / "benchmarks" / "grading_sandbox.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
