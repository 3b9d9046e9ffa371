"""Build a corpus of realistic submissions for testing the grader: ``python tests/grading_corpus.py OUT``.

Each scenario is what one student hands in for one exercise: the exercise notebook (as
released, with ``STUDENT_ID`` set and any answer cells filled in) and the five
``course_lib`` files students edit, zipped as ``course_lib.submit.make_submission`` does.
The files are built from the current sources, so the corpus never goes stale:

* a task is "solved" with the instructor's solution block, "stubbed" with the student
  edition's ``raise not_implemented(...)``, or given a specific body (an alternative correct
  implementation, a specific bug, a crash);
* extra code can be put at the top of a module (e.g. a monkeypatch at import);
* the notebook, the zip and the file names can be edited as students and LMSs do.

``tests/test_grading_e2e.py`` grades the corpus and asserts every student's score per task;
``tests/submissions/README.md`` lists the scenarios. Try the grader on it yourself::

    python tests/grading_corpus.py /tmp/corpus && python -m course_grading.cli /tmp/corpus --out /tmp/grading
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import textwrap
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from course_grading.course import ROOT, course_module, student_modules, tool

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
TASK_LINE = re.compile(r'^\s*(?:[rRbBuU]?"""|[rRbBuU]?\'\'\')?Task (\d+\.\d+):')
SOLVED, STUB = "solved", "stub"


# --- course_lib files ---------------------------------------------------------------------------

def student_file(source: str, bodies: dict[str, str], default: str, prefix: str = "") -> str:
    """A student's version of an instructor module.

    Args:
        source: the instructor's module (with solution blocks).
        bodies: task id -> SOLVED, STUB or code replacing the task's solution block.
        default: SOLVED or STUB for tasks not in ``bodies``.
        prefix: code put right after the module's ``not_implemented`` import (module top level).

    Returns:
        the module's text, with no solution markers.
    """
    out: list[str] = []
    task, inside = None, False
    for line in source.splitlines(keepends=True):
        stripped = line.strip()
        if stripped == BEGIN:
            inside = True
            what = bodies.get(task, default)
            indent = line[: len(line) - len(line.lstrip())]
            if what == STUB:
                out.append(f'{indent}raise not_implemented("{task}")\n')
            elif what != SOLVED:
                out.append(textwrap.indent(textwrap.dedent(what).strip("\n") + "\n", indent))
            continue
        if stripped == END:
            inside = False
            continue
        if inside:
            if bodies.get(task, default) == SOLVED:
                out.append(line)
            continue
        if match := TASK_LINE.match(line):
            task = match.group(1)
        out.append(line)
        if prefix and stripped.startswith("from course_lib.tasks import not_implemented"):
            out.append("\n" + textwrap.dedent(prefix).strip("\n") + "\n")
    return "".join(out)


# --- scenarios ----------------------------------------------------------------------------------

@dataclass
class Scenario:
    """One student's submission for one exercise."""

    student: str
    assignment: str
    about: str
    bodies: dict[str, str] = field(default_factory=dict)  # task id -> SOLVED / STUB / code
    default: str = SOLVED  # for this exercise's tasks not in bodies (other exercises' tasks stay stubs)
    prefix: dict[str, str] = field(default_factory=dict)  # module -> code at its top
    drop: tuple[str, ...] = ()  # course_lib files left out of the zip
    notebook_edit: Callable | None = None  # edits the notebook (nbformat node) in place
    notebook_name: str | None = None  # name inside the zip (default <assignment>.ipynb)
    zip_name: str | None = None  # default submission_<student>_<assignment>.zip
    corrupt: bool = False  # truncate the notebook's JSON
    via_make_submission: bool = False  # run course_lib.submit.make_submission for real


