"""A static scan of a submission: the process, file, network and introspection APIs its code uses.

The tasks need torch, math and numpy, nothing more. Code that imports ``subprocess``, opens files,
reads ``In[-1]``, patches ``torch.allclose`` or reaches ``torch._C`` is not necessarily cheating, but
an instructor should look at it. ``scan_submission`` reads the student's ``course_lib`` files and the
notebook's code cells (cells identical to the released notebook's are the instructor's and are
skipped) with ``ast`` (nothing is run) and returns one note per finding, e.g.
``course_lib/attention.py:3: imports subprocess (process)``.

``ScanSubmission`` is the nbgrader preprocessor (``Autograde``, before ``Execute``): its summary is a
note of the submission (``preprocessors.add_note``), which ``grades.csv`` shows, starting "REVIEW".
"""
from __future__ import annotations

import ast
import json
import sys
from dataclasses import dataclass
from pathlib import Path

# module (or prefix) -> category
MODULES = {
    "os": "process/file", "sys": "introspection", "subprocess": "process", "multiprocessing": "process",
    "pty": "process", "signal": "process", "resource": "process", "threading": "process", "asyncio": "process",
    "socket": "network", "ssl": "network", "http": "network", "urllib": "network", "requests": "network",
    "ftplib": "network", "smtplib": "network", "telnetlib": "network", "webbrowser": "network",
    "shutil": "file", "pathlib": "file", "io": "file", "glob": "file", "tempfile": "file", "fcntl": "file",
    "mmap": "file", "zipfile": "file", "tarfile": "file", "pickle": "file", "marshal": "file", "sqlite3": "file",
    "ctypes": "native code", "cffi": "native code", "importlib": "import machinery", "pkgutil": "import machinery",
    "runpy": "import machinery", "zipimport": "import machinery", "site": "import machinery",
    "inspect": "introspection", "gc": "introspection", "builtins": "introspection", "ast": "introspection",
    "dis": "introspection", "types": "introspection", "code": "introspection", "codeop": "introspection",
    "traceback": "introspection", "atexit": "introspection", "weakref": "introspection", "__main__": "introspection",
    "IPython": "introspection", "ipykernel": "introspection", "nbformat": "file", "nbgrader": "grader",
    "torch._C": "dispatcher", "torch.ops": "dispatcher", "torch.library": "dispatcher", "torch.overrides": "dispatcher",
    "torch.utils.cpp_extension": "native code", "torch._dynamo": "dispatcher", "torch.testing": "test helpers",
    "torch.utils._python_dispatch": "dispatcher", "unittest.mock": "test helpers",
}
CALLS = {
    "open": "file", "eval": "introspection", "exec": "introspection", "compile": "introspection",
    "__import__": "import machinery", "globals": "introspection", "locals": "introspection", "vars": "introspection",
    "breakpoint": "introspection", "input": "process", "exit": "process", "quit": "process",
    "get_ipython": "introspection", "setattr": "introspection", "delattr": "introspection",
}
ATTRIBUTES = {  # attribute names that matter wherever they appear
    "__globals__": "introspection", "__code__": "introspection", "__builtins__": "introspection",
    "__subclasses__": "introspection", "__closure__": "introspection", "__torch_function__": "dispatcher",
    "__torch_dispatch__": "dispatcher", "_getframe": "introspection", "f_back": "introspection",
    "f_globals": "introspection", "f_locals": "introspection", "settrace": "introspection",
    "setprofile": "introspection", "meta_path": "import machinery", "path_hooks": "import machinery",
    "modules": "introspection", "input_transformers_cleanup": "IPython transformer",
    "input_transformers_post": "IPython transformer", "ast_transformers": "IPython transformer",
    "register_magic_function": "IPython transformer", "events": "IPython transformer",
    "scaled_dot_product_attention": "fused attention", "_scaled_dot_product_attention_math": "fused attention",
    "_scaled_dot_product_flash_attention": "fused attention", "_scaled_dot_product_efficient_attention": "fused attention",
    "multi_head_attention_forward": "fused attention", "_native_multi_head_attention": "fused attention",
}
NAMES = {"In": "IPython history", "Out": "IPython history", "_ih": "IPython history", "_oh": "IPython history",
         "_i": "IPython history", "_ii": "IPython history", "_iii": "IPython history", "__builtins__": "introspection"}
