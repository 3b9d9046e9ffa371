"""Exercise notebooks from the instructor notebooks, with nbgrader: ``solutions/`` -> ``exercises/``.

Each ``solutions/NN_name.ipynb`` is one nbgrader assignment ``NN_name``: explanations,
the self-check and the graded test cells, whose hidden parts sit between
``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS``. nbgrader wants
``<course>/source/<assignment>/<notebook>.ipynb``, so this module stages the flat
``solutions/`` folder into such a course directory (see ``nbgrader_config.py``), runs
``generate_assignment`` through nbgrader's Python API (hidden tests and any solution
regions removed, outputs cleared, graded cells locked and check-summed) and writes the
released notebook to ``exercises/NN_name.ipynb``.

The output is deterministic: the same ``solutions/`` always gives byte-identical
``exercises/`` (nbgrader's checksums depend only on the cells; cell ids come from the
source; execution metadata is dropped; the Colab badge and set-up cells are stamped by
``tools/notebooks.py``).

Usage::

    python tools/assignments.py                  # regenerate exercises/
    python tools/assignments.py --check          # list exercises that differ from solutions/
    python tools/assignments.py --stage grading  # a course directory + gradebook for autograde
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tools") not in sys.path:
    sys.path.insert(0, str(ROOT / "tools"))

import notebooks  # noqa: E402  (tools/notebooks.py: badge and set-up cells)

SOLUTIONS, EXERCISES = "solutions", "exercises"
CONFIG_FILE = "nbgrader_config.py"
# Per-cell metadata that records a run, not the content (nbclient timings, UI state).
VOLATILE_CELL_METADATA = ("execution", "collapsed", "scrolled", "ExecuteTime", "jupyter")
# Notebook metadata worth keeping in a student notebook.
KEPT_NOTEBOOK_METADATA = ("kernelspec", "language_info")


class AssignmentError(RuntimeError):
    pass


def assignment_ids(root: Path = ROOT) -> list[str]:
    """The assignments, in course order: the stems of ``solutions/*.ipynb`` (``01_attention``, ...)."""
    return sorted(p.stem for p in (root / SOLUTIONS).glob("*.ipynb"))


def load_config(root: Path, course_dir: Path):
    """The course's ``nbgrader_config.py``, pointed at ``course_dir`` (its gradebook included)."""
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader(CONFIG_FILE, path=str(root)).load_config()
    config.CourseDirectory.root = str(course_dir)
    config.CourseDirectory.db_url = f"sqlite:///{course_dir / 'gradebook.db'}"
    return config


@contextlib.contextmanager
def scripts_on_path():
    """Put this interpreter's scripts folder first on PATH while nbgrader runs.

    nbgrader's gradebook runs the ``alembic`` command found on PATH, which a
    virtual environment used without activating it (``.venv/bin/python ...``) lacks.
    """
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), old])
    try:
        yield
    finally:
        os.environ["PATH"] = old


def stage_course(root: Path, course_dir: Path, assignments: list[str] | None = None) -> Path:
    """Lay ``solutions/NN_name.ipynb`` out as ``course_dir/source/NN_name/NN_name.ipynb``.

    Args:
        root: the repository (holds ``solutions/`` and ``nbgrader_config.py``).
        course_dir: the nbgrader course directory to (re)fill.
        assignments: ids to stage (default: every notebook in ``solutions/``).

    Returns:
        ``course_dir``.
    """
    for aid in assignments or assignment_ids(root):
        source = root / SOLUTIONS / f"{aid}.ipynb"
        if not source.exists():
            raise AssignmentError(f"no instructor notebook {source.relative_to(root)} for assignment {aid!r}")
        dest = course_dir / "source" / aid
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        shutil.copyfile(source, dest / source.name)
    return course_dir


def generate_assignments(root: Path, course_dir: Path, assignments: list[str] | None = None) -> dict[str, Path]:
    """Stage the assignments into ``course_dir`` and run nbgrader's ``generate_assignment`` on each.

    This also records every assignment, notebook and graded cell (hidden tests
    included) in ``course_dir/gradebook.db``: what ``nbgrader autograde`` needs.

    Returns:
        assignment id -> the released notebook ``course_dir/release/<id>/<id>.ipynb``.
    """
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    assignments = assignments or assignment_ids(root)
    course_dir = Path(course_dir).resolve()
    stage_course(root, course_dir, assignments)
    config = load_config(root, course_dir)
    api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
    api.log.setLevel(logging.ERROR)
    released = {}
    for aid in assignments:
        with scripts_on_path():
            result = api.generate_assignment(aid, force=True, create=True)
        out = course_dir / "release" / aid / f"{aid}.ipynb"
        if not result["success"] or not out.exists():
            raise AssignmentError(f"nbgrader generate_assignment {aid} failed:\n{result.get('log', '')}\n{result.get('error', '')}")
        released[aid] = out
    return released


def normalise(nb, rel_path: str, cfg: dict | None = None):
    """Make a released notebook reproducible and ready for students (in place; returns ``nb``).

    Drops run records (outputs, execution counts, timings), keeps only the kernel
    metadata, and refreshes the Colab badge and set-up cells for ``rel_path``.
    """
    cfg = cfg or notebooks.load_config()
    nb.metadata = nbformat.NotebookNode({k: nb.metadata[k] for k in KEPT_NOTEBOOK_METADATA if k in nb.metadata})
    for cell in nb.cells:
        for key in VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    notebooks.stamp(nb, cfg, rel_path)
    return nb


def render_exercises(root: Path = ROOT) -> dict[str, str]:
    """What ``exercises/`` should hold: file name -> notebook text, built in a temporary course directory."""
    cfg = notebooks.load_config(root)
    rendered = {}
    with tempfile.TemporaryDirectory(prefix="nbgrader-course-") as tmp:
        for aid, path in generate_assignments(root, Path(tmp)).items():
            nb = nbformat.read(path, as_version=4)
            normalise(nb, f"{EXERCISES}/{aid}.ipynb", cfg)
            nbformat.validate(nb)
            rendered[f"{aid}.ipynb"] = nbformat.writes(nb) + "\n"
    return rendered


def generate_exercises(root: Path = ROOT) -> list[Path]:
    """Regenerate every ``exercises/NN_name.ipynb`` from ``solutions/NN_name.ipynb``.

    Exercise notebooks without an instructor notebook are removed (``exercises/``
    is generated, never edited by hand).

    Returns:
        the exercise notebooks, in course order.
    """
    root = Path(root)
    rendered = render_exercises(root)
    folder = root / EXERCISES
    folder.mkdir(exist_ok=True)
    for stale in sorted(folder.glob("*.ipynb")):
        if stale.name not in rendered:
            stale.unlink()
    written = []
    for name, text in rendered.items():
        path = folder / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def check_exercises(root: Path = ROOT) -> list[str]:
    """How ``exercises/`` differs from what ``generate_exercises`` would write (empty: in sync)."""
    root = Path(root)
    rendered = render_exercises(root)
    folder = root / EXERCISES
    problems = []
    for name, text in rendered.items():
        path = folder / name
        if not path.exists():
            problems.append(f"{EXERCISES}/{name} is missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{EXERCISES}/{name} differs from what {SOLUTIONS}/{name} generates")
    for path in sorted(folder.glob("*.ipynb")):
        if path.name not in rendered:
            problems.append(f"{EXERCISES}/{path.name} has no instructor notebook {SOLUTIONS}/{path.name}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate exercises/ from solutions/ with nbgrader.")
    parser.add_argument("--check", action="store_true", help="report exercises that are out of date; change nothing")
    parser.add_argument("--stage", type=Path, metavar="DIR",
                        help="stage an nbgrader course directory (source/, release/, gradebook.db) in DIR")
    args = parser.parse_args(argv)
    if args.stage:
        released = generate_assignments(ROOT, args.stage)
        print(f"staged {len(released)} assignments in {args.stage}: {', '.join(released)}")
        return 0
    if args.check:
        problems = check_exercises(ROOT)
        if problems:
            print("exercises/ is out of date (run `python tools/assignments.py`):", *problems, sep="\n  ")
            return 1
        print("exercises/ is up to date")
        return 0
    for path in generate_exercises(ROOT):
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
