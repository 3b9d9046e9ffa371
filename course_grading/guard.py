"""The kernel guard: the functions tests rely on, kept and put back before every test cell.

This file is executed INSIDE the grading kernel (its source is sent by ``execute.GradingExecute``;
the kernel need not be able to import this package), before the notebook's first cell. It keeps the
real functions the tests use, so that a submission that replaces them (``torch.testing.assert_close =
lambda *a, **k: None`` or ``torch.Tensor.any`` at import of course_lib) cannot make a test pass. Before
every graded cell they are put back, and so are the test helpers the notebook's locked cells define
(and any name in the notebook bound to a replaced function); a graded cell after which they were
replaced again scores 0.

Only the standard library at the top level: ``install`` imports torch (and numpy) in the kernel.
"""
from pathlib import Path


def install(key: str, submission_dir: str) -> int:
    """Save the functions tests rely on; register ``restore()`` and ``keep(defined, bound)`` as the
    module ``sys.modules[key]``. Returns how many attributes are watched."""
    import builtins
    import math
    import os
    import sys
    import types

    import torch
    import torch.nn.functional
    import torch.testing
    import torch.testing._comparison
    modules = [math, torch, torch.testing, torch.testing._comparison, torch.nn.functional, torch.linalg]
    try:
        import numpy
        import numpy.testing
        modules += [numpy, numpy.testing]
        try:
            import numpy.testing._private.utils as _npu
            modules.append(_npu)
        except ImportError:
            pass
    except ImportError:
        pass
    classes = [torch.Tensor, torch._C.TensorBase, torch.nn.Module, torch.nn.Linear, torch.nn.LayerNorm,
               torch.nn.MultiheadAttention, torch.nn.Conv2d, torch.nn.GELU, torch.nn.Dropout]
    classes += [v for v in vars(torch.testing._comparison).values() if isinstance(v, type)]
    builtin_names = ["abs", "all", "any", "isinstance", "issubclass", "len", "max", "min", "round", "float",
                     "int", "bool", "sum", "getattr", "hasattr", "type", "zip", "range", "sorted", "list",
                     "dict", "set", "tuple", "str", "repr", "AssertionError", "Exception", "BaseException"]
    MISSING = object()
    saved = []  # (owner, name, value, code)
    for owner in modules + classes:
        for name, value in list(vars(owner).items()):
            saved.append((owner, name, value, getattr(value, "__code__", None)))
    for name in builtin_names:
        value = getattr(builtins, name)
        saved.append((builtins, name, value, getattr(value, "__code__", None)))
    base_names = {c: set(vars(c)) for c in classes}
    watched_names = set()
    for c in classes:
        for b in c.__mro__[1:]:
            watched_names |= set(vars(b))
    fakes = {}  # id(replacement) -> (replacement, original)
    helpers = {}  # test helpers defined by the notebook's locked cells: name -> value
    submission_dir = os.path.realpath(submission_dir)

    def user_ns():
        try:
            return get_ipython().user_ns  # noqa: F821 - IPython's global
        except NameError:
            return vars(sys.modules["__main__"])

    def restore():
        changed = []
        for i, (owner, name, value, code) in enumerate(saved):
            now = vars(owner).get(name, MISSING)
            if now is not value:
                if now is not MISSING and getattr(now, "__wrapped__", None) is value and not from_submission(now):
                    # torch wraps some of its own functions later (torch._dynamo: torch.manual_seed)
                    saved[i] = (owner, name, now, getattr(now, "__code__", None))
                    continue
                changed.append(f"{getattr(owner, '__name__', owner)}.{name}")
                if now is not MISSING:
                    fakes[id(now)] = (now, value)
                setattr(owner, name, value)
            elif code is not None and getattr(value, "__code__", None) is not code:
                changed.append(f"{getattr(owner, '__name__', owner)}.{name}.__code__")
                value.__code__ = code
        for c in classes:  # a new class attribute that shadows an inherited method
            for name in set(vars(c)) - base_names[c]:
                if name in watched_names:
                    changed.append(f"{c.__name__}.{name}")
                    fakes[id(vars(c)[name])] = (vars(c)[name], None)
                    delattr(c, name)
        ns = user_ns()
        for name, value in helpers.items():
            if ns.get(name, MISSING) is not value:
                changed.append(f"{name} (test helper)")
                ns[name] = value
        for name, value in list(ns.items()):  # e.g. _SDPA = F.scaled_dot_product_attention taken while replaced
            if id(value) in fakes and fakes[id(value)][0] is value and fakes[id(value)][1] is not None:
                changed.append(f"{name} (bound to a replaced function)")
                ns[name] = fakes[id(value)][1]
        return changed

    def from_submission(value):
        code = getattr(value, "__code__", None)
        if code is not None:
            return os.path.realpath(code.co_filename).startswith(submission_dir)
        if isinstance(value, type):
            return (value.__module__ or "").startswith("course_lib")
        return id(value) in fakes

    def keep(defined, bound):
        # remember the test helpers a locked cell defined (def/class) or bound (=, import); returns the
        # names whose value came from the submission: a definition replaced by its code, or a replaced function
        ns, bad = user_ns(), []
        for name in list(defined) + list(bound):
            if name not in ns:
                continue
            value = ns[name]
            if (name in defined and from_submission(value)) or (id(value) in fakes and fakes[id(value)][0] is value):
                bad.append(name)
            else:
                helpers[name] = value
        return bad

    mod = types.ModuleType(key)
    mod.restore, mod.keep = restore, keep
    sys.modules[key] = mod
    return len(saved)


def kernel_code(key: str, submission_dir: str) -> str:
    """What the executor runs in the kernel: this module's source, then ``install`` (prints its count)."""
    return (Path(__file__).read_text(encoding="utf-8") + f"\nprint(install({key!r}, {submission_dir!r}))\n"
            "del install, kernel_code, Path\n")
