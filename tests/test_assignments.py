"""The nbgrader exercises: exercises/ in sync with solutions/, no leaks, points, and grades that are right.

Fast tests read the notebooks. The slow ones execute them: the graded cells of
every instructor notebook (hidden tests included, as nbgrader autograde runs
them) against course_lib variants, to check that each task's cells pass exactly
when that task is right, whatever the state of the other tasks:

* the solutions: every graded cell passes, silently;
* the student edition (every task a stub): every graded cell fails;
* only task T solved, every other task a stub: T's cells pass, all others fail;
* extras: a wrong Task 1.1, Tasks 1.1 and 2.2 calling PyTorch's built-in, and
  correct solutions written differently (einsum in float64, a loop over heads,
  var/rsqrt, the float32 sinusoid of the PyTorch tutorial) that must get full marks.

The variants of one notebook run in one kernel, one after another (course_lib is
re-imported from the variant's folder), so the whole matrix takes about a minute.
"""
from __future__ import annotations

import ast
import os
import re
import shutil
import time
from pathlib import Path

import nbformat
import pytest

import assignments
import release
from course_lib.tasks import TASKS, tasks_of_exercise
from grade_variants import VARIANT_BODIES, course_lib_variant, grade_variants

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "solutions").glob("*.ipynb"))
HIDDEN = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS[ \t]*\n.*?^[ \t]*### END HIDDEN TESTS[ \t]*\n?", re.M | re.S)


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _graded(nb) -> list:
    return [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]


def _exercise_of(path: Path) -> int:
    return int(path.stem.split("_")[0])


def _task_of(grade_id: str) -> str:
    """'task1_4_hidden' -> '1.4'."""
    match = re.fullmatch(r"task(\d+)_(\d+)(_\w+)?", grade_id)
    assert match, f"grade_id {grade_id!r} does not start with a task marker such as task1_4"
    return f"{match.group(1)}.{match.group(2)}"


# --- fast: the notebooks as files -----------------------------------------------------------

