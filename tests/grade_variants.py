"""Course_lib variants and a grader for them, shared by tests/test_assignments.py and tests/test_mistakes.py.

``course_lib_variant`` writes the instructor's course_lib with some tasks stubbed (as in the student
edition) or one task's solution replaced by other code; ``grade_variants`` runs a notebook's locked
cells once per variant, in one kernel, and grades every graded cell as nbgrader autograde does.
"""
from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import nbformat

import release

# The course_lib variants. Replacement bodies for one task's solution block (indented by the block).
VARIANT_BODIES = {
    "1.1 wrong scale": ("1.1", """
        scores = q @ k.transpose(-2, -1) / q.shape[-1]  # wrong: d instead of sqrt(d)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        return weights @ v, weights
        """),
    "1.1 calls F.sdpa": ("1.1", """
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).nan_to_num(0.0), weights
        """),
    "1.1 einsum in float64": ("1.1", """
        scores = torch.einsum("...nd,...md->...nm", q.double(), k.double()) / q.shape[-1] ** 0.5
        if mask is not None:
            scores = scores.masked_fill(~mask, -math.inf) if mask.dtype == torch.bool else scores + mask
        weights = scores.softmax(dim=-1)
        weights = torch.where(weights.isnan(), torch.zeros_like(weights), weights).to(q.dtype)
        return torch.einsum("...nm,...me->...ne", weights, v), weights
        """),
    "1.4 loop over heads": ("1.4", """
        B, N, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=-1)  # each (B, N, D), the heads side by side
        if mask is not None and mask.dim() == 4:  # (B or 1, h or 1, N, N): one mask per head
            head_masks = [mask[:, min(i, mask.shape[1] - 1)] for i in range(self.heads)]
        else:
            head_masks = [mask] * self.heads
        outs, weights = [], []
        for i in range(self.heads):
            cols = slice(i * self.head_dim, (i + 1) * self.head_dim)
            o, w = scaled_dot_product_attention(q[..., cols], k[..., cols], v[..., cols], head_masks[i])
            outs.append(o)
            weights.append(w)
        out = self.proj(torch.cat(outs, dim=-1))  # (B, N, D)
        return (out, torch.stack(weights, dim=1)) if need_weights else out
        """),
    "3.3 float32 tutorial formula": ("3.3", """
        position = torch.arange(num_positions).unsqueeze(1)  # (N, 1)
        div_term = torch.exp(torch.arange(0, dim, 2) * (-torch.tensor(base).log() / dim))  # (D/2,), float32
        pe = torch.zeros(num_positions, dim)
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        return pe
        """),
    "2.2 calls F.layer_norm": ("2.2", """
        return F.layer_norm(x, (self.dim,), self.weight, self.bias, self.eps)
        """),
    "2.2 var and rsqrt": ("2.2", """
        centred = x - x.mean(dim=-1, keepdim=True)
        return centred * torch.rsqrt(x.var(dim=-1, unbiased=False, keepdim=True) + self.eps) * self.weight + self.bias
        """),
}


def course_lib_variant(dest: Path, solved: set[str], replace: tuple[str, str] | None = None) -> Path:
    """A copy of the instructor's course_lib under ``dest`` with every task not in ``solved`` a stub
    (as in the student edition) and, optionally, one task's solution replaced by other code."""
    def body(task: str, solution: str, indent: str) -> str:
        if replace and replace[0] == task:
            return textwrap.indent(textwrap.dedent(replace[1]).strip("\n") + "\n", indent)
        return solution if task in solved else release.stub(task, solution, indent)

    release.build_course_lib(dest, body=body)
    return dest


SWITCH = """
import sys
for _name in [m for m in sys.modules if m == "course_lib" or m.startswith("course_lib.")]:
    del sys.modules[_name]
sys.path[:] = [p for p in sys.path if not p.startswith({base!r})]
sys.path.insert(0, {root!r})
import course_lib
assert course_lib.__file__.startswith({root!r}), course_lib.__file__
"""


def grade_variants(notebook: Path, variants: dict[str, Path], workdir: Path) -> tuple[dict[str, dict[str, bool]], dict]:
    """Run the locked cells of ``notebook`` (helpers, graded tests with their hidden parts) once per
    course_lib variant, in one kernel, and grade every graded cell as nbgrader does.

    Returns:
        ({variant: {grade_id: passed}}, {"seconds": {grade_id: worst time}, "outputs": {...}}).
    """
    from nbclient import NotebookClient
    from nbgrader.utils import determine_grade

    source = nbformat.read(notebook, as_version=4)
    locked = [c for c in source.cells if "nbgrader" in c.metadata]
    nb = nbformat.v4.new_notebook()
    nb.metadata = source.metadata
    owners = []
    base = str(workdir)
    for name, root in variants.items():
        nb.cells.append(nbformat.v4.new_code_cell(SWITCH.format(base=base, root=str(root))))
        owners.append((name, None))
        for cell in locked:
            nb.cells.append(nbformat.v4.new_code_cell(cell.source, metadata=json.loads(json.dumps(cell.metadata))))
            owners.append((name, cell.metadata.nbgrader["grade_id"]))
    run_dir = workdir / "run"
    run_dir.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["NBGRADER_EXECUTION"] = "autograde"
    client = NotebookClient(nb, timeout=30, kernel_name="python3", allow_errors=True, record_timing=True,
                            resources={"metadata": {"path": str(run_dir)}})
    with client.setup_kernel(env=env):
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
    grades: dict[str, dict[str, bool]] = {}
    info = {"seconds": {}, "failures": {}}
    for (variant, grade_id), cell in zip(owners, nb.cells):
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if grade_id is None or not cell.metadata.nbgrader.get("grade"):
            assert not errors, f"{variant}: set-up or helper cell failed: {errors[0].ename}: {errors[0].evalue}"
            continue
        score, max_score = determine_grade(cell)
        grades.setdefault(variant, {})[grade_id] = score == max_score
        if score != max_score:
            info["failures"][(variant, grade_id)] = (errors[0].ename + ": " + errors[0].evalue) if errors else cell.outputs
        timing = cell.metadata.get("execution", {})
        if "iopub.execute_input" in timing and "shell.execute_reply" in timing:
            from datetime import datetime

            t0, t1 = (datetime.fromisoformat(timing[k].replace("Z", "+00:00")) for k in ("iopub.execute_input", "shell.execute_reply"))
            info["seconds"][grade_id] = max(info["seconds"].get(grade_id, 0.0), (t1 - t0).total_seconds())
    return grades, info
