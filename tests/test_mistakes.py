"""The mistakes corpus (tests/mistakes/corpus.py): the self-check flags and names them, the grader agrees.

For every common mistake: does ``check(task)`` flag it (any case not PASS), does it name it (the
likely cause from the stored outputs in course_lib/checks/mistakes.pt, or the property that
breaks), do the visible tests (exercises/) catch it, and does it lose points at grading (the
solutions' visible and hidden tests, run as nbgrader runs them)? The goal: every mistake that
loses points is flagged by check() first.

``COURSE_REGENERATE_MISTAKES=1 pytest tests/test_mistakes.py -m slow`` rewrites mistakes.pt.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest
import torch

from course_lib import selfcheck
from course_lib.tasks import TASKS
from mistakes import build
from mistakes.corpus import MISTAKES

ROOT = Path(__file__).resolve().parents[1]
FLAGGED_MIN, NAMED_MIN = 1.0, 0.8


def test_at_least_three_mistakes_per_task():
    counts = Counter(m.task for m in MISTAKES)
    assert {t.id for t in TASKS} == set(counts) and min(counts.values()) >= 3, counts
    assert len({m.name for m in MISTAKES}) == len(MISTAKES)


def test_every_mistake_applies_to_the_current_solutions(tmp_path):
    for m in MISTAKES:
        build.variant(m, tmp_path / "v")  # raises when an edit no longer matches


def test_stored_mistakes_are_data_with_a_cause():
    stored = selfcheck.load_mistakes()
    causes = {m.cause for m in MISTAKES}
    assert stored and set(stored) <= set(selfcheck.CASES)
    for case, keys in stored.items():
        for key, entries in keys.items():
            assert key in selfcheck.load_reference()[case]
            assert all(cause in causes and isinstance(t, torch.Tensor) for cause, t in entries)


def _grade(roots: dict[str, Path], tmp_path: Path) -> dict[str, dict[str, dict[str, bool]]]:
    """{"graded" | "visible": {mistake: {grade_id: passed}}} through the real notebooks."""
    from grade_variants import grade_variants

    by_exercise: dict[int, dict[str, Path]] = {}
    for m in MISTAKES:
        by_exercise.setdefault(int(m.task.split(".")[0]), {})[m.name] = roots[m.name]
    grades: dict[str, dict] = {"graded": {}, "visible": {}}
    for exercise, variants in sorted(by_exercise.items()):
        name = next(p.name for p in (ROOT / "solutions").glob(f"{exercise:02d}_*.ipynb"))
        for kind, folder in (("graded", "solutions"), ("visible", "exercises")):
            work = tmp_path / f"grade_{kind}_{exercise}"
            work.mkdir()
            result, _ = grade_variants(ROOT / folder / name, variants, work)
            grades[kind].update(result)
    return grades


def _task_cells_pass(cells: dict[str, bool], task: str) -> bool:
    marker = "task" + task.replace(".", "_")
    mine = [ok for gid, ok in cells.items() if gid == marker or gid.startswith(marker + "_")]
    assert mine, (task, cells)
    return all(mine)


@pytest.mark.slow
def test_mistakes_are_flagged_named_and_graded(tmp_path):
    roots = build.variants(tmp_path / "variants")
    checked = build.self_check(roots, tmp_path)
    stored = build.stored_outputs(checked, selfcheck.load_reference())
    if os.environ.get("COURSE_REGENERATE_MISTAKES"):
        torch.save(stored, selfcheck.MISTAKES_PATH)
        roots = build.variants(tmp_path / "variants2")
        checked = build.self_check(roots, tmp_path)
    current = selfcheck.load_mistakes()
    assert {c: {k: [cause for cause, _ in v] for k, v in keys.items()} for c, keys in stored.items()} == \
        {c: {k: [cause for cause, _ in v] for k, v in keys.items()} for c, keys in current.items()}, \
        "course_lib/checks/mistakes.pt is out of date: COURSE_REGENERATE_MISTAKES=1 pytest tests/test_mistakes.py -m slow"

    grades = _grade(roots, tmp_path)
    rows = []
    for m in MISTAKES:
        entry = checked[m.name]
        rows.append({"mistake": m.name, "task": m.task, "flagged": build.flagged(entry), "named": build.named(entry, m),
                     "visible_catch": not _task_cells_pass(grades["visible"][m.name], m.task),
                     "loses_points": not _task_cells_pass(grades["graded"][m.name], m.task),
                     "check": [r for r in entry["results"] if r[1] != "pass"][:2]})
    n = len(rows)
    summary = {k: round(sum(r[k] for r in rows) / n, 3) for k in ("flagged", "named", "visible_catch", "loses_points")}
    summary["mistakes"] = n
    (tmp_path / "results.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")
    print("mistake corpus:", summary, "| not caught by the visible tests:", [r["mistake"] for r in rows if not r["visible_catch"]])
    unflagged = [r["mistake"] for r in rows if r["loses_points"] and not r["flagged"]]
    assert not unflagged, f"lose points at grading but check() says PASS: {unflagged}"
    assert summary["flagged"] >= FLAGGED_MIN, [r["mistake"] for r in rows if not r["flagged"]]
    assert summary["named"] >= NAMED_MIN, [(r["mistake"], r["check"]) for r in rows if not r["named"]]
    free = [r["mistake"] for r in rows if not r["loses_points"]]
    assert not free, f"the graded tests miss these mistakes: {free}"
