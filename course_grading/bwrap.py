"""bubblewrap: whether it can run here, and what the grader does before it runs (root, paths).

``sandbox.SandboxedKernelManager`` builds the sandbox; this module holds what does not depend on a
kernel: the availability probe, the unprivileged user the sandbox runs as when the grader is root,
the folders a Python interpreter needs, and the launcher that runs inside before the kernel.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

# Runs inside the sandbox, before the kernel: copy the submission into the private cwd, set the
# rlimits (after the user namespace exists, so the process count is this sandbox's own), exec.
LAUNCHER = r"""
import json, os, resource, shutil, sys
spec = json.loads(sys.argv[1])
try:
    shutil.copytree(spec["src"], spec["dst"], symlinks=True, dirs_exist_ok=True)
except OSError as e:
    sys.exit(f"course sandbox: the submission does not fit its scratch space ({e})")
for name, (soft, hard) in spec["limits"].items():
    limit = getattr(resource, name)
    _, inherited = resource.getrlimit(limit)  # never above a limit the grader already set
    if inherited != resource.RLIM_INFINITY:
        soft, hard = min(soft, inherited), min(hard, inherited)
    resource.setrlimit(limit, (soft, hard))
os.environ.pop("JPY_PARENT_PID", None)  # its parent is the namespace's pid 1; --die-with-parent ties it to the grader
os.execv(sys.argv[2], sys.argv[2:])
"""


def _probe_args(bwrap: str) -> list[str]:
    return [bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--ro-bind", "/", "/", "--", "true"]


@cache
def unavailable_reason(bwrap: str = "bwrap") -> str | None:
    """Why bubblewrap cannot sandbox a kernel on this machine (None: it can)."""
    if not sys.platform.startswith("linux"):
        return f"the operating-system sandbox (bubblewrap) needs Linux; this is {sys.platform}"
    path = shutil.which(bwrap)
    if path is None:
        return ("bubblewrap is not installed (Debian/Ubuntu: `apt-get install bubblewrap`; Fedora: "
                "`dnf install bubblewrap`)")
    try:
        run = subprocess.run(_probe_args(path), capture_output=True, text=True, timeout=30,
                             preexec_fn=drop_root if os.getuid() == 0 else None)
    except (OSError, subprocess.SubprocessError) as e:
        return f"bubblewrap could not start ({e})"
    if run.returncode != 0:
        return (f"bubblewrap cannot create user namespaces here ({run.stderr.strip() or run.returncode}); "
                "enable them (sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces)")
    return None


SANDBOX_UID = 65534  # "nobody": the outer uid when the grader runs as root, and the uid inside


def drop_root(binds: list[tuple[str, str]] = ()) -> None:
    """In the child before exec, when the grader is root: become the unprivileged sandbox user, so that
    the kernel holds no privilege on the host and the process limit is enforced (Linux does not enforce
    RLIMIT_NPROC for root). Folders the sandbox user could not reach (``/root/.pyenv`` under a private
    ``/root``) are first bind-mounted, in a mount namespace of this child only, at ``binds``' targets."""
    if binds:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        ms_bind, ms_rec, ms_private, clone_newns = 4096, 16384, 1 << 18, 0x00020000
        if libc.unshare(clone_newns) != 0 or libc.mount(None, b"/", None, ms_rec | ms_private, None) != 0:
            raise OSError(ctypes.get_errno(), "course sandbox: no private mount namespace")
        for src, dst in binds:
            if libc.mount(src.encode(), dst.encode(), None, ms_bind | ms_rec, None) != 0:
                raise OSError(ctypes.get_errno(), f"course sandbox: cannot bind {src}")
    os.setgroups([])
    os.setgid(SANDBOX_UID)
    os.setuid(SANDBOX_UID)


def python_roots(python: str) -> list[str]:
    """The folders a Python interpreter needs: its venv (if any) and the base installation."""
    exe = Path(python)
    roots = []
    venv = exe.parent.parent
    if (venv / "pyvenv.cfg").exists():
        roots.append(str(venv))
        for line in (venv / "pyvenv.cfg").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home" and value.strip():
                roots.append(str(Path(value.strip()).parent))
    real = Path(os.path.realpath(exe))
    roots.append(str(real.parent.parent))  # /usr/bin/python3.11 -> /usr
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        roots += [sys.prefix, sys.base_prefix, sys.exec_prefix]
    return sorted({os.path.realpath(r) for r in roots if r and r != "/"})


def reachable(path: str) -> bool:
    """Can any user reach ``path`` (every folder above it searchable by others)?"""
    parts = Path(path).parts
    return all(os.stat(os.path.join(*parts[:i])).st_mode & 0o001 for i in range(1, len(parts)))
