"""Autograde a folder of submissions with nbgrader: ``make grade SUBMISSIONS=<folder>``.

    python tools/grade.py SUBMISSIONS [--out grading] [--jobs 2] [--assignment 01_attention ...]

``SUBMISSIONS`` is what the LMS download gives: one zip per student and exercise as written by
``course_lib.submit.make_submission`` (``submission_<id>_<exercise>.zip``, possibly renamed by the
LMS, e.g. ``jsmith_12345_678_submission_jsmith_01_attention.zip``), or loose notebooks.
Everything lands in ``--out`` (default ``grading/``), which is an ordinary nbgrader course
directory::

    grading/grades.csv                          one row per student: points per task, total, status, notes
    grading/feedback/<student>/<ex>/<ex>.html   feedback for the student (hidden test code removed)
    grading/autograded/<student>/<ex>/          the executed notebooks and the student's course_lib
    grading/submitted/<student>/<ex>/           what was graded (notebook + course_lib)
    grading/gradebook.db                        nbgrader's gradebook (formgrader can open it)
    grading/logs/<student>__<ex>.log            nbgrader's log for that student

This is a thin layer over nbgrader (``generate_assignment``, ``autograde``,
``generate_feedback`` and its ``Gradebook``), adding what a class of real submissions needs:

* collection: student ids from the zip's ``submission.json`` or the LMS file name; a
  renamed notebook (``Copy of 01_attention (1).ipynb``) is matched to its assignment by its
  graded cells' ids; the student's ``course_lib/*.py`` go next to the notebook, and a file
  missing from the submission is the STUDENT-EDITION stub, never the instructor's code;
* parallel grading: nbgrader grades one submission at a time (jupyter/nbgrader#174) and its
  gradebook is one SQLite file, so each submission is graded by its own process in its own
  temporary course directory with its own copy of the gradebook, under a wall-clock and a
  memory limit; results are merged into ``grading/gradebook.db`` one at a time;
* nbgrader's traps, each handled (see ``docs/INSTRUCTOR.md``): ``exclude_overwriting`` for the
  course_lib files, the kernel started in the submission's folder with the submission's
  course_lib first on ``PYTHONPATH``, warnings silenced and stderr not counted as failure,
  numbers ending a test cell not taken as partial credit, dead or stuck kernels restarted
  (the crashed cell scores 0, the rest of the notebook is still graded), the functions tests
  rely on (``torch.testing.assert_close``, ``torch.allclose``, ...) restored before every test
  cell and a test cell that sees them replaced scores 0, hidden tests removed from feedback;
* the batch never stops: a submission that cannot be graded gets a row (0, with the reason)
  and a feedback page saying why.

``--benchmark N`` times serial ``nbgrader autograde`` against this script on N copies of a
submission (see ``docs/INSTRUCTOR.md``).
"""
from __future__ import annotations

import argparse
import csv
import html
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HIDDEN_BEGIN, HIDDEN_END = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"
TASK_ID = re.compile(r"^task(\d+)_(\d+)")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
SUBMISSION_NAME = re.compile(r"submission_(?P<sid>.+?)_(?P<aid>\d\d_[A-Za-z0-9_]+?)(?:\s*\(\d+\)|-\d+)*$")
CANVAS_PREFIX = re.compile(r"^(?P<login>[A-Za-z0-9.\-]+?)_(?:LATE_)?\d+_\d+_(?P<rest>.+)$")
MOODLE_PREFIX = re.compile(r"^(?P<name>.+?)_\d+_assignsubmission_file_(?P<rest>.+)$")


def course_module(name: str, root: Path = ROOT):
    """``course_lib/<name>.py`` of ``root`` loaded on its own: the package's ``__init__`` imports torch
    (5 s), which neither the grader nor its workers need (only the kernels do)."""
    import importlib.util

    key = f"_course_{name}_{abs(hash(str(root)))}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, root / "course_lib" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def student_modules(root: Path = ROOT) -> list[str]:
    """The course_lib files students edit (``attention.py``, ...), from course_lib/tasks.py."""
    return list(dict.fromkeys(f"{t.module}.py" for t in course_module("tasks", root).TASKS))


def normalise_notebook_name(name: str) -> str:
    return course_module("submit").normalise_notebook_name(name)


def _setup_paths(root: Path) -> None:
    """Import course_lib and the course tools of ``root``; put this interpreter's scripts on PATH.

    nbgrader runs ``alembic`` (a script next to this Python) when it creates a gradebook;
    ``make grade`` runs ``.venv/bin/python`` without activating the venv, so add its bin/.
    """
    for p in (str(root / "tools"), str(root)):
        if p not in sys.path:
            sys.path.insert(0, p)
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    _fast_alembic_version()


def _fast_alembic_version() -> None:
    """nbgrader runs ``alembic heads`` in a subprocess for every new gradebook (3-7 s); ask
    alembic in this process instead, once."""
    import functools

    import nbgrader.api

    if getattr(nbgrader.api.get_alembic_version, "_course_fast", False):
        return

    @functools.cache
    def get_alembic_version() -> str:
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(nbgrader.api.__file__).parent / "alembic"))
        return ScriptDirectory.from_config(cfg).get_current_head()

    get_alembic_version._course_fast = True
    nbgrader.api.get_alembic_version = get_alembic_version


# =================================================================================================
# Collection: an LMS download -> submitted/<student>/<assignment>/{<assignment>.ipynb, course_lib/}
# =================================================================================================

@dataclass
class Submission:
    """One student's work for one assignment, as found in the submissions folder."""

    source: Path  # the zip or notebook it came from
    student: str | None = None
    assignment: str | None = None
    notebook: dict | None = None  # parsed notebook (None: missing or unreadable)
    notebook_name: str | None = None  # its name in the zip
    modules: dict[str, bytes] = field(default_factory=dict)  # "attention.py" -> bytes
    created: str | None = None  # from submission.json
    problems: list[str] = field(default_factory=list)  # reasons it cannot be graded
    notes: list[str] = field(default_factory=list)  # things the instructor should know

    @property
    def key(self) -> tuple[str, str]:
        return (self.student or "", self.assignment or "")


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text.strip()).strip("-.") or "unknown"


def ids_from_filename(name: str, assignments: list[str]) -> tuple[str | None, str | None, str | None]:
    """(LMS login, student id, assignment) read from an LMS file name; any may be None.

    ``jsmith_12345_678_submission_jsmith_01_attention.zip`` (Canvas) gives
    ``("jsmith", "jsmith", "01_attention")``; ``submission_jsmith_01_attention (1).zip`` gives
    ``(None, "jsmith", "01_attention")``; Moodle's ``Jane Smith_123456_assignsubmission_file_<name>``
    gives the id in ``<name>``, else ``"Jane-Smith"``.
    """
    stem = re.sub(r"\.(zip|ipynb)$", "", Path(name).name, flags=re.I)
    login = full_name = None
    if m := CANVAS_PREFIX.match(stem):
        login, rest = m.group("login"), m.group("rest")
    elif m := MOODLE_PREFIX.match(stem):  # Moodle prefixes the full name, not an id
        full_name, rest = _safe_id(m.group("name")), m.group("rest")
    else:
        rest = stem
    rest = normalise_notebook_name(rest)
    sid = aid = None
    if m := SUBMISSION_NAME.search(rest):
        sid, aid = m.group("sid"), m.group("aid")
    else:
        for a in assignments:
            if a in rest:
                aid = a
                head = rest.split(a)[0].strip("_- ")
                sid = head or None
                break
    if aid is not None and assignments and aid not in assignments:
        aid = next((a for a in assignments if aid.startswith(a)), aid)
    sid = _safe_id(sid) if sid else full_name
    return login, sid, aid


def match_assignment(nb: dict, grade_ids: dict[str, set[str]]) -> str | None:
    """The assignment whose graded cells the notebook shares most (None: no graded cell in common)."""
    ids = {c.get("metadata", {}).get("nbgrader", {}).get("grade_id") for c in nb.get("cells", [])} - {None}
    best = max(grade_ids, key=lambda a: len(ids & grade_ids[a]), default=None)
    return best if best is not None and ids & grade_ids[best] else None


