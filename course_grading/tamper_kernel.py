"""Tamper checks that run INSIDE the grading kernel (sent as source by ``tamper.GuardedExecute``).

Installed before the notebook's first cell, next to the kernel guard (``guard.py``, which restores the
functions tests rely on). Around every graded cell it looks for what the guard does not see:

* IPython machinery changed by the submission: input transformers, AST transformers, event callbacks,
  the shell's run/traceback methods, ``sys.displayhook``, a trace or profile function,
  import hooks. Found before a test, they are removed and the test fails; found after it, it fails.
* tensors that lie: a Tensor subclass or tensor-like with ``__torch_function__`` taking part in a
  test's torch calls (``torch.allclose(liar, expected)``), seen by a ``TorchFunctionMode`` at the
  bottom of the mode stack; the mode removed by the submission is itself a failure.
* the notebook's own test helpers (``torch_attention``, which may use the fused kernel) called from
  the submission's course_lib code, unless the test itself installed that helper into course_lib.
* ``course_lib.forbidden`` (the "written by hand" detector) changed: its code or tables differ from
  the file on disk, or its "allowed" switch is on when a test starts.

These are heuristics inside a process the submission controls: they catch the known routes, not a
determined attacker (docs/SECURITY.md). Only the standard library at the top level.
"""


