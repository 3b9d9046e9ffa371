"""The static scan (course_grading.scan): what it flags for review, and that the course's own code is clean."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from course_grading.scan import scan_source, scan_submission, summary

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("code, category", [
    ("import subprocess", "process"),
    ("import os\nos.system('ls')", "process/file"),
    ("from socket import socket", "network"),
    ("import urllib.request", "network"),
    ("import ctypes", "native code"),
    ("import importlib; importlib.import_module('x')", "import machinery"),
    ("__import__('os')", "import machinery"),
    ("x = open('/etc/passwd').read()", "file"),
    ("eval('1')", "introspection"),
    ("exec('1')", "introspection"),
    ("import inspect", "introspection"),
    ("import sys\nf = sys._getframe(1)", "introspection"),
    ("import gc", "introspection"),
    ("import builtins", "introspection"),
    ("print(In[-1])", "IPython history"),
    ("get_ipython().ast_transformers.append(t)", "IPython transformer"),
    ("ip.input_transformers_post.append(f)", "IPython transformer"),
    ("from IPython import get_ipython", "introspection"),
    ("import torch\ntorch.ops.aten.scaled_dot_product_attention(q, k, v)", "dispatcher"),
    ("import torch\ntorch._C._nn.scaled_dot_product_attention(q, k, v)", "dispatcher"),
    ("from torch import _C", "dispatcher"),
    ("import torch\ntorch.allclose = lambda *a, **k: True", "monkeypatching"),
    ("class T(torch.Tensor):\n    pass", "tensor subclass"),
    ("class T:\n    @classmethod\n    def __torch_function__(cls, f, t, a=(), k=None): pass\n    x = T.__torch_function__", "dispatcher"),
    ("import __main__\n__main__.reference(q)", "introspection"),
    ("!curl example.com", "process"),
    ("def f(:", "syntax"),
])
def test_flags(code, category):
    assert category in {f.category for f in scan_source(code, "cell")}, scan_source(code, "cell")


def test_the_course_code_is_clean():
    """The solutions of every task (course_lib's student-edited modules) raise nothing: F.scaled_dot_product_attention
    (the fused path) and plain torch are what the tasks need."""
    from course_grading.scan import _student_modules

    modules = _student_modules() or ["attention.py", "encoder.py", "embeddings.py", "vit.py", "analysis.py"]
    assert scan_submission(ROOT, modules) == []


def test_released_cells_are_not_scanned(tmp_path):
    released = ROOT / "exercises" / "01_attention.ipynb"
    nb = nbformat.read(released, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import subprocess\nprint(In[-2])"))
    nbformat.write(nb, tmp_path / "01_attention.ipynb")
    found = scan_submission(tmp_path, released=released)
    assert [f.what for f in found] == ["imports subprocess", "reads In"], found
    assert all(f.where.startswith(f"01_attention.ipynb cell {len(nb.cells) - 1}:") for f in found)
    line = summary(found)
    assert line.startswith("static scan, for review (IPython history, process): ")
    (tmp_path / "course_lib").mkdir()
    (tmp_path / "course_lib" / "attention.py").write_text("import os\n")
    assert str(scan_submission(tmp_path, ["attention.py"], released)[0]) == "course_lib/attention.py:1: imports os (process/file)"
    (tmp_path / "broken.ipynb").write_text("{not json")
    assert any(f.what == "not a notebook" for f in scan_submission(tmp_path, [], released))
    assert json.loads(released.read_text())  # the released notebook itself untouched
