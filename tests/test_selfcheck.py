"""The student self-check: passes the solutions, explains failures, and reports stubs as to-do."""
import subprocess
import sys

import pytest
import torch

import course_lib
from course_lib import attention, embeddings, selfcheck
from course_lib.tasks import TASKS


def test_every_task_has_a_check():
    assert {c.task for c in selfcheck.CASES.values()} == {t.id for t in TASKS}
    assert all(c.inputs for c in selfcheck.CASES.values())


def test_solutions_pass(device, capsys):
    results = course_lib.check(device=str(device))
    assert all(r.ok for r in results), [f"{r.task.id} {r.case}: {r.message}" for r in results if not r.ok]
    assert f"20/20 checks passed on {device} ({len(results)}/{len(results)} cases)" in capsys.readouterr().out


def test_reference_data_matches_the_solutions():
    """Fails when a solution changed and the reference was not regenerated (python -m course_lib.selfcheck --regenerate)."""
    stored = selfcheck.load_reference()
    assert stored.keys() == selfcheck.CASES.keys()
    for name, c in selfcheck.CASES.items():
        outputs, error = selfcheck.run_outputs(c, torch.device("cpu"))
        assert error is None, (name, error)
        assert outputs.keys() == stored[name].keys(), name
        for key, value in outputs.items():
            torch.testing.assert_close(value.double(), stored[name][key].double(), rtol=1e-6, atol=1e-7, msg=f"{name}.{key}")


def _fails(task):
    return [r for r in course_lib.check(task, verbose=False) if not r.ok]


def test_missing_scale_is_named_with_the_case_and_shapes(monkeypatch, capsys):
    def unscaled(q, k, v, mask=None):  # forgets the 1/sqrt(d)
        scores = q @ k.transpose(-2, -1)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        w = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        return w @ v, w

    monkeypatch.setattr(attention, "scaled_dot_product_attention", unscaled)
    results = course_lib.check("1.1")
    out = capsys.readouterr().out
    assert len(results) == 5 and all(r.status == "fail" for r in results)  # every case runs, not only the first
    assert "largest error" in results[0].message and "at index" in results[0].message
    assert results[0].diagnosis == "attention without the 1/sqrt(d) scale"
    assert "q (B=2, h=3, N=5, d=4)" in out and "likely cause: attention without the 1/sqrt(d) scale" in out


def test_swapped_return_is_named_not_reported_as_rows_not_summing_to_one(monkeypatch):
    solution = attention.scaled_dot_product_attention
    monkeypatch.setattr(attention, "scaled_dot_product_attention", lambda q, k, v, mask=None: solution(q, k, v, mask)[::-1])
    first = _fails("1.1")[0]
    assert first.diagnosis == "(weights, out) returned instead of (out, weights)" and "expected shape" in first.message


def test_rows_message_names_the_sum(monkeypatch):
    from course_lib.checks import cases

    with pytest.raises(cases.PropertyFailure, match="one sums to 2.06"):
        cases.rows_sum_to_one(torch.tensor([[0.5, 0.5], [1.0, 1.06]]), "x")


def test_fused_attention_under_another_name_fails_the_check(monkeypatch):
    """The graded tests forbid PyTorch's attention kernels by any route: so does check()."""
    fast = torch.ops.aten.scaled_dot_product_attention

    def cheat(q, k, v, mask=None):
        w = torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5 + (0 if mask is None else 0), dim=-1)
        return fast(q, k, v, attn_mask=mask).nan_to_num(0.0), w

    monkeypatch.setattr(attention, "scaled_dot_product_attention", cheat)
    fails = _fails("1.1")
    assert fails and all("must be written by hand" in r.message for r in fails), [r.message for r in fails]


def test_wrong_shape_is_explained(monkeypatch):
    monkeypatch.setattr(embeddings, "patchify", lambda x, p: torch.zeros(2, 48, 6))
    (result,) = course_lib.check("3.1", verbose=False)
    assert result.status == "fail" and "(2, 48, 6)" in result.message and "(B=2, N=6, C*P*P=48)" in result.message


def test_broken_property_is_named(monkeypatch):
    monkeypatch.setattr(attention, "causal_mask", lambda N, device=None: torch.ones(N, N, dtype=torch.bool, device=device))
    (result,) = course_lib.check("1.2", verbose=False)
    assert result.status == "fail" and "must not depend on tokens after t" in result.message


def test_python_return_types_are_checked(monkeypatch):
    from course_lib import analysis

    solution = analysis.fit_power_law
    monkeypatch.setattr(analysis, "fit_power_law", lambda x, y: tuple(torch.tensor(v) for v in solution(x, y)))
    (result,) = course_lib.check("5.2", verbose=False)
    assert result.status == "fail" and "Python floats" in result.message


