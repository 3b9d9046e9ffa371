"""``make grade SUBMISSIONS=<folder or LMS zip>``: what nbgrader lacks, around nbgrader's own commands.

    python -m course_grading.cli SUBMISSIONS [--out grading] [--jobs 2] [--assignment 01_attention ...]
                                 [--deadline "2026-12-01 23:59"] [--roster roster.csv]

1. collects the LMS download (``collect``: safe unzipping, ids from the LMS's file names);
2. runs nbgrader's ``generate_assignment`` in the course directory for the assignments handed in;
3. autogrades in parallel worker processes, each with its own course directory and gradebook copy
   (``pool``, ``worker``: nbgrader's ``autograde`` and ``generate_feedback`` with the course's
   preprocessors), merges each result into the course's gradebook (``merge``), with a progress bar;
4. rebuilds ``grades.csv`` from the gradebook (``report``).

Results are never lost: nothing of an earlier run is deleted; only the re-graded students' folders of
the re-graded assignments are replaced. A missing or empty SUBMISSIONS changes nothing.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime
from pathlib import Path

from .collect import Submission, collect, read_roster
from .course import ROOT, assignment_ids
from .report import save_note, write_course_grades


class GradingError(SystemExit):
    """A clear message, before anything changed."""


def check_submissions(path: Path | None) -> Path:
    """The SUBMISSIONS folder or zip, or a clear error (nothing changed)."""
    if path is None or not path.exists():
        raise GradingError(f"SUBMISSIONS must be a folder of the students' zips/notebooks or the LMS's download zip; "
                           f"{path} does not exist (e.g. make grade SUBMISSIONS=~/Downloads/01_attention). Nothing was changed.")
    if path.is_dir() and not any(p.suffix.lower() in (".zip", ".ipynb") for p in path.rglob("*") if p.is_file()):
        raise GradingError(f"SUBMISSIONS={path} holds no .zip or .ipynb file. Nothing was changed.")
    return path


def _entry(sub: Submission, status: str, notes: list[str]) -> dict:
    return {"status": status, "notes": notes, "late": sub.late, "no_id": sub.no_id,
            "conflict": any(n.startswith("CONFLICT") for n in sub.notes),
            "uploaded": sub.uploaded.isoformat() if sub.uploaded else None}


def _set_deadline(out: Path, assignments: list[str], deadline: datetime) -> None:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{out / 'gradebook.db'}") as gb:
        for a in assignments:
            gb.update_or_create_assignment(a, duedate=deadline)


def _finish(sub: Submission, job: dict, result: dict, out: Path) -> None:
    """Merge one worker's result into the course directory, the gradebook and the notes."""
    from .merge import merge_into_gradebook, zero_in_gradebook

    course, sid, aid = Path(job["course"]), sub.student, sub.assignment
    (out / "logs").mkdir(exist_ok=True)
    (out / "logs" / f"{sid}__{aid}.log").write_text(result.get("log", ""), encoding="utf-8", errors="replace")
    notes = list(sub.notes) + result.get("notes", [])
    if result.get("ok"):
        try:
            scores = merge_into_gradebook(out / "gradebook.db", course / "gradebook.db", sid, aid)
        except Exception as e:  # noqa: BLE001
            result = {**result, "ok": False, "reason": f"merging the grades failed: {e!r}"}
    if not result.get("ok"):
        zero_in_gradebook(out / "gradebook.db", sid, aid)
        fallback_feedback(out, sid, aid, result.get("reason", "unknown error"))
        save_note(out, aid, sid, _entry(sub, "not graded", notes + [result.get("reason", "unknown error")]))
        return
    for step in ("autograded", "feedback"):
        shutil.rmtree(out / step / sid / aid, ignore_errors=True)
    shutil.copytree(course / "autograded" / sid / aid, out / "autograded" / sid / aid,
                    ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    page = course / "feedback" / sid / aid / f"{aid}.html"
    if page.exists():  # the page only: nbgrader also copies the submission's files next to it
        (out / "feedback" / sid / aid).mkdir(parents=True)
        shutil.copyfile(page, out / "feedback" / sid / aid / f"{aid}.html")
    else:
        fallback_feedback(out, sid, aid, f"the feedback page could not be generated ({result.get('feedback_error')})")
    events = result.get("events", [])
    status = "graded (kernel crashed or hung)" if any("restarted" in e or "not run" in e for e in events) else "graded"
    manual = [g for g, s in scores.items() if s is None]
    if manual:
        status += " (needs manual grading)"
        notes.append(f"needs manual grading: {', '.join(manual)}")
    save_note(out, aid, sid, _entry(sub, status, notes + events + result.get("failed", [])))


def fallback_feedback(out: Path, sid: str, aid: str, reason: str) -> None:
    """A feedback page for a submission nbgrader could not grade."""
    import html

    path = out / "feedback" / sid / aid / f"{aid}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(aid)}: feedback</title></head>
<body style="font-family: sans-serif; max-width: 50em; margin: 2em auto"><h1>{html.escape(aid)}: feedback for {html.escape(sid)}</h1>
<p><b>Your submission could not be graded automatically:</b> {html.escape(reason)}</p><p>Score: 0</p>
<p>Check the zip you uploaded (it should be the one <code>make_submission</code> wrote) and ask your instructor.</p>
</body></html>""", encoding="utf-8")


def grade(submissions: Path, out: Path = ROOT / "grading", jobs: int = 2, assignments: list[str] | None = None,
          cell_timeout: int | None = None, timeout: float = 300, memory_gib: float = 4, progress: bool = True,
          keep_tmp: bool = False, guard: bool = True, deadline: datetime | None = None, roster: Path | None = None) -> list[dict]:
    """Grade every submission in ``submissions`` into the course directory ``out``; returns grades.csv's rows."""
    import nbformat
    from tqdm.auto import tqdm

    from .pool import grade_one
    from .stage import generate, write_submitted

    check_submissions(submissions)
    import warnings

    from sqlalchemy.exc import SAWarning

    from .merge import fast_alembic

    warnings.filterwarnings("ignore", category=SAWarning)  # nbgrader's Gradebook API, harmless
    fast_alembic()
    available = assignment_ids()
    wanted = assignments or available
    if unknown := sorted(set(wanted) - set(available)):
        raise GradingError(f"unknown assignment(s) {', '.join(unknown)}; the course has {', '.join(available)}")
    started = time.time()
    out = out.resolve()
    work = Path(tempfile.mkdtemp(prefix="grading-", dir=os.environ.get("COURSE_GRADING_TMP")))
    try:
        grade_ids = {a: {c.metadata.get("nbgrader", {}).get("grade_id") for c in nbformat.read(ROOT / "solutions" / f"{a}.ipynb", 4).cells} - {None}
                     for a in available}
        subs = [s for s in collect(submissions, available, grade_ids, work / "lms", read_roster(roster) if roster else None)
                if s.assignment in wanted or s.assignment is None]
        if not subs:
            raise GradingError(f"no submission for {', '.join(wanted)} in {submissions}. Nothing was changed.")
        graded = sorted({s.assignment for s in subs if s.assignment in wanted})
        out.mkdir(parents=True, exist_ok=True)
        generate(out, graded)
        if deadline:
            _set_deadline(out, graded, deadline)
        jobs_list = []
        for s in subs:
            if s.assignment not in graded or s.notebook is None or s.problems:
                reason = "; ".join(s.problems) or f"not an assignment of this course ({s.assignment})"
                save_note(out, s.assignment or "?", s.student, _entry(s, "not graded", [reason] + s.notes))
                if s.assignment in graded:
                    from .merge import zero_in_gradebook

                    zero_in_gradebook(out / "gradebook.db", s.student, s.assignment)
                    fallback_feedback(out, s.student, s.assignment, reason)
                continue
            write_submitted(s, out)
            course = work / "jobs" / f"{s.student}__{s.assignment}"
            for step in ("submitted", "source", "release"):
                rel = Path(step) / s.student / s.assignment if step == "submitted" else Path(step) / s.assignment
                shutil.copytree(out / rel, course / rel)
            shutil.copyfile(out / "gradebook.db", course / "gradebook.db")
            jobs_list.append((s, {"course": str(course), "student": s.student, "assignment": s.assignment,
                                  "cell_timeout": cell_timeout, "guard": guard,
                                  "job_file": str(course / "job.json"), "result": str(course / "result.json")}))
        lock = threading.Lock()
        bar = tqdm(total=len(jobs_list), desc="grading", unit="submission", disable=not progress)
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = {pool.submit(grade_one, job, timeout, memory_gib): (s, job) for s, job in jobs_list}
            for fut in as_completed(futures):
                s, job = futures[fut]
                try:
                    result = fut.result()
                except Exception as e:  # noqa: BLE001 - never stop the batch
                    result = {"ok": False, "reason": f"grading crashed: {e!r}", "log": ""}
                with lock:
                    _finish(s, job, result, out)
                bar.update(1)
        bar.close()
        rows = write_course_grades(out)
        print(f"graded {len(subs)} submission(s) in {time.time() - started:.0f} s: {out / 'grades.csv'} "
              f"({len(rows)} students), feedback in {out / 'feedback'}")
        return rows
    finally:
        if keep_tmp:
            print(f"kept the work folder {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Autograde a folder of submission zips with nbgrader: feedback and grades.csv.")
    p.add_argument("submissions", nargs="?", type=Path, help="folder of the students' zips / notebooks, or the LMS's download zip")
    p.add_argument("--out", type=Path, default=ROOT / "grading", help="course directory (default: grading/)")
    p.add_argument("--jobs", type=int, default=2, help="submissions graded at once (default 2)")
    p.add_argument("--assignment", action="append", help="grade only this assignment (repeatable)")
    p.add_argument("--cell-timeout", type=int, default=None, help="seconds per cell (default: nbgrader_config.py's)")
    p.add_argument("--timeout", type=float, default=300, help="seconds per submission before it is stopped (default 300)")
    p.add_argument("--memory-gb", type=float, default=4, help="memory per submission, GiB (default 4; 0: no limit)")
    p.add_argument("--deadline", type=datetime.fromisoformat, help="due date (local time, e.g. '2026-12-01 23:59'): "
                   "later uploads are flagged LATE (stored as the assignment's due date in the gradebook)")
    p.add_argument("--roster", type=Path, help="CSV with student_id (and login/name/email) columns: maps LMS names to ids")
    p.add_argument("--keep-tmp", action="store_true", help="keep the per-submission course directories")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--allow-unsandboxed", action="store_true",
                   help="grade even where no sandbox (bubblewrap) is available: only for trusted submissions "
                        "(sets COURSE_ALLOW_UNSANDBOXED=1; see docs/SECURITY.md)")
    p.add_argument("--no-guard", action="store_true", help=argparse.SUPPRESS)  # to show what the guard prevents
    args = p.parse_args(argv)
    if args.allow_unsandboxed:  # read by course_grading.sandbox in every worker's kernel manager
        os.environ["COURSE_ALLOW_UNSANDBOXED"] = "1"
    try:
        grade(args.submissions, args.out, jobs=args.jobs, assignments=args.assignment, cell_timeout=args.cell_timeout,
              timeout=args.timeout, memory_gib=args.memory_gb, progress=not args.quiet, keep_tmp=args.keep_tmp,
              guard=not args.no_guard, deadline=args.deadline, roster=args.roster)
    except GradingError as e:
        print(f"make grade: {e.code}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