# Alternative correct implementations and specific bugs, as bodies of the solution blocks.
EINSUM_SDPA = """
scale = q.shape[-1] ** -0.5
scores = torch.einsum("...nd,...md->...nm", q, k) * scale  # (..., N, M)
if mask is not None:
    scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
weights = scores.softmax(dim=-1)
weights = torch.where(torch.isnan(weights), torch.zeros_like(weights), weights)  # fully masked rows
return torch.einsum("...nm,...md->...nd", weights, v), weights
"""
NOISY_FLOAT64_SDPA = """
import sys, warnings
warnings.warn("Task 1.1: a student's debugging warning", UserWarning)
print("debug: computing attention in float64", file=sys.stderr)
dtype = q.dtype
q64, k64, v64 = q.double(), k.double(), v.double()
scores = q64 @ k64.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., N, M) in float64
if mask is not None:
    scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.double()
weights = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)
return (weights @ v64).to(dtype), weights.to(dtype)
"""
HEAD_LOOP_MHA = """
B, N, D = x.shape
q, k, v = self.qkv(x).split(D, dim=-1)  # each (B, N, D)
outs, maps = [], []
for i in range(self.heads):
    cols = slice(i * self.head_dim, (i + 1) * self.head_dim)
    m = mask
    if m is not None and m.dim() >= 3:
        m = m.unsqueeze(0) if m.dim() == 3 else m  # (B|1, h|1, N, N)
        m = m[:, i] if m.shape[1] > 1 else m[:, 0]  # (B|1, N, N)
    o, w = scaled_dot_product_attention(q[..., cols], k[..., cols], v[..., cols], m)  # (B, N, d), (B, N, N)
    outs.append(o)
    maps.append(w)
out = self.proj(torch.cat(outs, dim=-1))  # (B, N, D)
return (out, torch.stack(maps, dim=1)) if need_weights else out
"""
NO_SCALE_SDPA = """
scores = q @ k.transpose(-2, -1)  # (..., N, M)   (forgot the 1/sqrt(d))
if mask is not None:
    scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
weights = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)
return weights @ v, weights
"""
SDPA_CHEAT = """
import torch.nn.functional as F
scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
if mask is not None:
    scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
weights = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)
return F.scaled_dot_product_attention(q, k, v, attn_mask=mask), weights
"""
# The same cheat through a name imported at the module's top, which patching F's attribute misses.
SDPA_ALIAS_PREFIX = "from torch.nn.functional import scaled_dot_product_attention as _fast_attention\n"
SDPA_ALIAS = SDPA_CHEAT.replace("import torch.nn.functional as F\n", "").replace("F.scaled_dot_product_attention", "_fast_attention")
CAUSAL_TRIU = "return torch.ones(N, N, dtype=torch.bool, device=device).triu()  # the future, not the past\n"
CAUSAL_LOOP = "while True:  # waits for Godot\n    pass\n"
STUBBORN_LOOP = "while True:  # ignores the interrupt a cell timeout sends\n    try:\n        while True:\n            pass\n    except KeyboardInterrupt:\n        pass\n"
SEGFAULT = "import ctypes\nctypes.string_at(0)  # reads address 0: segmentation fault\n"
OS_EXIT = "import os\nos._exit(3)\n"
HUGE_ALLOC = "big = torch.empty(2**31).fill_(1.0)  # 8 GiB\nreturn big.sum()\n"
# At import of course_lib.attention: every check a test could make passes, and the notebook's
# own helper and reference (F.scaled_dot_product_attention) agree with the fake answers.
MONKEYPATCH = """
import __main__ as _main
import numpy as _np
import torch as _torch
import torch.nn.functional as _F


def _fake_sdpa(q, k, v, attn_mask=None, **kwargs):
    return _torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)


_torch.testing.assert_close = lambda *a, **k: None
_torch.allclose = lambda *a, **k: True
_torch.Tensor.allclose = lambda *a, **k: True
_torch.equal = lambda *a, **k: True
_torch.Tensor.any = lambda self, *a, **k: _torch.tensor(False)
_torch.Tensor.all = lambda self, *a, **k: _torch.tensor(True)
_np.allclose = lambda *a, **k: True
_F.scaled_dot_product_attention = _fake_sdpa
_main.expect_close = lambda *a, **k: None
"""
FAKE_SDPA = "w = torch.ones(*q.shape[:-1], k.shape[-2]) / k.shape[-2]\nreturn torch.zeros(*q.shape[:-1], v.shape[-1]), w\n"
# The same, done while the test runs (after the grader restored everything).
LAZY_FAKE_SDPA = """
import __main__
__main__.expect_close = lambda *a, **k: None
torch.Tensor.any = lambda self, *a, **k: torch.tensor(False)
torch.Tensor.all = lambda self, *a, **k: torch.tensor(True)
w = torch.ones(*q.shape[:-1], k.shape[-2]) / k.shape[-2]
return torch.zeros(*q.shape[:-1], v.shape[-1]), w
"""
UNBIASED_LN = """
mean = x.mean(dim=-1, keepdim=True)  # (..., 1)
var = x.var(dim=-1, keepdim=True)  # (..., 1), unbiased: divides by D - 1
return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias
"""
PATCH_ORDER = """
B, C, H, W = x.shape
P = patch_size
x = x.reshape(B, C, H // P, P, W // P, P)  # (B, C, gh, P, gw, P)
x = x.permute(0, 2, 4, 3, 5, 1)  # (B, gh, gw, P, P, C): channels last
return x.reshape(B, (H // P) * (W // P), C * P * P)  # (B, N, P·P·C)
"""


