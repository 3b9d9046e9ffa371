"""Student self-check: ``check("1.4")``, ``check(1)`` or ``check()`` from any notebook.

Every case of a task runs (small fixed inputs, printed with their shapes), and its outputs are
compared with reference outputs stored as data in ``course_lib/checks/reference.pt`` (no
solution code ships with the course). The check also enforces what the graded tests enforce:
the properties a task must have (rows of attention sum to 1, the causal mask hides the future,
dtype, device, Python return types, dropout only in train() mode, ...) and "written by hand"
(``course_lib.forbidden``: no route into PyTorch's fused attention or LayerNorm). A failure says
why: the shape expected and received, the largest error and where, and, when an output matches
the stored output of a common mistake (``checks/mistakes.pt``), the likely cause by name.
Everything runs in about a second on a CPU.

Instructors regenerate the reference outputs from the solutions with
``python -m course_lib.selfcheck --regenerate`` (the mistakes' outputs: ``tests/mistakes/build.py``).
"""
from __future__ import annotations

import argparse
import contextlib
import re
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from course_lib.checks.cases import CASES, Case, PropertyFailure
from course_lib.forbidden import ForbiddenRoute, forbid
from course_lib.tasks import TASKS, Task, get_task

CHECKS = Path(__file__).parent / "checks"
REFERENCE_PATH = CHECKS / "reference.pt"
MISTAKES_PATH = CHECKS / "mistakes.pt"
__all__ = ["CASES", "PropertyFailure", "Result", "check", "load_reference", "regenerate", "run_outputs"]


@dataclass
class Result:
    task: Task
    case: str
    status: str  # "pass", "fail", "todo" (NotImplementedError) or "error"
    message: str = ""
    inputs: str = ""  # what the case ran, with the shapes
    diagnosis: str = ""  # the likely cause, when an output matches a known mistake

    @property
    def ok(self) -> bool:
        return self.status == "pass"


# --- comparing --------------------------------------------------------------------------------

def tolerances(device: torch.device) -> tuple[float, float]:
    """(rtol, atol): tight on the CPU; loose enough on GPUs for TF32 convolutions and other kernels."""
    return (1e-4, 1e-5) if device.type == "cpu" else (5e-3, 5e-3)


def _close(got: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float) -> bool:
    got, expected = got.detach().cpu().double(), expected.double()
    return got.shape == expected.shape and torch.allclose(got, expected, rtol=rtol, atol=atol, equal_nan=True)


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


def _diagnose(case: str, key: str, got, mistakes: dict, rtol: float, atol: float) -> str:
    """The label of the stored mistake whose output ``got`` matches, if any."""
    if not isinstance(got, torch.Tensor):
        return ""
    for label, output in mistakes.get(case, {}).get(key, []):
        if _close(got, output, rtol, atol):
            return label
    return ""


# --- running ----------------------------------------------------------------------------------

def run_outputs(c: Case, device: torch.device) -> tuple[dict, BaseException | None]:
    """Run one case: (the outputs it filled, the exception that stopped it or None)."""
    outputs: dict = {}
    guard = forbid(f"{c.task}", *c.hand_written) if c.hand_written else contextlib.nullcontext()
    try:
        with torch.no_grad(), guard:
            c.fn(device, outputs)
    except Exception as e:  # noqa: BLE001 - a student's bug: keep it, keep checking the rest
        return outputs, e
    return outputs, None


