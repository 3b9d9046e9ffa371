"""The lectures, re-executed by nbval inside the student edition (every exercise stub untouched).

This is the course's nbval check of the lectures: the stored outputs must come back, and they must
come back in the edition students get, before any exercise is done. (``pytest lectures/`` runs the
same comparison in the instructor repository.)
"""
import re
import shutil
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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_student_edition_has_its_own_set_up(student_edition):
    """What the student README shows exists in the student edition: a Makefile with lab/test, the lab extra."""
    import tomllib

    readme = (student_edition / "README.md").read_text()
    makefile = (student_edition / "Makefile").read_text()
    assert "make lab" in readme and "make test" in readme and 'pip install -e ".[lab]"' in readme
    assert "lab:" in makefile and "test:" in makefile and "$(LAB_ARGS)" in makefile and ".[lab]" in makefile
    extras = tomllib.loads((student_edition / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"jupyterlab", "nbformat", "nbclient", "ipykernel"} <= {re.split(r"[<>=!~ \[]", r)[0] for r in extras["lab"]}
    ignored = (student_edition / ".gitignore").read_text().split()
    assert {".venv/", "*.egg-info/", "__pycache__/", "checkpoints/"} <= set(ignored)


@pytest.mark.slow
def test_student_readme_on_a_fresh_machine(student_edition, tmp_path):
    """The student README, followed in a fresh virtual environment built from dist/student/.

    torch comes first from this machine's disk (as on Colab, where torch is already there); then
    `make test` (which runs the README's `pip install -e ".[lab]"` into .venv and the self-check),
    then JupyterLab headless, which must answer over HTTP.
    """
    import os
    import time
    import urllib.request

    edition = shutil.copytree(student_edition, tmp_path / "vit-basics", ignore=shutil.ignore_patterns(".built"))
    py = edition / ".venv" / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([sys.executable, "-m", "venv", str(edition / ".venv")], check=True, timeout=300)
    run = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "torch==2.14.1", "torchvision==0.29.1"],
                         capture_output=True, text=True, timeout=1200, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    run = subprocess.run(["make", "test"], cwd=edition, capture_output=True, text=True, timeout=1200, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "0/20 checks passed" in run.stdout and "[ TODO] Task 1.1 scaled_dot_product_attention" in run.stdout, run.stdout
    assert "PASS" not in run.stdout and "FAIL" not in run.stdout, run.stdout
    # JupyterLab, headless, as `make lab LAB_ARGS=...` starts it
    port = _free_port()
    args = f"--no-browser --port={port} --ServerApp.token= --ServerApp.password= --ServerApp.open_browser=False"
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args += " --allow-root"
    lab = subprocess.Popen(["make", "lab", f"LAB_ARGS={args}"], cwd=edition, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline, answer = time.monotonic() + 180, None
        while time.monotonic() < deadline and answer is None and lab.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as r:
                    answer = (r.status, r.read().decode())
            except OSError:
                time.sleep(1)
        assert answer is not None and answer[0] == 200, f"JupyterLab did not answer: {lab.poll()}"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab", timeout=10) as r:
            assert r.status == 200 and "JupyterLab" in r.read().decode()
    finally:
        os.killpg(lab.pid, 15)
        lab.wait(timeout=60)


def test_notebooks_name_only_commands_the_student_edition_has(student_edition):
    """`make X` in any notebook or the README of the student edition is a target of its own Makefile."""
    targets = set(re.findall(r"^([a-z][a-z-]*):", (student_edition / "Makefile").read_text(), re.M))
    texts = [p.read_text() for p in [*student_edition.glob("*/*.ipynb"), student_edition / "README.md"]]
    named = {t for text in texts for t in re.findall(r"`make ([a-z][a-z-]*)", text)}
    assert named and named <= targets, f"commands the student edition lacks: {sorted(named - targets)}"
