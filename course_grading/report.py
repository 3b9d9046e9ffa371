"""``grades.csv``: one row per student, points per task, flags, status and notes, from the gradebook.

The table is always rebuilt from the course's gradebook (every assignment, every student ever graded)
and ``notes.json`` (what the grader noted per assignment and student), so grading another exercise,
or grading again, keeps every other row: a re-graded student's results change only for that exercise.
``plugins.TaskCsvExport`` writes the same file for ``nbgrader export``.

Flags: ``LATE <assignment>`` (the Canvas ``LATE`` marker, or the upload time after the assignment's
due date in the gradebook, which ``make grade DEADLINE=...`` sets), ``NO-ID <assignment>`` (the file
name gives no student id), ``CONFLICT <assignment>`` (the upload claims another student's id),
``REVIEW <assignment>`` (a note starting "REVIEW": tampering caught while grading, or the static scan).
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from .course import sort_key, task_of

NOTES_FILE = "notes.json"
COLUMNS_AFTER = ["total", "max", "flags", "status", "notes"]


def load_notes(course_dir: Path) -> dict[str, dict[str, dict]]:
    """assignment -> student -> {"status", "notes", "late", "no_id", "conflict"} (empty if none yet)."""
    path = course_dir / NOTES_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def save_note(course_dir: Path, assignment: str, student: str, entry: dict) -> None:
    """Record (replace) what the grader noted for one student's assignment; atomic."""
    notes = load_notes(course_dir)
    notes.setdefault(assignment, {})[student] = entry
    tmp = course_dir / f".{NOTES_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(notes, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, course_dir / NOTES_FILE)


def task_points(gb, assignment: str) -> dict[str, float]:
    """task column -> max points of an assignment (its grade cells summed per task)."""
    out: dict[str, float] = {}
    for nb in gb.find_assignment(assignment).notebooks:
        for gc in nb.grade_cells:
            out[task_of(gc.name)] = out.get(task_of(gc.name), 0.0) + float(gc.max_score)
    return dict(sorted(out.items(), key=lambda kv: sort_key(kv[0])))


def _scores(submission) -> dict[str, float]:
    out: dict[str, float] = {}
    for nb in submission.notebooks:
        for g in nb.grades:
            if g.name is None:
                continue
            score = g.manual_score if g.manual_score is not None else (g.auto_score or 0.0)
            out[task_of(g.name)] = out.get(task_of(g.name), 0.0) + float(score)
    return out


def _from_notebook(course_dir: Path | None, aid: str, sid: str, entry: dict | None, sub) -> dict | None:
    """Graded by plain ``nbgrader autograde`` (no note, or only zip_collect's): what its notebook says."""
    path = course_dir / "autograded" / sid / aid / f"{aid}.ipynb" if course_dir else None
    if sub is None or path is None or not path.exists() or (entry and entry.get("status") != "collected"):
        return entry
    from .worker import notebook_report

    scores = {g.name: (g.manual_score if g.manual_score is not None else g.auto_score) for nb in sub.notebooks for g in nb.grades}
    found = notebook_report(path, scores)
    entry = dict(entry or {}, status="graded")
    if any("restarted" in e or "not run" in e for e in found["events"]):
        entry["status"] = "graded (kernel crashed or hung)"
    entry["notes"] = list(entry.get("notes", [])) + found["notes"] + found["events"] + found["failed"]
    return entry


def table(gb, notes: dict[str, dict[str, dict]], course_dir: Path | None = None) -> tuple[list[str], list[dict]]:
    """(columns, rows) of grades.csv from an open nbgrader ``Gradebook`` and the notes (and, for
    submissions graded by plain nbgrader, their autograded notebooks in ``course_dir``)."""
    from nbgrader.api import MissingEntry

    graded = {a.name for a in gb.assignments if a.submissions}
    assignments = sorted(graded | {a for a in notes if a in {x.name for x in gb.assignments}})
    maxima = {a: task_points(gb, a) for a in assignments}
    columns = [t for a in assignments for t in maxima[a]]
    students = sorted({s.id for s in gb.students if s.submissions} | {s for a in notes.values() for s in a})
    rows = []
    for sid in students:
        scores: dict[str, float] = {}
        status, text, flags = [], [], []
        for a in assignments + sorted(set(notes) - set(assignments)):
            entry = notes.get(a, {}).get(sid)
            try:
                sub = gb.find_submission(a, sid) if a in maxima else None
            except MissingEntry:
                sub = None
            entry = _from_notebook(course_dir, a, sid, entry, sub)
            if sub is None and entry is None:
                if a in maxima:
                    status.append(f"{a}: no submission")
                continue
            if sub is not None:
                scores.update(_scores(sub))
            entry = entry or {"status": "graded", "notes": []}
            state = entry.get("status", "graded")
            status.append(f"{a}: {'graded' if state == 'collected' and sub is not None else state}")
            text.extend(f"{a}: {n}" for n in entry.get("notes", []))
            if entry.get("late") or (sub is not None and sub.total_seconds_late > 0):
                flags.append(f"LATE {a}")
            if entry.get("no_id"):
                flags.append(f"NO-ID {a}")
            if entry.get("conflict"):
                flags.append(f"CONFLICT {a}")
            if any(n.startswith("REVIEW") for n in entry.get("notes", [])):  # tampering caught, or the static scan
                flags.append(f"REVIEW {a}")
        line = {"student": sid, **{t: f"{scores.get(t, 0.0):g}" for t in columns}}
        line["total"] = f"{sum(scores.get(t, 0.0) for t in columns):g}"
        line["max"] = f"{sum(sum(m.values()) for m in maxima.values()):g}"
        line.update(flags="; ".join(flags), status="; ".join(status), notes=" | ".join(text))
        rows.append(line)
    return ["student", *columns, *COLUMNS_AFTER], rows


def write_grades(gb, notes: dict[str, dict[str, dict]], dest: Path, course_dir: Path | None = None) -> list[dict]:
    """Write grades.csv (atomically) and return its rows."""
    columns, rows = table(gb, notes, course_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, dest)
    return rows


def write_course_grades(course_dir: Path) -> list[dict]:
    """``course_dir/grades.csv`` from ``course_dir/gradebook.db`` and its notes."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course_dir / 'gradebook.db'}") as gb:
        return write_grades(gb, load_notes(course_dir), course_dir / "grades.csv", course_dir)
