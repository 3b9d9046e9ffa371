"""The course's facts the grader needs, read from the repository without importing torch.

``course_lib/tasks.py`` is the one list of tasks: the student-edited modules, the points and the
hidden-test descriptions all come from it. ``tools/release.py`` is the one parser of the solution
markers: the student edition's stubs are built by it.
"""
from __future__ import annotations

import importlib.util
import re
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
HIDDEN_BEGIN, HIDDEN_END = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"
TASK_ID = re.compile(r"^task(\d+)_(\d+)")


def _load(name: str, path: Path) -> ModuleType:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def tool(name: str) -> ModuleType:
    """``tools/<name>.py`` (``release``, ``assignments``), imported once under its own name."""
    return _load(name, ROOT / "tools" / f"{name}.py")


def course_module(name: str) -> ModuleType:
    """``course_lib/<name>.py`` loaded on its own: the package's ``__init__`` imports torch (seconds),
    which the grader never needs (only the kernels do)."""
    return _load(f"_course_lib_{name}", ROOT / "course_lib" / f"{name}.py")


def tasks() -> tuple:
    """``course_lib.tasks.TASKS``."""
    return course_module("tasks").TASKS


@cache
def student_modules() -> tuple[str, ...]:
    """The course_lib files students edit (``attention.py``, ...), in course order."""
    return tuple(dict.fromkeys(f"{t.module}.py" for t in tasks()))


def assignment_ids(root: Path = ROOT) -> list[str]:
    """The assignments, in course order: the stems of ``solutions/*.ipynb``."""
    return sorted(p.stem for p in (root / "solutions").glob("*.ipynb"))


def exclude_overwriting(assignments: list[str] | None = None) -> dict[str, list[str]]:
    """``Autograde.exclude_overwriting``: nbgrader looks it up BY ASSIGNMENT ID; every student-edited
    course_lib file stays the student's in every assignment."""
    files = [f"course_lib/{m}" for m in student_modules()]
    return {a: list(files) for a in (assignments or assignment_ids())}


def task_of(grade_id: str) -> str:
    """``task1_1_hidden`` -> ``task1_1`` (a grade id without a task marker is its own column)."""
    m = TASK_ID.match(grade_id)
    return f"task{m.group(1)}_{m.group(2)}" if m else grade_id


def task_info(marker: str):
    """The ``Task`` of a marker (``task1_1``), or None."""
    return next((t for t in tasks() if t.marker == marker), None)


def task_title(marker: str) -> str:
    """``Task 1.1 scaled_dot_product_attention`` (the marker itself if it is no task)."""
    t = task_info(marker)
    return f"Task {t.id} {t.name}" if t else marker


def hidden_description(marker: str) -> str:
    """The instructor's one-line description of what a task's hidden tests cover ('' if none)."""
    return getattr(task_info(marker), "hidden", "") or ""


def sort_key(text: str) -> list:
    """Natural order: task1_2 before task1_10."""
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", text)]


def hidden_test_lines(root: Path = ROOT, assignments: list[str] | None = None) -> set[str]:
    """Lines of hidden tests in ``solutions/`` that appear nowhere outside a hidden block (>= 8 chars)."""
    release = tool("release")
    hidden, public = set(), set()
    for path in sorted((root / "solutions").glob("*.ipynb")):
        if assignments and path.stem not in assignments:
            continue
        for text in release._code_sources(path):
            hidden.update(re.sub(r"\s+#.*$", "", s) for s in release._blocks(text, release.HIDDEN_BEGIN, release.HIDDEN_END))
            public.update(re.sub(r"\s+#.*$", "", s.strip()) for s in release.strip_solutions_loose(text).splitlines())
    return {s for s in hidden - public if len(s) >= 8 and not s.startswith("#")}


def feedback_template_dirs() -> list[str]:
    """nbconvert template folders for the feedback page: the course's ``feedback`` (nbgrader's, with the
    test cells named) first, so it is used also where nbgrader forces ``template_name = "feedback"``
    (its API, formgrader's button), then nbgrader's own."""
    import nbgrader

    return [str(Path(__file__).parent / "templates"),
            str(Path(nbgrader.__file__).parent / "server_extensions" / "formgrader" / "templates")]
