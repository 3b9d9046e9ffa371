"""Build the student edition from the instructor sources: ``make release``.

One source of truth: every solution is written once, between
``### BEGIN SOLUTION`` / ``### END SOLUTION`` markers, in ``course_lib/`` and in
the instructor notebooks in ``solutions/``. This script

1. regenerates ``exercises/`` from ``solutions/`` (nbgrader's generate_assignment,
   see ``tools/assignments.py``),
2. writes ``dist/student/``: the course as a student clones it (README, Makefile
   and .gitignore of its own, lectures, exercises, course_lib with every solution replaced by
   ``raise not_implemented("X.Y")``), and
3. fails if any solution or hidden-test text is left anywhere in it.

Usage::

    python tools/release.py [--out dist/student] [--skip-exercises]
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
HIDDEN_BEGIN, HIDDEN_END = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
TASK_LINE = re.compile(r'^\s*(?:[rRbBuU]?"""|[rRbBuU]?\'\'\')?Task (\d+\.\d+):')
# What the student edition holds, besides the generated course_lib: (source, destination).
COPIED = [
    ("lectures", "lectures"),
    ("exercises", "exercises"),
    ("course.toml", "course.toml"),
    ("pyproject.toml", "pyproject.toml"),
    ("docs/STUDENT_README.md", "README.md"),
    ("docs/student/Makefile", "Makefile"),  # `make lab` / `make test` of the student edition
    ("docs/student/gitignore", ".gitignore"),
]
# Lines too generic to give anything away: unpacking a shape, a None test, punctuation only.
GENERIC = re.compile(r"^([\w, ]+ = [\w.]+\.shape(\[[-:\d]+\])?|(el)?if [\w.]+ is (not )?None:|[\W_]*)$")
TEXT_SUFFIXES = {".py", ".ipynb", ".md", ".txt", ".toml", ".cfg", ".json", ".html", ".yml", ".yaml"}


class ReleaseError(RuntimeError):
    pass


def stub(task: str, solution: str, indent: str) -> str:
    """What a solution block becomes in the student edition."""
    return f'{indent}raise not_implemented("{task}")\n'


def strip_solutions(source: str, filename: str = "<source>", body: Callable[[str, str, str], str] = stub) -> str:
    """Replace each solution block by ``raise not_implemented("X.Y")``.

    X.Y is the task whose docstring (a line starting ``Task X.Y:``) comes last
    before the block, so a method's block belongs to its class's task. ``body(task, solution,
    indent)`` says what replaces a block (tests use it to build partly solved variants).
    """
    out: list[str] = []
    solution: list[str] = []
    task, inside, indent = None, False, ""
    for number, line in enumerate(source.splitlines(keepends=True), start=1):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ReleaseError(f"{filename}:{number}: nested {BEGIN}")
            if task is None:
                raise ReleaseError(f"{filename}:{number}: solution block outside any 'Task X.Y:' docstring")
            indent = line[: len(line) - len(line.lstrip())]
            inside, solution = True, []
        elif stripped == END:
            if not inside:
                raise ReleaseError(f"{filename}:{number}: {END} without {BEGIN}")
            out.append(body(task, "".join(solution), indent))
            inside = False
        elif inside:
            solution.append(line)
        else:
            if match := TASK_LINE.match(line):
                task = match.group(1)
            out.append(line)
    if inside:
        raise ReleaseError(f"{filename}: {BEGIN} is never closed")
    return "".join(out)


def _blocks(text: str, begin: str, end: str) -> list[str]:
    """Lines strictly between the markers, each stripped."""
    lines, inside = [], False
    for line in text.splitlines():
        s = line.strip()
        if s == begin:
            inside = True
        elif s == end:
            inside = False
        elif inside and s:
            lines.append(s)
    return lines


def _code_sources(path: Path) -> list[str]:
    if path.suffix == ".ipynb":
        nb = json.loads(path.read_text(encoding="utf-8"))
        return [_join(c["source"]) for c in nb["cells"]]
    return [path.read_text(encoding="utf-8")]


