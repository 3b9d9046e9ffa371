"""The grader's pieces on tiny notebooks: restoring cells, feedback redaction and summary, the report."""
from __future__ import annotations

import csv

import nbformat
import pytest

from course_grading import feedback
from course_grading.course import exclude_overwriting, student_modules, task_of, task_title
from course_grading.execute import defined_names
from course_grading.preprocessors import restore_deleted_cells
from tiny_notebooks import notebook

HIDDEN = "### BEGIN HIDDEN TESTS\nassert secret_reference() == 42\n### END HIDDEN TESTS"


def _error(ename, evalue, *frames):
    return nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=list(frames) or [f"{ename}: {evalue}"])


def test_exclude_overwriting_is_keyed_by_assignment_id():
    ex = exclude_overwriting(["01_attention", "02_encoder"])
    assert set(ex) == {"01_attention", "02_encoder"} and "*" not in ex
    assert ex["01_attention"] == [f"course_lib/{m}" for m in student_modules()] and "course_lib/attention.py" in ex["02_encoder"]


def test_deleted_cells_go_back_where_they_were():
    released = notebook((None, "setup"), ("test_helpers", "helpers"), ("task1_1_visible", "t1"), (None, "check"), ("task1_2", "t2"))
    student = notebook((None, "setup"), (None, "check"), ("task1_2", "edited"))
    assert restore_deleted_cells(student, released) == ["test_helpers", "task1_1_visible"]
    assert [c.source for c in student.cells] == ["setup", "helpers", "t1", "check", "edited"]


def test_defined_names_of_a_helper_cell():
    src = "%load_ext autoreload\nimport torch\nimport torch.nn.functional as F\n_SDPA = F.sdpa\ndef expect_close(a):\n    pass\nclass Spy: pass\n"
    assert defined_names(src) == (["expect_close", "Spy"], ["torch", "F", "_SDPA"])


def test_task_columns_and_titles():
    assert task_of("task1_1_visible") == task_of("task1_1_hidden") == task_of("task1_1") == "task1_1"
    assert task_title("task1_1") == "Task 1.1 scaled_dot_product_attention"


def graded_notebook():
    """Set-up, a visible test that failed, a hidden test whose student code printed a secret, a later
    visible test, and an ungraded cell after the hidden one that printed what it saw."""
    nb = notebook((None, "import sys"), ("task1_1_visible", "check_visible()"), ("task1_1_hidden", "x = 1\n" + HIDDEN),
                   ("task1_2", "assert causal_ok()"), (None, "print(In[-2])"))
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="y" * 50000)]
    nb.cells[1].outputs = [_error("AssertionError", "Task 1.1: wrong at [0, 1]",
                                  "File /tmp/grading-abc/jobs/s__a/autograded/s/01_attention/course_lib/attention.py:40, in f")]
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", name="stdout", text="LEAK assert secret_reference() == 42"),
                           _error("AssertionError", "secret_reference() was 41")]
    nb.cells[3].outputs = [_error("LeakError", "assert secret_reference() == 42")]
    nb.cells[4].outputs = [nbformat.v4.new_output("stream", name="stdout", text="assert secret_reference() == 42")]
    for cell, score in zip(nb.cells[1:4], (0, 0, 1)):
        cell.metadata.nbgrader["score"] = score
    return nb


def test_feedback_never_shows_hidden_tests_or_what_ran_after_them(monkeypatch):
    monkeypatch.setattr(feedback, "hidden_description", lambda task: "masks of every dtype")
    nb = graded_notebook()
    feedback.redact(nb, output_limit=1000)
    text = nbformat.writes(nb)
    assert "secret_reference" not in text and "LEAK" not in text and "/tmp/" not in text
    assert "hidden tests (1 lines) are not shown" in nb.cells[2].source and "x = 1" in nb.cells[2].source
    assert nb.cells[2].outputs[0].text == "task1_1_hidden: failed (0/1 points); they check: masks of every dtype\n"
    assert nb.cells[3].outputs[0].text == "task1_2: passed (1/1 points)\n"
    assert nb.cells[4].outputs == []
    # before the first hidden test: the visible test's own message, without the machine's path, and cut
    assert "Task 1.1: wrong at [0, 1]" in nb.cells[1].outputs[0].evalue
    assert nb.cells[1].outputs[0].traceback == ["File course_lib/attention.py:40, in f"]
    assert len(nb.cells[0].outputs[0].text) < 1100 and "more characters not shown" in nb.cells[0].outputs[0].text
    assert nb.cells[1].metadata.nbgrader["title"] == "Task 1.1 scaled_dot_product_attention, visible tests"


def test_feedback_summary_lists_every_task_with_name_points_and_what_the_tests_said():
    nb = graded_notebook()
    feedback.redact(nb)
    nb.cells[1].outputs[0].evalue = "<script>alert(1)</script> | pipe"
    md = feedback.summary_markdown(nb)
    assert "## Your results: 1 / 3 points" in md
    assert "| Task 1.1 scaled_dot_product_attention | 0 / 2 |" in md and "| Task 1.2 causal_mask | 1 / 1 |" in md
    assert "visible tests: failed (0/1 points): AssertionError: &lt;script&gt;" in md and "\\| pipe" in md
    assert "<script>" not in md and "secret_reference" not in md


def test_grades_csv_notes_for_hidden_tests_are_verdicts_only(tmp_path):
    from course_grading.worker import notebook_report

    nb = graded_notebook()
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    report = notebook_report(path, {"task1_1_visible": 0, "task1_1_hidden": 0, "task1_2": 1})
    assert report["failed"][0].startswith("task1_1_visible: failed (0/1 points): AssertionError: Task 1.1: wrong")
    assert report["failed"][1].startswith("task1_1_hidden: failed (0/1 points)") and "secret" not in " ".join(report["failed"])