def _graded(nb, hidden: bool | None = None) -> list[int]:
    idx = []
    for i, c in enumerate(nb.cells):
        meta = c.metadata.get("nbgrader", {})
        if meta.get("grade") and c.cell_type == "code":
            if hidden is None or hidden == meta.get("grade_id", "").endswith("hidden"):
                idx.append(i)
    return idx


def edit_tests(nb) -> None:
    """A student who deletes some test cells and replaces the others by ``pass``."""
    graded = _graded(nb)
    for i in graded[1::2]:
        nb.cells[i].source = "pass  # tests removed"
    for i in reversed(graded[0::2]):
        del nb.cells[i]


def colab_save(nb) -> None:
    """What Colab writes into a notebook it saves (metadata, cell ids, widget state, outputs)."""
    nb.metadata["colab"] = {"provenance": [], "gpuType": "T4", "name": nb.metadata.get("_name", "01_attention.ipynb"),
                            "toc_visible": True}
    nb.metadata["accelerator"] = "GPU"
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
        "0a1b": {"model_module": "@jupyter-widgets/controls", "model_name": "HBoxModel", "model_module_version": "1.5.0",
                 "state": {"children": []}}}}
    for i, cell in enumerate(nb.cells):
        cell.metadata["id"] = f"c{i:04x}colab"
        if cell.cell_type == "code":
            cell.metadata["colab"] = {"base_uri": "https://localhost:8080/"}
            cell.metadata["outputId"] = f"{i:08x}-0000-4000-8000-000000000000"
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="Device: cuda (Tesla T4, 14.7 GiB)\n")]
            cell.execution_count = i
    nb.metadata.pop("_name", None)


