"""A real class on one server: JupyterHub, Unix users and nbgrader's exchange (docs/DEPLOY.md, tested).

One instructor and three students are made as Unix users; the exchange lives in a temporary root.
The instructor works in a checkout of the course (its ``nbgrader_config.py``, verbatim) and keeps
the exchange's place in ``~/.jupyter/nbgrader_config.py``; each student's names the exchange and
the course. Every step is nbgrader's own command, run as the user who would run it, so whatever
``nbgrader_config.py`` configures (the course's protections) applies:

    instructor  generate_assignment, release_assignment 01_attention
    students    fetch_assignment; one writes the correct course_lib/attention.py, one submits only
                the notebook; submit
    instructor  collect, autograde, generate_feedback, release_feedback
    students    fetch_feedback

The scores are read from the gradebook and compared per task with course_lib/tasks.py, and no
hidden-test line may reach a student. A third student logs into the hub in Chromium, opens
JupyterLab (spawned as that Unix user) and fetches the exercise from nbgrader's Assignments panel.

Needs root (CI runs as root), ``make hub-deps`` (jupyterhub, configurable-http-proxy) and
``/usr/bin/chromium``; without them the test is skipped, except in CI (``CI`` set), where it fails.
"""
from __future__ import annotations

import html
import importlib.util
import os
import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import release
from class_deployment import INTERPRETER, PROXY, ROOT, VENV_BIN, Hub, User, Users, chown_tree, traversable
from course_lib.tasks import tasks_of_exercise

AID, EXERCISE = "01_attention", 1  # the smallest exercise: 13 points over six tasks
TASKS = tasks_of_exercise(EXERCISE)
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
NBGRADER = str(VENV_BIN / "nbgrader")
TASK_OF_CELL = re.compile(r"^task(\d+_\d+)")
CHECKOUT_FILES = ("nbgrader_config.py", "course.toml")  # what nbgrader_config.py reads next to itself

pytestmark = [pytest.mark.slow]
if importlib.util.find_spec("pytest_timeout"):  # the class is set up inside the first test: more than one test's time
    pytestmark.append(pytest.mark.timeout(600))


def _missing(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)")
    pytest.skip(reason)


def _exchange_config(exchange: Path, course_id: str | None = None) -> str:
    """A user's ~/.jupyter/nbgrader_config.py: where the exchange is (and, for students, which course)."""
    text = f"c = get_config()  # noqa\nc.Exchange.root = {str(exchange)!r}\n"
    return text + (f"c.CourseDirectory.course_id = {course_id!r}\n" if course_id else "")


def _page_text(path: Path) -> str:
    """What a browser shows of an HTML page: tags removed (highlighting splits code into spans)."""
    text = re.sub(r"<(script|style)\b.*?</\1>", "", path.read_text(encoding="utf-8"), flags=re.DOTALL | re.IGNORECASE)
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def _code(line: str) -> str:
    """A line of code without its indentation and trailing comment (the same code, commented otherwise)."""
    return re.sub(r"\s+#.*$", "", line.strip())


def _hidden_test_lines() -> set[str]:
    """The exercise's hidden-test lines found nowhere outside a hidden block (release.secret_lines' rules)."""
    hidden, public = set(), set()
    for text in release._code_sources(ROOT / "solutions" / f"{AID}.ipynb"):
        hidden |= {_code(line) for line in release._blocks(text, release.HIDDEN_BEGIN, release.HIDDEN_END)}
        public |= {_code(line) for line in release.strip_solutions_loose(text).splitlines()}
    return {s for s in hidden - public if len(s) >= 12 and not s.startswith("#") and not release.GENERIC.match(s)}


