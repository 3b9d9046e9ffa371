"""No lecture hands out a graded task.

Every function and class that a lecture notebook defines (and every one in ``course_lib/plots.py``,
which ships with the lectures) is put in the place of every task of the same kind, a function in
place of a function task, a class in place of a class task, whatever its name, and run through the
self-check cases of that task (``course_lib/checks/cases.py``) against the stored reference outputs.
A definition that passes all of a task's cases would be a drop-in solution: the test fails and names
it. Names never matter, so renaming a copied solution does not hide it, and neither does returning a
pair in the other order or taking only batched attention maps.

The lectures' stored results (``lectures/data/position_embeddings.npz``, shown instead of computed
because computing them is a task) must also match course_lib's reference implementation; that part
runs in the instructor edition only, where course_lib holds the solutions.
"""
from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import inspect
import json
import signal
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from course_lib import selfcheck  # noqa: E402
from course_lib.checks.cases import CASES  # noqa: E402
from course_lib.tasks import TASKS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LECTURES = sorted((ROOT / "lectures").glob("*.ipynb"))
SKIP_TAGS = {"course-setup", "course-badge"}
SECONDS_PER_CALL = 5


# --- what a lecture defines ------------------------------------------------------------------

def _literal(node: ast.AST) -> bool:
    try:
        ast.literal_eval(node)
        return True
    except (ValueError, TypeError, SyntaxError, RecursionError):
        return False


def definitions(source: str) -> list[ast.stmt]:
    """The top-level statements of ``source`` that bind a definition: imports, functions, classes and
    assignments of literals (the constants a function may read). Everything else is left out, so
    nothing slow or stateful runs."""
    lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()]
    keep = []
    for node in ast.parse("\n".join(lines)).body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)):
            keep.append(node)
        elif isinstance(node, ast.Assign) and _literal(node.value):
            keep.append(node)
    return keep


def lecture_source(path: Path) -> str:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n\n".join("".join(c["source"]) for c in cells
                       if c["cell_type"] == "code" and not SKIP_TAGS & set(c.get("metadata", {}).get("tags", [])))


def candidates(source: str, origin: str) -> dict[str, object]:
    """Every function and class that ``source`` defines, built in a namespace of its own definitions."""
    namespace: dict = {"__name__": f"lecture_{abs(hash(origin))}", "root": ROOT, "device": torch.device("cpu")}
    found = {}
    for node in definitions(source):
        with contextlib.suppress(Exception):
            exec(compile(ast.Module(body=[node], type_ignores=[]), origin, "exec"), namespace)  # noqa: S102
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in namespace:
                found[f"{origin}: {node.name}"] = namespace[node.name]
    return found


def all_candidates() -> dict[str, object]:
    found = {}
    for path in LECTURES:
        found.update(candidates(lecture_source(path), path.name))
    for path in [ROOT / "course_lib" / "plots.py"]:
        found.update(candidates(path.read_text(encoding="utf-8"), f"course_lib/{path.name}"))
    return found


# --- putting a candidate in a task's place -----------------------------------------------------

