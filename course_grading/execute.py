"""``GradingExecute``: nbgrader's ``Execute`` preprocessor, made safe for a class of untrusted submissions.

Configured by name in ``nbgrader_config.py`` (``Autograde.autograde_preprocessors``), so plain
``nbgrader autograde``, formgrader and ``make grade`` all run it. The kernel manager stays nbclient's
``kernel_manager_class`` trait (``c.Execute.kernel_manager_class``: the sandbox sets it).
"""
from __future__ import annotations

import ast
import os
import time
from queue import Empty

import nbformat
from jupyter_core.utils import ensure_async
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbclient.util import run_sync
from nbgrader import utils as nbutils
from nbgrader.preprocessors import Execute
from traitlets import Bool, Dict, Integer

from . import guard as kernel_guard

# The kernel's environment while grading: quiet, CPU only, one thread, no progress bars.
KERNEL_ENV = {"PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1", "MPLBACKEND": "Agg", "CUDA_VISIBLE_DEVICES": "",
              "COURSE_DEVICE": "cpu", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
EVENTS_KEY = "course_grading"  # notebook metadata: what happened while grading (read by the worker and report)


def defined_names(source: str) -> tuple[list[str], list[str]]:
    """Top-level names of a cell: (defined by def/class, bound by assignments and imports)."""

    lines = [ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:
        return [], []
    defined, bound = [], []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                bound.extend(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.extend((a.asname or a.name).split(".")[0] for a in node.names if a.name != "*")
    return list(dict.fromkeys(defined)), list(dict.fromkeys(bound))


class GradingExecute(Execute):
    """nbgrader's Execute, made safe for a class of untrusted submissions.

    * the kernel starts in the submission's folder, so the notebook's set-up
      cell and ``import course_lib`` find the submission's course_lib;
    * a dead kernel (segfault, ``os._exit``, out of memory) or one that ignores the timeout
      interrupt is restarted and the notebook's earlier ungraded cells are replayed: the cell
      scores 0, later cells are graded as usual;
    * the functions tests use are restored before each graded cell (``guard``);
    * in graded cells, stderr (warnings, progress bars) is not a failure and a number as the
      last value is not partial credit, unless asked for.
    """

    guard = Bool(True, help="restore the functions tests rely on before every graded cell").tag(config=True)
    max_restarts = Integer(3, help="kernel restarts per notebook after a crash or a stuck cell").tag(config=True)
    stderr_fails = Bool(False, help="nbgrader's default: any stderr output in a test cell scores 0").tag(config=True)
    partial_credit = Bool(False, help="nbgrader's default: a number as a test cell's last value is partial credit").tag(config=True)
    kernel_env = Dict(KERNEL_ENV, help="environment variables set for the kernel (on top of the grader's)").tag(config=True)

    def preprocess(self, nb, resources=None, km=None):
        self.events: list[str] = []
        self._restarts = 0
        self._dead = False
        self._guard_key = f"_course_guard_{os.getpid()}_{int(time.time() * 1e6) % 10**9}"
        self._guarded = False
        self._replay: list = []
        resources = resources if resources is not None else {}
        self.run_path = os.path.abspath(resources.get("metadata", {}).get("path") or os.getcwd())
        try:
            return super().preprocess(nb, resources, km)
        finally:
            nb.metadata.setdefault(EVENTS_KEY, {})["events"] = list(self.events)
            for event in self.events:
                self.log.warning("%s", event)

    async def async_start_new_kernel(self, **kwargs):
        """The kernel starts in the notebook's folder with it first on ``PYTHONPATH`` (the submission's
        course_lib, never an installed one) and ``kernel_env`` set."""
        env = dict(kwargs.pop("env", None) or os.environ)
        env.update(self.kernel_env)
        env["PYTHONPATH"] = os.pathsep.join([self.run_path] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        for var in ("JPY_SESSION_NAME", "COURSE_SUBMISSION_RUN"):
            env.pop(var, None)
        return await super().async_start_new_kernel(env=env, **kwargs)

    # -- helpers -----------------------------------------------------------------------
    async def _async_silent(self, code: str, timeout: float | None = None) -> tuple[str, str | None]:
        """Run ``code`` in the kernel outside the notebook (no cell, no history).

        Returns (stdout, "ErrorName: message" or None). Raises DeadKernelError when the
        kernel dies, TimeoutError when it does not finish within ``timeout`` seconds.
        """
        kc = self.kc
        timeout = timeout or self.timeout or 60
        msg_id = kc.execute(code, silent=False, store_history=False, allow_stdin=False, stop_on_error=False)
        deadline = time.monotonic() + timeout
        text, error = [], None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no answer from the kernel within {timeout:.0f} s")
            try:
                msg = await ensure_async(kc.iopub_channel.get_msg(timeout=min(remaining, 1.0)))
            except Empty:
                if not await ensure_async(kc.is_alive()):
                    raise DeadKernelError("Kernel died") from None
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream" and content.get("name") == "stdout":
                text.append(content["text"])
            elif kind == "error":
                error = f"{content['ename']}: {content['evalue']}"
            elif kind == "status" and content["execution_state"] == "idle":
                break
        while True:  # the shell reply, so that it is not mistaken for the next cell's
            try:
                msg = await ensure_async(kc.shell_channel.get_msg(timeout=2))
            except Empty:
                break
            if msg["parent_header"].get("msg_id") == msg_id:
                break
        return "".join(text), error

    def _silent(self, code: str, timeout: float | None = None) -> str:
        """``_async_silent`` for code that must succeed: its stdout (raises RuntimeError on an error)."""
        text, error = run_sync(self._async_silent)(code, timeout)
        if error:
            raise RuntimeError(error)
        return text

    def _install_guard(self) -> None:
        if not self.guard:
            return
        try:
            self._silent(kernel_guard.kernel_code(self._guard_key, self.run_path))
            self._guarded = True
        except Exception as e:  # noqa: BLE001
            self.events.append(f"could not install the test guard: {e}")

    def _guard_call(self, call: str) -> list[str]:
        """``restore()`` or ``keep([...])`` of the guard in the kernel: a list of names."""
        if not self._guarded:
            return []
        out = self._silent(f"import sys as _s\nprint('\\x1e'.join(_s.modules[{self._guard_key!r}].{call}))\ndel _s")
        return [x for x in out.strip().split("\x1e") if x]

    def _restore(self) -> list[str]:
        return self._guard_call("restore()")

    def _keep_helpers(self, cell, name: str) -> None:
        """After a helper cell: remember its definitions; if the submission replaced any of them
        (or a function they captured) while the cell ran, restore and run the cell again."""
        defined, bound = defined_names(cell.source)
        keep = f"keep({defined!r}, {bound!r})"
        try:
            replaced = self._restore()
            bad = self._guard_call(keep)
            if replaced or bad:
                self._restore()
                run_sync(self._async_silent)(cell.source)
                bad = self._guard_call(keep)
                self.events.append(f"{name}: the submission replaced {', '.join((replaced + bad)[:5])} while the "
                                   "test helpers were defined; restored and defined again")
                if bad:
                    self.events.append(f"{name}: could not restore {', '.join(bad[:5])}")
        except Exception as e:  # noqa: BLE001
            self.events.append(f"{name}: guard failed ({e})")

    def _error_output(self, ename: str, evalue: str):
        return nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])

    def _kernel_responsive(self) -> bool:
        try:
            run_sync(self._async_silent)("pass", 10)
            return True
        except Exception:  # noqa: BLE001 - dead, or still busy after the interrupt
            return False

    def _restart(self, why: str) -> bool:
        """Restart the kernel, re-install the guard and replay the earlier ungraded cells."""
        if self._restarts >= self.max_restarts:
            self._dead = True
            self.events.append(f"{why}; no more restarts, the remaining cells are not run")
            return False
        self._restarts += 1
        try:
            try:
                self.kc.stop_channels()
            except Exception:  # noqa: BLE001
                pass
            run_sync(self.km.restart_kernel)(now=True)
            self.start_new_kernel_client()
            self._install_guard()
            for cell in self._replay:
                run_sync(self._async_silent)(cell.source)  # its errors do not matter here
        except Exception as e:  # noqa: BLE001 - the kernel dies again while replaying
            self._dead = True
            self.events.append(f"{why}; the kernel could not be restarted ({type(e).__name__}), the remaining cells are not run")
            return False
        self.events.append(f"{why}; kernel restarted and the earlier cells replayed")
        return True

    # -- the cell loop ---------------------------------------------------------------------
    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code":
            return cell, resources
        graded = nbutils.is_grade(cell)
        # a locked cell of the instructor's that is not a test: the test helpers
        helpers = nbutils.is_locked(cell) and not graded and not nbutils.is_solution(cell)
        name = cell.metadata.get("nbgrader", {}).get("grade_id", f"cell {index}")
        if self._dead:
            cell.outputs = [self._error_output("KernelDied", "not run: the kernel died earlier and could not be restarted")]
            return cell, resources
        if self.guard and not self._guarded:
            self._install_guard()
        if (graded or helpers) and self._guarded:
            try:
                before = self._restore()
                if before:
                    self.events.append(f"before {name}: restored {', '.join(before[:5])} (replaced by the submission)")
            except Exception as e:  # noqa: BLE001
                self.events.append(f"before {name}: guard failed ({e})")
        try:
            cell, resources = super().preprocess_cell(cell, resources, index)
        except DeadKernelError:
            cell.outputs.append(self._error_output(
                "KernelDied", "the kernel died while running this cell (a crash: segfault, os._exit, "
                "running out of memory); this cell scores 0"))
            self._restart(f"kernel died in {name}")
            return cell, resources
        except CellTimeoutError:  # timed out, and the kernel did not even answer the interrupt
            cell.outputs.append(self._error_output(
                "CellTimeoutError", f"the cell ran longer than {self.timeout} s and ignored the interrupt; "
                "this cell scores 0"))
            self._restart(f"{name} timed out and the kernel did not respond to the interrupt")
            return cell, resources
        timed_out = any(o.output_type == "error" and o.get("ename") == "CellTimeoutError" for o in cell.outputs)
        if timed_out and not self._kernel_responsive():
            self._restart(f"{name} timed out and the kernel did not respond to the interrupt")
            return cell, resources
        if helpers and self._guarded:
            self._keep_helpers(cell, name)
        if graded and self._guarded:
            try:
                after = self._restore()
            except Exception as e:  # noqa: BLE001
                after = [f"(guard unavailable: {e})"]
            if after:
                cell.outputs.append(self._error_output(
                    "GraderIntegrityError",
                    f"the submission replaced {', '.join(after[:5])} while this test ran; tests must run "
                    "against the real functions, so this cell scores 0"))
                self.events.append(f"{name}: replaced {', '.join(after[:5])} during the test (scored 0)")
        if graded:
            for out in cell.outputs:
                if not self.stderr_fails and out.output_type == "stream" and out.name == "stderr":
                    out.name = "stdout"  # shown in the feedback, not a failure
                if not self.partial_credit and out.output_type == "execute_result":
                    out.output_type = "display_data"  # shown, not read as partial credit
                    out.pop("execution_count", None)
        elif not timed_out:
            self._replay.append(cell)
        return cell, resources
