"""Parallel grading: one worker process per submission, in its own session, with time and memory limits.

Workers are forked from a fork server that has nbgrader imported already (about 3 s saved each). A
worker that runs past its time is killed with everything it started; a crashed worker is a result too.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from .worker import last_error


def _limit_memory(gib: float) -> None:
    """Cap what this process and its children (the kernel) may allocate.

    RLIMIT_DATA counts heap and anonymous mappings: what a student's huge tensor takes.
    (RLIMIT_AS would also count the ~3.7 GiB of address space torch's shared libraries map.)
    """
    import resource

    if gib:
        limit = int(gib * 2**30)
        try:
            resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
        except (ValueError, OSError) as e:  # e.g. a platform that does not allow it
            print(f"warning: could not limit memory to {gib} GiB ({e})", file=sys.stderr)


# Imported once by the fork server; every worker forked from it starts with them loaded (~3 s each).
PRELOAD = ["course_grading.execute", "course_grading.feedback", "nbformat", "nbconvert", "nbclient", "jupyter_client", "nbgrader.apps", "nbgrader.converters",
           "nbgrader.preprocessors", "sqlalchemy", "alembic.script"]


def _worker_main(job_file: str, memory_gib: float) -> None:
    """Entry point of a forked worker: own session (killable as a group), memory cap, log file."""
    os.setsid()
    _limit_memory(memory_gib)
    job = json.loads(Path(job_file).read_text())
    fd = os.open(Path(job["course"]) / "worker.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    from .worker import run_worker

    run_worker(job)


_START_LOCK = threading.Lock()
_CONTEXT = None


def _context():
    """multiprocessing's fork server, preloaded with nbgrader (started once)."""
    global _CONTEXT
    if _CONTEXT is None:
        import multiprocessing

        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(PRELOAD)
    return _CONTEXT


def _kill_tree(pid: int) -> None:
    """Kill a worker and everything it started (kernels run in their own sessions)."""
    try:
        import psutil

        procs = psutil.Process(pid).children(recursive=True)
    except Exception:  # noqa: BLE001
        procs = []
    for p in procs:
        try:
            p.kill()
        except Exception:  # noqa: BLE001
            pass
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def grade_one(job: dict, timeout: float, memory_gib: float) -> dict:
    """Run one worker process; always returns a result (a crash or timeout is a result too)."""
    Path(job["job_file"]).write_text(json.dumps(job))
    started = time.time()
    log_path = Path(job["course"]) / "worker.log"
    log_path.touch()
    with _START_LOCK:
        proc = _context().Process(target=_worker_main, args=(job["job_file"], memory_gib), daemon=False)
        proc.start()
    proc.join(timeout)
    if proc.is_alive():
        _kill_tree(proc.pid)
        proc.join()
        return {"ok": False, "reason": f"grading took longer than the {timeout:.0f} s limit per submission (stopped)",
                "events": [], "errors": {}, "log": log_path.read_text(errors="replace")[-20000:], "seconds": time.time() - started}
    result_path = Path(job["result"])
    if result_path.exists():
        result = json.loads(result_path.read_text())
    else:
        code = proc.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        result = {"ok": False, "events": [], "errors": {},
                  "reason": f"the grading process failed ({how}): " + last_error(log_path.read_text(errors="replace"))}
    result["log"] = result.get("log", "") + "\n--- worker output ---\n" + log_path.read_text(errors="replace")[-20000:]
    result["seconds"] = time.time() - started
    return result