def run_case(name: str, reference: dict, device: torch.device, mistakes: dict | None = None) -> Result:
    c = CASES[name]
    task = get_task(c.task)
    outputs, error = run_outputs(c, device)
    if isinstance(error, NotImplementedError):
        waits = re.search(r"Task (\d+\.\d+) \(([^)]*)\)", str(error))
        if waits and waits.group(1) != task.id:
            return Result(task, name, "todo", f"needs Task {waits.group(1)} ({waits.group(2)}) first", c.inputs)
        return Result(task, name, "todo", "not implemented yet", c.inputs)
    rtol, atol = tolerances(device)
    problems, diagnoses = [], []
    for key, value in outputs.items():
        if key in reference[name] and (msg := _compare(key, value, reference[name][key], rtol, atol)):
            problems.append(msg)
            if label := _diagnose(name, key, value, mistakes or {}, rtol, atol):
                diagnoses.append(label)
    if isinstance(error, (PropertyFailure, ForbiddenRoute)):
        problems.append(str(error))
    elif error is not None:
        frame = traceback.extract_tb(error.__traceback__)[-1]
        crash = f"{type(error).__name__}: {error} (at {Path(frame.filename).name}:{frame.lineno})"
        if not problems:
            return Result(task, name, "error", crash, c.inputs)
        problems.append(crash)
    elif missing := [k for k in reference[name] if k not in outputs]:
        problems.append(f"no output {missing[0]!r}")
    if not problems:
        return Result(task, name, "pass", "", c.inputs)
    diagnosis = "; ".join(dict.fromkeys(diagnoses))
    return Result(task, name, "fail", "; ".join(problems), c.inputs, diagnosis)


def load_reference() -> dict:
    return torch.load(REFERENCE_PATH, map_location="cpu", weights_only=True)


def load_mistakes() -> dict:
    """Stored outputs of common mistakes: {case: {output: [(likely cause, tensor), ...]}}."""
    if not MISTAKES_PATH.is_file():
        return {}
    return torch.load(MISTAKES_PATH, map_location="cpu", weights_only=True)


def _select(task: str | int | None) -> list[str]:
    if task is None:
        return list(CASES)
    if isinstance(task, int) or (isinstance(task, str) and task.isdigit()):
        names = [n for n, c in CASES.items() if get_task(c.task).exercise == int(task)]
        if not names:
            raise ValueError(f"no exercise {task}; exercises are {sorted({t.exercise for t in TASKS})}")
        return names
    tid = get_task(str(task)).id
    return [n for n, c in CASES.items() if c.task == tid]


def _report(results: list[Result], device: torch.device) -> None:
    symbols = {"pass": "PASS", "fail": "FAIL", "todo": "TODO", "error": "ERROR"}
    by_task: dict[str, list[Result]] = {}
    for r in results:
        by_task.setdefault(r.task.id, []).append(r)
    for rs in by_task.values():
        t = rs[0].task
        if all(r.status == "todo" for r in rs) and len({r.message for r in rs}) == 1:
            print(f"[ TODO] Task {t.id} {t.name}: {rs[0].message}")
            continue
        for r in rs:
            print(f"[{symbols[r.status]:>5}] Task {t.id} {t.name} · {r.inputs}" + (f"\n        {r.message}" if r.message else ""))
            if r.diagnosis:
                print(f"        likely cause: {r.diagnosis}")
    tasks_ok = sum(all(r.ok for r in rs) for rs in by_task.values())
    print(f"{tasks_ok}/{len(by_task)} checks passed on {device} ({sum(r.ok for r in results)}/{len(results)} cases).")


def check(task: str | int | None = None, device: str | torch.device | None = None, verbose: bool = True) -> list[Result]:
    """Check one task (``"1.4"``), one exercise (``1``) or all (None) and print a report.

    Args:
        task: task id, exercise number or None for everything.
        device: where to run (default: the CPU, which is fast for these sizes).
        verbose: print the report.

    Returns:
        one ``Result`` per case (``.ok``, ``.status``, ``.message``, ``.inputs``, ``.diagnosis``).
    """
    device = torch.device(device or "cpu")
    reference, mistakes = load_reference(), load_mistakes()
    results = [run_case(name, reference, device, mistakes) for name in _select(task)]
    if verbose:
        _report(results, device)
    return results


def regenerate(path: Path = REFERENCE_PATH) -> dict:
    """Run every case with the solutions (instructor edition) and store the outputs, on the CPU."""
    torch.use_deterministic_algorithms(True)
    reference = {}
    for name, c in CASES.items():
        outputs, error = run_outputs(c, torch.device("cpu"))
        if error is not None:
            raise RuntimeError(f"case {name} fails with the solutions") from error
        reference[name] = {k: v.detach().cpu().clone() for k, v in outputs.items()}
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
