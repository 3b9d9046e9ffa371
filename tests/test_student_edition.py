"""The lectures, re-executed by nbval inside the student edition (every exercise stub untouched).

This is the course's nbval check of the lectures: the stored outputs must come back, and they must
come back in the edition students get, before any exercise is done. (``pytest lectures/`` runs the
same comparison in the instructor repository.)
"""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LECTURES = sorted(p.name for p in (ROOT / "lectures").glob("*.ipynb"))


def nbval(notebook: Path, rootdir: Path) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "--rootdir", str(rootdir),
        "--nbval", "--nbval-current-env", "--nbval-sanitize-with", str(ROOT / "tests" / "nbval_sanitize.cfg"), str(notebook),
    ]
    return subprocess.run(cmd, cwd=notebook.parent, capture_output=True, text=True, timeout=300)


def test_there_are_lectures():
    assert len(LECTURES) >= 12, LECTURES


@pytest.mark.slow
@pytest.mark.parametrize("name", LECTURES)
def test_lecture_reproduces_in_student_edition(student_edition, name):
    copy = student_edition / "lectures" / name
    assert "raise not_implemented" in (student_edition / "course_lib" / "attention.py").read_text()
    run = nbval(copy, student_edition)
    assert run.returncode == 0, f"nbval failed for {name} in the student edition:\n{run.stdout[-6000:]}\n{run.stderr[-2000:]}"
