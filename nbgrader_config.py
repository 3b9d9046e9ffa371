"""nbgrader's configuration for the course: read by every nbgrader command run from the repository root,
by formgrader, by the exchange, and by ``make grade`` (``course_grading``). See docs/INSTRUCTOR.md.

nbgrader works on a course directory ``grading/`` laid out as ``<step>/<assignment>/<notebook>.ipynb``.
The course keeps its instructor notebooks flat (``solutions/NN_name.ipynb``); loading this file lays
them out as ``grading/source/NN_name/NN_name.ipynb`` with the student edition's course_lib next to
them (``course_grading.stage.sync_source``: only changed files are written), so

    nbgrader generate_assignment 01_attention     # no staging step first
    nbgrader zip_collect 01_attention             # grading/downloaded/01_attention/archive/*.zip
    nbgrader autograde 01_attention
    nbgrader generate_feedback 01_attention
    nbgrader export                               # grading/grades.csv, per task

The course's protections are nbgrader extensions named below, so every route gets them.
``tools/assignments.py`` builds exercises/ from solutions/ with the same configuration.
"""
import os
from pathlib import Path

import tomllib

c = get_config()  # noqa: F821  (provided by nbgrader / traitlets when this file is loaded)

ROOT = Path(__file__).resolve().parent
with open(ROOT / "course.toml", "rb") as f:
    COURSE = tomllib.load(f)["course"]

# --- the course directory ------------------------------------------------------------------
# "vit-course/vit-basics" -> "vit-basics": the course id used by the exchange and the gradebook.
c.CourseDirectory.course_id = COURSE["repository"].split("/")[-1]
# Staged course directory (git-ignored): source/ and release/ are generated from solutions/,
# submitted/, autograded/ and feedback/ hold the students' work, gradebook.db the scores.
# COURSE_GRADING_ROOT moves it (a test's temporary course, a class server's course folder).
c.CourseDirectory.root = os.environ.get("COURSE_GRADING_ROOT") or str(ROOT / "grading")
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

# --- the course's protections (course_grading), by name ------------------------------------------
from course_grading import course  # noqa: E402  (instructor-only package, installed with the repository)

if not os.environ.get("COURSE_GRADING_NO_SYNC"):
    from course_grading.stage import sync_source

    sync_source(Path(c.CourseDirectory.root))

# --- autograde -------------------------------------------------------------------------------
# Every test cell runs in well under 5 s on a laptop CPU; 30 s per cell is the safety net.
c.Execute.timeout = 30
# nbgrader looks exclude_overwriting up BY ASSIGNMENT ID: each assignment keeps every student-edited
# course_lib file the student's (the list comes from course_lib/tasks.py). A file the submission lacks
# becomes the student edition's stub (FillStubs), never the instructor's code.
c.Autograde.exclude_overwriting = course.exclude_overwriting()
c.OverwriteCells.add_missing_cells = True  # a fallback: RestoreCells already put deleted cells back in place
c.Autograde.sanitize_preprocessors = [
    "nbgrader.preprocessors.ClearOutput",
    "course_grading.preprocessors.RestoreCells",  # deleted graded/locked cells back IN PLACE; cell ids
    "nbgrader.preprocessors.DeduplicateIds",
    "nbgrader.preprocessors.OverwriteKernelspec",
    "nbgrader.preprocessors.OverwriteCells",  # edited locked cells (tests, helpers) restored
    "nbgrader.preprocessors.CheckCellMetadata",
]
c.Autograde.autograde_preprocessors = [
    "course_grading.scan.ScanSubmission",  # static scan: process/file/network/introspection APIs, a note for review
    "course_grading.preprocessors.FillStubs",  # missing course_lib files: the student edition's stubs
    # nbgrader's Execute + kernel crash/timeout recovery, the kernel guard, stderr and a trailing number
    # never costing points (GradingExecute), + tamper checks around every test and the sandboxed kernel
    # manager below (GuardedExecute: nbgrader's Execute alone ignores c.Execute.kernel_manager_class)
    "course_grading.tamper.GuardedExecute",
    "nbgrader.preprocessors.IgnorePattern",
    "nbconvert.preprocessors.ClearMetadataPreprocessor",
    "nbgrader.preprocessors.LimitOutput",
    "nbgrader.preprocessors.SaveAutoGrades",
    "nbgrader.preprocessors.AssignLatePenalties",
    "nbgrader.preprocessors.CheckCellMetadata",
]

# --- the sandbox (course_grading.sandbox; docs/SECURITY.md) ----------------------------------
# Every kernel that runs a submission runs in bubblewrap: only its own files, a read-only Python, no
# network, its own processes, limits. Without bubblewrap grading refuses to run, unless the instructor
# passes --SandboxedKernelManager.allow_unsandboxed=True (nbgrader) or sets COURSE_ALLOW_UNSANDBOXED=1.
c.Execute.kernel_manager_class = "course_grading.sandbox.SandboxedKernelManager"
c.SandboxedKernelManager.allow_unsandboxed = os.environ.get("COURSE_ALLOW_UNSANDBOXED") == "1"
# The limits, per kernel (these are the defaults): CPU seconds and heap per process, resident memory of
# the whole sandbox, each scratch tmpfs (cwd, /tmp, /dev/shm) and largest file, processes + threads,
# output kept per cell and per notebook.
# c.SandboxedKernelManager.cpu_seconds = 900
# c.SandboxedKernelManager.memory_mb = 4096
# c.SandboxedKernelManager.total_memory_mb = 6144
# c.SandboxedKernelManager.disk_mb = 256
# c.SandboxedKernelManager.max_processes = 128
# c.SandboxedKernelManager.output_bytes_per_cell = 200_000
# c.SandboxedKernelManager.output_bytes = 2_000_000

# --- generate_feedback (also formgrader's button) ----------------------------------------------
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "course_grading.feedback.RedactFeedback",  # no hidden test, nothing that ran after one, no machine paths
    "course_grading.feedback.FeedbackSummary",  # every task: name, points, what the tests said
    "nbconvert.preprocessors.sanitize.SanitizeHTML",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
# Only the pages reach feedback/ (and the exchange's release_feedback), not files written while grading.
c.GenerateFeedback.post_convert_hook = "course_grading.feedback.keep_pages_only"
# Student output never runs in the feedback page: active HTML and JavaScript removed.
c.SanitizeHTML.enabled = True
c.SanitizeHTML.safe_output_keys = {"metadata", "text/plain", "image/png", "image/jpeg"}
c.HTMLExporter.sanitize_html = True
# nbgrader's feedback page with the test cells named by task (course_grading/templates/feedback)
c.HTMLExporter.extra_template_basedirs = course.feedback_template_dirs()

# --- zip_collect and export ------------------------------------------------------------------
c.ZipCollectApp.extractor_plugin = "course_grading.plugins.SafeExtractor"
c.ZipCollectApp.collector_plugin = "course_grading.plugins.CourseCollector"
c.ExportApp.plugin_class = "course_grading.plugins.TaskCsvExport"  # grading/grades.csv, per task