def test_one_notebook_per_exercise_in_course_order():
    exercises = sorted({t.exercise for t in TASKS})
    assert [_exercise_of(p) for p in NOTEBOOKS] == exercises
    assert [p.name for p in sorted((ROOT / "exercises").glob("*.ipynb"))] == [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_graded_cells_sum_to_the_task_points(path):
    nb = _read(path)
    points: dict[str, int] = {}
    for cell in _graded(nb):
        meta = cell.metadata.nbgrader
        assert meta["locked"] and not meta["solution"] and cell.cell_type == "code", meta["grade_id"]
        assert meta["points"] > 0, meta["grade_id"]
        task = _task_of(meta["grade_id"])
        points[task] = points.get(task, 0) + meta["points"]
    assert points == {t.id: t.points for t in tasks_of_exercise(_exercise_of(path))}


def test_grade_ids_are_unique():
    """Graded cells across the course; every nbgrader cell (the locked helpers too) within its notebook."""
    graded = [c.metadata.nbgrader["grade_id"] for p in NOTEBOOKS for c in _graded(_read(p))]
    assert len(graded) == len(set(graded)), sorted(i for i in graded if graded.count(i) > 1)
    for path in NOTEBOOKS:
        ids = [c.metadata.nbgrader["grade_id"] for c in _read(path).cells if "nbgrader" in c.metadata]
        assert len(ids) == len(set(ids)), path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_graded_cells_never_end_in_an_expression(path):
    """nbgrader reads a number shown by a test cell as partial credit: every graded cell ends in a statement."""
    for folder in ("solutions", "exercises"):
        for cell in _graded(_read(ROOT / folder / path.name)):
            body = ast.parse(cell.source).body
            name = cell.metadata.nbgrader["grade_id"]
            if body:  # a hidden-only cell is empty in the student's notebook
                assert not isinstance(body[-1], ast.Expr), f"{folder}/{path.name} {name}: the last statement is an expression"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_layout(path):
    """Badge and set-up first, autoreload next, a self-check before each task's tests, a guarded submission."""
    nb = _read(path)
    assert nb.cells[0].metadata.get("tags") == ["course-badge"] and nb.cells[1].metadata.get("tags") == ["course-setup"]
    assert "%autoreload 2" in nb.cells[2].source
    sources = [c.source for c in nb.cells]
    for task in tasks_of_exercise(_exercise_of(path)):
        check = sources.index(f'results = check("{task.id}")')
        first_test = next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id", "").startswith(task.marker))
        assert check < first_test, task.id
        assert f"course_lib/{task.module}.py" in "".join(sources[:check]), f"Task {task.id}: the text should say where to write it"
    submit = nb.cells[-1].source
    assert "make_submission(STUDENT_ID)" in submit and 'STUDENT_ID = ""' in submit and "if STUDENT_ID:" in submit


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_solution_outputs_are_clean(path):
    """Stored outputs for nbval: no errors, no stderr except progress bars, no timing metadata; graded cells silent."""
    for cell in _read(path).cells:
        if cell.cell_type != "code":
            continue
        assert "execution" not in cell.metadata
        ignored = "nbval-ignore-output" in cell.metadata.get("tags", [])
        for out in cell.outputs:
            assert out.output_type != "error", cell.source[:80]
            assert ignored or not (out.output_type == "stream" and out.name == "stderr"), cell.source[:80]
        if "nbgrader" in cell.metadata:
            assert cell.outputs == [], cell.metadata.nbgrader["grade_id"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_exercise_is_the_solution_without_hidden_tests(path):
    """Cell by cell: same cells and ids; graded and helper cells equal the instructor's minus the hidden
    part; no outputs; every other cell unchanged."""
    solution, exercise = _read(path), _read(ROOT / "exercises" / path.name)
    assert [c.get("id") for c in exercise.cells] == [c.get("id") for c in solution.cells]
    for s, e in zip(solution.cells, exercise.cells):
        expected = HIDDEN.sub("", s.source) if "nbgrader" in s.metadata else s.source
        assert e.source.rstrip() == expected.rstrip(), s.get("id")
        if e.cell_type == "code":
            assert e.outputs == [] and e.execution_count is None
        if "nbgrader" in s.metadata:
            assert e.metadata.nbgrader["grade_id"] == s.metadata.nbgrader["grade_id"]
            assert e.metadata.nbgrader.get("points") == s.metadata.nbgrader.get("points")
            assert "checksum" in e.metadata.nbgrader and e.metadata["editable"] is False


def test_no_solution_or_hidden_test_text_in_exercises():
    secrets = release.secret_lines()
    hidden = {line.strip() for p in NOTEBOOKS for c in _read(p).cells for block in HIDDEN.findall(c.source)
              for line in block.splitlines()[1:-1] if len(line.strip()) >= 12}
    assert hidden, "the instructor notebooks should hold hidden tests"
    assert release.find_leaks(ROOT / "exercises", secrets) == []
    visible = {line.strip() for p in NOTEBOOKS for c in _read(p).cells for line in HIDDEN.sub("", c.source).splitlines()}
    for path in sorted((ROOT / "exercises").glob("*.ipynb")):
        text = path.read_text(encoding="utf-8")
        assert "HIDDEN TESTS" not in text and "BEGIN SOLUTION" not in text
        for cell in _read(path).cells:
            if "nbgrader" in cell.metadata:  # hidden lines may reappear only where the visible tests have them too
                leaked = {line.strip() for line in cell.source.splitlines()} & (hidden - visible)
                assert not leaked, f"{path.name}: hidden test lines {sorted(leaked)[:3]}"


def test_nbgrader_config_maps_the_course():
    config = assignments.load_config(ROOT, ROOT / "grading")
    assert config.CourseDirectory.course_id == "vit-basics"
    assert config.CourseDirectory.source_directory == "source" and config.CourseDirectory.release_directory == "release"
    assert "NotImplementedError" in config.ClearSolutions.code_stub["python"]
    assert assignments.assignment_ids(ROOT) == [p.stem for p in NOTEBOOKS]


# --- slow: nbgrader and the executed notebooks ------------------------------------------------

@pytest.mark.slow
def test_exercises_are_in_sync_with_solutions():
    """The drift test: `python tools/assignments.py` (make release) would change nothing."""
    assert assignments.check_exercises(ROOT) == []


@pytest.mark.slow
def test_generate_exercises_writes_a_fresh_checkout(tmp_path):
    """generate_exercises on a copy regenerates the committed notebooks byte for byte and removes stale ones."""
    for name in ("solutions", "course_lib", "tools"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("nbgrader_config.py", "course.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "exercises").mkdir()
    (tmp_path / "exercises" / "99_stale.ipynb").write_text("{}")
    written = assignments.generate_exercises(tmp_path)
    assert [p.name for p in written] == [p.name for p in NOTEBOOKS]
    assert not (tmp_path / "exercises" / "99_stale.ipynb").exists()
    for path in written:
        assert path.read_bytes() == (ROOT / "exercises" / path.name).read_bytes(), path.name


def _expected(notebook_cells: list[str], passing_tasks: set[str]) -> dict[str, bool]:
    return {g: _task_of(g) in passing_tasks for g in notebook_cells}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_grades_are_right(path, student_edition, tmp_path):
    """Each task's graded cells pass exactly when that task is right, whatever the other tasks' state."""
    exercise = _exercise_of(path)
    own = [t.id for t in tasks_of_exercise(exercise)]
    all_tasks = {t.id for t in TASKS}
    variants = {"solutions": ROOT, "student edition": student_edition}
    expected_pass = {"solutions": set(own), "student edition": set()}
    for task in own:
        name = f"only {task} solved"
        variants[name] = course_lib_variant(tmp_path / name.replace(" ", "_"), {task})
        expected_pass[name] = {task}
    for name, (task, body) in VARIANT_BODIES.items():
        if task in own:
            variants[name] = course_lib_variant(tmp_path / name.replace(" ", "_").replace(".", "_"), all_tasks, (task, body))
            wrong = "wrong" in name or "calls" in name
            expected_pass[name] = set(own) - {task} if wrong else set(own)
    start = time.perf_counter()
    grades, info = grade_variants(path, variants, tmp_path)
    seconds = time.perf_counter() - start
    grade_ids = [c.metadata.nbgrader["grade_id"] for c in _graded(_read(path))]
    for variant in variants:
        expected = _expected(grade_ids, expected_pass[variant])
        wrong = {g: grades[variant][g] for g in grade_ids if grades[variant][g] != expected[g]}
        details = {g: info["failures"].get((variant, g), "passed") for g in wrong}
        assert not wrong, f"{path.stem}, {variant}: cells graded wrongly (True = passed): {wrong}\n{details}"
    # nbgrader stops a cell after 30 s; they take well under a second on an idle laptop CPU, so 15 s
    # leaves room for a loaded CI machine while still catching a test that grew too big.
    slow = {g: s for g, s in info["seconds"].items() if s > 15}
    assert not slow, f"graded cells slower than 15 s: {slow}"
    print(f"{path.stem}: {len(variants)} course_lib variants graded in {seconds:.1f} s; slowest cell {max(info['seconds'].values()):.2f} s")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_exercise_runs_in_the_student_edition(path, student_edition, tmp_path):
    """The released notebook, opened where a student clones the course: the set-up cell finds course_lib,
    the self-checks report TODO, every graded cell fails with the task's NotImplementedError, and
    nothing else breaks. Run as nbgrader autograde runs it (NBGRADER_EXECUTION set: demos skipped)."""
    from nbclient import NotebookClient

    course = shutil.copytree(student_edition, tmp_path / "student")
    nb = _read(course / "exercises" / path.name)
    env = dict(os.environ, NBGRADER_EXECUTION="autograde")
    env.pop("PYTHONPATH", None)
    client = NotebookClient(nb, timeout=30, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(course / "exercises")}})
    start = time.perf_counter()
    with client.setup_kernel(env=env):
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
    seconds = time.perf_counter() - start
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.outputs if o.output_type == "error"]
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "")
        if cell.metadata.get("nbgrader", {}).get("grade"):
            visible = bool(ast.parse(cell.source).body)
            if visible:
                assert errors and errors[0].ename == "NotImplementedError", (grade_id, errors)
                assert f"Task {_task_of(grade_id)} " in errors[0].evalue, errors[0].evalue
        else:
            assert not errors, (cell.source[:80], errors and errors[0].evalue)
    setup = next(c for c in nb.cells if "course-setup" in c.metadata.get("tags", []))
    assert "Device: cpu" in "".join(o.get("text", "") for o in setup.outputs)
    print(f"{path.stem}: student edition notebook ran in {seconds:.1f} s")
    assert seconds < 120


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_autograde_run_of_the_solutions(path, tmp_path):
    """The whole instructor notebook as autograde runs it (NBGRADER_EXECUTION set, 30 s per cell): every
    graded cell passes and prints nothing; the set-up and demo cells do not fail."""
    from nbclient import NotebookClient
    from nbgrader.utils import determine_grade

    nb = _read(path)
    env = dict(os.environ, NBGRADER_EXECUTION="autograde")
    client = NotebookClient(nb, timeout=30, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(ROOT / "solutions")}})
    start = time.perf_counter()
    with client.setup_kernel(env=env):
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
    seconds = time.perf_counter() - start
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        assert not [o for o in cell.outputs if o.output_type == "error"], cell.source[:120]
        if cell.metadata.get("nbgrader", {}).get("grade"):
            assert cell.outputs == [], (cell.metadata.nbgrader["grade_id"], cell.outputs)
            score, max_score = determine_grade(cell)
            assert score == max_score
    print(f"{path.stem}: autograde-style run in {seconds:.1f} s")
