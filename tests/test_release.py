"""`make release`: the student edition has stubs that fail cleanly and no solution text anywhere."""
import shutil
import subprocess
import sys
import textwrap

import pytest

import release
from course_lib.tasks import TASKS

# One call per task that reaches its stub in the student edition.
CALLS = {
    "1.1": "attention.scaled_dot_product_attention(x, x, x)",
    "1.2": "attention.causal_mask(4)",
    "1.3": "attention.SingleHeadAttention(8, 4)(x)",
    "1.4": "attention.MultiHeadAttention(8, 2)(x)",
    "1.5": "attention.CrossAttention(8, 2)(x, x)",
    "1.6": "attention.GatedCrossAttention(8, 2)(x, x)",
    "2.1": "encoder.MLP(8, 16)(x)",
    "2.2": "encoder.LayerNorm(8)(x)",
    "2.3": "encoder.EncoderBlock(8, 2, 16)(x)",
    "2.4": "encoder.PostNormEncoderBlock(8, 2, 16)(x)",
    "3.1": "embeddings.patchify(img, 4)",
    "3.2": "embeddings.PatchEmbedding(3, 4, 8)(img)",
    "3.3": "embeddings.sinusoidal_position_embedding(4, 8)",
    "3.4": "embeddings.sincos_2d_position_embedding(2, 2, 8)",
    "3.5": "embeddings.ClassTokenPositionEmbedding(3, 8)(x)",
    "4.1": "vit.VisionTransformer(vit.vit_config('test')).forward_head(x)",
    "5.1": "analysis.mean_attention_distance(torch.rand(2, 5, 5), 2, 4)",
    "5.2": "analysis.fit_power_law([1.0, 2.0], [1.0, 0.5])",
    "5.3": "analysis.count_parameters(vit.vit_config('test'))",
    "5.4": "analysis.count_flops(vit.vit_config('test'))",
}


def test_every_task_has_a_stub_call():
    assert set(CALLS) == {t.id for t in TASKS}


def test_no_solution_text_in_student_edition(student_edition):
    assert release.find_leaks(student_edition, release.secret_lines()) == []
    assert (student_edition / "README.md").exists() and (student_edition / "course_lib" / "checks" / "reference.pt").exists()


def test_every_stub_raises_not_implemented_naming_its_task(student_edition):
    script = textwrap.dedent(f"""
        import torch
        from course_lib import analysis, attention, embeddings, encoder, vit
        x, img = torch.randn(2, 3, 8), torch.randn(2, 3, 8, 8)
        for task_id, call in {CALLS!r}.items():
            try:
                eval(call)
            except NotImplementedError as e:
                assert f"Task {{task_id}} " in str(e), (task_id, str(e))
            else:
                raise AssertionError(f"Task {{task_id}} did not raise NotImplementedError")
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=student_edition, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr


def test_leak_detector_finds_planted_solution(student_edition, tmp_path):
    copy = shutil.copytree(student_edition, tmp_path / "student")
    secret = sorted(release.secret_lines())[0]
    (copy / "course_lib" / "vit.py").write_text((copy / "course_lib" / "vit.py").read_text() + f"\n    {secret}\n")
    (copy / "notes.md").write_text("### BEGIN HIDDEN TESTS\n")
    leaks = release.find_leaks(copy, release.secret_lines())
    assert any("vit.py" in leak and secret in leak for leak in leaks)
    assert any("notes.md" in leak and "BEGIN HIDDEN TESTS" in leak for leak in leaks)


def test_secrets_cover_the_solutions():
    secrets = release.secret_lines()
    assert "return torch.ones(N, N, dtype=torch.bool, device=device).tril()" in secrets
    assert "x = x + self.mlp(self.norm2(x))  # second residual connection" in secrets


def test_strip_solutions_rejects_malformed_blocks():
    with pytest.raises(release.ReleaseError, match="never closed"):
        release.strip_solutions('def f():\n    """Task 1.1: f."""\n    ### BEGIN SOLUTION\n    return 1\n')
    with pytest.raises(release.ReleaseError, match="outside any 'Task X.Y:' docstring"):
        release.strip_solutions("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\n")
    stub = release.strip_solutions('def f():\n    """Task 2.3: f."""\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\n')
    assert stub.endswith('    raise not_implemented("2.3")\n') and "return 1" not in stub
