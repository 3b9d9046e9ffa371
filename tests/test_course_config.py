"""Generated parts stay in step with their one source: course.toml and course_lib/tasks.py."""
import os
import shutil
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
    assert '"https://github.com/someone/else.git"' in nb.cells[1].source and '"-b", "spring"' in nb.cells[1].source
    assert not notebooks.stamp(nb, cfg, "lectures/04_x.ipynb")  # idempotent
    assert "exercises/01_a.ipynb" in notebooks.badge_source(cfg, "solutions/01_a.ipynb")


def test_setup_cell_never_installs_torch():
    from course_lib import bootstrap

    src = notebooks.setup_source(notebooks.load_config())
    assert "torch" not in notebooks.load_config()["colab_packages"]
    assert "pip" not in src and '"google.colab" in sys.modules' in src
    assert bootstrap.missing_packages(["torch", "torchvision", "surely_not_a_package_42"]) == ["surely_not_a_package_42"]


def test_setup_cell_is_short_and_keeps_the_autograder_out_of_view():
    src = notebooks.setup_source(notebooks.load_config())
    assert len(src.splitlines()) <= 8, src
    assert "NBGRADER" not in src and "autograd" not in src.lower() and "KEEP_IN_DRIVE" in src


def test_setup_cell_while_autograding_looks_only_in_the_notebook_folder_and_the_one_above(tmp_path):
    """A course_lib two levels up (an instructor's checkout above grading/...) is never used."""
    code = notebooks.setup_source(notebooks.load_config()) + "\nimport course_lib; print(course_lib.__file__)"
    fake = tmp_path / "top" / "course_lib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('the instructor checkout above')\n")
    student = tmp_path / "top" / "grading" / "student"
    shutil.copytree(ROOT / "course_lib", student / "course_lib", ignore=shutil.ignore_patterns("__pycache__"))
    (student / "nb").mkdir()
    env = {**os.environ, "NBGRADER_EXECUTION": "autograde", "PYTHONPATH": ""}
    run = subprocess.run([sys.executable, "-c", code], cwd=student / "nb", capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 0, run.stderr
    assert str(student / "course_lib") in run.stdout


def test_setup_cell_runs_locally_and_finds_this_checkout(tmp_path):
    code = notebooks.setup_source(notebooks.load_config()) + "\nimport course_lib; print(course_lib.__file__)"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "lectures", capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("Device: ") and str(ROOT / "course_lib") in run.stdout