# The fused path (fused=True) is part of the course: F.scaled_dot_product_attention is fine, other routes to
# the kernels (torch._C._nn, torch.ops.aten) are noted; ``attention.scaled_dot_product_attention`` is the task.
ALLOWED_OWNERS = {"F", "torch.nn.functional", "nn.functional"}
TORCH_NAMES = {"torch", "F", "nn", "aten", "_C", "_nn", "ops"}


@dataclass(frozen=True)
class Finding:
    where: str  # "course_lib/attention.py:12" or "01_attention.ipynb cell 7:3"
    what: str  # "imports subprocess"
    category: str  # "process"

    def __str__(self) -> str:
        return f"{self.where}: {self.what} ({self.category})"


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def _module_category(name: str) -> str | None:
    for prefix in sorted(MODULES, key=len, reverse=True):
        if name == prefix or name.startswith(prefix + "."):
            return MODULES[prefix]
    return None


def scan_source(source: str, where: str) -> list[Finding]:
    """The findings in one file or cell (a file that does not parse is itself a finding)."""
    lines = [ln if not ln.lstrip().startswith(("%", "!")) else "" for ln in source.splitlines()]
    magics = [i + 1 for i, ln in enumerate(source.splitlines()) if ln.lstrip().startswith(("!", "%"))]
    found = [Finding(f"{where}:{i}", "shell command or magic", "process") for i in magics]
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError as e:
        return found + [Finding(f"{where}:{e.lineno}", "does not parse", "syntax")]
    for node in ast.walk(tree):
        at = f"{where}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [Finding(at, f"imports {a.name}", c) for a in node.names if (c := _module_category(a.name))]
        elif isinstance(node, ast.ImportFrom) and node.module:
            c = _module_category(node.module)
            if c is None:  # from torch import _C / from torch.nn.functional import scaled_dot_product_attention
                c = next((_module_category(f"{node.module}.{a.name}") or ATTRIBUTES.get(a.name)
                          for a in node.names if _module_category(f"{node.module}.{a.name}") or a.name in ATTRIBUTES), None)
            if c:
                found.append(Finding(at, f"imports from {node.module}: {', '.join(a.name for a in node.names)}", c))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in CALLS:
            found.append(Finding(at, f"calls {node.func.id}()", CALLS[node.func.id]))
        elif isinstance(node, ast.Attribute):
            dotted = _dotted(node) or f"….{node.attr}"
            owner = dotted.rsplit(".", 1)[0]
            fused = ATTRIBUTES.get(node.attr) == "fused attention"
            if fused and (owner in ALLOWED_OWNERS or owner.split(".")[0] not in TORCH_NAMES):
                pass  # the fused path of the course (F.scaled_dot_product_attention), or a task of the same name
            elif node.attr in ATTRIBUTES:
                found.append(Finding(at, f"uses {dotted}", ATTRIBUTES[node.attr]))
            elif dotted.startswith(("torch._C", "torch.ops", "torch.library")) and isinstance(node.value, ast.Name):
                found.append(Finding(at, f"uses {dotted}", "dispatcher"))
        elif isinstance(node, ast.Name) and node.id in NAMES:
            found.append(Finding(at, f"reads {node.id}", NAMES[node.id]))
        elif isinstance(node, ast.ClassDef):
            bases = [_dotted(b) or "" for b in node.bases]
            if any(b.endswith("Tensor") for b in bases):
                found.append(Finding(at, f"subclasses {', '.join(bases)}", "tensor subclass"))
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):  # torch.allclose = ..., F.x = ...
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                dotted = _dotted(t) if isinstance(t, ast.Attribute) else None
                if dotted and dotted.split(".")[0] in ("torch", "F", "nn", "np", "numpy", "math", "builtins", "sys", "os"):
                    found.append(Finding(at, f"assigns {dotted}", "monkeypatching"))
    return found


