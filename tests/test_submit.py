"""course_lib.submit: make_submission re-runs a notebook from a clean kernel and writes one zip."""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import nbformat
import pytest

from course_lib import submit
from course_lib.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]


def _course(tmp_path: Path) -> Path:
    """A tiny course checkout: course_lib (copied), exercises/01_tiny.ipynb."""
    root = tmp_path / "course"
    shutil.copytree(ROOT / "course_lib", root / "course_lib", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "exercises").mkdir(parents=True)
    (root / "course_lib" / "attention.py").write_text((root / "course_lib" / "attention.py").read_text() + "\n# edited by the student\n")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import os, sys\nfrom pathlib import Path\n"
            "root = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / 'course_lib').is_dir())\n"
            "sys.path.insert(0, str(root))\nimport course_lib\nprint('course_lib from', Path(course_lib.__file__).parent)"
        ),
        nbformat.v4.new_code_cell("print(os.environ.get('COURSE_SUBMISSION_RUN'))"),
        nbformat.v4.new_code_cell("raise ValueError('an unfinished task')"),
        nbformat.v4.new_code_cell("after_error = 6 * 7\nafter_error"),
        nbformat.v4.new_code_cell(
            "STUDENT_ID = 'jsmith42'\nif STUDENT_ID:\n    from course_lib.submit import make_submission\n"
            "    result = make_submission(STUDENT_ID)\n    print('nested:', result)"
        ),
    ]
    nb.cells[4].metadata["nbgrader"] = {"grade": False, "solution": False, "locked": False, "grade_id": "task9_1_submit"}
    nbformat.write(nb, root / "exercises" / "01_tiny.ipynb")
    return root


def test_make_submission_writes_one_zip_with_the_executed_notebook_and_course_files(tmp_path, monkeypatch, capsys):
    root = _course(tmp_path)
    notebook = root / "exercises" / "01_tiny.ipynb"
    monkeypatch.chdir(root / "exercises")
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)

    path = submit.make_submission("jsmith42", timeout=120)  # found from the cwd, as in a local kernel

    assert path == notebook.parent / "submission_jsmith42_01_tiny.zip" and path.is_file()
    out = capsys.readouterr().out
    assert "ValueError" in out and "zip is written anyway" in out, out
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        modules = {f"course_lib/{t.module}.py" for t in TASKS}
        assert names == {"01_tiny.ipynb", "submission.json"} | modules
        assert zf.read("course_lib/attention.py").decode().endswith("# edited by the student\n")
        executed = nbformat.reads(zf.read("01_tiny.ipynb").decode(), as_version=4)
        manifest = json.loads(zf.read("submission.json"))
    outputs = ["".join(o.get("text", "")) for c in executed.cells for o in c.get("outputs", [])]
    assert any(str(root / "course_lib") in o for o in outputs), outputs  # the checkout's course_lib, not another
    assert any(o.strip() == "1" for o in outputs)  # COURSE_SUBMISSION_RUN is set in the re-run
    assert executed.cells[3].outputs[0]["data"]["text/plain"] == "42"  # cells after an error still run
    assert "skipped" in "".join(executed.cells[4].outputs[0]["text"])  # no recursion
    assert manifest["student_id"] == "jsmith42" and manifest["exercise"] == "01_tiny"
    assert [e["ename"] for e in manifest["errors"]] == ["ValueError"]


@pytest.mark.slow
def test_make_submission_survives_a_dead_kernel(tmp_path, monkeypatch):
    root = _course(tmp_path)
    notebook = root / "exercises" / "01_tiny.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    nb.cells.insert(2, nbformat.v4.new_code_cell("import os\nos._exit(1)"))
    nbformat.write(nb, root / "exercises" / "Copy of 01_tiny (1).ipynb")
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)

    path = submit.make_submission("a b@c", notebook=root / "exercises" / "Copy of 01_tiny (1).ipynb",
                                  out_dir=tmp_path / "out", timeout=60)

    assert path == tmp_path / "out" / "submission_a-b-c_01_tiny.zip"
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("submission.json"))
        assert "01_tiny.ipynb" in zf.namelist()
    assert any(e["ename"] == "DeadKernelError" for e in manifest["errors"])
    assert manifest["notebook"] == "Copy of 01_tiny (1).ipynb"


def test_make_submission_does_nothing_inside_the_rerun_or_the_grader(monkeypatch, tmp_path):
    monkeypatch.setenv(submit.RERUN_ENV, "1")
    assert submit.make_submission("jsmith42", notebook=tmp_path / "missing.ipynb") is None
    monkeypatch.delenv(submit.RERUN_ENV)
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    assert submit.make_submission("jsmith42", notebook=tmp_path / "missing.ipynb") is None


def test_student_modules_come_from_the_task_registry():
    assert submit.student_modules() == list(dict.fromkeys(f"{t.module}.py" for t in TASKS))
    assert {"attention.py", "encoder.py", "embeddings.py", "vit.py", "analysis.py"} == set(submit.student_modules())


