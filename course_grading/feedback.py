"""Preprocessors of ``nbgrader generate_feedback``: what a student's feedback page may show.

Configured by name in ``nbgrader_config.py`` (``GenerateFeedback.preprocessors``, after ``GetGrades``),
so formgrader's "Generate Feedback" and ``make grade`` produce the same pages:

* ``RedactFeedback``: hidden-test code removed; every cell that ran at or after the first hidden-test
  cell loses its outputs (student code could print what it saw of the hidden tests): a test cell shows
  only pass/fail, its points and, for hidden tests, the instructor's one-line description
  (``Task.hidden``); earlier outputs keep no temporary paths of the grading machine and no huge text;
* ``FeedbackSummary``: a first cell listing every task with its name, points and what the tests said.

Student output is then rendered with active HTML/JavaScript removed (``SanitizeHTML`` and
``HTMLExporter.sanitize_html``, also set in ``nbgrader_config.py``).
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass

import nbformat
from nbgrader.preprocessors.base import NbGraderPreprocessor
from traitlets import Integer

from .course import HIDDEN_BEGIN, HIDDEN_END, hidden_description, sort_key, task_of, task_title
from .execute import EVENTS_KEY

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# A Markdown link or image to anything but http(s), mailto or an anchor (javascript:, data:, vbscript:)
UNSAFE_LINK = re.compile(r"(\]\(\s*<?|\]:\s*|<)(?!https?:|mailto:|#)[A-Za-z][A-Za-z0-9+.\-]*:", re.I)
# Absolute paths of the grading machine: a course directory's autograded/<student>/<assignment>/ prefix,
# ipykernel's temporary cell files, and any /tmp path.
MACHINE_PATH = re.compile(r"(?:/[^\s'\"():]+)?/autograded/[^/\s]+/[^/\s]+/|/tmp/ipykernel_\d+/\d+\.py|/tmp/[^\s'\":]*")


@dataclass
class Verdict:
    """One graded cell's result as a student may see it."""

    grade_id: str
    task: str  # task1_1
    hidden: bool  # its source holds hidden tests
    score: float
    points: float
    message: str  # what the test said ('' when it ran after a hidden test, or passed)

    @property
    def passed(self) -> bool:
        return self.score >= self.points


def is_hidden(cell) -> bool:
    """The cell runs hidden tests (also after ``redact`` removed them: it marks the cell)."""
    marked = cell.get("metadata", {}).get("nbgrader", {}).get("hidden_tests")
    return cell.cell_type == "code" and (bool(marked) or HIDDEN_BEGIN in cell.source)


def first_hidden_index(nb) -> int:
    """Index of the first cell that runs hidden tests (len(cells) if none)."""
    return next((i for i, c in enumerate(nb.cells) if is_hidden(c)), len(nb.cells))


def clean_text(text: str, limit: int = 20000) -> str:
    """``text`` without ANSI colours and machine paths, cut to ``limit`` characters (saying so)."""
    text = MACHINE_PATH.sub("", ANSI.sub("", text))
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more characters not shown)"


def _error_message(cell) -> str:
    for out in cell.get("outputs", []):
        if out.output_type == "error":
            return clean_text(f"{out.get('ename', 'Error')}: {str(out.get('evalue', '')).strip()}", 2000)
    return ""


def verdicts(nb, scores: dict[str, float | None] | None = None) -> list[Verdict]:
    """Every graded cell's verdict; scores from ``scores`` (grade id -> score) or the cell's metadata
    (nbgrader's ``GetGrades``), else 0 for a cell that raised."""
    first = first_hidden_index(nb)
    out = []
    for i, cell in enumerate(nb.cells):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if not meta.get("grade") or cell.cell_type != "code":
            continue
        gid, points = meta["grade_id"], float(meta.get("points", 0))
        message = _error_message(cell)
        score = (scores or {}).get(gid, meta.get("score"))
        if score is None:
            score = 0.0 if message else points
        out.append(Verdict(gid, task_of(gid), is_hidden(cell), float(score), points, message if i < first else ""))
    return out


def verdict_line(v: Verdict) -> str:
    """One line a student (and grades.csv) may see for a graded cell: never text produced by the run
    after a hidden test started."""
    state = "passed" if v.passed else "failed"
    line = f"{v.grade_id}: {state} ({v.score:g}/{v.points:g} points)"
    if v.hidden:
        what = hidden_description(v.task)
        return line + (f"; they check: {what}" if what else "")
    if not v.passed:
        return line + (f": {v.message}" if v.message else "; run this test cell in your notebook to see its message")
    return line


def cell_title(v: Verdict) -> str:
    """How the page names a test cell: ``Task 1.1 scaled_dot_product_attention, hidden tests``."""
    return f"{task_title(v.task)}, {'hidden' if v.hidden else 'visible'} tests"


