"""Which notebook is handed in, and which exercise it is: file names as students and Colab save them,
the notebook of the running kernel, and whether the cells the kernel ran are saved on disk."""
from __future__ import annotations

import os
import re
from pathlib import Path

NOTEBOOK_RE = re.compile(r"^(?:Copy of |Kopie von |Copie de )*(?P<stem>.+?)(?:\s*\(\d+\)|-checkpoint|-Copy\d+)*$", re.I)
EXERCISE_RE = re.compile(r"^\d\d_[A-Za-z0-9_]+$")


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


def unsaved_cells(nb_dict: dict) -> tuple[bool, int] | None:
    """Compare the cells this kernel ran with the notebook as saved on disk.

    Returns:
        ``(current cell saved, number of other cells run here but not in the file)``, or None
        outside IPython.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    ip = get_ipython()
    history = getattr(getattr(ip, "history_manager", None), "input_hist_raw", None)
    if not history or len(history) < 2:
        return None
    saved = {"".join(c.get("source", "")).strip() for c in nb_dict.get("cells", []) if c.get("cell_type") == "code"}
    ran = [h.strip() for h in history[1:] if h.strip()]
    current = ran[-1] if ran else ""
    others = {h for h in ran[:-1] if h not in saved and h != current}
    return current in saved, len(others)
