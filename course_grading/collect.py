"""What students handed in: an LMS download -> one ``Submission`` per (student, assignment).

``SUBMISSIONS`` is a folder of uploads (``submission_<id>_<exercise>.zip`` as
``course_lib.submit.make_submission`` writes them, possibly renamed by the LMS, or loose notebooks),
or the LMS's "download all submissions" zip (Canvas: ``<login>_[LATE_]<id>_<id>_<file>``; Moodle:
``<Full Name>_<id>_assignsubmission_file_/<file>``).

Identities come from the instructor's side only: the LMS's file name (or folder), the upload's own
file name, or the optional roster; never from anything the student wrote (``submission.json`` is
read only to flag a conflicting claim). A zip inside a student's zip is never read as an LMS
download. Every malformed upload becomes a ``Submission`` with a problem (see ``archive``).
"""
from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .archive import Limits, ZipContents, read_zip
from .course import course_module, student_modules

SUBMISSION_NAME = re.compile(r"submission_(?P<sid>.+?)_(?P<aid>\d\d_[A-Za-z0-9_]+?)(?:\s*\(\d+\)|-\d+)*$")
CANVAS_PREFIX = re.compile(r"^(?P<login>[A-Za-z0-9.\-]+?)_(?P<late>LATE_)?\d+_\d+_(?P<rest>.+)$")
MOODLE_PREFIX = re.compile(r"^(?P<name>.+?)_\d+_assignsubmission_file_(?P<rest>.+)$")
MOODLE_FOLDER = re.compile(r".+_\d+_assignsubmission_\w*?_?$")


@dataclass
class Submission:
    """One student's work for one assignment, as found in the LMS download."""

    source: Path  # the zip or notebook it came from
    student: str | None = None
    assignment: str | None = None
    notebook: dict | None = None  # parsed notebook (None: missing or unreadable)
    notebook_name: str | None = None  # its name in the zip
    modules: dict[str, bytes] = field(default_factory=dict)  # "attention.py" -> bytes
    uploaded: datetime | None = None  # the LMS's time (bundle entry time, else the file's mtime)
    late: bool = False  # the LMS marked it late (Canvas LATE_)
    no_id: bool = False  # no student id in the file name: the file's name was used
    problems: list[str] = field(default_factory=list)  # reasons it cannot be graded
    notes: list[str] = field(default_factory=list)  # things the instructor should know

    @property
    def key(self) -> tuple[str, str]:
        return (self.student or "", self.assignment or "")


