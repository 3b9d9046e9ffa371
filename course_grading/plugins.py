"""nbgrader plugins for the course (configured by name in ``nbgrader_config.py``).

* ``SafeExtractor`` and ``CourseCollector``: ``nbgrader zip_collect <assignment>`` for the course's
  zips (``submission_<id>_<exercise>.zip``) and Canvas/Moodle downloads. The extractor reads every
  upload in ``downloaded/<assignment>/archive/`` through ``collect`` (safe unzipping, identities from
  the LMS's file names only, renamed notebooks matched by their graded cells) and lays each
  student's files out as ``extracted/<student>/{<assignment>.ipynb, course_lib/*.py}``, with the
  upload times in ``downloaded/<assignment>/uploads.json``; the collector maps them to
  ``submitted/<student>/<assignment>/``. Uploads that cannot be graded are noted for ``grades.csv``.
* ``TaskCsvExport``: ``nbgrader export`` writes the course's per-task ``grades.csv`` (``report``) into
  the course directory, never into the current folder.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from nbgrader.plugins import ExportPlugin, ExtractorPlugin, FileNameCollectorPlugin
from traitlets import List

from .course import assignment_ids, student_modules
from .report import load_notes, save_note, write_grades

UPLOADS = "uploads.json"


def _coursedir(plugin):
    parent = plugin.parent
    while parent is not None and not hasattr(parent, "coursedir"):
        parent = parent.parent
    return parent.coursedir if parent is not None else None


def _grade_ids(release_dir: Path) -> dict[str, set[str]]:
    import nbformat

    out = {}
    for path in sorted(release_dir.glob("*/*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        out[path.parent.name] = {c.metadata.get("nbgrader", {}).get("grade_id") for c in nb.cells} - {None}
    return out


class SafeExtractor(ExtractorPlugin):
    """Reads the uploads of ``archive/`` safely and lays them out per student (see the module doc)."""

    def extract(self, archive_path: str, extracted_path: str) -> None:
        from .collect import collect

        coursedir = _coursedir(self)
        aid = coursedir.assignment_id
        root = Path(coursedir.root)
        scratch = Path(tempfile.mkdtemp(prefix="zip-collect-"))
        try:
            subs = collect(Path(archive_path), assignment_ids(), _grade_ids(root / coursedir.release_directory), scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        uploads = {}
        for sub in subs:
            if sub.assignment not in (aid, None):
                continue
            entry = {"status": "collected", "notes": sub.notes, "late": sub.late, "no_id": sub.no_id,
                     "conflict": any(n.startswith("CONFLICT") for n in sub.notes)}
            if sub.problems or sub.notebook is None:
                entry["status"] = "not graded"
                entry["notes"] = sub.problems + sub.notes
                save_note(root, aid, sub.student, entry)
                self.log.warning("%s: not collected: %s", sub.student, "; ".join(sub.problems))
                continue
            import nbformat

            dest = Path(extracted_path) / sub.student
            shutil.rmtree(dest, ignore_errors=True)
            (dest / "course_lib").mkdir(parents=True)
            nbformat.write(sub.notebook, dest / f"{aid}.ipynb")
            for module, data in sub.modules.items():
                (dest / "course_lib" / module).write_bytes(data)
            uploads[sub.student] = sub.uploaded.isoformat() if sub.uploaded else ""
            save_note(root, aid, sub.student, entry)
        (Path(extracted_path).parent / UPLOADS).write_text(json.dumps(uploads, indent=1))


class CourseCollector(FileNameCollectorPlugin):
    """``extracted/<student>/<file>`` -> student id and file (laid out by ``SafeExtractor``)."""

    valid_ext = List([".ipynb", ".py"]).tag(config=True)

    def collect(self, submitted_file: str) -> dict | None:
        path = Path(submitted_file)
        extracted = next((p for p in path.parents if p.name == "extracted"), None)
        if extracted is None or path.suffix not in self.valid_ext:
            return None
        rel = path.relative_to(extracted).parts
        if len(rel) < 2 or (rel[1:] != (path.name,) and (rel[1:-1] != ("course_lib",) or path.name not in student_modules())):
            return None
        uploads_file = extracted.parent / UPLOADS
        uploads = json.loads(uploads_file.read_text()) if uploads_file.exists() else {}
        info = {"student_id": rel[0], "file_id": "/".join(rel[1:])}
        if uploads.get(rel[0]):
            info["timestamp"] = uploads[rel[0]]
        return info


class TaskCsvExport(ExportPlugin):
    """``nbgrader export``: per-task grades.csv with flags and notes (default: ``<course>/grades.csv``)."""

    def export(self, gradebook) -> None:
        coursedir = _coursedir(self)
        root = Path(coursedir.root) if coursedir is not None else Path(".")
        dest = Path(self.to) if self.to else root / "grades.csv"
        rows = write_grades(gradebook, load_notes(root), dest)
        self.log.info("Exported %d students' grades to %s", len(rows), dest)
