"""Grading the course with nbgrader: the course's protections as nbgrader extensions, and ``make grade``.

Instructor-only (never copied into the student edition). Every protection is an nbgrader extension
configured by name in ``nbgrader_config.py``, so ``nbgrader autograde``, ``nbgrader generate_feedback``,
formgrader, the exchange and ``make grade`` all get it:

    course       the course's facts: repository root, assignments, student-edited modules, tasks
    archive      reading untrusted zips safely (limits, encodings, traversal, symlinks, encryption)
    collect      LMS downloads and student zips -> one ``Submission`` per (student, assignment)
    stage        the course directory: source/ from solutions/, the student edition's stubs, submitted/
    guard        the kernel guard: the functions tests rely on, restored before every test cell
    execute      ``GradingExecute``: nbgrader's Execute, recovering crashes/timeouts, stderr-safe
    preprocessors  restore deleted cells, fill missing course_lib files, redact feedback, summary
    plugins      ZipCollectApp extractor/collector for the course's zips, the per-task CSV export
    worker       autograde + feedback of ONE submission in its own course directory (a process)
    pool         parallel worker processes with time and memory limits
    merge        a worker's gradebook into the course's gradebook
    report       grades.csv (per task, late and no-id flags) and the notes kept between runs
    cli          ``make grade``: what nbgrader lacks (LMS downloads, parallel autograde, progress bar)

The OS sandbox for the kernel (``sandbox``) and the static scan (``scan``) are separate modules.
"""
