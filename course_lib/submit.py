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
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

RERUN_ENV = "COURSE_SUBMISSION_RUN"  # set in the re-run's kernel: make_submission is a no-op there
NOTEBOOK_RE = re.compile(r"^(?:Copy of |Kopie von |Copie de )*(?P<stem>.+?)(?:\s*\(\d+\)|-checkpoint|-Copy\d+)*$", re.I)
EXERCISE_RE = re.compile(r"^\d\d_[A-Za-z0-9_]+$")


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


def normalise_notebook_name(name: str) -> str:
    """The exercise a notebook file name stands for: ``"Copy of 01_attention (1).ipynb"`` -> ``"01_attention"``."""
    stem = Path(name).name
    if stem.lower().endswith(".ipynb"):
        stem = stem[: -len(".ipynb")]
    match = NOTEBOOK_RE.match(stem.strip())
    return (match.group("stem") if match else stem).strip()


def _grade_ids(nb: dict) -> list[str]:
    return [c.get("metadata", {}).get("nbgrader", {}).get("grade_id", "") for c in nb.get("cells", [])]


def exercise_of(nb: dict, name: str | None, known: list[str]) -> str:
    """Which exercise a notebook is: by its (normalised) file name, else by its task cells.

    Args:
        nb: the notebook as a dict.
        name: its file name, if any.
        known: exercise names of the course (``["01_attention", ...]``), may be empty.

    Returns:
        the exercise name, e.g. ``"01_attention"``.
    """
    if name:
        stem = normalise_notebook_name(name)
        if stem in known or (not known and EXERCISE_RE.match(stem)):
            return stem
    numbers = {int(m.group(1)) for gid in _grade_ids(nb) if (m := re.match(r"task(\d+)_\d+", gid))}
    if len(numbers) == 1:
        n = numbers.pop()
        for candidate in known:
            if candidate.startswith(f"{n:02d}_"):
                return candidate
    colab_name = nb.get("metadata", {}).get("colab", {}).get("name")
    if colab_name and normalise_notebook_name(colab_name) in known:
        return normalise_notebook_name(colab_name)
    if name:
        return normalise_notebook_name(name)
    raise ValueError("make_submission: cannot tell which exercise this notebook is; pass notebook='path/to/01_attention.ipynb'")


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


def _colab_notebook() -> dict:
    """The notebook open in Colab, as Colab holds it (with unsaved edits)."""
    from google.colab import _message  # type: ignore[import-not-found]

    reply = _message.blocking_request("get_ipynb", request="", timeout_sec=120)
    if not reply or "ipynb" not in reply:
        raise RuntimeError("make_submission: Colab did not return the notebook; pass notebook='...' explicitly")
    return reply["ipynb"]


def _session_notebook() -> Path | None:
    """The notebook the current kernel belongs to, when the front end says (JupyterLab, VS Code)."""
    candidates: list[str] = []
    if os.environ.get("JPY_SESSION_NAME"):
        candidates.append(os.environ["JPY_SESSION_NAME"])
    try:
        from IPython import get_ipython

        ip = get_ipython()
        if ip is not None:
            for key in ("__vsc_ipynb_file__", "__session__"):
                if isinstance(ip.user_ns.get(key), str):
                    candidates.append(ip.user_ns[key])
    except ImportError:
        pass
    for c in candidates:
        p = Path(c)
        for path in (p, Path.cwd() / p, Path.cwd() / p.name):
            if path.suffix == ".ipynb" and path.is_file():
                return path.resolve()
    return None


def find_notebook(exercise: str | None = None) -> Path:
    """The notebook file of the running kernel (local Jupyter, VS Code).

    Tries, in order: the front end's session (``JPY_SESSION_NAME``, ``__vsc_ipynb_file__``),
    ``<cwd>/<exercise>.ipynb``, then the only exercise notebook in the current folder.

    Raises:
        FileNotFoundError: naming the candidates, when it cannot tell.
    """
    if (found := _session_notebook()) is not None:
        return found
    cwd = Path.cwd()
    if exercise and (cwd / f"{exercise}.ipynb").is_file():
        return cwd / f"{exercise}.ipynb"
    notebooks = sorted(p for p in cwd.glob("*.ipynb") if EXERCISE_RE.match(normalise_notebook_name(p.name)))
    if exercise:
        notebooks = [p for p in notebooks if normalise_notebook_name(p.name) == exercise] or notebooks
    if len(notebooks) == 1:
        return notebooks[0].resolve()
    listed = ", ".join(p.name for p in notebooks) or "none"
    raise FileNotFoundError(
        f"make_submission: cannot tell which notebook to submit (exercise notebooks in {cwd}: {listed}); "
        "pass it explicitly, e.g. make_submission(STUDENT_ID, notebook='01_attention.ipynb')"
    )


# --- re-running ---------------------------------------------------------------------------------

