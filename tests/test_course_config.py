"""Generated parts stay in step with their one source: course.toml and course_lib/tasks.py."""
import subprocess
import sys
from pathlib import Path

import nbformat

import notebooks

ROOT = Path(__file__).resolve().parents[1]


def test_readme_task_table_is_current():
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "readme.py"), "--check"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout


def test_every_notebook_has_current_badge_and_setup_cell():
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "notebooks.py"), "--check"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout


def test_badges_follow_course_toml(tmp_path):
    cfg = {**notebooks.load_config(), "repository": "someone/else", "branch": "spring"}
    nb = nbformat.v4.new_notebook()
    assert notebooks.stamp(nb, cfg, "lectures/04_x.ipynb")
    assert "github/someone/else/blob/spring/lectures/04_x.ipynb" in nb.cells[0].source
    assert 'COURSE_REPO = "https://github.com/someone/else.git"' in nb.cells[1].source
    assert not notebooks.stamp(nb, cfg, "lectures/04_x.ipynb")  # idempotent
    assert "exercises/01_a.ipynb" in notebooks.badge_source(cfg, "solutions/01_a.ipynb")


def test_setup_cell_never_installs_torch():
    src = notebooks.setup_source(notebooks.load_config())
    assert "torch" not in notebooks.load_config()["colab_packages"]
    assert "pip" in src and '"google.colab" in sys.modules' in src


def test_setup_cell_runs_locally_and_finds_this_checkout(tmp_path):
    code = notebooks.setup_source(notebooks.load_config()) + "\nimport course_lib; print(course_lib.__file__)"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "lectures", capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("Device: ") and str(ROOT / "course_lib") in run.stdout
