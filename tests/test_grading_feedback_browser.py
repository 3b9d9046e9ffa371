"""Feedback pages cannot run a submission's code: nbgrader's generate_feedback with the course's
configuration, on a tiny assignment, opened in headless Chromium.

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``) and playwright (dev dependency; never
``playwright install``). Without them the browser part is skipped, except in CI where it fails.
"""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

CHROMIUM = Path("/usr/bin/chromium")
AID, SID = "01_attention", "mallory"
ATTACKS = {
    "text/html": '<script>window.__pwned = "script"</script><img src="x" onerror="window.__pwned = \'onerror\'">'
                 '<div style="position:fixed;top:0">Score: 13 / 13</div>',
    "application/javascript": 'window.__pwned = "javascript output"',
}


def _feedback_page(course: Path) -> Path:
    """A graded notebook whose outputs (before any hidden test) and Markdown try to run code, through
    ``nbgrader generate_feedback`` as nbgrader_config.py configures it."""
    from nbgrader.api import Gradebook
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    from course_grading.merge import fast_alembic
    from course_grading.stage import load_config

    fast_alembic()
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell('Hi <script>window.__pwned = "markdown"</script>'
                                                  '[link](javascript:window.__pwned="href")'))
    cell = nbformat.v4.new_code_cell("show()")
    cell.metadata["nbgrader"] = {"grade": True, "grade_id": "task1_1_visible", "locked": True, "solution": False,
                                 "points": 1, "schema_version": 3}
    cell.outputs = [nbformat.v4.new_output("display_data", data=dict(ATTACKS))]
    nb.cells.append(cell)
    folder = course / "autograded" / SID / AID
    folder.mkdir(parents=True)
    nbformat.write(nb, folder / f"{AID}.ipynb")
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        gb.add_assignment(AID)
        gb.add_notebook(AID, AID)
        gb.add_grade_cell("task1_1_visible", AID, AID, max_score=1, cell_type="code")
        gb.add_source_cell("task1_1_visible", AID, AID, cell_type="code", locked=True, source="show()")
        gb.add_student(SID)
        sub = gb.add_submission(AID, SID)
        sub.notebooks[0].grades[0].auto_score = 0
        gb.db.commit()
    config = load_config(course)
    api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
    result = api.generate_feedback(AID, SID, force=True)
    assert result["success"], result.get("log", "")[-3000:]
    return course / "feedback" / SID / AID / f"{AID}.html"


def test_feedback_html_has_no_active_content(tmp_path):
    import re

    page = _feedback_page(tmp_path).read_text(encoding="utf-8").split("</head>", 1)[1]  # not the CSS
    assert "<script>window.__pwned" not in page and not re.search(r"<[a-z]+[^<>]*\bonerror\s*=", page, re.I)
    assert not re.search(r"href\s*=\s*[\"']?javascript:", page, re.I) and 'window.__pwned = "javascript output"' not in page
    assert "Your results: 0 / 1 points" in page and "Task 1.1 scaled_dot_product_attention, visible tests" in page


def test_a_submissions_script_and_onerror_do_not_run_in_chromium(tmp_path):
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (apt-get install -y chromium)"
        pytest.fail(reason) if os.environ.get("CI") else pytest.skip(reason)
    sync_api = pytest.importorskip("playwright.sync_api")
    page_path = _feedback_page(tmp_path)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page()
            dialogs = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(page_path.as_uri())
            page.wait_for_timeout(500)
            for link in page.query_selector_all("a"):  # a javascript: link would run when clicked
                href = link.get_attribute("href") or ""
                assert not href.lower().startswith("javascript:"), href
            assert page.evaluate("typeof window.__pwned") == "undefined"
            assert not dialogs
            assert "Your results" in page.inner_text("body")
        finally:
            browser.close()