@pytest.mark.parametrize("name, expected", [
    ("01_attention.ipynb", "01_attention"),
    ("Copy of 01_attention.ipynb", "01_attention"),
    ("01_attention (1).ipynb", "01_attention"),
    ("Copy of 01_attention (2) (1).ipynb", "01_attention"),
    ("01_attention-Copy1.ipynb", "01_attention"),
])
def test_notebook_names_are_normalised(name, expected):
    assert submit.normalise_notebook_name(name) == expected


def test_exercise_of_a_renamed_notebook_comes_from_its_task_cells():
    nb = {"cells": [{"metadata": {"nbgrader": {"grade_id": "task1_3_visible"}}}], "metadata": {}}
    known = ["01_attention", "02_encoder"]
    assert submit.exercise_of(nb, "my homework.ipynb", known) == "01_attention"
    assert submit.exercise_of(nb, "Copy of 02_encoder.ipynb", known) == "02_encoder"


def test_student_ids_are_made_safe_for_file_names():
    assert submit.normalise_student_id(" jsmith42 ") == "jsmith42"
    assert submit.normalise_student_id("J. Smith/42") == "J.-Smith-42"
    with pytest.raises(ValueError, match="non-empty"):
        submit.normalise_student_id("")


@pytest.mark.slow
def test_make_submission_on_colab_takes_the_live_notebook_and_downloads_the_zip(tmp_path, monkeypatch):
    """On Colab the notebook is not a file: it comes from google.colab's get_ipynb, with unsaved edits."""
    import sys
    import types

    root = _course(tmp_path)
    nb = json.loads((root / "exercises" / "01_tiny.ipynb").read_text())
    nb["metadata"]["colab"] = {"name": "Copy of 01_tiny.ipynb", "provenance": []}
    nb["cells"].append(nbformat.v4.new_code_cell("print('unsaved edit')"))
    downloads = []
    google, colab = types.ModuleType("google"), types.ModuleType("google.colab")
    colab._message = types.SimpleNamespace(blocking_request=lambda *a, **k: {"ipynb": nb})
    colab.files = types.SimpleNamespace(download=downloads.append)
    google.colab = colab
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setattr(submit, "_colab_root", lambda: root)
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)

    path = submit.make_submission("ab123", out_dir=tmp_path / "content", timeout=120)

    assert path == tmp_path / "content" / "submission_ab123_01_tiny.zip" and downloads == [str(path)]
    with zipfile.ZipFile(path) as zf:
        executed = nbformat.reads(zf.read("01_tiny.ipynb").decode(), as_version=4)
        manifest = json.loads(zf.read("submission.json"))
    assert manifest["colab"] and manifest["notebook"] == "Copy of 01_tiny.ipynb"
    assert "unsaved edit" in "".join(o.get("text", "") for o in executed.cells[-1].outputs)


# A stand-in for google.colab: drive.mount makes MyDrive under the mount point; get_ipynb returns a notebook.
FAKE_COLAB = """
import json, sys, types
from pathlib import Path
google, colab = types.ModuleType("google"), types.ModuleType("google.colab")
def _mount(path):
    Path(path, "MyDrive").mkdir(parents=True, exist_ok=True)
    print("MOUNTED", path)
colab.drive = types.SimpleNamespace(mount=_mount)
google.colab = colab
sys.modules["google"], sys.modules["google.colab"] = google, colab
"""
SETUP = FAKE_COLAB + """
sys.path.insert(0, {clone!r})
import course_lib.bootstrap as bootstrap
bootstrap.DRIVE_MOUNT = Path({mount!r})
device = bootstrap.setup(keep_in_drive={keep})
import course_lib, os
print("COURSE_LIB", Path(course_lib.__file__).parent)
print("ROOT", os.environ["COURSE_ROOT"])
"""


