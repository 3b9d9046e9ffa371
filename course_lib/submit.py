"""Hand in an exercise: ``make_submission("jsmith42")`` in the exercise's last cell.

It restarts the notebook from a clean kernel, runs every cell (so what you hand
in is what the notebook really computes, not what is left over in your session),
and writes ONE zip named after you and the exercise::

    submission_<student id>_<exercise>.zip
        <exercise>.ipynb         the notebook, executed from a clean kernel
        course_lib/attention.py  the course_lib files you edit (one per module with tasks)
        ...
        submission.json          who, which exercise, when, and any errors in the re-run

On Colab the zip is downloaded by the browser (``google.colab.files.download``);
locally its path is printed. Upload that file to your course's LMS.

Errors in the re-run (an unfinished task, a bug, a timeout, even a crashed
kernel) are listed, and the zip is still written: nothing you did is lost.

The re-run never submits again: the notebook only calls ``make_submission`` when
``STUDENT_ID`` is set, and while it re-runs (``COURSE_SUBMISSION_RUN=1``) or while
nbgrader grades it (``NBGRADER_EXECUTION``), ``make_submission`` does nothing.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import sys
import time
from pathlib import Path

from course_lib.locate import (EXERCISE_RE, _colab_notebook, exercise_of, find_notebook,
                                 normalise_notebook_name, unsaved_cells)
from course_lib.rerun import RERUN_ENV, estimate_seconds, record_seconds, rerun_notebook, say_duration, write_zip

__all__ = ["RERUN_ENV", "exercise_of", "find_notebook", "make_submission", "normalise_notebook_name",
           "normalise_student_id", "rerun_notebook", "student_modules", "unsaved_cells"]


def student_modules() -> list[str]:
    """The course_lib files students edit, from the task registry: ``["attention.py", ...]``."""
    from course_lib.tasks import TASKS

    return list(dict.fromkeys(f"{t.module}.py" for t in TASKS))


def normalise_student_id(student_id: str) -> str:
    """A student id safe in a file name: letters, digits and ``._-`` (others become ``-``).

    Raises:
        ValueError: when the id is empty.
    """
    if not isinstance(student_id, str) or not student_id.strip():
        raise ValueError(f"make_submission: STUDENT_ID must be your non-empty student id (a string), got {student_id!r}")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", student_id.strip()).strip("-.")
    if not safe:
        raise ValueError(f"make_submission: student id {student_id!r} has no letters or digits")
    return safe


# --- finding the notebook and the course --------------------------------------------------------

def _on_colab() -> bool:
    return "google.colab" in sys.modules


def _course_root(start: Path) -> Path | None:
    """The nearest folder at or above ``start`` that holds ``course_lib/`` (as the set-up cell finds it)."""
    for p in [start, *start.parents]:
        if (p / "course_lib").is_dir():
            return p
    return None


def _colab_root() -> Path:
    """The course checkout on Colab: the one the set-up cell chose (the Google Drive copy, or the
    clone in course.toml's ``colab_dir``), else where course_lib was imported from."""
    chosen = os.environ.get("COURSE_ROOT")
    if chosen and (Path(chosen) / "course_lib").is_dir():
        return Path(chosen)
    return Path(__file__).resolve().parents[1]


def _known_exercises(root: Path | None) -> list[str]:
    if root is None or not (root / "exercises").is_dir():
        return []
    return sorted(p.stem for p in (root / "exercises").glob("*.ipynb") if EXERCISE_RE.match(p.stem))


def make_submission(
    student_id: str,
    notebook: str | os.PathLike | None = None,
    *,
    exercise: str | None = None,
    out_dir: str | os.PathLike | None = None,
    timeout: int = 600,
    download: bool = True,
    allow_unsaved: bool = False,
) -> Path | None:
    """Re-run this notebook from a clean kernel and write ``submission_<id>_<exercise>.zip``.

    Args:
        student_id: your student id (the one your LMS knows), e.g. ``"jsmith42"``.
        notebook: the notebook file; found automatically on Colab and in JupyterLab/VS Code.
        exercise: the exercise name, e.g. ``"01_attention"`` (default: from the notebook).
        out_dir: where to write the zip (default: next to the notebook; ``/content`` on Colab).
        timeout: seconds per cell in the re-run.
        download: on Colab, offer the zip as a browser download.
        allow_unsaved: locally, submit the saved file even when this cell is not saved yet.

    Returns:
        the zip's path, or None when called inside the re-run, while grading, or when the
        notebook must be saved first.
    """
    if os.environ.get(RERUN_ENV) or os.environ.get("NBGRADER_EXECUTION"):
        print("make_submission: skipped (this is the clean re-run or the grader, not you).")
        return None
    sid = normalise_student_id(student_id)
    if sid != student_id:
        print(f"make_submission: using the student id {sid!r} (from {student_id!r})")


    colab = _on_colab() and notebook is None
    if colab:
        root = _colab_root()
        known = _known_exercises(root)
        try:
            nb_dict = _colab_notebook()
            source_name = nb_dict.get("metadata", {}).get("colab", {}).get("name")
        except Exception as e:  # noqa: BLE001 - fall back to the clone's copy of the exercise
            copy = root / "exercises" / f"{exercise}.ipynb" if exercise else None
            if copy is None or not copy.is_file():
                raise RuntimeError(f"make_submission: Colab did not give the notebook ({e}); "
                                   "pass exercise='01_attention' (or notebook='...')") from e
            print(f"make_submission: Colab did not give the notebook ({e}); submitting {copy} "
                  "(your course_lib files are what the tests grade)")
            nb_dict, source_name = json.loads(copy.read_text(encoding="utf-8")), copy.name
        exercise = exercise or exercise_of(nb_dict, source_name, known)
        run_dir = root / "exercises" if (root / "exercises").is_dir() else root
        out = Path(out_dir) if out_dir else Path("/content")
    else:
        path = Path(notebook).resolve() if notebook is not None else find_notebook(exercise)
        if not path.is_file():
            raise FileNotFoundError(f"make_submission: no notebook at {path}")
        nb_dict = json.loads(path.read_text(encoding="utf-8"))
        root = _course_root(path.parent) or Path(__file__).resolve().parents[1]
        known = _known_exercises(root)
        exercise = exercise or exercise_of(nb_dict, path.name, known)
        run_dir = path.parent
        out = Path(out_dir) if out_dir else path.parent
        source_name = path.name
        state = unsaved_cells(nb_dict)
        if state is not None and not state[0] and not allow_unsaved:
            print(f"make_submission: this cell is not in {path.name} as saved on disk (unsaved edits, e.g. STUDENT_ID), "
                  "and the re-run uses the saved file. Save the notebook (Ctrl+S), then run this cell again.")
            return None
        if state is not None and state[1]:
            print(f"make_submission: warning: {state[1]} cell(s) you ran differ from {path.name} as saved; "
                  "the re-run uses the saved file (save with Ctrl+S and run this cell again to include them).")

    estimate, how = estimate_seconds(nb_dict, exercise)
    print(f"make_submission: re-running {exercise} from a clean kernel ({say_duration(estimate)}, {how})...")
    started = time.time()
    executed, errors = rerun_notebook(nb_dict, run_dir, timeout=timeout)
    record_seconds(exercise, time.time() - started)
    manifest = {
        "student_id": sid,
        "exercise": exercise,
        "notebook": source_name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "colab": colab,
        "python": sys.version.split()[0],
        "rerun_seconds": round(time.time() - started, 1),
        "errors": errors,
    }
    try:
        import torch

        manifest["torch"] = torch.__version__
    except ImportError:  # pragma: no cover
        pass
    out.mkdir(parents=True, exist_ok=True)
    zip_path = out / f"submission_{sid}_{exercise}.zip"
    members = write_zip(zip_path, f"{exercise}.ipynb", executed, root, student_modules(), manifest)

    if errors:
        print(f"make_submission: the clean re-run raised {len(errors)} error(s) (the zip is written anyway):")
        for e in errors[:20]:
            where = f"cell {e['cell']}" if e["cell"] is not None else "notebook"
            print(f"  {where}: {e['ename']}: {e['evalue'].splitlines()[0] if e['evalue'] else ''}")
    else:
        print(f"make_submission: the clean re-run finished without errors in {manifest['rerun_seconds']:.0f} s.")
    for missing in manifest.get("missing", []):
        print(f"make_submission: warning: {missing} not found in {root}; it is not in the zip")
    print(f"make_submission: wrote {zip_path} ({', '.join(members)})")
    if colab and download:
        from google.colab import files  # type: ignore[import-not-found]

        files.download(str(zip_path))
        print("make_submission: your browser downloads the zip; upload it to the course's LMS.")
    else:
        print("make_submission: upload this file to the course's LMS.")
    return zip_path
