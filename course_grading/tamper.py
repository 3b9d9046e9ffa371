"""``GuardedExecute``: ``GradingExecute`` with the tamper checks of ``tamper_kernel`` around every test,
and the kernel manager that ``nbgrader_config.py`` names.

nbgrader's ``Execute.__init__`` passes ``kernel_manager_class=AsyncKernelManager`` as a keyword, which
beats configuration: ``c.Execute.kernel_manager_class`` alone is silently ignored. This class reads that
trait from the configuration again, so the sandbox (``course_grading.sandbox.SandboxedKernelManager``)
is what runs every submission.

A graded cell that the submission tampered with (``tamper_kernel`` says how) gets an error output
``GraderIntegrityError`` naming what was found, so it scores 0, and an event starting "REVIEW" says
what for the instructor (in the notes of ``grades.csv``; nbgrader's log for plain ``nbgrader autograde``).
"""
from __future__ import annotations

from pathlib import Path

from nbgrader import utils as nbutils

from . import course
from .execute import GradingExecute


def kernel_code(key: str, submission_dir: str) -> str:
    """The source run in the kernel: ``tamper_kernel.py``, then ``install`` (prints "ok")."""
    tasks = [(t.module, t.name) for t in course.tasks()]
    source = (Path(__file__).with_name("tamper_kernel.py")).read_text(encoding="utf-8")
    return source + f"\nprint(install({key!r}, {submission_dir!r}, {tasks!r}))\ndel install\n"


class GuardedExecute(GradingExecute):
    """``GradingExecute`` + tamper checks around graded cells + the configured kernel manager."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # nbgrader's Execute forces AsyncKernelManager as a keyword argument: take the configured one back
        self._load_config(self.config, traits={"kernel_manager_class": self.traits()["kernel_manager_class"]})

    def preprocess(self, nb, resources=None, km=None):
        self._tamper_key = f"_course_tamper_{id(self)}"
        self._tampered = False
        return super().preprocess(nb, resources, km)

    def _install_guard(self) -> None:
        super()._install_guard()
        try:
            self._tampered = self._silent(kernel_code(self._tamper_key, self.run_path)).strip().endswith("ok")
        except Exception as e:  # noqa: BLE001
            self._tampered = False
            self.events.append(f"could not install the tamper checks: {e}")

    def _tamper_call(self, call: str) -> list[str]:
        out = self._silent(f"import sys as _s\nprint('\\x1e'.join(_s.modules[{self._tamper_key!r}].{call}()))\ndel _s")
        return [x for x in out.strip().split("\x1e") if x]

    def preprocess_cell(self, cell, resources, index):
        graded = cell.cell_type == "code" and nbutils.is_grade(cell)
        if not graded or getattr(self, "_dead", False):
            return super().preprocess_cell(cell, resources, index)
        if self.guard and not self._guarded:
            self._install_guard()
        name = cell.metadata.get("nbgrader", {}).get("grade_id", f"cell {index}")
        before = self._checked("begin", name)
        cell, resources = super().preprocess_cell(cell, resources, index)
        after = self._checked("end", name)
        found = list(dict.fromkeys(before + after))
        if found:
            cell.outputs.append(self._error_output(
                "GraderIntegrityError", f"the submission tampered with the grading ({'; '.join(found[:5])}); "
                "this test counts as failed and your submission is flagged for review"))
            note = f"REVIEW {name}: tampering: {'; '.join(found[:5])}"
            self.events.append(note)
        return cell, resources

    def _checked(self, call: str, name: str) -> list[str]:
        if not self._tampered:
            return []
        try:
            return self._tamper_call(call)
        except Exception as e:  # noqa: BLE001 - a kernel that dies or hangs here is handled by the cell itself
            self.events.append(f"{name}: tamper check {call} failed ({type(e).__name__})")
            return [] if call == "begin" else [f"the tamper check could not run after the test ({type(e).__name__})"]