def test_crash_is_reported_not_raised(monkeypatch):
    monkeypatch.setattr(embeddings, "sinusoidal_position_embedding", lambda n, d, base=1e4: 1 / 0)
    (result,) = course_lib.check("3.3", verbose=False)
    assert result.status == "error" and "ZeroDivisionError" in result.message


def test_missing_dependency_is_named(monkeypatch):
    from course_lib.tasks import not_implemented

    def stub(self, x):
        raise not_implemented("3.2")

    monkeypatch.setattr(embeddings.PatchEmbedding, "forward", stub)
    (result,) = course_lib.check("4.1", verbose=False)
    assert result.status == "todo" and result.message == "needs Task 3.2 (PatchEmbedding) first"


def test_exercise_selection():
    assert sorted({r.task.id for r in course_lib.check(2, verbose=False)}) == ["2.1", "2.2", "2.3", "2.4"]
    with pytest.raises(KeyError, match="unknown task"):
        course_lib.check("9.9")


def test_student_edition_reports_every_task_as_todo(student_edition):
    code = "from course_lib import check; rs = check(); assert all(r.status == 'todo' for r in rs), [(r.task.id, r.status, r.message) for r in rs]"
    run = subprocess.run([sys.executable, "-c", code], cwd=student_edition, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr + run.stdout
    assert "[ TODO] Task 1.1 scaled_dot_product_attention: not implemented yet" in run.stdout
    assert "0/20 checks passed" in run.stdout


# --- course_lib.forbidden: "written by hand", through any route into PyTorch's fused kernels ----------

def _routes():
    import torch.nn.functional as F
    from torch import nn

    q = torch.randn(2, 3, 4, 8)
    alias = F.scaled_dot_product_attention
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    return {
        "F.scaled_dot_product_attention": lambda: F.scaled_dot_product_attention(q, q, q),
        "an alias imported before": lambda: alias(q, q, q),
        "torch._C._nn": lambda: torch._C._nn.scaled_dot_product_attention(q, q, q),
        "torch.ops.aten": lambda: torch.ops.aten.scaled_dot_product_attention(q, q, q),
        "torch.ops.aten .default": lambda: torch.ops.aten.scaled_dot_product_attention.default(q, q, q),
        "the math kernel": lambda: torch.ops.aten._scaled_dot_product_attention_math(q, q, q),
        "float64 with a mask": lambda: alias(q.double(), q.double(), q.double(), attn_mask=torch.ones(4, 4, dtype=torch.bool)),
        "nn.MultiheadAttention": lambda: mha(q[0], q[0], q[0]),
        "nn.MultiheadAttention fast path": lambda: torch.no_grad()(lambda: mha.eval()(q[0], q[0], q[0]))(),
        "F.multi_head_attention_forward": lambda: F.multi_head_attention_forward(
            q[0].transpose(0, 1), q[0].transpose(0, 1), q[0].transpose(0, 1), 8, 2, mha.in_proj_weight, mha.in_proj_bias,
            None, None, False, 0.0, mha.out_proj.weight, mha.out_proj.bias),
        "torch function modes disabled": lambda: _without_torch_function(alias, q, q, q),
    }


def _without_torch_function(fn, *args):
    with torch._C.DisableTorchFunction():  # the function-level mode is off: the kernel level still sees it
        return fn(*args)


@pytest.mark.parametrize("route", list(_routes()))
def test_forbid_catches_every_route_into_fused_attention(route):
    from course_lib import forbidden

    fn = _routes()[route]
    with pytest.raises(forbidden.ForbiddenRoute, match="Task 1.1 must be written by hand"):
        with forbidden.forbid("1.1"):
            fn()
    with forbidden.forbid("1.1", raise_=False) as used:
        fn()
    assert used, route


def test_forbid_lets_hand_written_attention_and_allowed_references_through():
    import torch.nn.functional as F
    from course_lib import forbidden

    q = torch.randn(2, 5, 4, requires_grad=True)
    with forbidden.forbid("1.1", "attention", "layer_norm") as used:
        out, w = attention.scaled_dot_product_attention(q, q, q)
        with forbidden.allowed():
            ref = F.scaled_dot_product_attention(q, q, q)
        (out.sum() + ref.sum()).backward()  # backward kernels of an allowed call are fine
        y = torch.softmax(q @ q.transpose(-2, -1), dim=-1)
    assert used == [] and q.grad is not None and y.shape == (2, 5, 5)
    with pytest.raises(forbidden.ForbiddenRoute, match="F.layer_norm"):
        with forbidden.forbid("2.2", "layer_norm"):
            torch.nn.LayerNorm(4)(q)
    with pytest.raises(ValueError, match="unknown groups"):
        with forbidden.forbid("1.1", "convolution"):
            pass