def _read_notebook(data: bytes, what: str, sub: Submission) -> dict | None:
    import nbformat

    try:
        text = data.decode("utf-8-sig")
        nb = nbformat.reads(text, as_version=4)
    except Exception as e:  # noqa: BLE001 - a corrupted notebook is one student's problem
        sub.problems.append(f"the notebook {what} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:160]})")
        return None
    return nb


def read_submission_file(path: Path, assignments: list[str], grade_ids: dict[str, set[str]],
                         lms: str | None = None) -> list[Submission]:
    """Every (student, assignment) submission in one zip or notebook of the LMS download.

    ``lms`` is the file's name as the LMS gave it (default: ``path.name``).
    """
    lms = lms or path.name
    login, sid_from_name, aid_from_name = ids_from_filename(lms, assignments)
    found: list[Submission] = []
    notebooks: list[tuple[str, bytes]] = []
    modules: dict[str, bytes] = {}
    manifest: dict = {}
    base = Submission(source=path)
    if path.suffix.lower() == ".ipynb":
        notebooks.append((lms, path.read_bytes()))
    else:
        try:
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    name = info.filename
                    parts = Path(name).parts
                    if info.is_dir() or "__MACOSX" in parts or ".ipynb_checkpoints" in parts or Path(name).name.startswith("._"):
                        continue
                    if name.endswith(".ipynb"):
                        notebooks.append((name, zf.read(info)))
                    elif Path(name).name in student_modules() and (len(parts) == 1 or parts[-2] == "course_lib"):
                        # course_lib/attention.py (preferred) or a flat attention.py
                        if parts[-2:-1] == ("course_lib",) or Path(name).name not in modules:
                            modules[Path(name).name] = zf.read(info)
                    elif Path(name).name == "submission.json":
                        try:
                            manifest = json.loads(zf.read(info))
                        except ValueError:
                            base.notes.append("submission.json is unreadable")
        except (zipfile.BadZipFile, OSError) as e:
            base.problems.append(f"{lms} is not a readable zip ({e})")
    manifest_sid = _safe_id(manifest["student_id"]) if isinstance(manifest.get("student_id"), str) else None
    student = login or manifest_sid or sid_from_name or _safe_id(re.sub(r"\.(zip|ipynb)$", "", lms, flags=re.I))
    if login and manifest_sid and manifest_sid != login:
        base.notes.append(f"the zip says student {manifest_sid!r}, the LMS says {login!r}: graded as {login!r}")
    if not (login or manifest_sid or sid_from_name):
        base.notes.append(f"student id taken from the file name {lms!r}")

    if not notebooks:
        base.student, base.assignment = student, manifest.get("exercise") or aid_from_name
        base.modules = modules
        if not base.problems:
            base.problems.append("no notebook in the submission")
        return [base]
    for name, data in notebooks:
        sub = Submission(source=path, student=student, notebook_name=name, modules=dict(modules),
                         created=manifest.get("created"), problems=list(base.problems), notes=list(base.notes))
        sub.notebook = _read_notebook(data, name, sub)
        aid = match_assignment(sub.notebook, grade_ids) if sub.notebook is not None else None
        if aid is None:
            by_name = normalise_notebook_name(name)
            aid = next((a for a in (by_name, manifest.get("exercise"), aid_from_name) if a in assignments), None)
            if aid and sub.notebook is not None:
                sub.notes.append(f"no graded cell of {aid} found in {name}; matched by name")
        elif normalise_notebook_name(Path(name).name) != aid:
            sub.notes.append(f"notebook {Path(name).name!r} graded as {aid} (matched by its graded cells)")
        sub.assignment = aid
        if aid is None:
            sub.problems.append(f"{name} matches no assignment ({', '.join(assignments)})")
        found.append(sub)
    return found


MOODLE_FOLDER = re.compile(r".+_\d+_assignsubmission_\w*?_?$")


def lms_name(rel: Path) -> str:
    """A file's name as the LMS meant it: Moodle puts each student's files in a folder named
    ``Jane Smith_123456_assignsubmission_file_``, which is part of the name."""
    prefix = "".join(part if part.endswith("_") else part + "_" for part in rel.parts[:-1] if MOODLE_FOLDER.match(part))
    return prefix + rel.name