@contextlib.contextmanager
def time_limit(seconds: int):
    """Stop a candidate that runs too long (it is not a solution then); a no-op without SIGALRM."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def stop(signum, frame):
        raise TimeoutError(f"over {seconds} s")

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def passes_task(candidate, task, monkeypatch, reference) -> bool:
    """Whether ``candidate``, put in place of ``task``, passes every self-check case of the task."""
    names = [n for n, c in CASES.items() if c.task == task.id]
    module = importlib.import_module(f"course_lib.{task.module}")
    with monkeypatch.context() as m:
        m.setattr(module, task.name, candidate)
        for name in names:
            try:
                with time_limit(SECONDS_PER_CALL), contextlib.redirect_stdout(None):
                    result = selfcheck.run_case(name, reference, torch.device("cpu"))
            except Exception:  # noqa: BLE001 - a timeout or anything else: not a solution
                return False
            if not result.ok:
                return False
    return True


def _is_class_task(task) -> bool:
    return inspect.isclass(getattr(importlib.import_module(f"course_lib.{task.module}"), task.name))


def _swapped(fn):
    """``fn`` with a returned pair in the other order: a copied solution may return (alpha, x_c) for (x_c, alpha)."""
    def swapped(*args, **kwargs):
        out = fn(*args, **kwargs)
        return out[::-1] if isinstance(out, tuple) and len(out) == 2 else out
    return swapped


def _batched(fn):
    """``fn`` given a leading batch axis on a 3D first argument: a copied solution may only take (B, h, T, T)."""
    def batched(first, *args, **kwargs):
        if isinstance(first, torch.Tensor) and first.dim() == 3:
            first = first[None]
        return fn(first, *args, **kwargs)
    return batched


def drop_in_solutions(found: dict[str, object], monkeypatch) -> list[str]:
    """'where passes Task X.Y' for every candidate that passes all of some task's cases, as it is or (functions)
    with its returned pair swapped or a batch axis added to its first argument."""
    reference = selfcheck.load_reference()
    hits = []
    for task in TASKS:
        want_class = _is_class_task(task)
        for where, obj in found.items():
            if inspect.isclass(obj) != want_class or not callable(obj):
                continue
            variants = [obj] if want_class else [obj, _swapped(obj), _batched(obj)]
            if any(passes_task(v, task, monkeypatch, reference) for v in variants):
                hits.append(f"{where} passes every self-check case of Task {task.id} ({task.name})")
    return hits


@pytest.fixture(scope="module")
def found() -> dict[str, object]:
    torch.manual_seed(0)
    with contextlib.redirect_stdout(None):
        return all_candidates()


def test_lectures_define_something(found):
    assert len(found) > 10, f"found only {sorted(found)}: the extraction of lecture definitions is broken"


def test_no_lecture_definition_solves_a_task(found, monkeypatch):
    hits = drop_in_solutions(found, monkeypatch)
    assert not hits, ("lectures hand out graded tasks (use PyTorch's routine or stored results instead):\n  "
                      + "\n  ".join(hits))


# --- the detector itself -------------------------------------------------------------------------

def _solved(task_id: str) -> bool:
    return all(r.ok for r in selfcheck.check(task_id, verbose=False))


@pytest.mark.parametrize("task_id", ["1.1", "1.4", "3.3", "5.1", "5.2"])
def test_detector_flags_a_renamed_solution(task_id, monkeypatch):
    """A task's own reference solution under another name, as a lecture would define it, is caught.

    Instructor edition only (the student edition has no solutions to disguise)."""
    if not _solved(task_id):
        pytest.skip("course_lib holds stubs here (student edition)")
    task = next(t for t in TASKS if t.id == task_id)
    solution = getattr(importlib.import_module(f"course_lib.{task.module}"), task.name)
    disguised = {"lecture.ipynb: helper": solution}
    if task_id == "5.2":  # the same fit, returning (alpha, x_c) instead of (x_c, alpha)
        disguised = {"lecture.ipynb: helper": lambda x, y: solution(x, y)[::-1]}
    hits = drop_in_solutions(disguised, monkeypatch)
    assert any(f"Task {task_id} " in h for h in hits), hits


def test_detector_passes_pytorch_routines(monkeypatch):
    """Calling PyTorch's own routine with another signature is not a drop-in (it fails the cases)."""
    def attention_weights(q, k, mask=None):
        eye = torch.eye(k.shape[-2]).expand(*k.shape[:-1], k.shape[-2])
        return torch.nn.functional.scaled_dot_product_attention(q, k, eye, attn_mask=mask)

    assert not drop_in_solutions({"lecture.ipynb: attention_weights": attention_weights}, monkeypatch)


def test_definitions_skip_slow_statements():
    src = "import math\nX = 3\ny = torch.randn(3)\ndef f(a):\n    return a\nfor i in range(3):\n    pass\n%matplotlib inline\n"
    kinds = [type(n).__name__ for n in definitions(src)]
    assert kinds == ["Import", "Assign", "FunctionDef"], kinds


# --- stored results match course_lib ---------------------------------------------------------------

def test_stored_position_embeddings_match_course_lib():
    if not (_solved("3.3") and _solved("3.4")):
        pytest.skip("course_lib holds stubs here (student edition)")
    spec = importlib.util.spec_from_file_location("make_position_embeddings", ROOT / "lectures" / "data" / "make_position_embeddings.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    stored = np.load(generator.PATH)
    fresh = generator.arrays()
    assert sorted(stored.files) == sorted(fresh), "stored arrays differ from the generator's list: rerun it"
    for name, value in fresh.items():
        np.testing.assert_allclose(stored[name].astype(np.float64), value.astype(np.float64), atol=2e-3,
                                   err_msg=f"{name}: rerun python lectures/data/make_position_embeddings.py")
