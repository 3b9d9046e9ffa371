"""nbgrader's configuration for the course (read by ``nbgrader`` run from the repository root
and by ``tools/assignments.py``).

nbgrader works on a course directory laid out as ``<root>/<step>/<assignment>/<notebook>.ipynb``
(``source/01_attention/01_attention.ipynb`` -> ``release/01_attention/01_attention.ipynb``).
The course keeps its instructor notebooks flat instead, one assignment per notebook:

    solutions/NN_name.ipynb   instructor source: explanations, self-check, graded tests with
                              hidden parts (the task solutions themselves live in course_lib/)
    exercises/NN_name.ipynb   generated student notebook (never edit by hand)

``tools/assignments.py`` bridges the two: it stages ``solutions/NN_name.ipynb`` as
``<root>/source/NN_name/NN_name.ipynb`` (a temporary directory for ``make release``, or the
course directory below for grading), runs nbgrader's ``generate_assignment`` through its
Python API and copies ``release/NN_name/NN_name.ipynb`` to ``exercises/NN_name.ipynb``.

    python tools/assignments.py                  # regenerate exercises/ (make release runs it)
    python tools/assignments.py --check          # does exercises/ match solutions/?
    python tools/assignments.py --stage grading  # course directory + gradebook for autograde
    nbgrader autograde 01_attention              # then, from the repository root
"""
import tomllib
from pathlib import Path

c = get_config()  # noqa: F821  (provided by nbgrader / traitlets when this file is loaded)

ROOT = Path(__file__).resolve().parent
with open(ROOT / "course.toml", "rb") as f:
    COURSE = tomllib.load(f)["course"]

# --- the course directory ------------------------------------------------------------------
# "vit-course/vit-basics" -> "vit-basics": the course id used by the exchange and the gradebook.
c.CourseDirectory.course_id = COURSE["repository"].split("/")[-1]
# Staged course directory (git-ignored): source/ and release/ are generated from solutions/,
# submitted/, autograded/ and feedback/ hold the students' work, gradebook.db the scores.
c.CourseDirectory.root = str(ROOT / "grading")
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.release_directory = "release"
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "*.egg-info"]

# --- generate_assignment ------------------------------------------------------------------
c.GenerateAssignment.create_assignment = True
# The tasks are written in course_lib/*.py, so the notebooks hold no solution cells; should one
# appear, its solution region becomes this stub.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
c.ClearSolutions.begin_solution_delimeter = "BEGIN SOLUTION"
c.ClearSolutions.end_solution_delimeter = "END SOLUTION"
c.ClearHiddenTests.begin_test_delimeter = "BEGIN HIDDEN TESTS"
c.ClearHiddenTests.end_test_delimeter = "END HIDDEN TESTS"
# Student notebooks ship without outputs (ClearOutput is part of generate_assignment).

# --- autograde -------------------------------------------------------------------------------
# Every test cell runs in well under 5 s on a laptop CPU; 30 s per cell is the safety net.
c.Execute.timeout = 30
# A student who deletes or breaks a graded cell gets it back from the gradebook.
c.OverwriteCells.add_missing_cells = True
# Plain `nbgrader autograde` copies the source folder's files over the submission's: never let it
# replace a student's course_lib files with the instructor's (every student would get full marks).
# `make grade` (tools/grade.py) is the supported path; this keeps plain nbgrader honest too.
c.Autograde.exclude_overwriting = {
    "*": [f"course_lib/{module}.py" for module in ("attention", "encoder", "embeddings", "vit", "analysis")]
}