def secret_lines(root: Path = ROOT) -> set[str]:
    """Solution and hidden-test lines of the instructor sources that could give an answer away.

    Lines that also appear outside any solution block (an import, ``return x``)
    and lines that are only a comment or punctuation are not secrets.
    """
    secrets, public = set(), set()
    sources = sorted((root / "course_lib").rglob("*.py")) + sorted((root / "solutions").glob("*.ipynb"))
    for path in sources:
        for text in _code_sources(path):
            secrets.update(_blocks(text, BEGIN, END))
            secrets.update(_blocks(text, HIDDEN_BEGIN, HIDDEN_END))
            public.update(s.strip() for s in strip_solutions_loose(text).splitlines())
    return {s for s in secrets - public if len(s) >= 12 and not s.startswith("#") and not GENERIC.match(s)}


def strip_solutions_loose(text: str) -> str:
    """The text without solution or hidden-test blocks (no task bookkeeping)."""
    out, inside = [], False
    for line in text.splitlines():
        s = line.strip()
        if s in (BEGIN, HIDDEN_BEGIN):
            inside = True
        elif s in (END, HIDDEN_END):
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out)


def _notebook_text(path: Path) -> str:
    """Everything a student could read in a notebook: sources, outputs and metadata, as plain lines."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    parts = [json.dumps(nb.get("metadata", {}))]
    for cell in nb.get("cells", []):
        parts.append(_join(cell.get("source", "")))
        parts.append(json.dumps(cell.get("metadata", {})))
        for output in cell.get("outputs", []):
            parts.append(_join(output.get("text", "")))
            parts.extend(_join(v) for v in output.get("data", {}).values() if isinstance(v, (str, list)))
            parts.extend(_join(v) for v in output.get("traceback", []))
    return "\n".join(parts)


def _join(text: str | list[str]) -> str:
    return "".join(text) if isinstance(text, list) else text


def find_leaks(tree: Path, secrets: set[str]) -> list[str]:
    """Every place in ``tree`` that holds a marker or a secret line."""
    leaks = []
    for path in sorted(p for p in tree.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES):
        text = _notebook_text(path) if path.suffix == ".ipynb" else path.read_text(encoding="utf-8", errors="replace")
        rel = path.relative_to(tree)
        for marker in MARKERS:
            if marker in text:
                leaks.append(f"{rel}: contains the marker {marker!r}")
        lines = {line.strip() for line in text.splitlines()}
        for secret in sorted(secrets & lines):
            leaks.append(f"{rel}: contains solution text {secret!r}")
    return leaks


def build_course_lib(out: Path, body: Callable[[str, str, str], str] = stub) -> None:
    src = ROOT / "course_lib"
    for path in sorted(src.rglob("*")):
        if "__pycache__" in path.parts or path.is_dir():
            continue
        dest = out / "course_lib" / path.relative_to(src)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".py":
            source = path.read_text(encoding="utf-8")
            dest.write_text(strip_solutions(source, str(path.relative_to(ROOT)), body), encoding="utf-8")
        else:
            shutil.copy2(path, dest)


def build(out: Path, exercises: bool = True) -> Path:
    """Build the student edition into ``out`` (replacing it) and check it for leaks."""
    if exercises:
        from assignments import generate_exercises

        generate_exercises(ROOT)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    build_course_lib(out)
    for src, dest in COPIED:
        s, d = ROOT / src, out / dest
        if s.is_dir():
            shutil.copytree(s, d, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
        elif s.exists():
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(s, d)
    leaks = find_leaks(out, secret_lines())
    if leaks:
        raise ReleaseError("the student edition would leak solutions:\n  " + "\n  ".join(leaks[:30]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the student edition (dist/student) from the instructor sources.")
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / "student")
    parser.add_argument("--skip-exercises", action="store_true", help="do not regenerate exercises/ from solutions/")
    args = parser.parse_args(argv)
    try:
        out = build(args.out, exercises=not args.skip_exercises)
    except ReleaseError as e:
        print(f"release failed: {e}", file=sys.stderr)
        return 1
    print(f"student edition written to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
