"""Autograde ONE submission in its own course directory and write its feedback (runs in its own process).

The job's course directory holds ``submitted/<student>/<assignment>/``, ``source/<assignment>/``,
``release/<assignment>/`` and a copy of the gradebook; nbgrader's own ``autograde`` and
``generate_feedback`` run there with the course's ``nbgrader_config.py`` (every protection is one of its
preprocessors), so this module only calls them and reports what happened.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path

from .execute import EVENTS_KEY
from .stage import load_config


def last_error(log: str) -> str:
    """The last line of a log that names an error (else its last line)."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^\w*(Error|Exception)\b", ln) or "Error:" in ln:
            return ln[:300]
    return lines[-1][:300] if lines else "no log"


def notebook_report(path: Path, scores: dict[str, float | None] | None = None) -> dict:
    """What the grader learnt from an autograded notebook: events, notes and one line per failed test
    (``feedback.verdict_line``: never text produced after a hidden test started)."""
    import nbformat

    from .feedback import verdict_line, verdicts

    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get(EVENTS_KEY, {})
    failed = [verdict_line(v) for v in verdicts(nb, scores) if not v.passed]
    return {"events": list(meta.get("events", [])), "notes": list(meta.get("notes", [])), "failed": failed}


def run_worker(job: dict) -> dict:
    """Autograde and generate feedback for ``job["student"]``/``job["assignment"]`` in ``job["course"]``.

    Returns (and writes to ``job["result"]``) ``ok``, ``log``, ``events``, ``notes``, ``failed`` and timings.
    """
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    from .merge import fast_alembic

    fast_alembic()
    course, sid, aid = Path(job["course"]), job["student"], job["assignment"]
    os.environ["IPYTHONDIR"] = str(course / ".ipython")  # no instructor startup files in the kernel
    config = load_config(course, job.get("cell_timeout"))
    if not job.get("guard", True):
        config.GradingExecute.guard = False
    api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
    api.log.setLevel(logging.INFO)
    result: dict = {"ok": False, "events": [], "notes": [], "failed": [], "log": ""}
    t0 = time.time()
    auto = api.autograde(aid, sid, force=True, create=True)
    result["autograde_s"] = round(time.time() - t0, 2)
    result["log"] = auto.get("log", "") + (auto.get("error") or "")
    graded = course / "autograded" / sid / aid / f"{aid}.ipynb"
    if not auto["success"] or not graded.exists():
        result["reason"] = "nbgrader autograde failed: " + last_error(result["log"])
    else:
        result.update(notebook_report(graded))
        t0 = time.time()
        fb = api.generate_feedback(aid, sid, force=True)
        result["feedback_s"] = round(time.time() - t0, 2)
        result["log"] += fb.get("log", "") + (fb.get("error") or "")
        result["ok"] = True
        if not fb["success"]:
            result["feedback_error"] = last_error(fb.get("log", "") + (fb.get("error") or ""))
    Path(job["result"]).write_text(json.dumps(result))
    return result