def install(key: str, submission_dir: str, tasks: list[tuple[str, str]]) -> str:
    """Register ``begin()``/``end()`` as ``sys.modules[key]``; ``tasks``: (module, name) of every task.
    Returns "ok"."""
    import os
    import sys
    import tempfile
    import types

    from torch.overrides import TorchFunctionMode, _get_current_function_mode_stack

    ip = get_ipython()  # noqa: F821 - IPython's global
    lib = os.path.join(os.path.realpath(submission_dir), "course_lib")
    student = {os.path.join(lib, f"{m}.py") for m, _ in tasks}
    forbidden_file = os.path.join(lib, "forbidden.py")
    forbidden_source = open(forbidden_file, encoding="utf-8").read() if os.path.exists(forbidden_file) else None
    cell_prefixes = (os.path.join(tempfile.gettempdir(), "ipykernel_"), "<ipython-input-")
    own_file = sys._getframe().f_code.co_filename  # this code's own cell: the watch mode is not a test helper
    shell_methods = ["run_cell", "run_cell_async", "run_ast_nodes", "run_code", "transform_cell", "transform_ast",
                     "showtraceback", "_showtraceback", "showsyntaxerror", "should_run_async", "ex", "ev",
                     "run_line_magic", "run_cell_magic", "_run_cell", "get_exception_only"]
    lists = {"input_transformers_cleanup": ip.input_transformers_cleanup,
             "input_transformers_post": ip.input_transformers_post, "ast_transformers": ip.ast_transformers}
    baseline = {
        "lists": {name: list(value) for name, value in lists.items()},
        "manager": ip.input_transformer_manager,
        "manager_lists": {n: list(getattr(ip.input_transformer_manager, n, [])) for n in ("cleanup_transforms", "line_transforms", "token_transformers")},
        "events": {name: list(cbs) for name, cbs in ip.events.callbacks.items()},
        "methods": {name: vars(ip).get(name) for name in shell_methods},
        "class_methods": {name: getattr(type(ip), name, None) for name in shell_methods},
        "sys": {name: getattr(sys, name) for name in ("displayhook",)},
        "meta_path": list(sys.meta_path), "path_hooks": list(sys.path_hooks),
    }
    seen: list[str] = []
    pristine: dict = {}

    def from_submission(obj) -> bool:
        """Code of the submission's course_lib files or of the notebook's cells (not a library's)."""
        if callable(getattr(obj, "func", None)):  # functools.partial
            return from_submission(obj.func)
        func = getattr(obj, "__func__", obj)
        code = getattr(func, "__code__", None)
        if code is None:
            call = getattr(type(obj), "__call__", None) if not isinstance(obj, type) else None
            module = getattr(type(obj), "__module__", "") or ""
            if module == "__main__" or module.startswith("course_lib"):
                return True
            code = getattr(call, "__code__", None)
        return code is not None and (code.co_filename in student or code.co_filename.startswith(cell_prefixes))

    def shell_changes() -> list[str]:
        changed = []
        for name, items in baseline["lists"].items():
            now = getattr(ip, name)
            added = [t for t in now if t not in items]
            if now is not lists[name] or any(from_submission(t) for t in added) or any(t not in now for t in items):
                changed.append(f"IPython {name}")
                setattr(ip, name, lists[name])
                lists[name][:] = items + [t for t in added if not from_submission(t)]
        if ip.input_transformer_manager is not baseline["manager"]:
            changed.append("IPython input_transformer_manager")
            ip.input_transformer_manager = baseline["manager"]
        for name, items in baseline["manager_lists"].items():
            if getattr(baseline["manager"], name, items) != items:
                changed.append(f"IPython input_transformer_manager.{name}")
                getattr(baseline["manager"], name)[:] = items
        for name, cbs in ip.events.callbacks.items():  # libraries register some (matplotlib's inline backend)
            bad = [cb for cb in cbs if from_submission(cb)]
            if bad:
                changed.append(f"IPython events[{name!r}]")
                cbs[:] = [cb for cb in cbs if cb not in bad]
        for name, value in baseline["methods"].items():
            if vars(ip).get(name) is not value:
                changed.append(f"IPython shell.{name}")
                if value is None:
                    vars(ip).pop(name, None)
                else:
                    setattr(ip, name, value)
            if getattr(type(ip), name, None) is not baseline["class_methods"][name]:
                changed.append(f"IPython {type(ip).__name__}.{name}")
                setattr(type(ip), name, baseline["class_methods"][name])
        for name, value in baseline["sys"].items():
            if getattr(sys, name) is not value:
                changed.append(f"sys.{name}")
                setattr(sys, name, value)
        for name in ("meta_path", "path_hooks"):
            extra = [h for h in getattr(sys, name) if h not in baseline[name]]
            if extra:
                changed.append(f"sys.{name} ({type(extra[0]).__name__})")
                getattr(sys, name)[:] = [h for h in getattr(sys, name) if h in baseline[name]]
        if sys.gettrace() is not None and sys.gettrace() is not tracer:
            changed.append("sys.settrace")
            sys.settrace(None)
        if sys.getprofile() is not None:
            changed.append("sys.setprofile")
            sys.setprofile(None)
        return changed

    def forbidden_changes() -> list[str]:
        mod = sys.modules.get("course_lib.forbidden")
        if mod is None or not getattr(mod, "__file__", None):
            return []
        if not pristine:  # the file as it was before any of the submission's code ran
            ns: dict = {"__name__": "course_lib._forbidden_pristine"}
            exec(compile(forbidden_source or "", mod.__file__, "exec"), ns)
            pristine.update(ns)
        if os.path.realpath(mod.__file__) != forbidden_file:
            return [f"course_lib.forbidden loaded from {mod.__file__}"]
        changed = []

        def codes(value):
            if isinstance(value, type):
                return {k: getattr(v, "__code__", None) for k, v in vars(value).items() if hasattr(v, "__code__")}
            return getattr(getattr(value, "__wrapped__", value), "__code__", None)

        for name, value in pristine.items():
            now = getattr(mod, name, None)
            if name.startswith("__") or isinstance(value, types.ModuleType):
                continue
            a, b = codes(value), codes(now)
            if isinstance(a, dict):
                same = isinstance(b, dict) and a.keys() == b.keys() and all(
                    (x is None) == (y is None) and (x is None or x.co_code == y.co_code) for x, y in ((a[k], b[k]) for k in a))
            elif a is not None:
                same = b is not None and a.co_code == b.co_code and a.co_consts == b.co_consts
            elif isinstance(value, (dict, list, tuple, set, frozenset, str, int, float, bool)):
                same = value == now
            else:  # modules, thread-local state, typing objects: not tables
                same = True
            if not same:
                changed.append(f"course_lib.forbidden.{name}")
        if getattr(getattr(mod, "_state", None), "allowed", 0):
            changed.append("course_lib.forbidden.allowed() left on")
            mod._state.allowed = 0
        return changed

    def task_objects():
        for module, name in tasks:
            m = sys.modules.get(f"course_lib.{module}")
            if m is not None and name in vars(m):
                yield f"course_lib.{module}.{name}", vars(m)[name]

    def foreign_tasks() -> list[str]:
        """Task names in course_lib bound to something that is not the submission's own code (the
        notebook's reference helper, a partial of it, ...): only a test may swap in a reference."""
        bad = []
        for where, value in task_objects():
            code = getattr(value, "__code__", None)
            own = (code.co_filename in student) if code is not None else (
                isinstance(value, type) and (value.__module__ or "").startswith("course_lib"))
            if not own:
                bad.append(f"{where} is not the submission's own code ({type(value).__name__})")
        return bad

    verdicts: dict = {}

    def swapped(code) -> bool:
        """Is ``code`` that of something a test put in place of a course_lib or torch attribute (a
        reference for another task, a wrapper around a torch function)? Then the submission calls it by
        its ordinary name, not by reaching into the notebook. (Only plain functions are looked at:
        nothing of the submission's runs here.)"""
        if code not in verdicts:
            def codes_of(value):
                if type(value) is types.MethodType:
                    value = value.__func__
                if type(value) in (staticmethod, classmethod):
                    value = value.__func__
                return value.__code__ if type(value) is types.FunctionType else None

            found = False
            names = [n for n in list(sys.modules) if n.startswith("course_lib.")] + [
                "torch", "torch.nn", "torch.nn.functional", "torch.linalg", "torch.testing", "torch.special",
                "torch.fft"] + [n for n in list(sys.modules) if n.startswith("torch.nn.modules.")]
            for name in names:  # where a test swaps something in: course_lib first (cheap), then torch
                m = sys.modules.get(name)
                if type(m) is not types.ModuleType:
                    continue
                for value in list(vars(m).values()):
                    inner = list(vars(value).values()) if issubclass(type(value), type) else []  # no __class__ lookup
                    if any(codes_of(v) is code for v in [value, *inner]):
                        found = True
                        break
                if found:
                    break
            verdicts[code] = found
        return verdicts[code]

    def tracer(frame, event, arg):
        code = frame.f_code
        if event == "call" and code.co_filename.startswith(cell_prefixes) and code.co_filename != own_file:
            caller = frame.f_back
            if caller is not None and caller.f_code.co_filename in student and not swapped(code):
                where = f"{os.path.basename(caller.f_code.co_filename)}:{caller.f_lineno}"
                note = f"course_lib/{where} called the notebook's test helper {code.co_name}()"
                if note not in seen:
                    seen.append(note)
        return None

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func, types_, args=(), kwargs=None):
            for t in types_:
                if not (t.__module__ or "").startswith("torch"):
                    note = f"a tensor that overrides torch functions ({t.__module__}.{t.__qualname__}) took part in {getattr(func, '__name__', func)}"
                    if note not in seen:
                        seen.append(note)
            return func(*args, **(kwargs or {}))

    watch = [None]

    def begin() -> list[str]:
        """Before a graded cell: what was changed since the last check (restored), then watch."""
        seen.clear()
        verdicts.clear()
        problems = shell_changes() + forbidden_changes() + foreign_tasks()
        mode = Watch()
        mode.__enter__()
        watch[0] = mode
        sys.settrace(tracer)
        return problems

    def end() -> list[str]:
        """After a graded cell: what happened during it."""
        sys.settrace(None)
        mode, watch[0] = watch[0], None
        problems = list(seen)
        stack = _get_current_function_mode_stack()
        if mode is not None and mode in stack:
            while _get_current_function_mode_stack() and mode in _get_current_function_mode_stack():
                top = _get_current_function_mode_stack()[-1]
                top.__exit__(None, None, None)
        elif mode is not None:
            problems.append("the grader's torch function mode was removed")
        return problems + shell_changes() + forbidden_changes() + foreign_tasks()

    mod = types.ModuleType(key)
    mod.begin, mod.end = begin, end
    sys.modules[key] = mod
    return "ok"