def safe_id(text: str) -> str:
    """A student id usable as a folder name: anything but letters, digits and ``._-`` becomes ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text.strip()).strip("-.") or "unknown"


def normalise_notebook_name(name: str) -> str:
    return course_module("submit").normalise_notebook_name(name)


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
        full_name, rest = safe_id(m.group("name")), m.group("rest")
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
                sid = rest.split(a)[0].strip("_- ") or None
                break
    if aid is not None and assignments and aid not in assignments:
        aid = next((a for a in assignments if aid.startswith(a)), aid)
    sid = safe_id(sid) if sid else full_name
    return login, sid, aid


def is_late(name: str) -> bool:
    """Canvas marks a late upload ``<login>_LATE_<id>_<id>_<file>``."""
    m = CANVAS_PREFIX.match(Path(name).name)
    return bool(m and m.group("late"))


def match_assignment(nb: dict, grade_ids: dict[str, set[str]]) -> str | None:
    """The assignment whose graded cells the notebook shares most (None: no graded cell in common)."""
    ids = {c.get("metadata", {}).get("nbgrader", {}).get("grade_id") for c in nb.get("cells", [])} - {None}
    best = max(grade_ids, key=lambda a: len(ids & grade_ids[a]), default=None)
    return best if best is not None and ids & grade_ids[best] else None


def read_notebook(data: bytes, what: str, problems: list[str]) -> dict | None:
    """The notebook in ``data``, or None (and a problem) if it cannot be read."""
    import nbformat

    try:
        return nbformat.reads(data.decode("utf-8-sig"), as_version=4)
    except Exception as e:  # noqa: BLE001 - a corrupted notebook is one student's problem
        problems.append(f"the notebook {what} cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
        return None


def _contents(path: Path, label: str, limits: Limits) -> ZipContents:
    if path.suffix.lower() == ".ipynb":
        return ZipContents(files={label: path.read_bytes()})
    return read_zip(path, limits, label)


def read_upload(path: Path, assignments: list[str], grade_ids: dict[str, set[str]], lms: str | None = None,
                roster: dict[str, str] | None = None, limits: Limits = Limits(),
                uploaded: datetime | None = None) -> list[Submission]:
    """Every (student, assignment) submission in one upload (a zip or a notebook).

    Args:
        path: the file.
        assignments: the course's assignment ids.
        grade_ids: assignment -> its graded cells' ids (to match a renamed notebook).
        lms: the file's name as the LMS gave it (default: ``path.name``).
        roster: optional LMS name/login -> student id.
        limits: archive limits.
        uploaded: the LMS's upload time (default: the file's modification time).
    """
    lms = lms or path.name
    login, sid_from_name, aid_from_name = ids_from_filename(lms, assignments)
    claimed = login or sid_from_name
    if roster and claimed in roster:
        claimed = roster[claimed]
    base = Submission(source=path, late=is_late(lms), no_id=claimed is None,
                      uploaded=uploaded or datetime.fromtimestamp(path.stat().st_mtime))
    base.student = claimed or safe_id(re.sub(r"\.(zip|ipynb)$", "", Path(lms).name, flags=re.I))
    if base.no_id:
        base.notes.append(f"no student id in the file name {lms!r}: graded as {base.student!r}")
    if roster is not None and base.student not in roster.values():
        base.notes.append(f"{base.student!r} is not on the roster")
    contents = _contents(path, lms, limits)
    base.problems += contents.problems
    base.notes += contents.notes
    notebooks, modules = [], {}
    for name, data in contents.files.items():
        parts = name.split("/")
        if name.lower().endswith(".ipynb"):
            notebooks.append((name, data))
        elif parts[-1] in student_modules() and (len(parts) == 1 or parts[-2] == "course_lib"):
            if parts[-2:-1] == ["course_lib"] or parts[-1] not in modules:  # course_lib/x.py wins over a flat x.py
                modules[parts[-1]] = data
        elif parts[-1] == "submission.json":
            _check_manifest(data, base)
        elif name.lower().endswith(".zip"):
            base.notes.append(f"ignored {name!r}: a zip inside the student's zip is never unpacked")
    if not notebooks:
        base.assignment, base.modules = aid_from_name, modules
        if not base.problems:
            base.problems.append("no notebook in the submission")
        return [base]
    found = []
    for name, data in notebooks:
        sub = Submission(**{**base.__dict__, "notebook_name": name, "modules": dict(modules),
                            "problems": list(base.problems), "notes": list(base.notes)})
        sub.notebook = read_notebook(data, name, sub.problems)
        aid = match_assignment(sub.notebook, grade_ids) if sub.notebook is not None else None
        if aid is None:
            aid = next((a for a in (normalise_notebook_name(name.split("/")[-1]), aid_from_name) if a in assignments), None)
            if aid and sub.notebook is not None:
                sub.notes.append(f"no graded cell of {aid} found in {name}; matched by name")
        elif normalise_notebook_name(name.split("/")[-1]) != aid:
            sub.notes.append(f"notebook {name.split('/')[-1]!r} graded as {aid} (matched by its graded cells)")
        sub.assignment = aid
        if aid is None:
            sub.problems.append(f"{name} matches no assignment ({', '.join(assignments)})")
        found.append(sub)
    return found


def _check_manifest(data: bytes, sub: Submission) -> None:
    """``submission.json`` is the student's: an id in it that differs from the LMS's is only a note."""
    try:
        claim = json.loads(data).get("student_id")
    except (ValueError, AttributeError):
        sub.notes.append("submission.json is unreadable")
        return
    if isinstance(claim, str) and claim.strip() and not sub.no_id and safe_id(claim) != sub.student:
        sub.notes.append(f"CONFLICT: the zip claims student {safe_id(claim)!r}, the LMS says {sub.student!r}: graded as {sub.student!r}")
    elif isinstance(claim, str) and sub.no_id:
        sub.notes.append(f"the zip claims student {safe_id(claim)!r} (not used: ids come from file names or the roster)")


def lms_name(rel: Path) -> str:
    """A file's name as the LMS meant it: Moodle puts each student's files in a folder named
    ``Jane Smith_123456_assignsubmission_file_``, which is part of the name."""
    prefix = "".join(p if p.endswith("_") else p + "_" for p in rel.parts[:-1] if MOODLE_FOLDER.match(p))
    return prefix + rel.name


def _is_download(path: Path, name: str, assignments: list[str], limits: Limits) -> bool:
    """An LMS download (a zip of the students' uploads), not one student's zip: only a file the
    instructor gave whose name names no student, holding zips or Moodle folders and no notebook."""
    if path.suffix.lower() != ".zip" or any(ids_from_filename(name, assignments)[:2]):
        return False
    names = list(read_zip(path, limits).files)
    return any(n.lower().endswith(".zip") or MOODLE_FOLDER.match(n.split("/")[0]) for n in names) and \
        not any(n.lower().endswith(".ipynb") and "/" not in n for n in names)


def uploads(source: Path, scratch: Path, assignments: list[str], limits: Limits = Limits()) -> list[tuple[Path, str, datetime | None]]:
    """(file, LMS name, LMS time) of every upload in ``source``: a folder or an LMS download zip.

    An LMS download is unpacked (one level, safely) into ``scratch``; its entries' times are the LMS's.
    """
    if source.is_file():
        found = [(source, source.name)]
    else:
        found = [(p, lms_name(p.relative_to(source))) for p in sorted(source.rglob("*"))
                 if p.is_file() and p.suffix.lower() in (".zip", ".ipynb") and ".ipynb_checkpoints" not in p.parts]
    out: list[tuple[Path, str, datetime | None]] = []
    for path, name in found:
        if not _is_download(path, name, assignments, limits):
            out.append((path, name, None))
            continue
        contents = read_zip(path, limits)
        for i, (inner, data) in enumerate(contents.files.items()):
            if not inner.lower().endswith((".zip", ".ipynb")):
                continue
            target = scratch / f"download{len(out):04d}_{i:05d}" / Path(inner).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            out.append((target, lms_name(Path(inner)), datetime(*contents.times[inner])))
    return out


def collect(source: Path, assignments: list[str], grade_ids: dict[str, set[str]], scratch: Path | None = None,
            roster: dict[str, str] | None = None, limits: Limits = Limits()) -> list[Submission]:
    """Read every upload of ``source``; keep the newest (by the LMS's time) per (student, assignment)."""
    scratch = scratch or Path(tempfile.mkdtemp(prefix="lms-download-"))
    subs: list[Submission] = []
    for path, name, when in uploads(source, scratch, assignments, limits):
        try:
            subs.extend(read_upload(path, assignments, grade_ids, name, roster, limits, when))
        except Exception as e:  # noqa: BLE001 - never stop the batch
            subs.append(Submission(source=path, student=safe_id(Path(name).stem), problems=[f"cannot read {name}: {e!r}"]))
    by_key: dict[tuple[str, str], list[Submission]] = {}
    for s in subs:
        by_key.setdefault(s.key, []).append(s)
    kept = []
    for group in by_key.values():
        group.sort(key=lambda s: (s.notebook is not None, s.uploaded or datetime.min, s.source.name))
        newest = group[-1]
        if len(group) > 1:
            newest.notes.append(f"{len(group)} uploads; graded the newest ({newest.source.name})")
        kept.append(newest)
    return sorted(kept, key=lambda s: s.key)


def read_roster(path: Path) -> dict[str, str]:
    """A roster CSV with a ``student_id`` column and optional ``login``/``name``/``email`` columns:
    every value of a row -> its student id."""
    import csv

    out: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        for row in csv.DictReader(f):
            sid = safe_id(row.get("student_id") or "")
            for key in ("student_id", "login", "name", "email"):
                if row.get(key):
                    out[safe_id(row[key])] = sid
    return out