def _is_bundle(path: Path) -> bool:
    """An LMS download (a zip of the students' zips), not one student's zip."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.lower().endswith(".zip") for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def submission_files(source: Path, scratch: Path) -> list[tuple[Path, str]]:
    """(file, LMS name) of every zip / notebook in ``source``: a folder, or an LMS download zip.

    Zips of zips (Canvas' and Moodle's "download all submissions") are unpacked into ``scratch``.
    """
    if source.is_file():
        found = [(source, source.name)]
    else:
        found = [(p, lms_name(p.relative_to(source))) for p in sorted(source.rglob("*"))
                 if p.is_file() and p.suffix.lower() in (".zip", ".ipynb") and ".ipynb_checkpoints" not in p.parts]
    out: list[tuple[Path, str]] = []
    for path, name in found:
        if path.suffix.lower() == ".zip" and _is_bundle(path):
            dest = scratch / f"bundle{len(out)}_{path.stem}"
            with zipfile.ZipFile(path) as zf:
                for i, info in enumerate(zf.infolist()):
                    inner = Path(info.filename)
                    if info.is_dir() or "__MACOSX" in inner.parts or inner.suffix.lower() not in (".zip", ".ipynb"):
                        continue
                    target = dest / f"{i:05d}" / inner.name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(zf.read(info))
                    out.extend(submission_files(target, scratch) if _is_bundle(target) else [(target, lms_name(inner))])
        else:
            out.append((path, name))
    return out


def collect(source: Path, assignments: list[str], grade_ids: dict[str, set[str]], scratch: Path | None = None) -> list[Submission]:
    """Read every zip / notebook of ``source`` (a folder or an LMS download zip); keep the newest per
    (student, assignment)."""
    scratch = scratch or Path(tempfile.mkdtemp(prefix="lms-download-"))
    subs: list[Submission] = []
    for path, name in submission_files(source, scratch):
        try:
            subs.extend(read_submission_file(path, assignments, grade_ids, name))
        except Exception as e:  # noqa: BLE001 - never stop the batch
            subs.append(Submission(source=path, student=_safe_id(Path(name).stem), problems=[f"cannot read {name}: {e!r}"]))
    by_key: dict[tuple[str, str], list[Submission]] = {}
    for s in subs:
        by_key.setdefault(s.key, []).append(s)
    kept = []
    for group in by_key.values():
        group.sort(key=lambda s: (s.notebook is not None, s.created or "", s.source.stat().st_mtime, s.source.name))
        newest = group[-1]
        if len(group) > 1:
            newest.notes.append(f"{len(group)} submissions; graded the newest ({newest.source.name})")
        kept.append(newest)
    return sorted(kept, key=lambda s: s.key)


def _grade_id(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def restore_deleted_cells(nb, released) -> list[str]:
    """Put back (in place) every nbgrader cell of the released notebook the student deleted.

    Each goes right after the cell that precedes it in the released notebook (matched by
    grade id, cell id or source). nbgrader's own ``add_missing_cells`` puts a deleted cell after
    the previous graded cell, or first in the notebook when there is none: before the imports,
    where even correct code fails. Returns the restored grade ids.
    """
    import copy
    import uuid

    have = {_grade_id(c) for c in nb.cells} - {None}
    ids = {c.get("id") for c in nb.cells}

    def find(cell) -> int | None:
        for j, c in enumerate(nb.cells):
            if (_grade_id(cell) and _grade_id(c) == _grade_id(cell)) or (cell.get("id") and c.get("id") == cell.get("id")):
                return j
        for j, c in enumerate(nb.cells):
            if c.cell_type == cell.cell_type and c.source.strip() and c.source.strip() == cell.source.strip():
                return j
        return None

    restored = []
    for i, cell in enumerate(released.cells):
        gid = _grade_id(cell)
        if gid is None or gid in have:
            continue
        pos = 0
        for prev in reversed(released.cells[:i]):
            j = find(prev)
            if j is not None:
                pos = j + 1
                break
        new = copy.deepcopy(cell)
        if "id" in new and new["id"] in ids:
            new["id"] = uuid.uuid4().hex[:12]
        nb.cells.insert(pos, new)
        have.add(gid)
        ids.add(new.get("id"))
        restored.append(gid)
    return restored


def write_submitted(sub: Submission, course: Path, stub_lib: Path, released=None) -> Path:
    """``course/submitted/<student>/<assignment>/``: the notebook and a course_lib/ with the student's
    files; files the submission lacks are the student-edition stubs (never the instructor's).
    Cells deleted from the notebook are put back from ``released`` (the released notebook)."""
    import nbformat

    dest = course / "submitted" / sub.student / sub.assignment
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "course_lib").mkdir(parents=True)
    if released is not None:
        restored = restore_deleted_cells(sub.notebook, released)
        if restored:
            sub.notes.append(f"deleted cells put back: {', '.join(restored)}")
    if sub.notebook.get("nbformat_minor", 0) < 5:  # cell ids need 4.5; Colab saves 4.0
        sub.notebook.nbformat_minor = 5
        for cell in sub.notebook.cells:
            cell.setdefault("id", __import__("uuid").uuid4().hex[:12])
    nbformat.write(sub.notebook, dest / f"{sub.assignment}.ipynb")
    missing = []
    for module in student_modules(ROOT):
        if module in sub.modules:
            (dest / "course_lib" / module).write_bytes(sub.modules[module])
        else:
            shutil.copyfile(stub_lib / module, dest / "course_lib" / module)
            missing.append(module)
    if missing:
        sub.notes.append(f"not in the submission, graded as the unedited stub: course_lib/{', course_lib/'.join(missing)}")
    return dest


# =================================================================================================
# Staging: the instructor notebooks -> a template course directory (source/, release/, gradebook)
# =================================================================================================

def student_edition_lib(root: Path, dest: Path) -> Path:
    """The student edition's course_lib (stubs + support files), built from ``root`` into ``dest``."""
    import release

    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    release.build_course_lib(dest)
    return dest / "course_lib"


def grading_config(root: Path, course: Path, assignments: list[str], cell_timeout: int | None = None):
    """The course's nbgrader_config.py pointed at ``course``, plus what autograding a class needs."""
    import assignments as assignments_tool

    config = assignments_tool.load_config(root, course)
    # The student's course_lib files are theirs: never overwritten by the source copies.
    config.Autograde.exclude_overwriting = {a: [f"course_lib/{m}" for m in student_modules(root)] for a in assignments}
    config.OverwriteCells.add_missing_cells = True  # a deleted test cell is restored and run
    if cell_timeout:
        config.Execute.timeout = cell_timeout
    return config


def stage_template(root: Path, template: Path, assignments: list[str], stub_lib: Path) -> Path:
    """``template/{source,release}/<a>/`` and ``template/gradebook.db`` with every graded cell.

    ``source/<a>/course_lib/`` is the STUDENT EDITION (stubs and support files): nbgrader copies
    source files over each submission, so the support files (tasks.py, _checks.py, ...) are always
    the course's; the files students edit are in ``exclude_overwriting`` and stay theirs.
    """
    import assignments as assignments_tool

    if template.exists():
        shutil.rmtree(template)
    assignments_tool.generate_assignments(root, template, assignments)
    for a in assignments:
        shutil.copytree(stub_lib, template / "source" / a / "course_lib")
    return template


def source_grade_cells(template: Path, assignments: list[str]) -> dict[str, dict[str, float]]:
    """assignment -> {grade_id: points} from the template gradebook."""
    from nbgrader.api import Gradebook

    out: dict[str, dict[str, float]] = {}
    with Gradebook(f"sqlite:///{template / 'gradebook.db'}") as gb:
        for a in assignments:
            cells = {}
            for nb in gb.find_assignment(a).notebooks:
                for gc in nb.grade_cells:
                    cells[gc.name] = float(gc.max_score)
            out[a] = cells
    return out


def hidden_test_lines(root: Path, assignments: list[str] | None = None) -> set[str]:
    """Lines of hidden tests in ``solutions/`` that appear nowhere outside a hidden block."""
    hidden, public = set(), set()
    for path in sorted((root / "solutions").glob("*.ipynb")):
        if assignments and path.stem not in assignments:
            continue
        nb = json.loads(path.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            inside = False
            for line in src.splitlines():
                s = line.strip()
                if HIDDEN_BEGIN in s:
                    inside = True
                elif HIDDEN_END in s:
                    inside = False
                elif s and not s.startswith("#"):
                    s = re.sub(r"\s+#.*$", "", s)  # the same code with another comment is not a secret
                    (hidden if inside else public).add(s)
    return {s for s in hidden - public if len(s) >= 8}


# =================================================================================================
# The worker: autograde ONE submission in its own course directory (run as a separate process)
# =================================================================================================

# Runs in the kernel before the first cell: keeps the real functions tests rely on, so that a
# submission that replaces them (say torch.testing.assert_close = lambda *a, **k: None, or
# torch.Tensor.any, at import of course_lib) cannot make a test pass. Before every graded cell
# they are put back, and so are the test helpers the notebook's locked cells define (and any
# name in the notebook bound to a replaced function); a graded cell after which they were
# replaced again scores 0.
GUARD_SOURCE = r'''
def __course_guard_install(key, submission_dir):
    import builtins, math, os, sys, types
    import torch, torch.nn.functional, torch.testing, torch.testing._comparison
    modules = [math, torch, torch.testing, torch.testing._comparison, torch.nn.functional, torch.linalg]
    try:
        import numpy, numpy.testing
        modules += [numpy, numpy.testing]
        try:
            import numpy.testing._private.utils as _npu
            modules.append(_npu)
        except ImportError:
            pass
    except ImportError:
        pass
    classes = [torch.Tensor, torch._C.TensorBase, torch.nn.Module, torch.nn.Linear, torch.nn.LayerNorm,
               torch.nn.MultiheadAttention, torch.nn.Conv2d, torch.nn.GELU, torch.nn.Dropout]
    classes += [v for v in vars(torch.testing._comparison).values() if isinstance(v, type)]
    builtin_names = ["abs", "all", "any", "isinstance", "issubclass", "len", "max", "min", "round", "float",
                     "int", "bool", "sum", "getattr", "hasattr", "type", "zip", "range", "sorted", "list",
                     "dict", "set", "tuple", "str", "repr", "AssertionError", "Exception", "BaseException"]
    MISSING = object()
    saved = []  # (owner, name, value, code)
    for owner in modules + classes:
        for name, value in list(vars(owner).items()):
            saved.append((owner, name, value, getattr(value, "__code__", None)))
    for name in builtin_names:
        value = getattr(builtins, name)
        saved.append((builtins, name, value, getattr(value, "__code__", None)))
    base_names = {c: set(vars(c)) for c in classes}
    watched_names = set()
    for c in classes:
        for b in c.__mro__[1:]:
            watched_names |= set(vars(b))
    fakes = {}  # id(replacement) -> (replacement, original)
    helpers = {}  # test helpers defined by the notebook's locked cells: name -> value
    submission_dir = os.path.realpath(submission_dir)

    def user_ns():
        try:
            return get_ipython().user_ns  # noqa: F821 - IPython's global
        except NameError:
            return vars(sys.modules["__main__"])

    def restore():
        changed = []
        for i, (owner, name, value, code) in enumerate(saved):
            now = vars(owner).get(name, MISSING)
            if now is not value:
                if now is not MISSING and getattr(now, "__wrapped__", None) is value and not from_submission(now):
                    # torch wraps some of its own functions later (torch._dynamo: torch.manual_seed)
                    saved[i] = (owner, name, now, getattr(now, "__code__", None))
                    continue
                changed.append(f"{getattr(owner, '__name__', owner)}.{name}")
                if now is not MISSING:
                    fakes[id(now)] = (now, value)
                setattr(owner, name, value)
            elif code is not None and getattr(value, "__code__", None) is not code:
                changed.append(f"{getattr(owner, '__name__', owner)}.{name}.__code__")
                value.__code__ = code
        for c in classes:  # a new class attribute that shadows an inherited method
            for name in set(vars(c)) - base_names[c]:
                if name in watched_names:
                    changed.append(f"{c.__name__}.{name}")
                    fakes[id(vars(c)[name])] = (vars(c)[name], None)
                    delattr(c, name)
        ns = user_ns()
        for name, value in helpers.items():
            if ns.get(name, MISSING) is not value:
                changed.append(f"{name} (test helper)")
                ns[name] = value
        for name, value in list(ns.items()):  # e.g. _SDPA = F.scaled_dot_product_attention taken while replaced
            if id(value) in fakes and fakes[id(value)][0] is value and fakes[id(value)][1] is not None:
                changed.append(f"{name} (bound to a replaced function)")
                ns[name] = fakes[id(value)][1]
        return changed

    def from_submission(value):
        code = getattr(value, "__code__", None)
        if code is not None:
            return os.path.realpath(code.co_filename).startswith(submission_dir)
        if isinstance(value, type):
            return (value.__module__ or "").startswith("course_lib")
        return id(value) in fakes

    def keep(defined, bound):
        # remember the test helpers a locked cell defined (def/class) or bound (=, import); returns the
        # names whose value came from the submission: a definition replaced by its code, or a replaced function
        ns, bad = user_ns(), []
        for name in list(defined) + list(bound):
            if name not in ns:
                continue
            value = ns[name]
            if (name in defined and from_submission(value)) or (id(value) in fakes and fakes[id(value)][0] is value):
                bad.append(name)
            else:
                helpers[name] = value
        return bad

    mod = types.ModuleType(key)
    mod.restore, mod.keep = restore, keep
    sys.modules[key] = mod
    return len(saved)
'''


def defined_names(source: str) -> tuple[list[str], list[str]]:
    """Top-level names of a cell: (defined by def/class, bound by assignments and imports)."""
    import ast

    lines = [ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:
        return [], []
    defined, bound = [], []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                bound.extend(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.extend((a.asname or a.name).split(".")[0] for a in node.names if a.name != "*")
    return list(dict.fromkeys(defined)), list(dict.fromkeys(bound))


def _worker_classes():
    """The nbgrader Execute preprocessor used for grading (defined lazily: nbgrader imports are slow)."""
    from queue import Empty

    import nbformat
    from jupyter_core.utils import ensure_async
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from nbclient.util import run_sync
    from nbgrader import utils as nbutils
    from nbgrader.preprocessors import Execute
    from traitlets import Bool, Integer, Unicode

    class GradingExecute(Execute):
        """nbgrader's Execute, made safe for a class of untrusted submissions.

        * the kernel starts in the submission's folder (``run_path``), so the notebook's set-up
          cell and ``import course_lib`` find the submission's course_lib;
        * a dead kernel (segfault, ``os._exit``, out of memory) or one that ignores the timeout
          interrupt is restarted and the notebook's earlier ungraded cells are replayed: the cell
          scores 0, later cells are graded as usual;
        * the functions tests use are restored before each graded cell (``GUARD_SOURCE``);
        * in graded cells, stderr (warnings, progress bars) is not a failure and a number as the
          last value is not partial credit, unless asked for.
        """

        run_path = Unicode("", help="working directory of the kernel (the submission's folder)").tag(config=True)
        guard = Bool(True, help="restore the functions tests rely on before every graded cell").tag(config=True)
        max_restarts = Integer(3, help="kernel restarts per notebook after a crash or a stuck cell").tag(config=True)
        stderr_fails = Bool(False, help="nbgrader's default: any stderr output in a test cell scores 0").tag(config=True)
        partial_credit = Bool(False, help="nbgrader's default: a number as a test cell's last value is partial credit").tag(config=True)
        events_path = Unicode("", help="where to write what happened (JSON list of strings)").tag(config=True)

        def preprocess(self, nb, resources=None, km=None):
            self.events: list[str] = []
            self._restarts = 0
            self._dead = False
            self._guard_key = f"_course_guard_{os.getpid()}_{int(time.time() * 1e6) % 10**9}"
            self._guarded = False
            self._replay: list = []
            if self.run_path:
                resources = resources or {}
                resources.setdefault("metadata", {})["path"] = self.run_path
            try:
                return super().preprocess(nb, resources, km)
            finally:
                if self.events_path:
                    Path(self.events_path).write_text(json.dumps(self.events))

        # -- helpers -----------------------------------------------------------------------
        async def _async_silent(self, code: str, timeout: float | None = None) -> tuple[str, str | None]:
            """Run ``code`` in the kernel outside the notebook (no cell, no history).

            Returns (stdout, "ErrorName: message" or None). Raises DeadKernelError when the
            kernel dies, TimeoutError when it does not finish within ``timeout`` seconds.
            """
            kc = self.kc
            timeout = timeout or self.timeout or 60
            msg_id = kc.execute(code, silent=False, store_history=False, allow_stdin=False, stop_on_error=False)
            deadline = time.monotonic() + timeout
            text, error = [], None
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no answer from the kernel within {timeout:.0f} s")
                try:
                    msg = await ensure_async(kc.iopub_channel.get_msg(timeout=min(remaining, 1.0)))
                except Empty:
                    if not await ensure_async(kc.is_alive()):
                        raise DeadKernelError("Kernel died") from None
                    continue
                if msg["parent_header"].get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind == "stream" and content.get("name") == "stdout":
                    text.append(content["text"])
                elif kind == "error":
                    error = f"{content['ename']}: {content['evalue']}"
                elif kind == "status" and content["execution_state"] == "idle":
                    break
            while True:  # the shell reply, so that it is not mistaken for the next cell's
                try:
                    msg = await ensure_async(kc.shell_channel.get_msg(timeout=2))
                except Empty:
                    break
                if msg["parent_header"].get("msg_id") == msg_id:
                    break
            return "".join(text), error

        def _silent(self, code: str, timeout: float | None = None) -> str:
            """``_async_silent`` for code that must succeed: its stdout (raises RuntimeError on an error)."""
            text, error = run_sync(self._async_silent)(code, timeout)
            if error:
                raise RuntimeError(error)
            return text

        def _install_guard(self) -> None:
            if not self.guard:
                return
            try:
                self._silent(GUARD_SOURCE + f"\nprint(__course_guard_install({self._guard_key!r}, {self.run_path!r}))\n"
                             "del __course_guard_install")
                self._guarded = True
            except Exception as e:  # noqa: BLE001
                self.events.append(f"could not install the test guard: {e}")

        def _guard_call(self, call: str) -> list[str]:
            """``restore()`` or ``keep([...])`` of the guard in the kernel: a list of names."""
            if not self._guarded:
                return []
            out = self._silent(f"import sys as _s\nprint('\\x1e'.join(_s.modules[{self._guard_key!r}].{call}))\ndel _s")
            return [x for x in out.strip().split("\x1e") if x]

        def _restore(self) -> list[str]:
            return self._guard_call("restore()")

        def _keep_helpers(self, cell, name: str) -> None:
            """After a helper cell: remember its definitions; if the submission replaced any of them
            (or a function they captured) while the cell ran, restore and run the cell again."""
            defined, bound = defined_names(cell.source)
            keep = f"keep({defined!r}, {bound!r})"
            try:
                replaced = self._restore()
                bad = self._guard_call(keep)
                if replaced or bad:
                    self._restore()
                    run_sync(self._async_silent)(cell.source)
                    bad = self._guard_call(keep)
                    self.events.append(f"{name}: the submission replaced {', '.join((replaced + bad)[:5])} while the "
                                       "test helpers were defined; restored and defined again")
                    if bad:
                        self.events.append(f"{name}: could not restore {', '.join(bad[:5])}")
            except Exception as e:  # noqa: BLE001
                self.events.append(f"{name}: guard failed ({e})")

        def _error_output(self, ename: str, evalue: str):
            return nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])

        def _kernel_responsive(self) -> bool:
            try:
                run_sync(self._async_silent)("pass", 10)
                return True
            except Exception:  # noqa: BLE001 - dead, or still busy after the interrupt
                return False

        def _restart(self, why: str) -> bool:
            """Restart the kernel, re-install the guard and replay the earlier ungraded cells."""
            if self._restarts >= self.max_restarts:
                self._dead = True
                self.events.append(f"{why}; no more restarts, the remaining cells are not run")
                return False
            self._restarts += 1
            try:
                try:
                    self.kc.stop_channels()
                except Exception:  # noqa: BLE001
                    pass
                run_sync(self.km.restart_kernel)(now=True)
                self.start_new_kernel_client()
                self._install_guard()
                for cell in self._replay:
                    run_sync(self._async_silent)(cell.source)  # its errors do not matter here
            except Exception as e:  # noqa: BLE001 - the kernel dies again while replaying
                self._dead = True
                self.events.append(f"{why}; the kernel could not be restarted ({type(e).__name__}), the remaining cells are not run")
                return False
            self.events.append(f"{why}; kernel restarted and the earlier cells replayed")
            return True

        # -- the cell loop ---------------------------------------------------------------------
        def preprocess_cell(self, cell, resources, index):
            if cell.cell_type != "code":
                return cell, resources
            graded = nbutils.is_grade(cell)
            # a locked cell of the instructor's that is not a test: the test helpers
            helpers = nbutils.is_locked(cell) and not graded and not nbutils.is_solution(cell)
            name = cell.metadata.get("nbgrader", {}).get("grade_id", f"cell {index}")
            if self._dead:
                cell.outputs = [self._error_output("KernelDied", "not run: the kernel died earlier and could not be restarted")]
                return cell, resources
            if self.guard and not self._guarded:
                self._install_guard()
            if (graded or helpers) and self._guarded:
                try:
                    before = self._restore()
                    if before:
                        self.events.append(f"before {name}: restored {', '.join(before[:5])} (replaced by the submission)")
                except Exception as e:  # noqa: BLE001
                    self.events.append(f"before {name}: guard failed ({e})")
            try:
                cell, resources = super().preprocess_cell(cell, resources, index)
            except DeadKernelError:
                cell.outputs.append(self._error_output(
                    "KernelDied", "the kernel died while running this cell (a crash: segfault, os._exit, "
                    "running out of memory); this cell scores 0"))
                self._restart(f"kernel died in {name}")
                return cell, resources
            except CellTimeoutError:  # timed out, and the kernel did not even answer the interrupt
                cell.outputs.append(self._error_output(
                    "CellTimeoutError", f"the cell ran longer than {self.timeout} s and ignored the interrupt; "
                    "this cell scores 0"))
                self._restart(f"{name} timed out and the kernel did not respond to the interrupt")
                return cell, resources
            timed_out = any(o.output_type == "error" and o.get("ename") == "CellTimeoutError" for o in cell.outputs)
            if timed_out and not self._kernel_responsive():
                self._restart(f"{name} timed out and the kernel did not respond to the interrupt")
                return cell, resources
            if helpers and self._guarded:
                self._keep_helpers(cell, name)
            if graded and self._guarded:
                try:
                    after = self._restore()
                except Exception as e:  # noqa: BLE001
                    after = [f"(guard unavailable: {e})"]
                if after:
                    cell.outputs.append(self._error_output(
                        "GraderIntegrityError",
                        f"the submission replaced {', '.join(after[:5])} while this test ran; tests must run "
                        "against the real functions, so this cell scores 0"))
                    self.events.append(f"{name}: replaced {', '.join(after[:5])} during the test (scored 0)")
            if graded:
                for out in cell.outputs:
                    if not self.stderr_fails and out.output_type == "stream" and out.name == "stderr":
                        out.name = "stdout"  # shown in the feedback, not a failure
                    if not self.partial_credit and out.output_type == "execute_result":
                        out.output_type = "display_data"  # shown, not read as partial credit
                        out.pop("execution_count", None)
            elif not timed_out:
                self._replay.append(cell)
            return cell, resources

    return GradingExecute


def redact_for_feedback(nb) -> int:
    """Remove hidden-test code from a graded notebook (in place): the regions between the hidden
    test markers and the traceback frames that show a graded cell's code. Returns cells changed.

    nbgrader's feedback renders the autograded notebook, hidden tests included (jupyter/nbgrader#917).
    """
    changed = 0
    for cell in nb.cells:
        if cell.cell_type != "code" or HIDDEN_BEGIN not in cell.source:
            continue
        changed += 1
        lines, inside, count, indent = [], False, 0, ""
        for line in cell.source.splitlines():
            if HIDDEN_BEGIN in line:
                inside, count, indent = True, 0, line[: len(line) - len(line.lstrip())]
            elif HIDDEN_END in line:
                inside = False
                lines.append(f"{indent}# ... hidden tests ({count} lines) are not shown ...")
            elif inside:
                count += 1
            else:
                lines.append(line)
        cell.source = "\n".join(lines)
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                kept = []
                for frame in out.get("traceback", []):
                    plain = ANSI.sub("", frame).lstrip()
                    if plain.startswith(("Cell In[", "Input In [", "<ipython-input-", "File <ipython-input-")) or re.match(r"^File \S*ipykernel_\d+", plain):
                        kept.append("(test cell code not shown)")
                    else:
                        kept.append(frame)
                out.traceback = kept
    return changed


def _cell_errors(nb) -> dict[str, str]:
    """grade_id -> 'ErrorName: first line' for graded cells that raised."""
    errors = {}
    for cell in nb.cells:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if not gid or cell.cell_type != "code" or not cell.get("metadata", {}).get("nbgrader", {}).get("grade"):
            continue
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                first = (str(out.get("evalue", "")).strip().splitlines() or [""])[0]
                errors[gid] = f"{out.get('ename', 'Error')}: {first}"[:200]
                break
    return errors


def run_worker(job: dict) -> dict:
    """Autograde one submission in ``job["course"]`` (a private course directory) and write feedback.

    Called in a fresh process (``grade.py --worker job.json``). Returns (and writes to
    ``job["result"]``) a dict with ``ok``, ``events``, ``errors`` (per graded cell) and ``log``.
    """
    root, course = Path(job["root"]), Path(job["course"])
    sid, aid = job["student"], job["assignment"]
    _setup_paths(root)
    import nbformat
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    run_path = course / "autograded" / sid / aid
    # The kernel inherits this environment: the submission's course_lib first, CPU only, quiet.
    os.environ["PYTHONPATH"] = os.pathsep.join([str(run_path)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    os.environ.update({
        "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1", "MPLBACKEND": "Agg", "CUDA_VISIBLE_DEVICES": "",
        "COURSE_DEVICE": "cpu", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "IPYTHONDIR": str(course / ".ipython"),
    })
    for var in ("JPY_SESSION_NAME", "COURSE_SUBMISSION_RUN"):
        os.environ.pop(var, None)

    config = grading_config(root, course, [aid], job.get("cell_timeout"))
    GradingExecute = _worker_classes()
    events_path = course / "events.json"
    config.GradingExecute.run_path = str(run_path)
    config.GradingExecute.events_path = str(events_path)
    config.GradingExecute.guard = job.get("guard", True)
    from nbgrader.converters import Autograde

    pre = list(Autograde.class_traits()["autograde_preprocessors"].default())
    config.Autograde.autograde_preprocessors = [GradingExecute if p.__name__ == "Execute" else p for p in pre]
    api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
    api.log.setLevel(logging.INFO)
    result: dict = {"ok": False, "events": [], "errors": {}, "log": ""}
    t0 = time.time()
    auto = api.autograde(aid, sid, force=True, create=True)
    result["autograde_s"] = round(time.time() - t0, 2)
    result["log"] = auto.get("log", "") + (auto.get("error") or "")
    if events_path.exists():
        result["events"] = json.loads(events_path.read_text())
    graded = run_path / f"{aid}.ipynb"
    if not auto["success"] or not graded.exists():
        result["reason"] = "nbgrader autograde failed: " + _last_error(result["log"])
    else:
        nb = nbformat.read(graded, as_version=4)
        result["errors"] = _cell_errors(nb)
        keep = course / "instructor_copy.ipynb"
        shutil.copyfile(graded, keep)
        redact_for_feedback(nb)
        nbformat.write(nb, graded)
        t0 = time.time()
        fb = api.generate_feedback(aid, sid, force=True)
        result["feedback_s"] = round(time.time() - t0, 2)
        shutil.copyfile(keep, graded)  # the instructor's copy keeps the hidden tests
        result["log"] += fb.get("log", "") + (fb.get("error") or "")
        result["ok"] = True
        if not fb["success"]:
            result["feedback_error"] = _last_error(fb.get("log", "") + (fb.get("error") or ""))
    Path(job["result"]).write_text(json.dumps(result))
    return result


def _last_error(log: str) -> str:
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^\w*(Error|Exception)\b", ln) or "Error:" in ln:
            return ln[:300]
    return lines[-1][:300] if lines else "no log"


# =================================================================================================
# The pool: one process per submission, its own course directory, time and memory limits
# =================================================================================================

def _limit_memory(gib: float) -> None:
    """Cap what this process and its children (the kernel) may allocate.

    RLIMIT_DATA counts heap and anonymous mappings: what a student's huge tensor takes.
    (RLIMIT_AS would also count the ~3.7 GiB of address space torch's shared libraries map.)
    """
    import resource

    if gib:
        limit = int(gib * 2**30)
        try:
            resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
        except (ValueError, OSError) as e:  # e.g. a platform that does not allow it
            print(f"warning: could not limit memory to {gib} GiB ({e})", file=sys.stderr)


# Imported once by the fork server; every worker forked from it starts with them loaded (~3 s each).
PRELOAD = ["nbformat", "nbconvert", "nbclient", "jupyter_client", "nbgrader.apps", "nbgrader.converters",
           "nbgrader.preprocessors", "sqlalchemy", "alembic.script"]


def _worker_main(job_file: str, memory_gib: float) -> None:
    """Entry point of a forked worker: own session (killable as a group), memory cap, log file."""
    os.setsid()
    _limit_memory(memory_gib)
    job = json.loads(Path(job_file).read_text())
    fd = os.open(Path(job["course"]) / "worker.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    run_worker(job)


_START_LOCK = threading.Lock()
_CONTEXT = None


def _context():
    """multiprocessing's fork server, preloaded with nbgrader (started once)."""
    global _CONTEXT
    if _CONTEXT is None:
        import multiprocessing

        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(PRELOAD)
    return _CONTEXT


def _kill_tree(pid: int) -> None:
    """Kill a worker and everything it started (kernels run in their own sessions)."""
    try:
        import psutil

        procs = psutil.Process(pid).children(recursive=True)
    except Exception:  # noqa: BLE001
        procs = []
    for p in procs:
        try:
            p.kill()
        except Exception:  # noqa: BLE001
            pass
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def grade_one(job: dict, timeout: float, memory_gib: float) -> dict:
    """Run one worker process; always returns a result (a crash or timeout is a result too)."""
    Path(job["job_file"]).write_text(json.dumps(job))
    started = time.time()
    log_path = Path(job["course"]) / "worker.log"
    log_path.touch()
    with _START_LOCK:
        proc = _context().Process(target=_worker_main, args=(job["job_file"], memory_gib), daemon=False)
        proc.start()
    proc.join(timeout)
    if proc.is_alive():
        _kill_tree(proc.pid)
        proc.join()
        return {"ok": False, "reason": f"grading took longer than the {timeout:.0f} s limit per submission (stopped)",
                "events": [], "errors": {}, "log": log_path.read_text(errors="replace")[-20000:], "seconds": time.time() - started}
    result_path = Path(job["result"])
    if result_path.exists():
        result = json.loads(result_path.read_text())
    else:
        code = proc.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        result = {"ok": False, "events": [], "errors": {},
                  "reason": f"the grading process failed ({how}): " + _last_error(log_path.read_text(errors="replace"))}
    result["log"] = result.get("log", "") + "\n--- worker output ---\n" + log_path.read_text(errors="replace")[-20000:]
    result["seconds"] = time.time() - started
    return result


def merge_into_gradebook(main_db: Path, worker_db: Path, sid: str, aid: str) -> dict[str, float | None]:
    """Copy one student's autograde results from a worker's gradebook into the main one.

    Returns grade_id -> score (None where it needs manual grading).
    """
    from nbgrader.api import Gradebook, MissingEntry

    scores: dict[str, float | None] = {}
    with Gradebook(f"sqlite:///{worker_db}") as wgb:
        try:
            wsub = wgb.find_submission(aid, sid)
        except MissingEntry:
            return scores
        timestamp = wsub.timestamp
        rows = []
        for nb in wsub.notebooks:
            for g in nb.grades:
                rows.append((nb.name, g.name, g.auto_score, g.manual_score, g.needs_manual_grade))
            comments = [(nb.name, c.name, c.auto_comment) for c in nb.comments]
    with Gradebook(f"sqlite:///{main_db}") as gb:
        gb.update_or_create_student(sid)
        gb.update_or_create_submission(aid, sid, timestamp=timestamp)
        for nb_name, gid, auto, manual, needs in rows:
            g = gb.find_grade(gid, nb_name, aid, sid)
            g.auto_score, g.manual_score, g.needs_manual_grade = auto, manual, needs
            scores[gid] = manual if manual is not None else auto
        for nb_name, cid, text in comments:
            try:
                c = gb.find_comment(cid, nb_name, aid, sid)
                c.auto_comment = text
            except MissingEntry:
                pass
        gb.db.commit()
    return scores


def zero_in_gradebook(main_db: Path, sid: str, aid: str) -> None:
    """A submission that could not be graded: 0 for every graded cell (in the gradebook too)."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{main_db}") as gb:
        gb.update_or_create_student(sid)
        sub = gb.update_or_create_submission(aid, sid)
        for nb in sub.notebooks:
            for g in nb.grades:
                g.auto_score, g.needs_manual_grade = 0.0, False
        gb.db.commit()


def fallback_feedback(path: Path, sid: str, aid: str, reason: str, tasks: dict[str, float], max_tasks: dict[str, float]) -> None:
    """A feedback page for a submission nbgrader could not grade."""
    rows = "".join(f"<tr><td>{t}</td><td>{tasks.get(t, 0):g}</td><td>{m:g}</td></tr>" for t, m in max_tasks.items())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(aid)}: feedback for {html.escape(sid)}</title></head>
<body style="font-family: sans-serif; max-width: 50em; margin: 2em auto">
<h1>{html.escape(aid)}: feedback for {html.escape(sid)}</h1>
<p><b>Your submission could not be graded automatically:</b> {html.escape(reason)}</p>
<p>Score: {sum(tasks.values()):g} / {sum(max_tasks.values()):g}</p>
<table border="1" cellpadding="4"><tr><th>Task</th><th>Points</th><th>Out of</th></tr>{rows}</table>
<p>Check the zip you uploaded (it should be the one <code>make_submission</code> wrote) and ask your instructor.</p>
</body></html>
""", encoding="utf-8")


# =================================================================================================
# The batch
# =================================================================================================

@dataclass
class Row:
    student: str
    scores: dict[str, float] = field(default_factory=dict)  # task column -> points
    status: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def task_of(grade_id: str) -> str:
    m = TASK_ID.match(grade_id)
    return f"task{m.group(1)}_{m.group(2)}" if m else grade_id


def grade(submissions: Path, out: Path, jobs: int = 2, assignments: list[str] | None = None, root: Path = ROOT,
          cell_timeout: int | None = None, timeout: float = 300, memory_gib: float = 4, progress: bool = True,
          keep_tmp: bool = False, guard: bool = True) -> list[dict]:
    """Grade every submission in ``submissions`` into the course directory ``out``.

    Returns the rows of ``out/grades.csv`` as dicts.
    """
    _setup_paths(root)
    import warnings

    import nbformat
    from sqlalchemy.exc import SAWarning
    from tqdm.auto import tqdm

    warnings.filterwarnings("ignore", category=SAWarning)  # nbgrader's Gradebook API, harmless

    import assignments as assignments_tool

    started = time.time()
    available = assignments_tool.assignment_ids(root)
    if not available:
        raise SystemExit(f"no instructor notebooks in {root / 'solutions'}")
    wanted = assignments or available
    unknown = sorted(set(wanted) - set(available))
    if unknown:
        raise SystemExit(f"unknown assignment(s) {', '.join(unknown)}; the course has {', '.join(available)}")
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for sub_dir in ("submitted", "autograded", "feedback", "logs"):
        shutil.rmtree(out / sub_dir, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix="grading-", dir=os.environ.get("COURSE_GRADING_TMP")))
    try:
        # 1. the student edition's course_lib and the template course directory
        stub_lib = student_edition_lib(root, work / "student_edition")
        # 2. collect (cheap: needs only the graded cell ids of every assignment, read from solutions/)
        grade_ids = {}
        for a in available:
            nb = nbformat.read(root / "solutions" / f"{a}.ipynb", as_version=4)
            grade_ids[a] = {c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells} - {None}
        subs = collect(submissions, available, grade_ids, work / "lms")
        subs = [s for s in subs if s.assignment in wanted or s.assignment is None]
        graded_assignments = sorted({s.assignment for s in subs if s.assignment in wanted}) or wanted[:1]
        template = stage_template(root, work / "template", graded_assignments, stub_lib)
        cells = source_grade_cells(template, graded_assignments)
        released = {a: nbformat.read(template / "release" / a / f"{a}.ipynb", as_version=4) for a in graded_assignments}
        for a in graded_assignments:
            for sub_dir in ("source", "release"):
                shutil.rmtree(out / sub_dir / a, ignore_errors=True)
                shutil.copytree(template / sub_dir / a, out / sub_dir / a)
        main_db = out / "gradebook.db"
        if main_db.exists():
            main_db.replace(out / "gradebook.previous.db")
        shutil.copyfile(template / "gradebook.db", main_db)
        _check_task_points(cells)

        # 3. write submitted/ and the jobs
        jobs_list, failures = [], []
        for s in subs:
            if s.student and s.assignment in graded_assignments and s.notebook is not None and not s.problems:
                try:
                    write_submitted(s, out, stub_lib, released.get(s.assignment))
                except Exception as e:  # noqa: BLE001
                    s.problems.append(f"cannot write the submission: {e}")
            if s.problems or s.assignment not in graded_assignments or s.notebook is None:
                failures.append(s)
                continue
            course = work / "jobs" / f"{s.student}__{s.assignment}"
            (course / "submitted").mkdir(parents=True)
            shutil.copytree(out / "submitted" / s.student / s.assignment, course / "submitted" / s.student / s.assignment)
            shutil.copytree(template / "source" / s.assignment, course / "source" / s.assignment)
            shutil.copyfile(template / "gradebook.db", course / "gradebook.db")
            jobs_list.append((s, {
                "root": str(root), "course": str(course), "student": s.student, "assignment": s.assignment,
                "cell_timeout": cell_timeout, "guard": guard, "job_file": str(course / "job.json"), "result": str(course / "result.json"),
            }))

        # 4. autograde in parallel, merge serially
        rows: dict[str, Row] = {}
        per_task_max = {a: _task_max(cells[a]) for a in graded_assignments}
        (out / "logs").mkdir(exist_ok=True)

        def row(sid: str) -> Row:
            return rows.setdefault(sid, Row(sid))

        lock = threading.Lock()
        bar = tqdm(total=len(jobs_list) + len(failures), desc="grading", unit="submission", disable=not progress)
        for s in failures:
            reason = "; ".join(s.problems) or f"not an assignment of this course ({s.assignment})"
            sid = s.student or _safe_id(s.source.stem)
            r = row(sid)
            r.status.append(f"{s.assignment or '?'}: not graded")
            r.notes.append(f"{s.assignment or s.source.name}: {reason}")
            r.notes.extend(f"{s.assignment}: {n}" for n in s.notes)
            if s.assignment in graded_assignments:
                zero_in_gradebook(main_db, sid, s.assignment)
                fallback_feedback(out / "feedback" / sid / s.assignment / f"{s.assignment}.html", sid, s.assignment,
                                  reason, {}, per_task_max[s.assignment])
            bar.update(1)
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = {pool.submit(grade_one, job, timeout, memory_gib): (s, job) for s, job in jobs_list}
            for fut in as_completed(futures):
                s, job = futures[fut]
                try:
                    result = fut.result()
                except Exception as e:  # noqa: BLE001
                    result = {"ok": False, "reason": f"grading crashed: {e!r}", "events": [], "errors": {}, "log": ""}
                with lock:
                    _finish(s, job, result, out, main_db, row(s.student), per_task_max[s.assignment])
                bar.update(1)
        bar.close()

        # 5. grades.csv
        table = write_csv(out / "grades.csv", rows, graded_assignments, per_task_max, subs)
        print(f"graded {len(subs)} submission(s) of {len(rows)} student(s) in {time.time() - started:.0f} s: "
              f"{out / 'grades.csv'}, feedback in {out / 'feedback'}")
        return table
    finally:
        if keep_tmp:
            print(f"kept the work folder {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _task_max(cells: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for gid, pts in cells.items():
        out[task_of(gid)] = out.get(task_of(gid), 0.0) + pts
    return dict(sorted(out.items(), key=lambda kv: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", kv[0])]))


def _check_task_points(cells: dict[str, dict[str, float]]) -> None:
    """Warn when the graded cells of a task do not add up to its points in course_lib/tasks.py."""
    TASKS = course_module("tasks").TASKS
    for a, grade_cells in cells.items():
        per_task = _task_max(grade_cells)
        for t in TASKS:
            if t.marker in per_task and abs(per_task[t.marker] - t.points) > 1e-9:
                print(f"warning: {a}: the graded cells of Task {t.id} give {per_task[t.marker]:g} points, "
                      f"course_lib/tasks.py says {t.points}", file=sys.stderr)


def _finish(s: Submission, job: dict, result: dict, out: Path, main_db: Path, r: Row, task_max: dict[str, float]) -> None:
    """Merge one worker's result into the course directory, the gradebook and the row."""
    course = Path(job["course"])
    sid, aid = s.student, s.assignment
    log = out / "logs" / f"{sid}__{aid}.log"
    log.write_text(result.get("log", ""), encoding="utf-8", errors="replace")
    r.notes.extend(f"{aid}: {n}" for n in s.notes)
    scores: dict[str, float | None] = {}
    if result.get("ok"):
        try:
            scores = merge_into_gradebook(main_db, course / "gradebook.db", sid, aid)
        except Exception as e:  # noqa: BLE001
            result = {**result, "ok": False, "reason": f"merging the grades failed: {e!r}"}
    if result.get("ok"):
        src = course / "autograded" / sid / aid
        dest = out / "autograded" / sid / aid
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
        fb = course / "feedback" / sid / aid / f"{aid}.html"
        if fb.exists():  # the page only: nbgrader also copies the submission's files next to it
            (out / "feedback" / sid / aid).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fb, out / "feedback" / sid / aid / f"{aid}.html")
        else:
            fallback_feedback(out / "feedback" / sid / aid / f"{aid}.html", sid, aid,
                              f"the feedback page could not be generated ({result.get('feedback_error', 'unknown error')})",
                              {}, task_max)
        per_task: dict[str, float] = {}
        manual = []
        for gid, score in scores.items():
            per_task[task_of(gid)] = per_task.get(task_of(gid), 0.0) + (score or 0.0)
            if score is None:
                manual.append(gid)
        r.scores.update({t: per_task.get(t, 0.0) for t in task_max})
        status = "graded"
        if result.get("events"):
            if any("restarted" in e or "not run" in e for e in result["events"]):
                status = "graded (kernel crashed or hung)"
            r.notes.extend(f"{aid}: {e}" for e in result["events"])
        if manual:
            status += " (needs manual grading)"
            r.notes.append(f"{aid}: needs manual grading: {', '.join(manual)}")
        r.status.append(f"{aid}: {status}")
        failed = _summarise_errors(result.get("errors", {}))
        if failed:
            r.notes.append(f"{aid}: {failed}")
    else:
        reason = result.get("reason", "unknown error")
        r.scores.update({t: 0.0 for t in task_max})
        r.status.append(f"{aid}: not graded")
        r.notes.append(f"{aid}: {reason}")
        zero_in_gradebook(main_db, sid, aid)
        fallback_feedback(out / "feedback" / sid / aid / f"{aid}.html", sid, aid, reason, {}, task_max)


def _summarise_errors(errors: dict[str, str]) -> str:
    """'task1_1_hidden: AssertionError: ...' per failing test cell; untouched stubs in one phrase."""
    todo = sorted({task_of(g) for g, e in errors.items() if e.startswith("NotImplementedError")})
    other = [f"{g}: {e}" for g, e in errors.items() if not e.startswith("NotImplementedError")]
    parts = ([f"not implemented: {', '.join(todo)}"] if todo else []) + other
    return "; ".join(parts)


def write_csv(path: Path, rows: dict[str, Row], graded_assignments: list[str],
              per_task_max: dict[str, dict[str, float]], subs: list[Submission]) -> list[dict]:
    """grades.csv: student, one column per task (points), total, max, status, notes."""
    columns = [t for a in graded_assignments for t in per_task_max[a]]
    submitted = {(s.student, s.assignment) for s in subs}
    table = []
    for sid in sorted(rows):
        r = rows[sid]
        for a in graded_assignments:
            if (sid, a) not in submitted:
                r.scores.update({t: 0.0 for t in per_task_max[a]})
                r.status.append(f"{a}: no submission")
        line = {"student": sid, **{t: f"{r.scores.get(t, 0.0):g}" for t in columns}}
        line["total"] = f"{sum(r.scores.get(t, 0.0) for t in columns):g}"
        line["max"] = f"{sum(sum(per_task_max[a].values()) for a in graded_assignments):g}"
        line["status"] = "; ".join(r.status)
        line["notes"] = " | ".join(r.notes)
        table.append(line)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["student", *columns, "total", "max", "status", "notes"])
        writer.writeheader()
        writer.writerows(table)
    return table


# =================================================================================================
# Benchmark: serial `nbgrader autograde` vs this script
# =================================================================================================

def benchmark(n: int, zip_path: Path | None, jobs: int, root: Path = ROOT, assignment: str = "01_attention") -> dict:
    """Time N copies of one submission (default: the solutions of ``assignment``).

    Serial: plain ``nbgrader autograde`` then ``nbgrader generate_feedback``, one student at a
    time, on a staged course directory (what nbgrader offers). Parallel: ``grade()`` with
    ``jobs`` processes, which also collects the zips and writes grades.csv. Prints and returns
    the timings.
    """
    _setup_paths(root)
    import assignments as assignments_tool

    work = Path(tempfile.mkdtemp(prefix="grading-bench-"))
    try:
        if zip_path is None:
            import make_corpus

            sc = make_corpus.Scenario("bench", assignment, "the solutions")
            zip_path = make_corpus.build(work / "sol", [sc], root=root)["bench"]
        aid = read_submission_file(zip_path, assignments_tool.assignment_ids(root), {})[0].assignment
        folder = work / "submissions"
        folder.mkdir()
        with zipfile.ZipFile(zip_path) as zf:
            members = {name: zf.read(name) for name in zf.namelist()}
        for i in range(n):  # N students: the same files, each zip with its own student id
            with zipfile.ZipFile(folder / f"submission_student{i:03d}_{aid}.zip", "w", zipfile.ZIP_DEFLATED) as zf:
                for name, data in members.items():
                    if name == "submission.json":
                        data = json.dumps({**json.loads(data), "student_id": f"student{i:03d}"}).encode()
                    zf.writestr(name, data)
        # serial: plain nbgrader on a staged course directory, one student at a time
        course = work / "serial"
        stub_lib = student_edition_lib(root, work / "student_edition")
        stage_template(root, course, [aid], stub_lib)
        for i in range(n):
            sub = read_submission_file(folder / f"submission_student{i:03d}_{aid}.zip", [aid], {})[0]
            sub.student, sub.assignment = f"student{i:03d}", aid
            write_submitted(sub, course, stub_lib)
        (course / "nbgrader_config.py").write_text(
            "c = get_config()\n"
            f"c.CourseDirectory.root = {str(course)!r}\n"
            f"c.Autograde.exclude_overwriting = {{{aid!r}: {[f'course_lib/{m}' for m in student_modules(root)]!r}}}\n"
            "c.Execute.timeout = 60\n")
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        nbgrader = [sys.executable, "-m", "nbgrader"]
        t0 = time.time()
        for i in range(n):
            sid = f"student{i:03d}"
            run_env = {**env, "PYTHONPATH": str(course / "autograded" / sid / aid)}
            for step in ("autograde", "generate_feedback"):
                subprocess.run([*nbgrader, step, aid, "--student", sid, "--force"], cwd=course, env=run_env,
                               check=False, capture_output=True)
        serial = time.time() - t0
        with_feedback = len(list((course / "feedback").rglob("*.html")))
        t0 = time.time()
        table = grade(folder, work / "parallel", jobs=jobs, assignments=[aid], root=root, progress=False)
        parallel = time.time() - t0
        result = {"submissions": n, "assignment": aid, "cpus": os.cpu_count(),
                  "serial_nbgrader_s": round(serial, 1), f"grade_py_jobs{jobs}_s": round(parallel, 1),
                  "speedup": round(serial / parallel, 2), "serial_per_submission_s": round(serial / n, 2),
                  f"grade_py_jobs{jobs}_per_submission_s": round(parallel / n, 2),
                  "serial_feedback_pages": with_feedback, "grade_py_totals": sorted({r["total"] for r in table})}
        print(json.dumps(result, indent=1))
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


# =================================================================================================

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Autograde a folder of submission zips with nbgrader: feedback and grades.csv.")
    parser.add_argument("submissions", nargs="?", type=Path,
                        help="folder of the students' zips / notebooks, or the LMS's 'download all submissions' zip")
    parser.add_argument("--out", type=Path, default=ROOT / "grading", help="course directory for the results (default: grading/)")
    parser.add_argument("--jobs", type=int, default=2, help="submissions graded at once (default 2)")
    parser.add_argument("--assignment", action="append", help="grade only this assignment (repeatable)")
    parser.add_argument("--cell-timeout", type=int, default=None, help="seconds per cell (default: nbgrader_config.py's)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per submission before it is stopped (default 300)")
    parser.add_argument("--memory-gb", type=float, default=4, help="memory per submission, GiB (default 4; 0: no limit)")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    parser.add_argument("--keep-tmp", action="store_true", help="keep the per-submission course directories")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--benchmark", type=int, metavar="N", help="time serial nbgrader vs --jobs on N copies of a submission")
    parser.add_argument("--no-guard", action="store_true", help=argparse.SUPPRESS)  # to show what the guard prevents
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        job = json.loads(args.worker.read_text())
        run_worker(job)
        return 0
    if args.benchmark:
        benchmark(args.benchmark, args.submissions, args.jobs, args.root.resolve(), (args.assignment or ["01_attention"])[0])
        return 0
    if args.submissions is None or not args.submissions.exists():
        parser.error(f"SUBMISSIONS must be a folder of zips or the LMS's download zip (got {args.submissions}); "
                     "e.g. make grade SUBMISSIONS=~/Downloads/01_attention")
    grade(args.submissions, args.out, jobs=args.jobs, assignments=args.assignment, root=args.root.resolve(),
          cell_timeout=args.cell_timeout, timeout=args.timeout, memory_gib=args.memory_gb, progress=not args.quiet,
          keep_tmp=args.keep_tmp, guard=not args.no_guard)
    return 0


if __name__ == "__main__":
    sys.exit(main())