def _kernel_manager(tmp: Path):
    """A kernel manager that starts this interpreter's ipykernel (not whatever "python3" means elsewhere)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    spec_dir = tmp / "kernels" / "course-submission"
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "course submission", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    ksm = KernelSpecManager(kernel_dirs=[str(tmp / "kernels")], ensure_native_kernel=False)
    return AsyncKernelManager(kernel_name="course-submission", kernel_spec_manager=ksm)


def _cell_errors(nb) -> list[dict]:
    errors = []
    index = 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        index += 1
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                errors.append({"cell": i, "ename": out.get("ename", ""), "evalue": str(out.get("evalue", ""))[:300]})
    return errors


def rerun_notebook(nb_dict: dict, run_dir: Path, timeout: int = 600) -> tuple[Any, list[dict]]:
    """Execute a notebook from a clean kernel in ``run_dir``; never raises for the notebook's own errors.

    Args:
        nb_dict: the notebook (dict or NotebookNode).
        run_dir: the kernel's working directory (the notebook's folder).
        timeout: seconds per cell before it is interrupted.

    Returns:
        ``(executed notebook, errors)``, errors as ``{"cell", "ename", "evalue"}`` dicts.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError
    from nbclient.util import run_sync

    nb = nbformat.reads(json.dumps(nb_dict), as_version=4)  # joins list sources, upgrades old formats
    env = {**os.environ, RERUN_ENV: "1"}
    env.pop("JPY_SESSION_NAME", None)
    with tempfile.TemporaryDirectory(prefix="course-submit-") as tmp:
        km = _kernel_manager(Path(tmp))
        client = NotebookClient(
            nb, km=km, timeout=timeout, allow_errors=True, interrupt_on_timeout=True,
            error_on_timeout={"ename": "CellTimeoutError", "evalue": f"the cell ran longer than {timeout} s",
                              "traceback": [f"CellTimeoutError: the cell ran longer than {timeout} s"]},
            resources={"metadata": {"path": str(run_dir)}},
        )
        extra: list[dict] = []
        try:
            client.execute(env=env, cwd=str(run_dir))
        except DeadKernelError as e:
            extra.append({"cell": None, "ename": "DeadKernelError", "evalue": f"the kernel died during the re-run ({e})"})
        except Exception as e:  # noqa: BLE001 - report, keep what ran
            extra.append({"cell": None, "ename": type(e).__name__, "evalue": str(e)[:300]})
        finally:
            try:
                if run_sync(km.is_alive)():
                    run_sync(km.shutdown_kernel)(now=True)
            except Exception:  # noqa: BLE001
                pass
    return nb, _cell_errors(nb) + extra


def _write_zip(path: Path, notebook_name: str, nb, root: Path, manifest: dict) -> list[str]:
    import nbformat

    members = [notebook_name]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(notebook_name, nbformat.writes(nb))
        for module in student_modules():
            src = root / "course_lib" / module
            if src.is_file():
                zf.write(src, f"course_lib/{module}")
                members.append(f"course_lib/{module}")
            else:
                manifest.setdefault("missing", []).append(f"course_lib/{module}")
        manifest["files"] = members
        zf.writestr("submission.json", json.dumps(manifest, indent=1))
    return members


def make_submission(
    student_id: str,
    notebook: str | os.PathLike | None = None,
    *,
    exercise: str | None = None,
    out_dir: str | os.PathLike | None = None,
    timeout: int = 600,
    download: bool = True,
) -> Path | None:
    """Re-run this notebook from a clean kernel and write ``submission_<id>_<exercise>.zip``.

    Args:
        student_id: your student id (the one your LMS knows), e.g. ``"jsmith42"``.
        notebook: the notebook file; found automatically on Colab and in JupyterLab/VS Code.
        exercise: the exercise name, e.g. ``"01_attention"`` (default: from the notebook).
        out_dir: where to write the zip (default: next to the notebook; ``/content`` on Colab).
        timeout: seconds per cell in the re-run.
        download: on Colab, offer the zip as a browser download.

    Returns:
        the zip's path, or None when called inside the re-run or while grading.
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
        age = time.time() - path.stat().st_mtime
        if age > 120:
            print(f"make_submission: {path.name} was last saved {age / 60:.0f} min ago; the re-run uses the saved file "
                  "(save with Ctrl+S and run this cell again if you changed it since).")

    print(f"make_submission: re-running {exercise} from a clean kernel (this takes a minute)...")
    started = time.time()
    executed, errors = rerun_notebook(nb_dict, run_dir, timeout=timeout)
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
    members = _write_zip(zip_path, f"{exercise}.ipynb", executed, root, manifest)

    if errors:
        print(f"make_submission: the clean re-run raised {len(errors)} error(s) (the zip is written anyway):")
        for e in errors[:20]:
            where = f"cell {e['cell']}" if e["cell"] is not None else "notebook"
            print(f"  {where}: {e['ename']}: {e['evalue'].splitlines()[0] if e['evalue'] else ''}")
    else:
        print("make_submission: the clean re-run finished without errors.")
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