def _colab_session(clone: Path, mount: Path, keep: bool = True) -> str:
    import subprocess
    import sys

    code = SETUP.format(clone=str(clone), mount=str(mount), keep=keep)
    run = subprocess.run([sys.executable, "-c", code], cwd=clone.parent, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_colab_keeps_the_course_in_google_drive(tmp_path):
    """First session: mount Drive, copy the clone there, import course_lib from the copy. Next session
    (a fresh /content clone): the Drive copy, with the student's edits, is used again, not replaced."""
    clone = _course(tmp_path / "content")  # /content/vit-basics as the set-up cell clones it
    mount = tmp_path / "drive"
    out = _colab_session(clone, mount)
    drive_copy = mount / "MyDrive" / clone.name
    assert "MOUNTED" in out and "Copied the course to Google Drive" in out and "wipes /content" in out, out
    assert f"COURSE_LIB {drive_copy / 'course_lib'}" in out and f"ROOT {drive_copy}" in out, out
    assert out.count("Device: ") == 1
    (drive_copy / "course_lib" / "encoder.py").write_text((drive_copy / "course_lib" / "encoder.py").read_text() + "\n# my work\n")
    shutil.rmtree(clone)  # the runtime stopped: /content is gone
    clone = _course(tmp_path / "content")
    out = _colab_session(clone, mount)
    assert "Using your copy of the course in Google Drive" in out and f"COURSE_LIB {drive_copy / 'course_lib'}" in out, out
    assert (drive_copy / "course_lib" / "encoder.py").read_text().endswith("# my work\n")


def test_colab_without_drive_says_what_happens_to_content(tmp_path):
    clone = _course(tmp_path / "content")
    out = _colab_session(clone, tmp_path / "drive", keep=False)
    assert "MOUNTED" not in out and "wipes /content" in out and "KEEP_IN_DRIVE = True" in out, out
    assert f"COURSE_LIB {clone / 'course_lib'}" in out and not (tmp_path / "drive").exists()


@pytest.mark.slow
def test_make_submission_on_colab_takes_the_drive_copy(tmp_path, monkeypatch):
    """make_submission zips the course_lib of the checkout the set-up cell chose (COURSE_ROOT: the Drive copy)."""
    import sys
    import types

    drive_copy = _course(tmp_path / "drive" / "MyDrive")
    (drive_copy / "course_lib" / "vit.py").write_text((drive_copy / "course_lib" / "vit.py").read_text() + "\n# kept in Drive\n")
    nb = json.loads((drive_copy / "exercises" / "01_tiny.ipynb").read_text())
    nb["metadata"]["colab"] = {"name": "01_tiny.ipynb"}
    google, colab = types.ModuleType("google"), types.ModuleType("google.colab")
    colab._message = types.SimpleNamespace(blocking_request=lambda *a, **k: {"ipynb": nb})
    colab.files = types.SimpleNamespace(download=lambda path: None)
    google.colab = colab
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setenv("COURSE_ROOT", str(drive_copy))
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)

    path = submit.make_submission("ab123", out_dir=tmp_path / "content", timeout=120)

    with zipfile.ZipFile(path) as zf:
        assert zf.read("course_lib/vit.py").decode().endswith("# kept in Drive\n")
        executed = nbformat.reads(zf.read("01_tiny.ipynb").decode(), as_version=4)
    assert str(drive_copy / "course_lib") in "".join(o.get("text", "") for o in executed.cells[0].outputs)


def test_make_submission_is_quiet_and_its_estimate_is_honest(tmp_path, monkeypatch, capfd):
    """No kernel log (the TCP-without-encryption warning) at the file-descriptor level; the estimate
    before the re-run comes from the last re-run and the time taken is reported."""
    from course_lib import rerun

    root = _course(tmp_path)
    monkeypatch.setattr(rerun, "TIMES", tmp_path / "times.json")
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    notebook = root / "exercises" / "01_tiny.ipynb"
    submit.make_submission("jsmith42", notebook=notebook, timeout=120)
    first = capfd.readouterr()
    assert "WARNING" not in first.out + first.err and "TCP" not in first.out + first.err, first
    assert "a guess for 5 code cells" in first.out
    took = json.loads((tmp_path / "times.json").read_text())["01_tiny"]
    submit.make_submission("jsmith42", notebook=notebook, timeout=120)
    second = capfd.readouterr().out
    assert f"({rerun.say_duration(took)}, as the last re-run of this exercise)" in second, second


def test_estimate_uses_the_cells_recorded_run_times():
    from course_lib import rerun

    nb = {"cells": [{"cell_type": "code", "metadata": {"executionInfo": {"elapsed": 4000}}},
                    {"cell_type": "code", "metadata": {"execution": {"iopub.execute_input": "2026-01-01T10:00:00.000Z",
                                                                    "shell.execute_reply": "2026-01-01T10:00:20.500Z"}}}]}
    seconds, how = rerun.estimate_seconds(nb, "never_run_before_99")
    assert seconds == pytest.approx(rerun.KERNEL_START_S + 24.5) and "last run times" in how
    assert rerun.say_duration(9) == "about 10 s" and rerun.say_duration(150) == "about 2 min"


def test_make_submission_asks_to_save_first_when_this_cell_is_not_saved(tmp_path, monkeypatch, capsys):
    """Locally the re-run uses the file on disk: a STUDENT_ID typed but not saved would be lost."""
    import IPython

    root = _course(tmp_path)
    notebook = root / "exercises" / "01_tiny.ipynb"
    saved = nbformat.read(notebook, as_version=4)
    history = ["", saved.cells[1].source, "print('run but never saved')", "STUDENT_ID = 'jsmith42'\nmake_submission(STUDENT_ID)"]
    shell = type("Shell", (), {"history_manager": type("H", (), {"input_hist_raw": history})(), "user_ns": {}})()
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    assert submit.unsaved_cells(json.loads(notebook.read_text())) == (False, 1)
    assert submit.make_submission("jsmith42", notebook=notebook) is None
    assert "Save the notebook (Ctrl+S), then run this cell again" in capsys.readouterr().out
    assert not list(notebook.parent.glob("*.zip"))
    history[-1] = saved.cells[4].source  # saved: only the warning about the other cell
    assert submit.unsaved_cells(json.loads(notebook.read_text())) == (True, 1)
