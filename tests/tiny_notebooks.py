"""Tiny nbgrader notebooks for the grader's unit tests."""
from __future__ import annotations

import nbformat


def notebook(*cells: tuple[str | None, str]):
    """A notebook of code cells ``(grade_id, source)``; a grade_id makes the cell a locked nbgrader cell,
    graded (1 point) when the id starts with ``task``."""
    nb = nbformat.v4.new_notebook()
    for gid, src in cells:
        cell = nbformat.v4.new_code_cell(src)
        if gid:
            cell.metadata["nbgrader"] = {"grade": gid.startswith("task"), "grade_id": gid, "locked": True,
                                         "solution": False, "points": 1, "schema_version": 3}
        nb.cells.append(cell)
    return nb
