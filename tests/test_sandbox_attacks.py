"""The attack corpus: malicious submissions graded in one batch with honest ones, through `make grade`'s
command (course_grading.cli) with the sandbox of nbgrader_config.py.

One scenario per kind of attack of docs/SECURITY.md. For every scenario the test asserts:

* the honest students of the batch keep their exact per-task scores (and the attacker gets what the
  attack deserves);
* nothing outside the submission's scratch changed: the repository, the virtual environment, the
  other students' submitted folders, and the gradebook and grades.csv after the grader exited;
* no process the attack started outlives the batch;
* no hidden-test line appears in any feedback page or in grades.csv.
"""
from __future__ import annotations

import csv
import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import grading_corpus as corpus
import psutil
import pytest

from course_grading import sandbox
from course_grading.course import ROOT, hidden_test_lines, tasks

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800), pytest.mark.skipif(sandbox.unavailable_reason() is not None,
                                                   reason=f"no sandbox: {sandbox.unavailable_reason()}")]
A = "01_attention"
MARK = f"course-attack-{os.getpid()}"  # in the command line of every process an attack starts
POINTS = {t.marker: t.points for t in tasks() if t.exercise == 1}
FULL = dict(POINTS)
ZERO = {t: 0 for t in POINTS}

IMPORTS = "import os as _os, sys as _sys, glob as _glob, subprocess as _sp, time as _time\n"
# Each attack runs at the import of course_lib/attention.py ({work}: the grading folder, which an
# attacker could guess; {pytest}: a process outside, the grader's own test).
ATTACKS = {
    "read_hidden": """
def _leak():
    roots, up = [_os.path.dirname(_sys.prefix), _os.getcwd(), {work!r}], _os.getcwd()
    for _ in range(8):
        up = _os.path.dirname(up)
        roots.append(up)
    for r in roots:
        for pat in ("solutions/*.ipynb", "source/*/*.ipynb", "release/*/*.ipynb", "*/source/*/*.ipynb", "gradebook.db"):
            for p in _glob.glob(_os.path.join(r, pat)):
                try:
                    print(open(p, errors="replace").read())
                except OSError:
                    pass
_leak()
""",
    "rewrite_others": """
for _p in _glob.glob({work!r} + "/**", recursive=True):
    if _p.endswith((".py", ".ipynb", ".db", ".csv", ".html")):
        try:
            open(_p, "w").write("raise SystemExit('spoiled')\\n")
        except OSError:
            pass
""",
    "daemons": """
_code = "import os, sys, time\\nif os.fork(): os._exit(0)\\nos.setsid()\\ntime.sleep(6)\\nfor p in sys.argv[1:-1]:\\n    open(p, 'w').write('pwned')"
for _i in range(50):
    _sp.Popen([_sys.executable, "-c", _code, {work!r} + "/grading/grades.csv", {work!r} + "/grading/gradebook.db", {mark!r}],
              start_new_session=True, stdout=_sp.DEVNULL, stderr=_sp.DEVNULL)
""",
    "plant_pth": """
import site as _site
for _d in _site.getsitepackages() + [_os.path.join(_sys.prefix, "lib")]:
    try:
        open(_os.path.join(_d, "course_attack.pth"), "w").write("/course-attack-was-here\\n")
    except OSError:
        pass
""",
    "kill_kernels": """
import signal as _signal
for _pid in [{pytest}] + [int(p) for p in _os.listdir("/proc") if p.isdigit()]:
    if _pid not in (_os.getpid(),):
        try:
            _os.kill(_pid, _signal.SIGKILL)
        except OSError:
            pass
""",
    "transformers": """
try:
    _ip = get_ipython()
    _ip.input_transformers_post.append(lambda lines: ["try:\\n"] + ["    " + l for l in lines] + ["\\nexcept BaseException:\\n", "    pass\\n"])
    import ast as _ast
    class _Swallow(_ast.NodeTransformer):
        def visit_Module(self, node):
            handler = _ast.ExceptHandler(type=_ast.Name("BaseException", _ast.Load()), name=None, body=[_ast.Pass()])
            node.body = [_ast.Try(body=node.body or [_ast.Pass()], handlers=[handler], orelse=[], finalbody=[])]
            return _ast.fix_missing_locations(node)
    _ip.ast_transformers.append(_Swallow())
except NameError:
    pass
""",
    "html_output": """
try:
    from IPython.display import HTML as _HTML, display as _display
    _display(_HTML("<script>document.title='course-attack-script'</script><img src=x onerror=\\"document.title='course-attack-onerror'\\">"
                   "<div class='score'>Score: 13 / 13</div>"))
except ImportError:
    pass
""",
    "huge_output": """
print("x" * 100_000_000)
""",
    "fill_disk": """
_chunk = b"x" * (1 << 20)
for _where in (".", "/tmp", "/dev/shm", {work!r}):
    try:
        with open(_os.path.join(_where, "course-attack-fill"), "wb") as _f:
            for _ in range(2048):
                _f.write(_chunk)
    except OSError:
        pass
""",
    "fork_bomb": """
_sp.Popen([_sys.executable, "-c", "import os, time\\nwhile True:\\n    try:\\n        os.fork()\\n    except OSError:\\n        time.sleep(0.2)", {mark!r}],
          stdout=_sp.DEVNULL, stderr=_sp.DEVNULL)
_time.sleep(1)
""",
    "network": """
import socket as _socket
for _addr in (("1.1.1.1", 53), ("127.0.0.1", 22), ("127.0.0.1", 8888)):
    try:
        _socket.create_connection(_addr, timeout=2).close()
        print("ATTACK network: connected to", _addr)
    except OSError as _e:
        print("ATTACK network: blocked", _addr, _e.errno)
""",
}
TORCH_C_SDPA = """
eye = torch.eye(k.shape[-2], dtype=q.dtype).expand(*k.shape[:-2], k.shape[-2], k.shape[-2])
out = torch._C._nn.scaled_dot_product_attention(q, k, v, attn_mask=mask)
return out.nan_to_num(0.0), torch._C._nn.scaled_dot_product_attention(q, k, eye, attn_mask=mask).nan_to_num(0.0)
"""
ATEN_SDPA = TORCH_C_SDPA.replace("torch._C._nn.scaled_dot_product_attention", "torch.ops.aten.scaled_dot_product_attention")
MAIN_HELPER_SDPA = """
import __main__
return __main__.torch_attention(q, k, v, mask)
"""
LIAR_SDPA = """
class Liar(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in ("allclose", "equal"):
            return True
        if name in ("isclose", "eq", "__eq__", "le", "ge"):
            return torch.ones(torch.broadcast_shapes(*[a.shape for a in args[:2]]), dtype=torch.bool)
        return super().__torch_function__(func, types, args, kwargs)
shape = (*q.shape[:-1], v.shape[-1])
return torch.zeros(shape).as_subclass(Liar), torch.zeros(*q.shape[:-1], k.shape[-2]).as_subclass(Liar)
"""
# student -> (scenario kwargs, expected points per task; None: any score, the attack is about others)
SCENARIOS = {
    "honest_a": ({}, FULL),
    "honest_b": ({"bodies": {"1.1": corpus.EINSUM_SDPA}}, FULL),
    **{f"attack_{name}": ({"prefix": {"attention.py": IMPORTS + code}}, None) for name, code in ATTACKS.items()},
    "attack_transformers_stubs": ({"default": corpus.STUB, "prefix": {"attention.py": IMPORTS + ATTACKS["transformers"]}}, ZERO),
    "attack_sdpa_torch_c": ({"bodies": {"1.1": TORCH_C_SDPA}}, {**FULL, "task1_1": 0}),
    "attack_sdpa_aten": ({"bodies": {"1.1": ATEN_SDPA}}, {**FULL, "task1_1": 0}),
    "attack_sdpa_main_helper": ({"bodies": {"1.1": MAIN_HELPER_SDPA}}, {**FULL, "task1_1": 0}),
    "attack_tensor_liar": ({"bodies": {"1.1": LIAR_SDPA}}, {**FULL, "task1_1": 0}),
}
FLAGGED = {"attack_transformers_stubs": "IPython", "attack_sdpa_main_helper": "test helper",
           "attack_tensor_liar": "overrides torch functions"}