def redact_source(source: str) -> str:
    """The cell's code with every hidden-test block replaced by one comment line."""
    lines, inside, count, indent = [], False, 0, ""
    for line in source.splitlines():
        if HIDDEN_BEGIN in line:
            inside, count, indent = True, 0, line[: len(line) - len(line.lstrip())]
        elif HIDDEN_END in line:
            inside = False
            lines.append(f"{indent}# ... hidden tests ({count} lines) are not shown ...")
        elif inside:
            count += 1
        else:
            lines.append(line)
    if inside:
        lines.append(f"{indent}# ... hidden tests ({count} lines) are not shown ...")
    return "\n".join(lines)


def _clean_output(out, limit: int) -> None:
    if out.output_type == "stream":
        out.text = clean_text(out.text, limit)
    elif out.output_type == "error":
        out.evalue = clean_text(str(out.get("evalue", "")), limit)
        out.traceback = [clean_text(frame, limit) for frame in out.get("traceback", [])]
    elif "data" in out and "text/plain" in out.data:
        out.data["text/plain"] = clean_text(out.data["text/plain"], limit)


def redact(nb, output_limit: int = 20000) -> int:
    """Redact a graded notebook for its student (in place); returns the cells whose outputs were replaced."""
    first = first_hidden_index(nb)
    by_id = {v.grade_id: v for v in verdicts(nb)}
    replaced = 0
    for i, cell in enumerate(nb.cells):
        if cell.cell_type in ("markdown", "raw"):
            cell.source = UNSAFE_LINK.sub(r"\1#blocked:", cell.source)
        if cell.cell_type != "code":
            continue
        if HIDDEN_BEGIN in cell.source:
            cell.source = redact_source(cell.source)
            cell.metadata.setdefault("nbgrader", {})["hidden_tests"] = True
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if gid in by_id:
            cell.metadata.nbgrader["title"] = cell_title(by_id[gid])
        if i < first:
            for out in cell.outputs:
                _clean_output(out, output_limit)
            continue
        text = verdict_line(by_id[gid]) + "\n" if gid in by_id else ""
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)] if text else []
        replaced += 1
    return replaced


class RedactFeedback(NbGraderPreprocessor):
    """Hidden tests and everything that ran after them removed from the feedback (after GetGrades)."""

    output_limit = Integer(20000, help="characters kept of each output before the first hidden test").tag(config=True)

    def preprocess(self, nb, resources):
        redact(nb, self.output_limit)
        return nb, resources


def summary_markdown(nb) -> str:
    """The feedback's first cell: per task its name, points and what its tests said."""
    tasks: dict[str, list[Verdict]] = {}
    for v in verdicts(nb):
        tasks.setdefault(v.task, []).append(v)
    rows = ["| Task | Points | What the tests said |", "|---|---|---|"]
    for task in sorted(tasks, key=sort_key):
        vs = tasks[task]
        said = "<br>".join(f"{'hidden' if v.hidden else 'visible'} tests: " + _md(verdict_line(v).split(": ", 1)[1]) for v in vs)
        rows.append(f"| {_md(task_title(task))} | {sum(v.score for v in vs):g} / {sum(v.points for v in vs):g} | {said} |")
    total, points = sum(v.score for vs in tasks.values() for v in vs), sum(v.points for vs in tasks.values() for v in vs)
    text = [f"## Your results: {total:g} / {points:g} points", "", *rows, ""]
    meta = nb.metadata.get(EVENTS_KEY, {})
    events = [e for e in meta.get("events", []) if "restarted" in e or "not run" in e or "timed out" in e]
    if events:
        text += ["While grading:", "", *[f"* {_md(e)}" for e in events], ""]
    text.append("Messages of tests that ran after a hidden test are not shown: run those cells in your notebook.")
    return "\n".join(text)


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell (no HTML, no pipes)."""
    return html.escape(text.replace("\n", " ")).replace("|", "\\|")


class FeedbackSummary(NbGraderPreprocessor):
    """A first cell with every task's name, points and what its tests said (after RedactFeedback)."""

    def preprocess(self, nb, resources):
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(summary_markdown(nb)))
        return nb, resources


def keep_pages_only(assignment=None, student=None, notebooks=(), **_) -> None:
    """``GenerateFeedback.post_convert_hook``: nbgrader copies every other file of the autograded folder
    next to the feedback page (files the student's code could have written while grading); keep only
    the pages. ``notebooks`` are ``<course>/autograded/<student>/<assignment>/<nb>.ipynb``."""
    import shutil
    from pathlib import Path

    for nb in notebooks:
        src = Path(nb).parent
        folder = src.parents[2] / "feedback" / src.parent.name / src.name
        for path in sorted(folder.rglob("*"), reverse=True) if folder.is_dir() else []:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True) if not any(path.rglob("*.html")) else None
            elif path.suffix != ".html":
                path.unlink(missing_ok=True)
