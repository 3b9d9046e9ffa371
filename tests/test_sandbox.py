"""The kernel sandbox (course_grading.sandbox) on tiny notebooks run by nbclient: what a kernel can
see, reach and use, and that nothing it starts outlives it. No torch: each kernel starts in ~1 s."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from traitlets.config import Config

from course_grading import sandbox
from course_grading.sandbox import SandboxedKernelManager, SandboxUnavailable

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(sandbox.unavailable_reason() is not None,
                                reason=f"no sandbox here: {sandbox.unavailable_reason()}")


def run(cells: list[str], path: Path, **traits) -> list[str]:
    """Execute ``cells`` in a sandboxed kernel started in ``path``; each cell's text output."""
    nb = nbformat.v4.new_notebook()
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c)) for c in cells]
    config = Config({"SandboxedKernelManager": traits})
    NotebookClient(nb, kernel_manager_class=SandboxedKernelManager, config=config, timeout=60, allow_errors=True,
                   resources={"metadata": {"path": str(path)}}).execute()
    return ["".join(o.get("text", "") if o.output_type == "stream" else f"{o.get('ename')}: {o.get('evalue')}"
                    for o in cell.outputs) for cell in nb.cells]


@pytest.fixture
def course(tmp_path):
    """A course directory: this student's folder, another student's, a gradebook and hidden tests."""
    me = tmp_path / "autograded" / "alice" / "01_attention"
    (me / "course_lib").mkdir(parents=True)
    (me / "course_lib" / "attention.py").write_text("ANSWER = 42\n")
    other = tmp_path / "autograded" / "bob" / "01_attention"
    other.mkdir(parents=True)
    (other / "secret.txt").write_text("bob's work\n")
    (tmp_path / "gradebook.db").write_text("grades\n")
    (tmp_path / "source").mkdir()
    (tmp_path / "source" / "hidden.txt").write_text("HIDDEN TEST\n")
    return me


def test_sees_only_its_submission_and_python(course):
    out = run([
        "import os, sys; print(os.getcwd()); print(sorted(os.listdir('.')))",
        "from course_lib.attention import ANSWER; print(ANSWER)",
        f"print([os.path.exists(p) for p in {[str(course.parents[1] / 'bob'), str(course.parents[2] / 'gradebook.db'), str(course.parents[2] / 'source'), str(ROOT / 'README.md'), str(ROOT / 'course_lib'), '/home', '/etc/passwd']!r}])",
        "print(os.getuid(), sys.prefix == sys.base_prefix or os.path.isdir(sys.prefix))",
        f"open({str(ROOT / '.venv' / 'x.pth')!r}, 'w')",
        "open('new.txt', 'w').write('scratch'); open('/tmp/t', 'w').write('t'); print('wrote')",
    ], course)
    assert out[0].split("\n")[0] == str(course)
    assert "course_lib" in out[0] and out[1].strip() == "42"
    assert out[2].strip() == str([False] * 7), out[2]
    assert out[3].split()[0] == "65534"
    assert "OSError" in out[4] or "PermissionError" in out[4], out[4]  # the venv is read-only
    assert out[5].strip() == "wrote" and not (course / "new.txt").exists()  # the cwd is a private scratch


def test_no_network_no_other_processes_no_secrets(course, monkeypatch):
    monkeypatch.setenv("COURSE_SECRET_TOKEN", "s3cr3t")
    host = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out = run([
            "import socket\ntry:\n    socket.create_connection(('1.1.1.1', 53), timeout=3); print('net')\n"
            "except OSError as e: print('no network', e.errno)",
            "import os; print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))",
            f"os.kill({host.pid}, 9)",
            "print('s3cr3t' in str(os.environ), os.environ.get('JPY_PARENT_PID'))",
        ], course)
        assert out[0].startswith("no network"), out[0]
        assert out[1].strip() == "[1, 2]", out[1]  # bubblewrap's pid 1 and the kernel
        assert "ProcessLookupError" in out[2] and host.poll() is None  # the host process lives on
        assert out[3].strip() == "False None"
    finally:
        host.kill()


DAEMON = """
import subprocess, sys
code = "import os, time\\nif os.fork(): os._exit(0)\\nos.setsid()\\ntime.sleep(300)  # {mark}"
subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
import time; time.sleep(0.5); print('started')
"""