def _scores(course: Path, course_id: str, student: str) -> dict[str, float]:
    """Points per task (``task1_1``: visible + hidden cells) of the student's graded submission."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", course_id) as gb:
        notebook = gb.find_submission_notebook(AID, AID, student)
        scores: dict[str, float] = {}
        for grade in notebook.grades:
            task = "task" + TASK_OF_CELL.match(grade.name).group(1)
            scores[task] = scores.get(task, 0) + grade.score
    return scores


def _each(students: tuple[User, ...], *argv: str) -> None:
    """Run the same command as each student, at the same time (as a class would)."""
    with ThreadPoolExecutor(len(students)) as pool:
        list(pool.map(lambda student: student.run(*argv), students))


@pytest.fixture(scope="module")
def hub_class():
    """The whole exchange path, run once; yields what the tests look at. Removes users and files after."""
    if os.geteuid() != 0:
        _missing("the JupyterHub class test makes Unix users: run it as root (CI does)")
    if not PROXY.exists() or not (VENV_BIN / "jupyterhub").exists():
        _missing("JupyterHub is not installed: run `make hub-deps`")
    if not shutil.which("useradd"):
        _missing("useradd is not available")
    base = Path(tempfile.mkdtemp(prefix="vit-hub-"))
    base.chmod(0o755)
    homes, exchange, hub_dir = base / "home", base / "exchange", base / "hub"
    for folder in (homes, exchange, hub_dir):
        folder.mkdir()
    homes.chmod(0o755)
    hub_dir.chmod(0o700)
    exchange.chmod(0o1777)  # nbgrader's exchange: everyone writes, the course folders set their own modes
    users = Users(homes)
    hub = None
    with traversable(VENV_BIN, INTERPRETER):
        try:
            instructor = users.add("instructor")
            full, notebook_only, browser = users.add("full"), users.add("nbonly"), users.add("browser")
            hub = Hub(hub_dir, [full, notebook_only, browser])
            hub.start()  # starts in the background while the CLI path runs
            # Instructor: a checkout of the course (its nbgrader_config.py, verbatim, and the course.toml it
            # reads), the exchange in ~/.jupyter; generate and release the exercise from the checkout's root.
            checkout = instructor.home / "course"
            checkout.mkdir()
            for name in CHECKOUT_FILES:
                shutil.copyfile(ROOT / name, checkout / name)
            instructor.write(".jupyter/nbgrader_config.py", _exchange_config(exchange))
            course = checkout / "grading"  # nbgrader_config.py: CourseDirectory.root, source/ laid out on loading
            chown_tree(instructor.home, instructor)
            instructor.run(NBGRADER, "generate_assignment", AID, "--force", cwd=checkout)
            assert (course / "gradebook.db").exists(), f"nbgrader_config.py no longer uses {course} as the course directory"
            instructor.run(NBGRADER, "release_assignment", AID, cwd=checkout)
            course_ids = [p.name for p in exchange.iterdir()]
            assert len(course_ids) == 1, f"the exchange holds {course_ids}"
            course_id = course_ids[0]

            # Students: fetch, work, submit.
            for student in (full, notebook_only, browser):
                student.write(".jupyter/nbgrader_config.py", _exchange_config(exchange, course_id))
            _each((full, notebook_only), NBGRADER, "fetch_assignment", AID)
            work = full.home / AID / "course_lib"
            for module in sorted({t.module for t in TASKS}):  # the correct solution, as a student writes it
                shutil.copyfile(ROOT / "course_lib" / f"{module}.py", work / f"{module}.py")
            chown_tree(work, full)
            shutil.rmtree(notebook_only.home / AID / "course_lib")  # only the notebook is submitted
            _each((full, notebook_only), NBGRADER, "submit", AID)

            # Instructor: collect, autograde, feedback.
            instructor.run(NBGRADER, "collect", AID, cwd=checkout)
            instructor.run(NBGRADER, "autograde", AID, cwd=checkout, timeout=240)
            instructor.run(NBGRADER, "generate_feedback", AID, cwd=checkout)
            # The feedback goes back through the exchange; the tests below say what failed, if anything did.
            feedback_error = None
            try:
                instructor.run(NBGRADER, "release_feedback", AID, cwd=checkout)
                _each((full, notebook_only), NBGRADER, "fetch_feedback", AID)
            except AssertionError as e:
                feedback_error = str(e)
            hub.wait()
            yield {"course": course, "course_id": course_id, "exchange": exchange, "hub": hub,
                   "instructor": instructor, "full": full, "notebook_only": notebook_only, "browser": browser,
                   "feedback_error": feedback_error}
        finally:
            if hub is not None:
                hub.stop()
            users.remove()
            shutil.rmtree(base, ignore_errors=True)


def test_full_solution_gets_full_marks(hub_class):
    scores = _scores(hub_class["course"], hub_class["course_id"], hub_class["full"].name)
    assert scores == {t.marker: t.points for t in TASKS}
    assert sum(scores.values()) == 13


def test_notebook_only_submission_scores_zero(hub_class):
    scores = _scores(hub_class["course"], hub_class["course_id"], hub_class["notebook_only"].name)
    assert scores == {t.marker: 0 for t in TASKS}


def _feedback_pages(student: User) -> list[Path]:
    return sorted((student.home / AID / "feedback").glob(f"*/{AID}.html"))


def test_students_receive_their_feedback(hub_class):
    assert hub_class["feedback_error"] is None, hub_class["feedback_error"]
    for student in (hub_class["full"], hub_class["notebook_only"]):
        pages = _feedback_pages(student)
        assert len(pages) == 1, f"{student.name} fetched {len(pages)} feedback pages"
        assert all(p.stat().st_uid == student.uid for p in pages)
    text = _page_text(_feedback_pages(hub_class["full"])[0])
    assert re.search(r"13(\.0)?\s*/\s*13(\.0)?", text), "the full solution's feedback does not show 13 / 13"


def test_released_exercise_holds_no_solution_or_hidden_test(hub_class):
    outbound = hub_class["exchange"] / hub_class["course_id"] / "outbound" / AID
    assert (outbound / f"{AID}.ipynb").exists() and (outbound / "course_lib" / "attention.py").exists()
    assert release.find_leaks(outbound, release.secret_lines()) == []


def test_feedback_holds_no_hidden_test_line(hub_class):
    """The pages generate_feedback wrote for release_feedback to send, and those the students fetched."""
    hidden = _hidden_test_lines()
    assert len(hidden) > 20  # the check below is not vacuous
    students = (hub_class["full"], hub_class["notebook_only"])
    generated = sorted((hub_class["course"] / "feedback").glob(f"*/{AID}/{AID}.html"))
    assert len(generated) == len(students), f"generate_feedback wrote {len(generated)} pages"
    leaks = []
    for page in generated + [p for s in students for p in _feedback_pages(s)]:
        text = _page_text(page)
        leaks += [f"{page}: {line!r}" for line in sorted(hidden) if line in text]
    assert not leaks, f"{len(leaks)} hidden-test lines reach students, e.g.\n" + "\n".join(leaks[:5])


def test_student_lab_through_the_hub_lists_the_exercise(hub_class, tmp_path):
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install playwright)")
    hub, student = hub_class["hub"], hub_class["browser"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(60_000)
        try:
            page.goto(f"{hub.url}/hub/login")
            page.fill("#username_input", student.name)
            page.fill("#password_input", hub.password)
            page.click("#login_submit")
            page.wait_for_url(re.compile(rf"/user/{re.escape(student.name)}/lab"), timeout=90_000)
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Nbgrader$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Assignment List$")).click()
            released = page.locator("#released_assignments_list .list_item", has_text=AID)
            released.wait_for()
            assert hub_class["course_id"] in released.inner_text()
            released.get_by_role("button", name="Fetch").click()  # the Assignments panel's own fetch
            page.locator("#fetched_assignments_list", has_text=AID).wait_for()
        except BaseException:
            page.screenshot(path=str(tmp_path / "hub-failure.png"), full_page=True)
            print(f"screenshot: {tmp_path / 'hub-failure.png'}\nhub log:\n{hub.tail()}")
            raise
        finally:
            browser.close()
    fetched = student.home / AID / f"{AID}.ipynb"
    assert fetched.exists() and fetched.stat().st_uid == student.uid, "the panel's Fetch left no notebook in the home"
    assert (student.home / AID / "course_lib" / "attention.py").exists()
