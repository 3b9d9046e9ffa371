"""Student self-check: ``check("1.4")``, ``check(1)`` or ``check()`` from any notebook.

Each task is run on small fixed inputs and compared with reference outputs
stored as data in ``course_lib/checks/reference.pt`` (no solution code ships
with the course), and on properties the task must have: rows of attention sum
to 1, the causal mask hides the future, permuting tokens permutes outputs, ...
A failure says why: the shape expected and received, or the largest error and
where it is. Everything runs in well under a second on a CPU.

Instructors regenerate the reference outputs from the solutions with
``python -m course_lib.selfcheck --regenerate``.
"""
from __future__ import annotations

import argparse
import re
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from course_lib.checks.cases import CASES, PropertyFailure
from course_lib.tasks import TASKS, Task, get_task

REFERENCE_PATH = Path(__file__).parent / "checks" / "reference.pt"
__all__ = ["CASES", "PropertyFailure", "Result", "check", "load_reference", "regenerate"]


@dataclass
class Result:
    task: Task
    case: str
    status: str  # "pass", "fail", "todo" (NotImplementedError) or "error"
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "pass"


# --- running ----------------------------------------------------------------------------------

def _compare(name: str, got, expected: torch.Tensor, rtol: float, atol: float) -> str | None:
    """None when equal within tolerance, else a message with the largest error and where."""
    if not isinstance(got, torch.Tensor):
        return f"{name}: expected a tensor, got {type(got).__name__}"
    got = got.detach().cpu().double()
    expected = expected.double()
    if got.shape != expected.shape:
        return f"{name}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
    if not torch.isfinite(got).all():
        where = tuple(int(i) for i in (~torch.isfinite(got)).nonzero()[0])
        return f"{name}: contains NaN/inf, first at index {where}"
    err = (got - expected).abs()
    bad = err > atol + rtol * expected.abs()
    if bad.any():
        idx = int(torch.argmax(err))
        where = tuple(int(i) for i in torch.unravel_index(torch.tensor(idx), err.shape)) if err.dim() else ()
        return (f"{name}: largest error {err.max().item():.3g} at index {where} "
                f"(expected {expected[where].item():.6g}, got {got[where].item():.6g}; {int(bad.sum())} of {bad.numel()} values off)")
    return None


def tolerances(device: torch.device) -> tuple[float, float]:
    """(rtol, atol): tight on the CPU; loose enough on GPUs for TF32 convolutions and other kernels."""
    return (1e-4, 1e-5) if device.type == "cpu" else (5e-3, 5e-3)


def run_case(name: str, reference: dict, device: torch.device) -> Result:
    task_id, fn = CASES[name]
    task = get_task(task_id)
    try:
        with torch.no_grad():
            outputs = fn(device)
    except NotImplementedError as e:
        waits = re.search(r"Task (\d+\.\d+) \(([^)]*)\)", str(e))
        if waits and waits.group(1) != task.id:
            return Result(task, name, "todo", f"needs Task {waits.group(1)} ({waits.group(2)}) first")
        return Result(task, name, "todo", "not implemented yet")
    except PropertyFailure as e:
        return Result(task, name, "fail", str(e))
    except Exception as e:  # noqa: BLE001 - a student's bug: show it, keep checking the rest
        frame = traceback.extract_tb(e.__traceback__)[-1]
        return Result(task, name, "error", f"{type(e).__name__}: {e} (at {Path(frame.filename).name}:{frame.lineno})")
    rtol, atol = tolerances(device)
    for key, expected in reference[name].items():
        if key not in outputs:
            return Result(task, name, "fail", f"no output {key!r}")
        msg = _compare(key, outputs[key], expected, rtol, atol)
        if msg:
            return Result(task, name, "fail", msg)
    return Result(task, name, "pass")


def load_reference() -> dict:
    return torch.load(REFERENCE_PATH, map_location="cpu", weights_only=True)


def _select(task: str | int | None) -> list[str]:
    if task is None:
        return list(CASES)
    if isinstance(task, int) or (isinstance(task, str) and task.isdigit()):
        names = [n for n, (tid, _) in CASES.items() if get_task(tid).exercise == int(task)]
        if not names:
            raise ValueError(f"no exercise {task}; exercises are {sorted({t.exercise for t in TASKS})}")
        return names
    tid = get_task(str(task)).id
    return [n for n, (t, _) in CASES.items() if t == tid]


def check(task: str | int | None = None, device: str | torch.device | None = None, verbose: bool = True) -> list[Result]:
    """Check one task (``"1.4"``), one exercise (``1``) or all (None) and print a report.

    Args:
        task: task id, exercise number or None for everything.
        device: where to run (default: the CPU, which is fast for these sizes).
        verbose: print the report.

    Returns:
        one ``Result`` per case (``.ok``, ``.status``, ``.message``).
    """
    device = torch.device(device or "cpu")
    reference = load_reference()
    results = [run_case(name, reference, device) for name in _select(task)]
    if verbose:
        symbols = {"pass": "PASS", "fail": "FAIL", "todo": "TODO", "error": "ERROR"}
        for r in results:
            line = f"[{symbols[r.status]:>5}] Task {r.task.id} {r.task.name}"
            print(line + (f": {r.message}" if r.message else ""))
        passed = sum(r.ok for r in results)
        print(f"{passed}/{len(results)} checks passed on {device}.")
    return results


def regenerate(path: Path = REFERENCE_PATH) -> dict:
    """Run every case with the solutions (instructor edition) and store the outputs, on the CPU."""
    torch.use_deterministic_algorithms(True)
    reference = {}
    with torch.no_grad():
        for name, (_, fn) in CASES.items():
            reference[name] = {k: v.detach().cpu().clone() for k, v in fn(torch.device("cpu")).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(reference, path)
    return reference


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Check course_lib tasks against the stored reference outputs.")
    parser.add_argument("task", nargs="?", help="task id (1.4) or exercise (1); default: all")
    parser.add_argument("--device", default=None)
    parser.add_argument("--regenerate", action="store_true", help="instructors: rewrite the reference from the solutions")
    args = parser.parse_args()
    if args.regenerate:
        regenerate()
        print(f"wrote {REFERENCE_PATH}")
    else:
        check(args.task, device=args.device)
