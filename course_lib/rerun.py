"""The clean re-run behind ``make_submission``: a fresh kernel runs the notebook, quietly.

The kernel is this interpreter's ipykernel, started with its log (e.g. ipykernel's "Kernel is
running over TCP without encryption" warning) sent to a file, and over IPC sockets where the
platform has them, so nothing but the notebook's own results reaches the student's output.
How long a re-run takes is estimated from the cells' recorded run times (Colab and JupyterLab
store them), from the last re-run of the same exercise, or from the number of code cells.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

RERUN_ENV = "COURSE_SUBMISSION_RUN"  # set in the re-run's kernel: make_submission is a no-op there
TIMES = Path(tempfile.gettempdir()) / "course-submission-times.json"
KERNEL_START_S = 3.0  # starting a kernel and importing torch, measured on a laptop CPU


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
    km = AsyncKernelManager(kernel_name="course-submission", kernel_spec_manager=ksm)
    if os.name == "posix":  # local sockets, not TCP on localhost: no encryption warning, no ports
        km.transport = "ipc"
        km.connection_file = str(tmp / "kernel.json")
        km.ip = str(tmp / "kernel-ipc")
    return km


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
        log = open(Path(tmp) / "kernel.log", "w")  # the kernel's own log, never the student's output
        try:
            client.execute(env=env, cwd=str(run_dir), stdout=log, stderr=subprocess.STDOUT)
        except DeadKernelError as e:
            log.flush()
            tail = (Path(tmp) / "kernel.log").read_text(errors="replace").strip().splitlines()[-3:]
            extra.append({"cell": None, "ename": "DeadKernelError",
                          "evalue": f"the kernel died during the re-run ({e})" + ("; its log ends: " + " | ".join(tail) if tail else "")})
        except Exception as e:  # noqa: BLE001 - report, keep what ran
            extra.append({"cell": None, "ename": type(e).__name__, "evalue": str(e)[:300]})
        finally:
            try:
                if run_sync(km.is_alive)():
                    run_sync(km.shutdown_kernel)(now=True)
            except Exception:  # noqa: BLE001
                pass
            log.close()
    return nb, _cell_errors(nb) + extra


def write_zip(path: Path, notebook_name: str, nb, root: Path, modules: list[str], manifest: dict) -> list[str]:
    """Write the executed notebook, ``root/course_lib/<module>`` for each module, and the manifest."""
    import nbformat

    members = [notebook_name]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(notebook_name, nbformat.writes(nb))
        for module in modules:
            src = root / "course_lib" / module
            if src.is_file():
                zf.write(src, f"course_lib/{module}")
                members.append(f"course_lib/{module}")
            else:
                manifest.setdefault("missing", []).append(f"course_lib/{module}")
        manifest["files"] = members
        zf.writestr("submission.json", json.dumps(manifest, indent=1))
    return members




# --- how long it takes --------------------------------------------------------------------------

def _recorded_seconds(cell: dict) -> float | None:
    """The cell's last run time as the front end recorded it (Colab: executionInfo; JupyterLab: execution)."""
    meta = cell.get("metadata", {})
    info = meta.get("executionInfo", {})
    if isinstance(info.get("elapsed"), (int, float)):
        return info["elapsed"] / 1000
    timing = meta.get("execution", {})
    if "iopub.execute_input" in timing and "shell.execute_reply" in timing:
        from datetime import datetime

        try:
            t0, t1 = (datetime.fromisoformat(timing[k].replace("Z", "+00:00")) for k in ("iopub.execute_input", "shell.execute_reply"))
        except ValueError:
            return None
        return max((t1 - t0).total_seconds(), 0.0)
    return None


def _past_times() -> dict:
    try:
        return json.loads(TIMES.read_text())
    except (OSError, ValueError):
        return {}


def estimate_seconds(nb_dict: dict, exercise: str) -> tuple[float, str]:
    """``(seconds, how it was estimated)`` for re-running the notebook from a clean kernel."""
    past = _past_times().get(exercise)
    if isinstance(past, (int, float)):
        return float(past), "as the last re-run of this exercise"
    code = [c for c in nb_dict.get("cells", []) if c.get("cell_type") == "code"]
    recorded = [_recorded_seconds(c) for c in code]
    if code and all(t is not None for t in recorded):
        return KERNEL_START_S + sum(recorded), "from your cells' last run times"
    return KERNEL_START_S + 0.5 * len(code), f"a guess for {len(code)} code cells"


def record_seconds(exercise: str, seconds: float) -> None:
    """Remember how long this exercise's re-run took (for the next estimate)."""
    times = _past_times()
    times[exercise] = round(seconds, 1)
    try:
        TIMES.write_text(json.dumps(times))
    except OSError:
        pass


def say_duration(seconds: float) -> str:
    """``"about 10 s"``, ``"about 2 min"``."""
    if seconds < 90:
        return f"about {max(5, 5 * round(seconds / 5))} s"
    return f"about {round(seconds / 60)} min"
