"""Shared fixtures: the device under test, per-task markers, and the student edition."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from course_lib.tasks import TASKS  # noqa: E402

# Notebooks under tests/ are data (submissions, fixtures), not notebooks for nbval to run.
collect_ignore_glob = ["**/*.ipynb"]


def pytest_configure(config: pytest.Config) -> None:
    for task in TASKS:
        config.addinivalue_line("markers", f"{task.marker}: tests of Task {task.id} ({task.name})")


@pytest.fixture(scope="session")
def device() -> torch.device:
    """COURSE_TEST_DEVICE=cuda runs the unit tests on a GPU (default: cpu)."""
    return torch.device(os.environ.get("COURSE_TEST_DEVICE", "cpu"))


@pytest.fixture(scope="session")
def tol(device) -> dict:
    """allclose tolerances that hold on the CPU and on GPUs (TF32 convolutions, other kernels)."""
    return dict(rtol=1e-5, atol=1e-5) if device.type == "cpu" else dict(rtol=2e-3, atol=2e-3)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def student_edition(tmp_path_factory) -> Path:
    """The student edition (course_lib stubs, lectures, exercises), built once per test session.

    With pytest-xdist the workers share one build, guarded by a file lock.
    """
    from filelock import FileLock
    import release

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # gw0, gw1, ... live in one folder of this session
        base = base.parent
    out = base / "student"
    with FileLock(str(base / "student.lock")):
        if not (out / ".built").exists():
            release.build(out, exercises=False)
            (out / ".built").touch()
    return out