REPO_SKIP = (".git", ".venv", "grading", "__pycache__", ".pytest_cache", "dist", "data", "runs")


def tree_digest(root: Path, skip: tuple[str, ...] = (), quick: bool = False) -> dict[str, str]:
    """path -> sha256 of every file under ``root`` (``skip``: top-level names left out; ``quick``: size and
    modification time instead of the content, for the gigabytes of the virtual environment)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root:
            dirnames[:] = [d for d in dirnames if d not in skip]
        for name in filenames:
            p = Path(dirpath) / name
            if p.is_symlink() or not p.is_file():
                continue
            st = p.stat()
            out[str(p.relative_to(root))] = (f"{st.st_size}:{st.st_mtime_ns}" if quick
                                             else hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def _marked() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if any(MARK in part for part in (p.info["cmdline"] or []))]


@pytest.fixture(scope="module")
def batch(tmp_path_factory, student_edition):
    work = tmp_path_factory.mktemp("attacks")
    fill = {"work": str(work), "mark": MARK, "pytest": os.getpid()}
    scenarios = [corpus.Scenario(s, A, s, **{k: ({m: c.format(**fill) for m, c in v.items()} if k == "prefix" else v)
                                            for k, v in kw.items()})
                 for s, (kw, _) in SCENARIOS.items()]
    corpus.build(work / "submissions", scenarios, student_edition=student_edition)
    venv = Path(sys.prefix)
    before = {"repo": tree_digest(ROOT, skip=REPO_SKIP),
              "venv": tree_digest(venv, quick=True)}
    cmd = [sys.executable, "-m", "course_grading.cli", str(work / "submissions"), "--out", str(work / "grading"),
           "--jobs", "2", "--quiet", "--cell-timeout", "20", "--timeout", "400"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3000)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    out = work / "grading"
    right_after = {"grading": tree_digest(out, skip=("logs",))}
    time.sleep(8)  # longer than the daemons' sleep: anything left running would now strike
    with open(out / "grades.csv", newline="") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    return {"work": work, "out": out, "rows": rows, "before": before, "right_after": right_after, "venv": venv,
            "stdout": run.stdout + run.stderr}


@pytest.mark.parametrize("student", sorted(SCENARIOS))
def test_scores(batch, student):
    expected = SCENARIOS[student][1]
    row = batch["rows"][student]
    assert "not graded" not in row["status"], row["notes"]
    if expected is not None:
        got = {t: float(row[t]) for t in expected}
        assert got == {t: float(p) for t, p in expected.items()}, f"{student}: {row['status']} | {row['notes']}"
    if student in FLAGGED:
        assert "REVIEW" in row["notes"] and FLAGGED[student] in row["notes"], row["notes"]


def test_nothing_outside_the_scratch_changed(batch):
    before = batch["before"]
    assert tree_digest(ROOT, skip=REPO_SKIP) == before["repo"]
    assert tree_digest(batch["venv"], quick=True) == before["venv"]
    assert not list(batch["venv"].rglob("course_attack.pth"))
    out = batch["out"]
    assert tree_digest(out, skip=("logs",)) == batch["right_after"]["grading"]  # nothing struck after the grader
    assert not list(batch["work"].rglob("course-attack-fill"))
    for student in ("honest_a", "honest_b"):  # the other students' files, as they handed them in
        for path in (out / "autograded" / student / A / "course_lib").glob("*.py"):
            assert "spoiled" not in path.read_text()


def test_no_process_outlives_the_batch(batch):
    assert _marked() == []
    if os.getuid() == 0:  # the sandbox user owns no process any more
        assert [p for p in psutil.process_iter(["uids", "cmdline"]) if p.info["uids"].real == sandbox.SANDBOX_UID
                and str(batch["work"]) in " ".join(p.info["cmdline"] or [])] == []


def test_no_hidden_test_line_in_anything_students_receive(batch):
    hidden = hidden_test_lines(ROOT, [A])
    assert len(hidden) > 20
    texts = [p.read_text(errors="replace") for p in (batch["out"] / "feedback").rglob("*.html")]
    texts.append((batch["out"] / "grades.csv").read_text())
    for text in texts:
        leaked = [ln for ln in hidden if ln in text]
        assert not leaked, leaked[:3]


def test_feedback_is_inert_and_bounded(batch):
    page = (batch["out"] / "feedback" / "attack_html_output" / A / f"{A}.html").read_text()
    assert "course-attack" in page  # the output is shown, as inert text
    assert not re.search(r"<script[^>]*>[^<]*course-attack", page) and not re.search(r"<img[^>]*onerror", page, re.I)
    big = batch["out"] / "feedback" / "attack_huge_output" / A / f"{A}.html"
    assert big.stat().st_size < 3_000_000


def test_the_sandbox_stopped_them(batch):
    """The attacks ran and failed in the sandbox (visible in the instructor's copy of the notebook)."""
    graded = (batch["out"] / "autograded" / "attack_network" / A / f"{A}.ipynb").read_text()
    assert "ATTACK network: blocked" in graded and "connected to" not in graded


# --- the same attacks through plain nbgrader (docs/INSTRUCTOR.md's commands from the repository root) ---
PLAIN = ["honest_a", "honest_b", "attack_read_hidden", "attack_rewrite_others", "attack_daemons", "attack_kill_kernels"]


@pytest.fixture(scope="module")
def plain(tmp_path_factory, student_edition):
    work = tmp_path_factory.mktemp("attacks_plain")
    course = work / "course"
    fill = {"work": str(course), "mark": MARK, "pytest": os.getpid()}
    scenarios = [corpus.Scenario(s, A, s, **{k: ({m: c.format(**fill) for m, c in v.items()} if k == "prefix" else v)
                                            for k, v in SCENARIOS[s][0].items()}) for s in PLAIN]
    env = {**os.environ, "COURSE_GRADING_ROOT": str(course), "OMP_NUM_THREADS": "1",
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}

    def nbgrader(*args: str) -> None:
        run = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=1500)
        assert run.returncode == 0, f"nbgrader {' '.join(args)}:\n{run.stdout[-3000:]}{run.stderr[-5000:]}"

    nbgrader("generate_assignment", A)
    corpus.build(course / "downloaded" / A / "archive", scenarios, student_edition=student_edition)
    nbgrader("zip_collect", A)
    submitted = {s: tree_digest(course / "submitted" / s) for s in ("honest_a", "honest_b")}
    before = {"repo": tree_digest(ROOT, skip=REPO_SKIP), "venv": tree_digest(Path(sys.prefix), quick=True)}
    nbgrader("autograde", A)
    nbgrader("generate_feedback", A)
    nbgrader("export")
    right_after = tree_digest(course, skip=("downloaded",))
    time.sleep(8)
    after_sleep = tree_digest(course, skip=("downloaded",))
    with open(course / "grades.csv", newline="") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    refused = subprocess.run([sys.executable, "-m", "nbgrader", "autograde", A, "--force", "--student", "honest_a",
                              "--SandboxedKernelManager.bwrap=course-no-such-bwrap"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
    return {"course": course, "rows": rows, "submitted": submitted, "before": before, "right_after": right_after,
            "after_sleep": after_sleep, "refused": refused.stdout + refused.stderr}


def test_plain_nbgrader_autograde(plain):
    course, rows = plain["course"], plain["rows"]
    for s in PLAIN:  # nbgrader's own export: per-task columns and the total
        expected = SCENARIOS[s][1]
        if expected is not None:
            assert {t: float(rows[s][t]) for t in expected} == {t: float(p) for t, p in expected.items()}, s
            assert float(rows[s]["total"]) == sum(expected.values()), s
    for s in ("honest_a", "honest_b"):
        assert tree_digest(course / "submitted" / s) == plain["submitted"][s]
    assert tree_digest(ROOT, skip=REPO_SKIP) == plain["before"]["repo"]
    assert tree_digest(Path(sys.prefix), quick=True) == plain["before"]["venv"]
    assert plain["after_sleep"] == plain["right_after"]  # nothing struck after nbgrader exited
    assert _marked() == []
    hidden = hidden_test_lines(ROOT, [A])
    for page in (course / "feedback").rglob("*.html"):
        text = page.read_text(errors="replace")
        assert not [ln for ln in hidden if ln in text], page


def test_plain_nbgrader_refuses_without_a_sandbox(plain):
    assert "Refusing to run a submission's code without an operating-system sandbox" in plain["refused"]
    assert "bubblewrap is not installed" in plain["refused"]