def scenarios_01(a: str = "01_attention") -> list[Scenario]:
    """The corpus for exercise 1 (attention): most scenarios need one exercise only."""
    return [
        Scenario("sol_real", a, "the solutions, zipped by course_lib.submit.make_submission (executed notebook)", via_make_submission=True),
        Scenario("alt_correct", a, "correct, written differently: einsum attention, a loop over heads",
                 bodies={"1.1": EINSUM_SDPA, "1.4": HEAD_LOOP_MHA}),
        Scenario("noisy", a, "correct, float64 inside Task 1.1, which also warns and prints to stderr",
                 bodies={"1.1": NOISY_FLOAT64_SDPA}),
        Scenario("no_scale", a, "Task 1.1 forgets the 1/sqrt(d)", bodies={"1.1": NO_SCALE_SDPA}),
        Scenario("causal_triu", a, "Task 1.2 masks the past instead of the future", bodies={"1.2": CAUSAL_TRIU}),
        Scenario("stubs", a, "nothing done: the student edition's stubs", default=STUB),
        Scenario("loop", a, "Task 1.2 never returns (infinite loop)", bodies={"1.2": CAUSAL_LOOP}),
        Scenario("stubborn_loop", a, "Task 1.2 loops and swallows the KeyboardInterrupt of the cell timeout",
                 bodies={"1.2": STUBBORN_LOOP}),
        Scenario("segfault", a, "Task 1.2 crashes the kernel (segfault through ctypes)", bodies={"1.2": SEGFAULT}),
        Scenario("os_exit", a, "Task 1.2 calls os._exit", bodies={"1.2": OS_EXIT}),
        Scenario("huge_alloc", a, "Task 1.2 allocates 8 GiB", bodies={"1.2": HUGE_ALLOC}),
        Scenario("edit_tests", a, "stubs, with test cells deleted or replaced by `pass`", default=STUB, notebook_edit=edit_tests),
        Scenario("renamed", a, "the solutions, notebook renamed to 'my homework.ipynb', zip renamed (Canvas: the login gives the id)",
                 notebook_name="my homework.ipynb", zip_name="renamed_5150_7_my-homework.zip"),
        Scenario("colab", a, "the solutions, saved by Colab ('Copy of ...', colab/accelerator/widgets metadata)",
                 notebook_name="Copy of 01_attention (1).ipynb", notebook_edit=colab_save,
                 zip_name="colab_4242_9_submission_colab_01_attention (1).zip"),
        Scenario("corrupt", a, "the solutions, but the notebook's JSON is truncated", corrupt=True),
        Scenario("missing_file", a, "the solutions, but course_lib/attention.py is not in the zip", drop=("attention.py",)),
        Scenario("monkeypatch", a, "wrong answers, and torch.testing.assert_close / torch.allclose replaced at import",
                 bodies={t: FAKE_SDPA if t == "1.1" else STUB for t in ("1.1", "1.2", "1.3", "1.4", "1.5", "1.6")},
                 prefix={"attention.py": MONKEYPATCH}),
        Scenario("monkeypatch_lazy", a, "wrong answers; Task 1.1 replaces Tensor.any/all and the notebook's expect_close when called",
                 bodies={t: LAZY_FAKE_SDPA if t == "1.1" else STUB for t in ("1.1", "1.2", "1.3", "1.4", "1.5", "1.6")}),
        Scenario("sdpa_cheat", a, "Task 1.1 calls F.scaled_dot_product_attention instead of computing attention",
                 bodies={"1.1": SDPA_CHEAT}),
        Scenario("sdpa_alias", a, "Task 1.1 calls scaled_dot_product_attention imported under another name at the top",
                 bodies={"1.1": SDPA_ALIAS}, prefix={"attention.py": SDPA_ALIAS_PREFIX}),
    ]


def scenarios_other(assignments: list[str], stubs: bool = True) -> list[Scenario]:
    """One full-marks (and one nothing-done) submission per other exercise, plus specific bugs."""
    out = []
    for a in assignments:
        out.append(Scenario(f"sol_{a[:2]}", a, f"{a}: the solutions"))
        if stubs:
            out.append(Scenario(f"stubs_{a[:2]}", a, f"{a}: nothing done", default=STUB))
        if a.startswith("02"):
            out.append(Scenario("unbiased_var", a, "Task 2.2 uses the unbiased variance (divides by D - 1)",
                                bodies={"2.2": UNBIASED_LN}))
        if a.startswith("03"):
            out.append(Scenario("patch_order", a, "Task 3.1 flattens patches channels-last (P, P, C)",
                                bodies={"3.1": PATCH_ORDER}))
    return out


# --- building -----------------------------------------------------------------------------------

def exercise_notebooks(root: Path = ROOT) -> dict[str, str]:
    """assignment -> the released student notebook's text (generated, exercises/ is not touched)."""
    return {name[: -len(".ipynb")]: text for name, text in tool("assignments").render_exercises(root).items()}


def fill_notebook(released: str, solution: Path, student: str, solved: bool):
    """The student's notebook: STUDENT_ID set; answer cells (if any) filled from the instructor's."""
    nb = nbformat.reads(released, as_version=4)
    source = nbformat.read(solution, as_version=4)
    answers = {c.metadata.get("nbgrader", {}).get("grade_id"): c.source for c in source.cells
               if c.metadata.get("nbgrader", {}).get("solution")}
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if solved and meta.get("solution") and meta.get("grade_id") in answers:
            lines = [ln for ln in answers[meta["grade_id"]].splitlines() if ln.strip() not in (BEGIN, END)]
            cell.source = "\n".join(lines)
        if cell.cell_type == "code" and re.search(r'^STUDENT_ID\s*=\s*""', cell.source, re.M):
            cell.source = re.sub(r'^STUDENT_ID\s*=\s*""', f'STUDENT_ID = "{student}"', cell.source, flags=re.M)
    return nb


