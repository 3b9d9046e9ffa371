"""The course directory: ``source/`` from ``solutions/``, the student edition's stubs, ``submitted/``.

nbgrader wants ``<course>/source/<assignment>/<assignment>.ipynb``; the course keeps its instructor
notebooks flat in ``solutions/``. ``sync_source`` lays them out (``nbgrader_config.py`` calls it, so
``nbgrader generate_assignment 01_attention`` works from the repository root with no staging step),
with ``source/<assignment>/course_lib/`` holding the STUDENT EDITION of course_lib: nbgrader copies
source files over each submission, so the support files (``tasks.py``, ``_checks.py``, ...) are always
the course's, and the files students edit are in ``exclude_overwriting`` and stay theirs.
"""
from __future__ import annotations

import atexit
import filecmp
import os
import shutil
import tempfile
from functools import cache
from pathlib import Path

from .course import ROOT, assignment_ids, student_modules, tool


def build_student_lib(dest: Path) -> Path:
    """The student edition's course_lib (stubs + support files), built by ``tools/release.py`` into
    ``dest/course_lib``; returns that folder."""
    shutil.rmtree(dest / "course_lib", ignore_errors=True)
    dest.mkdir(parents=True, exist_ok=True)
    tool("release").build_course_lib(dest)
    return dest / "course_lib"


@cache
def student_lib() -> Path:
    """The student edition's course_lib, built once per process (removed at exit)."""
    tmp = Path(tempfile.mkdtemp(prefix="course-student-lib-"))
    atexit.register(shutil.rmtree, tmp, True)
    return build_student_lib(tmp)


def _files(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def fill_course_lib(folder: Path) -> list[str]:
    """Copy every file of the student edition's course_lib that ``folder`` lacks into it.

    Returns the student-edited modules that were missing (``attention.py``, ...): graded as stubs.
    """
    lib = student_lib()
    missing = []
    for rel in _files(lib):
        target = folder / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(lib / rel, target)
            if str(rel) in student_modules():
                missing.append(str(rel))
    return missing


def _copy_if_changed(src: Path, dest: Path) -> None:
    """Copy atomically, and only if the content differs (timestamps stay, parallel runs are safe)."""
    if dest.exists() and filecmp.cmp(src, dest, shallow=False):
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def sync_source(course_dir: Path, assignments: list[str] | None = None, root: Path = ROOT) -> Path:
    """``course_dir/source/<a>/<a>.ipynb`` from ``solutions/<a>.ipynb`` and ``source/<a>/course_lib``
    from the student edition, for every assignment (only files that changed are written)."""
    lib = student_lib()
    for aid in assignments or assignment_ids(root):
        dest = course_dir / "source" / aid
        _copy_if_changed(root / "solutions" / f"{aid}.ipynb", dest / f"{aid}.ipynb")
        for rel in _files(lib):
            _copy_if_changed(lib / rel, dest / "course_lib" / rel)
    return course_dir


def load_config(course_dir: Path, cell_timeout: int | None = None):
    """The course's ``nbgrader_config.py`` pointed at ``course_dir`` (its gradebook included)."""
    os.environ["COURSE_GRADING_NO_SYNC"] = "1"  # this course directory, not the repository's grading/
    try:
        config = tool("assignments").load_config(ROOT, course_dir)
    finally:
        os.environ.pop("COURSE_GRADING_NO_SYNC", None)
    if cell_timeout:
        config.Execute.timeout = cell_timeout
    # NbGraderAPI insists on a writable exchange; grading never uses it (the hub's is configured apart)
    (course_dir / ".exchange").mkdir(parents=True, exist_ok=True)
    config.Exchange.root = str(course_dir / ".exchange")
    return config


def generate(course_dir: Path, assignments: list[str]) -> None:
    """nbgrader's ``generate_assignment`` for each assignment in ``course_dir`` (source synced first);
    records the graded cells in its gradebook."""
    import logging

    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    sync_source(course_dir, assignments)
    config = load_config(course_dir)
    api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
    api.log.setLevel(logging.ERROR)
    for aid in assignments:
        with tool("assignments").scripts_on_path():
            result = api.generate_assignment(aid, force=True, create=True)
        if not result["success"]:
            raise RuntimeError(f"nbgrader generate_assignment {aid} failed:\n{result.get('log', '')}\n{result.get('error', '')}")


def grade_cells(course_dir: Path, assignments: list[str]) -> dict[str, dict[str, float]]:
    """assignment -> {grade_id: points} from the course directory's gradebook."""
    from nbgrader.api import Gradebook

    out: dict[str, dict[str, float]] = {}
    with Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}") as gb:
        for a in assignments:
            out[a] = {gc.name: float(gc.max_score) for nb in gb.find_assignment(a).notebooks for gc in nb.grade_cells}
    return out


def write_submitted(sub, course_dir: Path) -> Path:
    """``course_dir/submitted/<student>/<assignment>/``: the notebook, the student's course_lib files (only
    theirs: what is missing is filled at autograde) and ``timestamp.txt`` (the LMS's upload time).
    Replaces only this student's folder of this assignment."""
    import nbformat

    from .preprocessors import ensure_cell_ids

    dest = course_dir / "submitted" / sub.student / sub.assignment
    shutil.rmtree(dest, ignore_errors=True)
    (dest / "course_lib").mkdir(parents=True)
    ensure_cell_ids(sub.notebook)
    nbformat.write(sub.notebook, dest / f"{sub.assignment}.ipynb")
    for module, data in sub.modules.items():
        (dest / "course_lib" / module).write_bytes(data)
    if sub.uploaded is not None:
        (dest / "timestamp.txt").write_text(sub.uploaded.strftime("%Y-%m-%d %H:%M:%S.%f"))
    return dest