def _marked(mark: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if any(mark in part for part in (p.info["cmdline"] or [])):
            found.append(p)
    return found


def _gone(mark: str, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while _marked(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not _marked(mark)


def test_daemon_dies_with_the_kernel(course):
    mark = f"course-daemon-{os.getpid()}-a"
    out = run([DAEMON.format(mark=mark)], course)
    assert "started" in out[0]
    assert _gone(mark)


def test_daemon_dies_when_the_grader_is_killed(course):
    """The grader process SIGKILLed mid-notebook (no cleanup at all): --die-with-parent ends the sandbox."""
    mark = f"course-daemon-{os.getpid()}-b"
    script = textwrap.dedent(f"""
        import asyncio, os, sys
        from course_grading.sandbox import SandboxedKernelManager
        async def main():
            km = SandboxedKernelManager(kernel_name="python3")
            await km.start_kernel(cwd={str(course)!r})
            kc = km.client(); kc.start_channels(); await kc.wait_for_ready(timeout=60)
            await kc.execute_interactive({DAEMON.format(mark=mark)!r}, timeout=60)
            os._exit(0)
        asyncio.run(main())
    """)
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, timeout=120, check=True)
    assert _gone(mark)


def test_limits(course):
    out = run([
        "try:\n    b = bytearray(2 * 1024**3); print('allocated')\nexcept MemoryError: print('MemoryError')",
        "import os\ntry:\n    open('/tmp/big', 'wb').write(os.urandom(1 << 20) * 40); print('wrote /tmp')\n"
        "except OSError as e: print('OSError', e.errno)",
        "try:\n    open('big', 'wb').write(b'x' * (40 << 20)); print('wrote cwd')\nexcept OSError as e: print('OSError', e.errno)",
        "import time\nn = 0\nfor i in range(200):\n    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
        "    if pid == 0:\n        time.sleep(2); os._exit(0)\n    n += 1\nprint(n)",
        "import resource; print(resource.getrlimit(resource.RLIMIT_CPU))",
    ], course, memory_mb=512, disk_mb=16, max_processes=40, cpu_seconds=100)
    assert out[0].strip() == "MemoryError", out[0]
    assert out[1].startswith("OSError") and out[2].startswith("OSError"), out[1:3]
    assert 0 < int(out[3]) < 40, out[3]  # the kernel's own threads count too
    assert out[4].strip() == "(100, 105)"


def test_cpu_limit_kills_the_kernel(course):
    with pytest.raises(DeadKernelError):
        run(["while True: pass"], course, cpu_seconds=3)


def test_output_is_capped(course):
    out = run(["print('x' * 3_000_000)", "print('small')"], course, output_bytes_per_cell=10_000)
    assert len(out[0]) < 10_200 and "output cut by the grader" in out[0]
    assert out[1].strip() == "small"


def test_refuses_without_a_sandbox(course, monkeypatch):
    with pytest.raises(SandboxUnavailable, match="allow_unsandboxed"):
        run(["print(1)"], course, bwrap="course-no-such-bwrap")
    out = run(["import os; print(os.path.exists(" + repr(str(ROOT / "README.md")) + "))"], course,
              bwrap="course-no-such-bwrap", allow_unsandboxed=True)
    assert out[0].strip() == "True"  # unsandboxed: it sees the repository (what the refusal protects)


def test_total_memory_of_the_sandbox_is_bounded(course):
    """Each process stays under memory_mb, together they pass total_memory_mb: the sandbox is killed."""
    hog = "import time\nb = bytearray(300 * 1024 * 1024)\nfor i in range(0, len(b), 4096): b[i] = 1\ntime.sleep(30)"
    with pytest.raises(DeadKernelError):
        run([f"import subprocess, sys, time\nps = [subprocess.Popen([sys.executable, '-c', {hog!r}]) for _ in range(3)]\n"
             "time.sleep(30)"], course, total_memory_mb=500)


def test_a_timed_out_cell_is_interrupted_and_the_kernel_lives_on(course):
    """nbclient's interrupt reaches the kernel (a message, not a signal to bubblewrap)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in ("while True: pass", "print('alive')")]
    NotebookClient(nb, kernel_manager_class=SandboxedKernelManager, timeout=3, allow_errors=True, interrupt_on_timeout=True,
                   resources={"metadata": {"path": str(course)}}).execute()
    assert [o.get("ename") for o in nb.cells[0].outputs] == ["KeyboardInterrupt"]
    assert nb.cells[1].outputs[0]["text"] == "alive\n"
