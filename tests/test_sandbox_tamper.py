"""The in-kernel tamper checks (course_grading/tamper_kernel.py), driven cell by cell in a sandboxed
kernel: what an honest test run looks like (nothing found) and each kind of tampering."""
from __future__ import annotations

import textwrap
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from course_grading import sandbox
from course_grading.sandbox import SandboxedKernelManager

pytestmark = pytest.mark.skipif(sandbox.unavailable_reason() is not None, reason="no sandbox here")
SOURCE = (Path(__file__).resolve().parents[1] / "course_grading" / "tamper_kernel.py").read_text()

ATTENTION = '''
import torch

def scaled_dot_product_attention(q, k, v, mask=None):
    w = torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1)
    return w @ v, w

def cheat(q, k, v):
    import __main__
    return __main__.torch_attention(q, k, v)

def forward(q):
    return scaled_dot_product_attention(q, q, q)

def patch_shell():
    ip = get_ipython()
    import ast

    class Swallow(ast.NodeTransformer):
        pass

    ip.ast_transformers.append(Swallow())
    ip.input_transformers_post.append(lambda lines: lines)

class Liar(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.allclose:
            return True
        return super().__torch_function__(func, types, args, kwargs)
'''
FORBIDDEN = '''
import threading
GROUPS = {"attention": frozenset({"scaled_dot_product_attention"})}
_state = threading.local()

def hit(name):
    if getattr(_state, "allowed", 0):
        return
    raise AssertionError(name)
'''
CHECK = "import sys; print(sys.modules['_t'].{}())"


def test_tamper_checks(tmp_path):
    (tmp_path / "course_lib").mkdir()
    (tmp_path / "course_lib" / "__init__.py").write_text("")
    (tmp_path / "course_lib" / "attention.py").write_text(ATTENTION)
    (tmp_path / "course_lib" / "forbidden.py").write_text(FORBIDDEN)
    tasks = [("attention", "scaled_dot_product_attention")]
    cells = [
        SOURCE + f"\nprint(install('_t', {str(tmp_path)!r}, {tasks!r}))",
        "import torch\nimport course_lib.attention as attention\nfrom course_lib import forbidden\n"
        "def torch_attention(q, k, v):\n    return torch.nn.functional.scaled_dot_product_attention(q, k, v), None",
        # 2-4 an honest test, with the test's own swap of a reference into course_lib
        CHECK.format("begin"),
        "q = torch.randn(1, 3, 4)\nassert torch.allclose(attention.forward(q)[0], torch_attention(q, q, q)[0], atol=1e-6)\n"
        "orig = attention.scaled_dot_product_attention\nattention.scaled_dot_product_attention = torch_attention\n"
        "attention.forward(q)\nattention.scaled_dot_product_attention = orig",
        CHECK.format("end"),
        # 5-7 IPython transformers installed by the submission (then gone: restored)
        "attention.patch_shell()",
        CHECK.format("begin"),
        CHECK.format("end"),
        # 8-10 a tensor that lies about comparisons
        CHECK.format("begin"),
        "liar = torch.zeros(3).as_subclass(attention.Liar)\nassert torch.allclose(liar, torch.ones(3))",
        CHECK.format("end"),
        # 11-13 the notebook's reference helper called from course_lib
        CHECK.format("begin"),
        "attention.cheat(q, q, q)",
        CHECK.format("end"),
        # 14-15 a task bound to the notebook's helper, the detector's tables emptied and its switch left on
        "attention.scaled_dot_product_attention = torch_attention\nforbidden.GROUPS['attention'] = frozenset()\n"
        "forbidden._state.allowed = 1",
        CHECK.format("begin"),
        # 16-18 the grader's torch function mode removed
        CHECK.format("begin"),
        "from torch.overrides import _pop_mode\n_pop_mode()",
        CHECK.format("end"),
    ]
    nb = nbformat.v4.new_notebook()
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c)) for c in cells]
    NotebookClient(nb, kernel_manager_class=SandboxedKernelManager, timeout=120, allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    out = ["".join(o.get("text", "") if o.output_type == "stream" else f"{o.get('ename')}: {o.get('evalue', o.get('data'))}" for o in c.outputs).strip()
           for c in nb.cells]
    assert out[0] == "ok" and out[1] == "" and out[3] == "", out[:4]
    assert out[2] == out[4] == "[]", out[2:5]
    assert "IPython ast_transformers" in out[6] and "IPython input_transformers_post" in out[6] and out[7] == "[]"
    assert out[9] == "" and "overrides torch functions (course_lib.attention.Liar)" in out[10], out[9:11]
    assert "course_lib/attention.py:10 called the notebook's test helper torch_attention()" in out[13], out[11:14]
    assert "course_lib.attention.scaled_dot_product_attention is not the submission's own code" in out[15], out[15]
    assert "course_lib.forbidden.GROUPS" in out[15] and "allowed() left on" in out[15], out[15]
    assert "torch function mode was removed" in out[18], out[18]
