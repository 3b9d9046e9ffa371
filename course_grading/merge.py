"""Gradebook merge: one worker's results into the course's gradebook.

nbgrader's gradebook is one SQLite file and grades one submission at a time (jupyter/nbgrader#174):
each worker grades in its own course directory with its own copy of the gradebook, and the main
process copies that student's scores of that assignment into the course's gradebook, one at a time.
Nothing else in the course's gradebook changes.
"""
from __future__ import annotations

from pathlib import Path


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


def fast_alembic() -> None:
    """nbgrader runs ``alembic heads`` in a subprocess each time it opens a gradebook (3-7 s, and it fails
    when the venv's ``bin/`` is not on PATH); ask alembic in this process instead, once."""
    import functools
    import os
    import sys

    import nbgrader.api

    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
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