def released_sources(released: Path | None) -> tuple[set[str], set[str]]:
    """The released notebook's code cells and the grade ids of its locked or graded cells: the
    instructor's own code, not scanned (nbgrader restores those cells before autograding)."""
    if released is None or not released.exists():
        return set(), set()
    nb = json.loads(released.read_text(encoding="utf-8"))
    cells = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    ids = {m["grade_id"] for c in cells if (m := c.get("metadata", {}).get("nbgrader", {})).get("grade_id")
           and (m.get("locked") or m.get("grade")) and not m.get("solution")}
    return {"".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in cells}, ids


def scan_submission(folder: Path, modules: list[str] | None = None, released: Path | None = None) -> list[Finding]:
    """Findings in ``folder``'s course_lib files (``modules``, default all) and notebooks."""
    folder = Path(folder)
    found: list[Finding] = []
    lib = folder / "course_lib"
    for path in sorted(lib.glob("*.py")) if lib.is_dir() else []:
        if modules is None or path.name in modules:
            found += scan_source(path.read_text(encoding="utf-8", errors="replace"), f"course_lib/{path.name}")
    skip, instructor = released_sources(released)
    for nb_path in sorted(folder.glob("*.ipynb")):
        try:
            nb = json.loads(nb_path.read_text(encoding="utf-8"))
        except ValueError:
            found.append(Finding(nb_path.name, "not a notebook", "syntax"))
            continue
        for i, cell in enumerate(nb.get("cells", [])):
            source = "".join(cell["source"]) if isinstance(cell.get("source"), list) else cell.get("source", "")
            if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") in instructor:
                continue
            if cell.get("cell_type") == "code" and source not in skip:
                found += scan_source(source, f"{nb_path.name} cell {i}")
    return found


def _student_modules() -> list[str] | None:
    """The course_lib files students edit (None: every file), from ``course_lib/tasks.py``."""
    try:
        from .course import student_modules
    except ImportError:
        return None
    return list(student_modules())


def summary(found: list[Finding], limit: int = 8) -> str:
    """One line for grades.csv: the categories, then the first findings."""
    if not found:
        return ""
    cats = sorted({f.category for f in found})
    head = "; ".join(str(f) for f in found[:limit])
    more = f"; and {len(found) - limit} more" if len(found) > limit else ""
    return f"static scan, for review ({', '.join(cats)}): {head}{more}"


try:
    from nbgrader.preprocessors import NbGraderPreprocessor
    from traitlets import Unicode

    class ScanSubmission(NbGraderPreprocessor):
        """nbgrader preprocessor: the static scan's notes in ``nb.metadata['course_grading']['review']``."""

        released = Unicode("", help="the released notebook (its cells are not scanned); '' scans every cell").tag(config=True)

        def preprocess(self, nb, resources):
            folder = Path(resources.get("metadata", {}).get("path") or ".")
            released = Path(self.released) if self.released else self._released(resources)
            found = scan_submission(folder, _student_modules(), released)
            if found:
                from .preprocessors import add_note

                add_note(nb, "REVIEW " + summary(found))
                for finding in found[:20]:
                    self.log.warning("static scan, for review: %s", finding)
            return nb, resources

        def _released(self, resources) -> Path | None:
            """``release/<assignment>/<notebook>.ipynb`` of the course directory nbgrader is grading."""
            from nbgrader.coursedir import CourseDirectory

            info = resources.get("nbgrader", {})
            if not info.get("assignment") or not info.get("notebook"):
                return None
            coursedir = CourseDirectory(config=self.config)
            return Path(coursedir.format_path(coursedir.release_directory, ".", info["assignment"])) / f"{info['notebook']}.ipynb"
except ImportError:  # nbgrader not installed: the scan still works as a library and a command
    pass


if __name__ == "__main__":
    for finding in scan_submission(Path(sys.argv[1]), released=Path(sys.argv[2]) if len(sys.argv) > 2 else None):
        print(finding)
