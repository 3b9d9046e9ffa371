"""Collecting uploads: ids from the instructor's side only, and no malformed upload stops the batch."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import nbformat
import pytest

from course_grading.archive import Limits, read_zip
from course_grading.collect import collect, ids_from_filename, read_upload

ASSIGNMENTS = ["01_attention", "02_encoder", "03_embeddings"]
IDS = {"01_attention": {"task1_1_visible"}, "02_encoder": {"task2_1_visible", "test_helpers"}}


def notebook(*grade_ids: str) -> str:
    nb = nbformat.v4.new_notebook()
    for gid in grade_ids:
        cell = nbformat.v4.new_code_cell("pass")
        cell.metadata["nbgrader"] = {"grade": True, "grade_id": gid, "locked": True, "solution": False, "points": 1}
        nb.cells.append(cell)
    return nbformat.writes(nb)


NB1 = notebook("task1_1_visible")


def make_zip(path: Path, files: dict[str, str | bytes], **info) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(zipfile.ZipInfo(name, **info) if info else name, data)
    return path


@pytest.mark.parametrize("name, expected", [
    ("submission_jsmith42_01_attention.zip", (None, "jsmith42", "01_attention")),
    ("submission_jsmith42_01_attention (1).zip", (None, "jsmith42", "01_attention")),
    ("jsmith_12345_678_submission_jsmith_01_attention.zip", ("jsmith", "jsmith", "01_attention")),
    ("jsmith_LATE_12345_678_submission_jsmith_01_attention-1.zip", ("jsmith", "jsmith", "01_attention")),
    ("Jane Smith_123456_assignsubmission_file_submission_js_02_encoder.zip", (None, "js", "02_encoder")),
    ("Jane Smith_123456_assignsubmission_file_01_attention.ipynb", (None, "Jane-Smith", "01_attention")),
    ("submission_a_b_c_03_embeddings.zip", (None, "a_b_c", "03_embeddings")),
    ("Copy of 01_attention.ipynb", (None, None, "01_attention")),
    ("my work.zip", (None, None, None)),
])
def test_student_and_assignment_from_lms_file_names(name, expected):
    assert ids_from_filename(name, ASSIGNMENTS) == expected


def test_a_renamed_notebook_is_matched_by_its_graded_cells_and_the_id_comes_from_the_file_name(tmp_path):
    path = make_zip(tmp_path / "whatever_i_called_it.zip", {
        "homework final (3).ipynb": notebook("test_helpers", "task2_1_visible"),
        "course_lib/encoder.py": "# mine\n", "submission.json": json.dumps({"student_id": "ab123"})})
    (sub,) = read_upload(path, ASSIGNMENTS, IDS)
    assert (sub.student, sub.assignment, sub.problems, sub.no_id) == ("whatever_i_called_it", "02_encoder", [], True)
    assert sub.modules == {"encoder.py": b"# mine\n"}
    assert any("'ab123' (not used" in n for n in sub.notes)


def test_submission_json_never_replaces_another_students_upload(tmp_path):
    """A forged submission.json (another student, a far-future time) is a CONFLICT note, nothing more."""
    make_zip(tmp_path / "submission_alice_01_attention.zip", {"01_attention.ipynb": NB1, "course_lib/attention.py": "# alice\n"})
    make_zip(tmp_path / "submission_mallory_01_attention.zip", {
        "01_attention.ipynb": NB1, "course_lib/attention.py": "# mallory\n",
        "submission.json": json.dumps({"student_id": "alice", "created": "2999-01-01T00:00:00"})})
    subs = {s.student: s for s in collect(tmp_path, ASSIGNMENTS, IDS, tmp_path / "x")}
    assert subs["alice"].modules == {"attention.py": b"# alice\n"}
    assert subs["mallory"].modules == {"attention.py": b"# mallory\n"}
    assert any(n.startswith("CONFLICT") for n in subs["mallory"].notes)


def test_the_newest_upload_by_the_lms_time_is_graded(tmp_path):
    import os

    for name, mtime in (("submission_x_01_attention.zip", 2_000_000_000), ("submission_x_01_attention (1).zip", 1_000_000_000)):
        make_zip(tmp_path / name, {"01_attention.ipynb": NB1, "submission.json": json.dumps({"created": "2999-01-01"})})
        os.utime(tmp_path / name, (mtime, mtime))
    (sub,) = collect(tmp_path, ASSIGNMENTS, IDS, tmp_path / "x")
    assert sub.source.name == "submission_x_01_attention.zip" and "2 uploads" in sub.notes[-1]


def test_canvas_late_marker(tmp_path):
    make_zip(tmp_path / "jsmith_LATE_1_2_submission_jsmith_01_attention.zip", {"01_attention.ipynb": NB1})
    (sub,) = collect(tmp_path, ASSIGNMENTS, IDS, tmp_path / "x")
    assert sub.late and sub.student == "jsmith"


def student_zip(sid: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("01_attention.ipynb", NB1)
        zf.writestr("course_lib/attention.py", f"# {sid}\n")
    return buf.getvalue()


def test_an_lms_download_zip_of_zips_is_unpacked(tmp_path):
    """Canvas: one zip of '<login>_<id>_<id>_<file>' zips; Moodle: one folder per student."""
    bundle = make_zip(tmp_path / "submissions.zip", {
        "jsmith_12345_678_submission_jsmith_01_attention.zip": student_zip("jsmith"),
        "Jane Doe_222_assignsubmission_file_/submission_jd7_01_attention.zip": student_zip("jd7"),
        "Bo Li_333_assignsubmission_file_/Copy of 01_attention.ipynb": NB1})
    subs = {s.student: s for s in collect(bundle, ASSIGNMENTS, IDS, tmp_path / "x")}
    assert set(subs) == {"jsmith", "jd7", "Bo-Li"}
    assert subs["jsmith"].modules == {"attention.py": b"# jsmith\n"} and subs["jd7"].assignment == "01_attention"


def test_a_zip_inside_a_students_zip_is_never_read_as_an_lms_download(tmp_path):
    make_zip(tmp_path / "submission_mallory_01_attention.zip", {
        "01_attention.ipynb": NB1, "alice_1_2_submission_alice_01_attention.zip": student_zip("forged")})
    make_zip(tmp_path / "submission_eve_01_attention.zip", {"bob_1_2_submission_bob_01_attention.zip": student_zip("forged")})
    subs = {s.student: s for s in collect(tmp_path, ASSIGNMENTS, IDS, tmp_path / "x")}
    assert set(subs) == {"mallory", "eve"}
    assert any("never unpacked" in n for n in subs["mallory"].notes)
    assert subs["eve"].problems == ["no notebook in the submission"]


# --- nothing stops the batch ----------------------------------------------------------------------

def _raw_zip_with_name(path: Path, raw_name: bytes, flag_utf8: bool) -> Path:
    """A zip whose one entry's name is ``raw_name`` bytes (UTF-8 flag set or not)."""
    make_zip(path, {"X" * len(raw_name): NB1})
    data = path.read_bytes().replace(b"X" * len(raw_name), raw_name)
    if flag_utf8:  # set bit 11 in both headers
        data = data.replace(b"PK\x03\x04\x14\x00\x00\x00", b"PK\x03\x04\x14\x00\x00\x08")
        data = data.replace(b"PK\x01\x02\x14\x03\x14\x00\x00\x00", b"PK\x01\x02\x14\x03\x14\x00\x00\x08")
    path.write_bytes(data)
    return path


