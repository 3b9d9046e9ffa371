"""Preprocessors of ``nbgrader autograde`` (configured by name in ``nbgrader_config.py``).

* ``RestoreCells`` (sanitize step, before ``OverwriteCells``): every graded or locked cell of the
  released notebook that the student deleted goes back IN PLACE (after the cell it followed);
  nbgrader's own ``add_missing_cells`` puts it after the previous graded cell, or first in the
  notebook, before the imports, where even correct code fails. Edited locked cells are then restored
  by ``OverwriteCells`` as usual. Old notebooks (Colab saves nbformat 4.0) get cell ids.
* ``FillStubs`` (autograde step, before ``GradingExecute``): a course_lib file the submission lacks
  becomes the student edition's stub (built by ``tools/release.py``), never the instructor's code.
"""
from __future__ import annotations

import copy
import uuid
from pathlib import Path

from nbgrader.preprocessors.base import NbGraderPreprocessor

from .execute import EVENTS_KEY

NOTES = "notes"


def grade_id(cell) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def add_note(nb, text: str) -> None:
    """Something the instructor should know about this submission (kept in the notebook's metadata)."""
    nb.metadata.setdefault(EVENTS_KEY, {}).setdefault(NOTES, []).append(text)


def restore_deleted_cells(nb, released) -> list[str]:
    """Put back (in place) every nbgrader cell of ``released`` that ``nb`` lacks; returns their grade ids.

    Each goes right after the cell that precedes it in the released notebook (matched by grade id,
    cell id or identical source).
    """
    have = {grade_id(c) for c in nb.cells} - {None}
    ids = {c.get("id") for c in nb.cells}

    def find(cell) -> int | None:
        for j, c in enumerate(nb.cells):
            if (grade_id(cell) and grade_id(c) == grade_id(cell)) or (cell.get("id") and c.get("id") == cell.get("id")):
                return j
        for j, c in enumerate(nb.cells):
            if c.cell_type == cell.cell_type and c.source.strip() and c.source.strip() == cell.source.strip():
                return j
        return None

    restored = []
    for i, cell in enumerate(released.cells):
        gid = grade_id(cell)
        if gid is None or gid in have:
            continue
        pos = 0
        for prev in reversed(released.cells[:i]):
            j = find(prev)
            if j is not None:
                pos = j + 1
                break
        new = copy.deepcopy(cell)
        if "id" in new and new["id"] in ids:
            new["id"] = uuid.uuid4().hex[:12]
        nb.cells.insert(pos, new)
        have.add(gid)
        ids.add(new.get("id"))
        restored.append(gid)
    return restored


def ensure_cell_ids(nb) -> None:
    """nbformat 4.5 cell ids (nbgrader's DeduplicateIds needs them; Colab saves 4.0)."""
    if nb.get("nbformat_minor", 0) < 5:
        nb.nbformat_minor = 5
    for cell in nb.cells:
        if not cell.get("id"):
            cell["id"] = uuid.uuid4().hex[:12]


def released_notebook(config, assignment: str, notebook: str):
    """The released notebook of ``assignment`` in the configured course directory (None if missing)."""
    import nbformat
    from nbgrader.coursedir import CourseDirectory

    coursedir = CourseDirectory(config=config)
    path = Path(coursedir.format_path(coursedir.release_directory, ".", assignment)) / f"{notebook}.ipynb"
    return nbformat.read(path, as_version=4) if path.exists() else None


class RestoreCells(NbGraderPreprocessor):
    """Deleted graded/locked cells go back where they were (sanitize step, before OverwriteCells)."""

    def preprocess(self, nb, resources):
        ensure_cell_ids(nb)
        info = resources.get("nbgrader", {})
        released = released_notebook(self.config, info.get("assignment", ""), info.get("notebook", ""))
        if released is None:
            self.log.warning("no released notebook for %s: deleted cells are restored by nbgrader", info.get("assignment"))
            return nb, resources
        restored = restore_deleted_cells(nb, released)
        if restored:
            add_note(nb, f"deleted cells put back: {', '.join(restored)}")
            self.log.warning("deleted cells put back: %s", ", ".join(restored))
        if info.get("db_url"):
            unhide_unchanged(nb, released, info["db_url"], info["assignment"], info["notebook"])
        return nb, resources


def unhide_unchanged(nb, released, db_url: str, assignment: str, notebook: str) -> int:
    """A locked cell exactly as released gets its source's code back (hidden tests included), so that
    nbgrader's ``OverwriteCells`` sees the right checksum and warns only about cells a student edited.
    Returns the cells changed."""
    from nbgrader.api import Gradebook, MissingEntry

    as_released = {grade_id(c): c.source for c in released.cells if grade_id(c)}
    changed = 0
    with Gradebook(db_url) as gb:
        for cell in nb.cells:
            gid = grade_id(cell)
            if not gid or not cell.metadata.nbgrader.get("locked") or as_released.get(gid) != cell.source:
                continue
            try:
                source = gb.find_source_cell(gid, notebook, assignment).source
            except MissingEntry:
                continue
            if source != cell.source:
                cell.source = source
                changed += 1
    return changed


class FillStubs(NbGraderPreprocessor):
    """A course_lib file the submission lacks becomes the student edition's (autograde step)."""

    def preprocess(self, nb, resources):
        from .stage import fill_course_lib

        folder = Path(resources.get("metadata", {}).get("path") or ".")
        missing = fill_course_lib(folder / "course_lib")
        if missing:
            add_note(nb, "not in the submission, graded as the unedited stub: course_lib/" + ", course_lib/".join(missing))
            self.log.warning("not in the submission, graded as the stub: %s", ", ".join(missing))
        return nb, resources