# --- the report: grades.csv from the gradebook, earlier results kept ------------------------------

@pytest.fixture
def gradebook(tmp_path):
    from nbgrader.api import Gradebook

    from course_grading.merge import fast_alembic

    fast_alembic()
    gb = Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}")
    for aid, cells in (("01_attention", {"task1_1_visible": 1, "task1_1_hidden": 2}), ("02_encoder", {"task2_1": 2})):
        gb.add_assignment(aid)
        gb.add_notebook(aid, aid)
        for gid, pts in cells.items():
            gb.add_grade_cell(gid, aid, aid, max_score=pts, cell_type="code")
    yield gb
    gb.close()


def _grade(gb, aid, sid, **scores):
    gb.update_or_create_student(sid)
    sub = gb.update_or_create_submission(aid, sid)
    for nb in sub.notebooks:
        for g in nb.grades:
            g.auto_score = scores.get(g.name, 0)
    gb.db.commit()


def test_grades_csv_keeps_every_assignment_and_flags(tmp_path, gradebook):
    from course_grading.report import load_notes, save_note, write_grades

    _grade(gradebook, "01_attention", "ann", task1_1_visible=1, task1_1_hidden=2)
    save_note(tmp_path, "01_attention", "ann", {"status": "graded", "notes": ["ok"], "late": True})
    _grade(gradebook, "02_encoder", "bob", task2_1=2)
    save_note(tmp_path, "02_encoder", "bob", {"status": "graded", "notes": ["REVIEW tampering: task2_1"], "no_id": True})
    save_note(tmp_path, "02_encoder", "eve", {"status": "not graded", "notes": ["x.zip is not a readable zip"]})
    rows = {r["student"]: r for r in write_grades(gradebook, load_notes(tmp_path), tmp_path / "grades.csv")}
    assert (rows["ann"]["task1_1"], rows["ann"]["task2_1"], rows["ann"]["total"], rows["ann"]["max"]) == ("3", "0", "3", "5")
    assert rows["ann"]["flags"] == "LATE 01_attention" and "02_encoder: no submission" in rows["ann"]["status"]
    assert rows["bob"]["flags"] == "NO-ID 02_encoder; REVIEW 02_encoder" and rows["bob"]["total"] == "2"
    assert rows["eve"]["status"] == "01_attention: no submission; 02_encoder: not graded" and "not a readable zip" in rows["eve"]["notes"]
    # re-grading ann's 01_attention replaces only that; bob's row stays
    _grade(gradebook, "01_attention", "ann", task1_1_visible=1)
    save_note(tmp_path, "01_attention", "ann", {"status": "graded", "notes": []})
    rows = {r["student"]: r for r in write_grades(gradebook, load_notes(tmp_path), tmp_path / "grades.csv")}
    assert rows["ann"]["total"] == "1" and rows["ann"]["flags"] == "" and rows["bob"]["total"] == "2"
    with open(tmp_path / "grades.csv", newline="") as f:
        assert [r["student"] for r in csv.DictReader(f)] == ["ann", "bob", "eve"]


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_missing_or_empty_submissions_change_nothing(tmp_path, make):
    from course_grading.cli import main

    out = tmp_path / "grading"
    out.mkdir()
    (out / "grades.csv").write_text("student,total\nann,13\n")
    sub = tmp_path / "subs"
    if make == "empty":
        sub.mkdir()
        (sub / "notes.txt").write_text("not a submission")
    assert main([str(sub), "--out", str(out), "--quiet"]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["grades.csv"] and (out / "grades.csv").read_text() == "student,total\nann,13\n"


def test_feedback_folders_keep_the_pages_only(tmp_path):
    auto = tmp_path / "autograded" / "s" / "01_attention"
    fb = tmp_path / "feedback" / "s" / "01_attention"
    for folder in (auto, fb / "course_lib"):
        folder.mkdir(parents=True)
    (fb / "01_attention.html").write_text("page")
    (fb / "course_lib" / "leak.py").write_text("hidden tests, dumped by the student's code")
    (fb / "leak.txt").write_text("x")
    for name in feedback.NBGRADER_FILES:  # nbgrader's release_feedback reads them
        (fb / name).write_text("nbgrader's")
    feedback.keep_pages_only("01_attention", "s", [str(auto / "01_attention.ipynb")])
    assert sorted(p.name for p in fb.rglob("*")) == sorted(["01_attention.html", *feedback.NBGRADER_FILES])


def test_zip_collect_collector_maps_the_extractors_layout(tmp_path):
    import json

    from course_grading.plugins import UPLOADS, CourseCollector

    ext = tmp_path / "downloaded" / "01_attention" / "extracted"
    (ext / "js42" / "course_lib").mkdir(parents=True)
    (ext.parent / UPLOADS).write_text(json.dumps({"js42": "2026-12-01T10:00:00"}))
    collector = CourseCollector()
    assert collector.collect(str(ext / "js42" / "01_attention.ipynb")) == {
        "student_id": "js42", "file_id": "01_attention.ipynb", "timestamp": "2026-12-01T10:00:00"}
    assert collector.collect(str(ext / "js42" / "course_lib" / "attention.py"))["file_id"] == "course_lib/attention.py"
    assert collector.collect(str(ext / "js42" / "course_lib" / "tasks.py")) is None  # support files are the course's
    assert collector.collect(str(ext / "js42" / "evil" / "x.py")) is None