def test_file_names_in_any_encoding(tmp_path):
    ok = _raw_zip_with_name(tmp_path / "submission_a_01_attention.zip", "Übung.ipynb".encode(), flag_utf8=False)
    assert list(read_zip(ok).files) == ["Übung.ipynb"]
    latin = _raw_zip_with_name(tmp_path / "submission_b_01_attention.zip", "\xdcbung.ipynb".encode("latin-1"), flag_utf8=False)
    assert len(read_zip(latin).files) == 1
    bad = _raw_zip_with_name(tmp_path / "submission_c_01_attention.zip", b"\xff\xfe.ipynb", flag_utf8=True)
    got = read_zip(bad)
    assert got.problems and "not" in got.problems[0] or len(got.files) == 1


def test_traversal_symlinks_duplicates_and_encrypted_entries_are_skipped(tmp_path):
    path = tmp_path / "submission_a_01_attention.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("01_attention.ipynb", NB1)
        zf.writestr("../../etc/evil.py", "x")
        zf.writestr("/abs/evil.py", "x")
        link = zipfile.ZipInfo("course_lib/attention.py")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
        zf.writestr("course_lib/encoder.py", "garbage")
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zf.writestr("01_attention.ipynb", "{}")  # a duplicate entry
    data = bytearray(path.read_bytes())
    for header, offset, flag in ((b"PK\x01\x02", 46, 8), (b"PK\x03\x04", 30, 6)):  # mark encoder.py encrypted
        pos = data.find(header, 0)
        while pos != -1:
            if data[pos + offset: pos + offset + 21] == b"course_lib/encoder.py":
                data[pos + flag] |= 0x1
            pos = data.find(header, pos + 1)
    path.write_bytes(bytes(data))
    got = read_zip(path)
    assert list(got.files) == ["01_attention.ipynb"] and got.files["01_attention.ipynb"] == NB1.encode()
    text = " ".join(got.notes)
    for what in ("outside the zip", "symbolic link", "encrypted", "appears twice"):
        assert what in text, text


def test_zip_bombs_are_refused_before_expanding(tmp_path):
    big = make_zip(tmp_path / "submission_a_01_attention.zip", {"01_attention.ipynb": NB1, "pad.bin": b"\0" * (4 * 2**20)})
    assert "zip bomb" in read_zip(big).problems[0]
    many = make_zip(tmp_path / "submission_b_01_attention.zip", {f"f{i}.txt": "x" for i in range(20)})
    assert "more than the limit" in read_zip(many, Limits(max_entries=10)).problems[0]
    total = make_zip(tmp_path / "submission_c_01_attention.zip", {f"f{i}.txt": "y" * 1000 for i in range(5)})
    assert "expands to" in read_zip(total, Limits(max_total_bytes=2000)).problems[0]


def test_unreadable_and_corrupt_uploads_are_rows_not_crashes(tmp_path):
    (tmp_path / "submission_x_01_attention.zip").write_bytes(b"not a zip")
    make_zip(tmp_path / "submission_y_01_attention.zip", {"01_attention.ipynb": '{"cells": ['})
    good = make_zip(tmp_path / "submission_z_01_attention.zip", {"01_attention.ipynb": NB1, "course_lib/attention.py": "a = 1\n" * 1000})
    data = bytearray(good.read_bytes())
    i = data.find(b"course_lib/attention.py") + 40  # inside the compressed data of the second entry
    data[i:i + 8] = b"\xff" * 8
    good.write_bytes(bytes(data))
    (tmp_path / "Übung ünicode name.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip, no id
    subs = {s.student: s for s in collect(tmp_path, ASSIGNMENTS, IDS, tmp_path / "x")}
    assert "not a readable zip" in subs["x"].problems[0] and subs["x"].assignment == "01_attention"
    assert "cannot be read" in subs["y"].problems[0]
    assert subs["z"].notebook is not None and any("corrupt" in n for n in subs["z"].notes)
    empty = next(s for s in subs.values() if s.no_id)
    assert empty.problems == ["no notebook in the submission"]
