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
from grading_corpus_code import (  # the bodies, next to this file
    EINSUM_SDPA,
    NOISY_FLOAT64_SDPA,
    HEAD_LOOP_MHA,
    NO_SCALE_SDPA,
    SDPA_CHEAT,
    SDPA_ALIAS_PREFIX,
    SDPA_ALIAS,
    CAUSAL_TRIU,
    CAUSAL_LOOP,
    STUBBORN_LOOP,
    SEGFAULT,
    OS_EXIT,
    HUGE_ALLOC,
    MONKEYPATCH,
    FAKE_SDPA,
    LAZY_FAKE_SDPA,
    UNBIASED_LN,
    PATCH_ORDER,
)

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
    release = tool("release")

    def body(task: str, solution: str, indent: str) -> str:
        what = bodies.get(task, default)
        if what == STUB:
            return release.stub(task, solution, indent)
        if what == SOLVED:
            return solution
        return textwrap.indent(textwrap.dedent(what).strip("\n") + "\n", indent)

    text = release.strip_solutions(source, "<corpus>", body)  # the one parser of the solution markers
    if prefix:
        anchor = "from course_lib.tasks import not_implemented"
        lines = text.splitlines(keepends=True)
        at = next(i for i, ln in enumerate(lines) if ln.strip().startswith(anchor))
        lines.insert(at + 1, "\n" + textwrap.dedent(prefix).strip("\n") + "\n")
        text = "".join(lines)
    return text


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
            markers = (tool("release").BEGIN, tool("release").END)
            lines = [ln for ln in answers[meta["grade_id"]].splitlines() if ln.strip() not in markers]
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
