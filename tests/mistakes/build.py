"""Build the corpus's course_lib variants, run the self-check on them, grade them, store their outputs.

* ``variant(mistake, dest)``: the instructor's course_lib with the mistake's edits applied to its
  task's solution blocks (``release.build_course_lib(body=...)``, the release's one marker parser).
* ``self_check(variants)``: ``check(task)`` and the raw case outputs of every variant, in one
  fresh interpreter (course_lib re-imported from each variant in turn).
* ``stored_outputs(...)``: what ``course_lib/checks/mistakes.pt`` holds, the outputs of each mistake
  that differ from the reference, labelled with the likely cause.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

import release
from course_lib.tasks import TASKS
from mistakes.corpus import MISTAKES, Mistake

ROOT = Path(__file__).resolve().parents[2]
ALL_TASKS = {t.id for t in TASKS}


def variant(mistake: Mistake, dest: Path) -> Path:
    """Every task solved, the mistake's task with its edits; returns ``dest``."""
    applied: set[int] = set()

    def body(task: str, solution: str, indent: str) -> str:
        if task != mistake.task:
            return solution
        for i, (old, new) in enumerate(mistake.edits):
            if old in solution:
                solution = solution.replace(old, new)
                applied.add(i)
        return solution

    release.build_course_lib(dest, body=body)
    missing = [mistake.edits[i][0] for i in range(len(mistake.edits)) if i not in applied]
    assert not missing, f"mistake {mistake.name!r}: the solution of Task {mistake.task} no longer contains {missing}"
    return dest


def variants(base: Path, mistakes=MISTAKES) -> dict[str, Path]:
    return {m.name: variant(m, base / m.name.replace(" ", "_").replace(".", "_").replace("/", "_")) for m in mistakes}


RUN = """
import sys, torch
variants, tasks, out = {variants!r}, {tasks!r}, {out!r}
results = {{}}
for name, root in variants.items():
    for mod in [m for m in sys.modules if m == "course_lib" or m.startswith("course_lib.")]:
        del sys.modules[mod]
    sys.path.insert(0, root)
    try:
        from course_lib import selfcheck
    except Exception as e:  # a mistake that does not even import: the check cannot run at all
        results[name] = {{"results": [("import", "error", f"{{type(e).__name__}}: {{e}}", "")], "outputs": {{}}}}
        continue
    finally:
        sys.path.remove(root)
    assert selfcheck.__file__.startswith(root), selfcheck.__file__
    rs = selfcheck.check(tasks[name], verbose=False)
    outputs = {{}}
    for r in rs:
        got, _ = selfcheck.run_outputs(selfcheck.CASES[r.case], torch.device("cpu"))
        outputs[r.case] = {{k: v.detach().cpu().clone() for k, v in got.items() if isinstance(v, torch.Tensor)}}
    results[name] = {{"results": [(r.case, r.status, r.message, r.diagnosis) for r in rs], "outputs": outputs}}
torch.save(results, out)
"""


def self_check(roots: dict[str, Path], workdir: Path, mistakes=MISTAKES) -> dict:
    """{mistake: {"results": [(case, status, message, diagnosis)], "outputs": {case: {key: tensor}}}}."""
    tasks = {m.name: m.task for m in mistakes}
    out = workdir / "selfcheck.pt"
    code = RUN.format(variants={k: str(v) for k, v in roots.items()}, tasks=tasks, out=str(out))
    run = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=900,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr[-4000:]
    return torch.load(out, weights_only=False)


def flagged(entry: dict) -> bool:
    return any(status != "pass" for _, status, _, _ in entry["results"])


def named(entry: dict, mistake: Mistake) -> bool:
    text = " ".join(f"{message} {diagnosis}" for _, _, message, diagnosis in entry["results"]).lower()
    return mistake.expect.lower() in text


def stored_outputs(checked: dict, reference: dict, mistakes=MISTAKES) -> dict:
    """{case: {key: [(cause, tensor), ...]}}: each mistake's outputs that differ from the reference."""
    stored: dict = {}
    for m in mistakes:
        for case, outputs in checked[m.name]["outputs"].items():
            for key, value in outputs.items():
                ref = reference[case].get(key)
                if ref is None or (value.shape == ref.shape and torch.allclose(value.double(), ref.double(), rtol=1e-4, atol=1e-5, equal_nan=True)):
                    continue
                entries = stored.setdefault(case, {}).setdefault(key, [])
                if not any(v.shape == value.shape and torch.equal(v, value) for _, v in entries):
                    entries.append((m.cause, value))
    return stored
