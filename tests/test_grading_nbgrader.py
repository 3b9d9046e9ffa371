"""nbgrader's own workflow, run from the repository root as docs/INSTRUCTOR.md shows, with the course's
nbgrader_config.py: every protection applies, nothing is written outside the course directory.

(The course directory is moved to a temporary folder with COURSE_GRADING_ROOT.)
"""
from __future__ import annotations

import csv
import html
import io
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import grading_corpus
import pytest

from course_grading.course import ROOT, hidden_test_lines

AID = "01_attention"


def _untracked() -> set[str]:
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True, text=True)
    return {line for line in out.stdout.splitlines() if line.startswith("??")}


def _text(path: Path) -> str:
    t = re.sub(r"<(script|style)\b.*?</\1>", "", path.read_text(encoding="utf-8"), flags=re.S | re.I)
    return html.unescape(re.sub(r"<[^>]+>", "", t))


@pytest.mark.slow
def test_generate_zip_collect_autograde_feedback_export_from_the_repository_root(tmp_path, student_edition):
    course = tmp_path / "course"
    env = {**os.environ, "COURSE_GRADING_ROOT": str(course), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
    before = _untracked()

    def nbgrader(*args: str) -> str:
        run = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=900)
        assert run.returncode == 0, f"nbgrader {' '.join(args)}:\n{run.stdout[-3000:]}{run.stderr[-5000:]}"
        return run.stdout + run.stderr

    nbgrader("generate_assignment", AID)  # no staging step first
    released = (course / "release" / AID / f"{AID}.ipynb").read_text(encoding="utf-8")
    archive = course / "downloaded" / AID / "archive"
    archive.mkdir(parents=True)
    with zipfile.ZipFile(archive / f"submission_nbonly_{AID}.zip", "w") as zf:  # the notebook only
        zf.writestr(f"{AID}.ipynb", released)
    zips = grading_corpus.build(tmp_path / "zips", [grading_corpus.Scenario("sol", AID, "solutions"),
                                                    grading_corpus.Scenario("cvs", AID, "solutions")],
                                student_edition=student_edition)
    (archive / zips["sol"].name).write_bytes(zips["sol"].read_bytes())
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # a Canvas "download all submissions" zip
        zf.writestr(f"cvs_LATE_111_222_submission_cvs_{AID}.zip", zips["cvs"].read_bytes())
    (archive / "submissions.zip").write_bytes(buf.getvalue())

    nbgrader("zip_collect", AID)
    for sid in ("nbonly", "sol", "cvs"):
        assert (course / "submitted" / sid / AID / f"{AID}.ipynb").is_file(), sid
    assert (course / "submitted" / "sol" / AID / "course_lib" / "attention.py").is_file()
    log = nbgrader("autograde", AID)
    assert "checksum" not in log, [ln for ln in log.splitlines() if "checksum" in ln][:3]
    nbgrader("generate_feedback", AID)
    nbgrader("export")

    with open(course / "grades.csv", newline="") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    assert {s: rows[s]["total"] for s in ("nbonly", "sol", "cvs")} == {"nbonly": "0", "sol": "13", "cvs": "13"}
    assert rows["cvs"]["flags"] == f"LATE {AID}" and rows["sol"]["flags"] == ""
    hidden = hidden_test_lines(ROOT, [AID])
    for sid in ("nbonly", "sol", "cvs"):
        page = _text(course / "feedback" / sid / AID / f"{AID}.html")
        assert not [line for line in hidden if line in page], sid
        assert "Your results" in page and "Test cell" not in page
    assert _untracked() == before, "files left outside the course directory"