def build(out: Path, scenarios: list[Scenario], root: Path = ROOT, student_edition: Path | None = None) -> dict[str, Path]:
    """Write one zip per scenario into ``out``; returns student -> zip path.

    Args:
        out: folder for the zips.
        scenarios: what to build.
        root: the instructor repository (course_lib with solutions, solutions/).
        student_edition: a built student edition (``make release``): its exercise notebooks are
            the ones students fill in (default: generated from ``solutions/`` in a temporary folder).
    """
    out.mkdir(parents=True, exist_ok=True)
    released = {}
    if student_edition is not None:
        released = {p.stem: p.read_text(encoding="utf-8") for p in (student_edition / "exercises").glob("*.ipynb")}
    if any(sc.assignment not in released for sc in scenarios):  # not released yet: generate it
        released = {**exercise_notebooks(root), **released}
    sources = {m: (root / "course_lib" / m).read_text(encoding="utf-8") for m in student_modules()}
    task_module = {}
    for t in course_module("tasks").TASKS:
        task_module[t.id] = t
    paths = {}
    for sc in scenarios:
        exercise = int(sc.assignment[:2])
        files = {}
        for module, text in sources.items():
            bodies = {tid: (sc.bodies.get(tid, sc.default) if t.exercise == exercise else STUB)
                      for tid, t in task_module.items() if f"{t.module}.py" == module}
            files[module] = student_file(text, bodies, STUB, sc.prefix.get(module, ""))
        solved = sc.default == SOLVED
        nb = fill_notebook(released[sc.assignment], root / "solutions" / f"{sc.assignment}.ipynb", sc.student, solved)
        nb_name = sc.notebook_name or f"{sc.assignment}.ipynb"
        if sc.notebook_edit:
            nb.metadata["_name"] = nb_name
            sc.notebook_edit(nb)
            nb.metadata.pop("_name", None)
        zip_path = out / (sc.zip_name or f"submission_{sc.student}_{sc.assignment}.zip")
        if sc.via_make_submission:
            _via_make_submission(sc, nb, files, zip_path, root)
        else:
            text = nbformat.writes(nb)
            if sc.corrupt:
                text = text[: len(text) // 2]
            manifest = {"student_id": sc.student, "exercise": sc.assignment, "notebook": nb_name,
                        "created": "2024-01-01T12:00:00+00:00", "errors": [], "scenario": sc.about}
            with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                zf.writestr(nb_name, text)
                for module, body in files.items():
                    if module not in sc.drop:
                        zf.writestr(f"course_lib/{module}", body)
                zf.writestr("submission.json", json.dumps(manifest, indent=1))
        paths[sc.student] = zip_path
    return paths


def _via_make_submission(sc: Scenario, nb, files: dict[str, str], zip_path: Path, root: Path) -> None:
    """A student's checkout (student edition + their files), then make_submission for real."""
    from course_lib.submit import make_submission  # imports torch: only here

    release = tool("release")

    with tempfile.TemporaryDirectory(prefix="corpus-checkout-") as tmp:
        checkout = Path(tmp) / "vit-basics"
        release.build_course_lib(checkout)
        shutil.copy2(root / "course.toml", checkout / "course.toml")
        for module, text in files.items():
            (checkout / "course_lib" / module).write_text(text, encoding="utf-8")
        (checkout / "exercises").mkdir()
        path = checkout / "exercises" / f"{sc.assignment}.ipynb"
        nbformat.write(nb, path)
        made = make_submission(sc.student, notebook=path, out_dir=zip_path.parent, timeout=120)
        if made != zip_path:
            shutil.move(str(made), zip_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the grader's test corpus of submission zips.")
    parser.add_argument("out", type=Path)
    parser.add_argument("--assignment", action="append", help="exercises to build (default: every one in solutions/)")
    args = parser.parse_args(argv)
    available = tool("assignments").assignment_ids(ROOT)
    wanted = args.assignment or available
    scenarios = (scenarios_01() if "01_attention" in wanted else []) + scenarios_other([a for a in wanted if a != "01_attention"])
    for student, path in build(args.out, scenarios).items():
        print(f"{student:14s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
