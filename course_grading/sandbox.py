"""``SandboxedKernelManager``: every grading kernel runs inside bubblewrap, one sandbox per notebook.

Selected in ``nbgrader_config.py`` (``c.Execute.kernel_manager_class``), so every route that executes a
submission (``nbgrader autograde``, formgrader, ``make grade``) gets it. Inside the sandbox the kernel sees:

    /usr, /bin, /lib*          the system, read-only
    the Python environment     the kernel's venv and its base interpreter, read-only
    <its notebook's folder>    a private size-limited tmpfs holding a copy of the submission (the cwd)
    /tmp, /dev/shm             private size-limited tmpfs
    /run/kernel                the connection file (read-only) and the kernel's unix sockets
    /proc, /dev                of its own pid namespace; a minimal /dev

and nothing else: not the repository, the gradebook, the other students' folders, source/ or release/.
It has no network (its own, empty, net namespace: the kernel talks to the grader over ``ipc`` unix
sockets that the grader reaches through ``/proc/<pid>/root``), its own pid namespace (it can see and
signal only its own processes; when the kernel ends, bubblewrap's pid 1 ends and the kernel of Linux
kills everything left in the namespace) and runs as an unprivileged user. Limits (rlimits, tmpfs sizes,
output bytes) are traits below. Nothing the kernel writes reaches the host's disk.

Where bubblewrap cannot run (macOS, Windows, no user namespaces) the kernel refuses to start unless
``allow_unsandboxed`` is set (``--SandboxedKernelManager.allow_unsandboxed=True``).
"""
from __future__ import annotations

import json
import os
import select
import shutil
import tempfile
import threading
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from traitlets import Bool, Integer, List, Unicode, default

from .bwrap import LAUNCHER, SANDBOX_UID, drop_root, python_roots, reachable, unavailable_reason
from .output_cap import CappedKernelClient

INNER_RUN = "/run/kernel"  # the kernel's sockets and connection file, inside the sandbox
INNER_CONNECTION = f"{INNER_RUN}/connection.json"
INNER_SUBMISSION = "/run/submission"  # the submission as staged by the grader (read-only)
MIB = 1024 * 1024
# Environment variables passed from the grader to the kernel (everything else is dropped).
PASS_ENV = ["LANG", "LC_ALL", "LC_CTYPE", "TZ", "NBGRADER_EXECUTION", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
            "OPENBLAS_NUM_THREADS", "PYTHONWARNINGS", "PYTHONHASHSEED", "TQDM_DISABLE", "MPLBACKEND",
            "CUDA_VISIBLE_DEVICES", "COURSE_DEVICE"]

class SandboxUnavailable(RuntimeError):
    """Grading would run untrusted code without an operating-system sandbox."""


class SandboxedKernelManager(AsyncKernelManager):
    """An ``AsyncKernelManager`` whose kernel runs inside bubblewrap (see the module docstring)."""

    allow_unsandboxed = Bool(False, help=(
        "Run kernels WITHOUT the operating-system sandbox where bubblewrap is unavailable (macOS, "
        "Windows, no user namespaces). The submissions' code then runs as you, with your files.")).tag(config=True)
    bwrap = Unicode("bwrap", help="the bubblewrap executable").tag(config=True)
    cpu_seconds = Integer(900, help="CPU time of each process in the sandbox (RLIMIT_CPU), seconds").tag(config=True)
    memory_mb = Integer(4096, help="heap and anonymous memory of each process (RLIMIT_DATA), MiB").tag(config=True)
    address_space_mb = Integer(16384, help=(
        "address space of each process (RLIMIT_AS), MiB: torch alone maps about 3.2 GiB")).tag(config=True)
    total_memory_mb = Integer(6144, help=(
        "resident memory of the whole sandbox, MiB: checked every 0.5 s, the sandbox is killed above it")).tag(config=True)
    disk_mb = Integer(256, help=(
        "size of each writable tmpfs (the cwd, /tmp, /dev/shm) and largest file (RLIMIT_FSIZE), MiB")).tag(config=True)
    max_processes = Integer(128, help="processes and threads in the sandbox (RLIMIT_NPROC)").tag(config=True)
    open_files = Integer(1024, help="open files per process (RLIMIT_NOFILE)").tag(config=True)
    output_bytes = Integer(2_000_000, help="output bytes kept from all cells of a notebook").tag(config=True)
    output_bytes_per_cell = Integer(200_000, help="output bytes kept from one cell").tag(config=True)
    ro_paths = List(Unicode(), help="more host paths the kernel may read (read-only, same path)").tag(config=True)
    pass_env = List(Unicode(), PASS_ENV, help="environment variables passed to the kernel").tag(config=True)

    @default("transport")
    def _transport_default(self) -> str:
        return "ipc"  # TCP to the grader is impossible from inside a new network namespace

    @default("client_factory")
    def _client_factory_default(self):
        return CappedKernelClient

    # -- the sandbox -------------------------------------------------------------------------------
    def sandboxed(self) -> bool:
        """True if kernels run in bubblewrap; raises SandboxUnavailable where they can't and may not."""
        reason = unavailable_reason(self.bwrap)
        if reason is None:
            return True
        if self.allow_unsandboxed:
            self.log.warning("GRADING WITHOUT A SANDBOX (allow_unsandboxed): %s. Submissions run as you.", reason)
            return False
        raise SandboxUnavailable(
            f"Refusing to run a submission's code without an operating-system sandbox: {reason}. A submission "
            "is untrusted code: without the sandbox it could read the hidden tests and solutions, change other "
            "students' grades and outlive the grading run. Install bubblewrap, or grade on Linux; to grade anyway, "
            "pass --SandboxedKernelManager.allow_unsandboxed=True (nbgrader) or set COURSE_ALLOW_UNSANDBOXED=1 (make grade) "
            "only for submissions you trust.")

    async def _async_pre_start_kernel(self, **kw):
        self._sandbox = self.sandboxed()
        if self._sandbox:
            # interrupts as a message on the control channel: a SIGINT to bwrap would end the sandbox
            self.kernel_spec.interrupt_mode = "message"
            self.transport, self.ip = "ipc", f"{INNER_RUN}/k"  # as the kernel sees it
            for i, name in enumerate(("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port")):
                setattr(self, name, i + 1)
        elif self.transport == "ipc" and not self.ip.startswith(tempfile.gettempdir()):
            self.ip = os.path.join(tempfile.mkdtemp(prefix="course-kernel-"), "k")
        return await super()._async_pre_start_kernel(**kw)

    def format_kernel_cmd(self, extra_arguments=None):
        cmd = super().format_kernel_cmd(extra_arguments)
        if getattr(self, "_sandbox", False):
            host = os.path.realpath(self.connection_file)
            cmd = [INNER_CONNECTION if arg == host else arg for arg in cmd]
        return cmd

    async def _async_launch_kernel(self, kernel_cmd, **kw):
        if not self._sandbox:
            return await super()._async_launch_kernel(kernel_cmd, **kw)
        cwd = os.path.realpath(kw.pop("cwd", None) or os.getcwd())
        self._scratch = Path(tempfile.mkdtemp(prefix="course-sandbox-"))
        staged = self._stage(cwd)
        info = self.get_connection_info()
        info.update(ip=f"{INNER_RUN}/k", key=info["key"].decode(), transport="ipc")
        conn_r, conn_w = os.pipe()
        os.write(conn_w, json.dumps(info).encode())
        os.close(conn_w)
        info_r, info_w = os.pipe()
        out_r, out_w = os.pipe()
        args = self.bwrap_args(cwd, staged, conn_r, info_w) + self.launcher(kernel_cmd, cwd)
        kw.update(env=self.kernel_env(kw.get("env") or os.environ, cwd), cwd="/", pass_fds=(conn_r, info_w),
                  stdout=out_w, stderr=out_w, independent=True)
        if os.getuid() == 0:
            binds = self._root_binds
            kw["preexec_fn"] = lambda: drop_root(binds)
        try:
            await super()._async_launch_kernel(args, **kw)
        finally:
            for fd in (conn_r, info_w, out_w):
                os.close(fd)
        self._log_tail = bytearray()
        threading.Thread(target=self._drain, args=(out_r,), daemon=True).start()
        pid = self._read_info(info_r)
        self.ip = f"/proc/{pid}/root{INNER_RUN}/k"  # the same sockets, as the grader reaches them
        self._sandbox_pid = pid
        threading.Thread(target=self._watch_memory, args=(self.provisioner.process, pid), daemon=True).start()

    def _stage(self, cwd: str) -> Path:
        """A copy of the submission folder that the sandbox user can read (the grader's temporary folders
        are private to it)."""
        staged = self._scratch / "submission"
        shutil.copytree(cwd, staged, symlinks=True, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        if os.getuid() == 0:
            os.chmod(self._scratch, 0o711)
            for path in [staged, *staged.rglob("*")]:
                if not path.is_symlink():
                    os.chmod(path, 0o755 if path.is_dir() else 0o644)
        return staged

    def _read_info(self, fd: int) -> int:
        """bubblewrap's ``--info-fd`` JSON: the host pid of the sandbox's pid 1."""
        data = b""
        try:
            while b"}" not in data:
                ready, _, _ = select.select([fd], [], [], 30)
                chunk = os.read(fd, 4096) if ready else b""
                if not chunk:
                    raise RuntimeError(f"the kernel sandbox did not start: {self.sandbox_log() or 'no message'}")
                data += chunk
        finally:
            os.close(fd)
        return int(json.loads(data[: data.index(b"}") + 1])["child-pid"])

    def _drain(self, fd: int) -> None:
        """Keep the last 16 KiB of the kernel's own stdout/stderr (never the host's disk or terminal)."""
        with os.fdopen(fd, "rb", buffering=0) as f:
            while chunk := f.read(65536):
                self._log_tail += chunk
                del self._log_tail[:-16384]

    def sandbox_log(self) -> str:
        """The end of what the sandboxed process wrote to its stdout/stderr."""
        return bytes(getattr(self, "_log_tail", b"")).decode(errors="replace").strip()

    def _watch_memory(self, process, pid: int) -> None:
        import psutil

        limit = self.total_memory_mb * MIB
        while process.poll() is None:
            try:
                procs = psutil.Process(pid).children(recursive=True)
                rss = sum(p.memory_info().rss for p in procs)
            except psutil.Error:
                rss = 0
            if rss > limit:
                self.log.warning("kernel sandbox used %d MiB > total_memory_mb=%d: killed", rss // MIB, self.total_memory_mb)
                self._log_tail += f"\ncourse sandbox: killed, {rss // MIB} MiB resident > {self.total_memory_mb} MiB\n".encode()
                process.kill()
                return
            threading.Event().wait(0.5)

    def kernel_env(self, env, cwd: str) -> dict[str, str]:
        """Only the variables in ``pass_env``; PYTHONPATH keeps only the submission's folder."""
        out = {k: env[k] for k in self.pass_env if k in env}
        path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.realpath(p) == cwd]
        python_bin = os.path.dirname(self.kernel_spec.argv[0]) if os.path.isabs(self.kernel_spec.argv[0]) else ""
        out.update(HOME="/tmp", TMPDIR="/tmp", USER="student", LOGNAME="student", PYTHONNOUSERSITE="1",
                   PYTHONDONTWRITEBYTECODE="1", MPLCONFIGDIR="/tmp/matplotlib", IPYTHONDIR="/tmp/ipython",
                   JUPYTER_RUNTIME_DIR="/tmp/jupyter", PATH=os.pathsep.join(p for p in (python_bin, "/usr/bin", "/bin") if p))
        if path:
            out["PYTHONPATH"] = cwd
        return out

    def bwrap_args(self, cwd: str, staged: Path, conn_fd: int, info_fd: int) -> list[str]:
        """The bubblewrap command line (everything up to the command)."""
        disk = str(self.disk_mb * MIB)
        args = [shutil.which(self.bwrap), "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
                "--new-session", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox",
                "--ro-bind", "/usr", "/usr"]
        for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            path = f"/{name}"
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
        for path in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/alternatives"):
            args += ["--ro-bind-try", path, path]
        self._root_binds = []
        for path in python_roots(self.kernel_spec.argv[0]) + list(self.ro_paths):
            if path == "/usr" or path.startswith("/usr/"):
                continue
            source = path
            if os.getuid() == 0 and not reachable(path):
                source = str(self._scratch / f"ro{len(self._root_binds)}")
                os.mkdir(source)
                self._root_binds.append((path, source))
            args += ["--ro-bind", source, path]
        args += ["--proc", "/proc", "--dev", "/dev", "--size", disk, "--tmpfs", "/dev/shm", "--size", disk, "--tmpfs", "/tmp",
                 "--size", str(MIB), "--tmpfs", INNER_RUN, "--perms", "0444", "--ro-bind-data", str(conn_fd), INNER_CONNECTION,
                 "--ro-bind", str(staged), INNER_SUBMISSION, "--size", disk, "--tmpfs", cwd, "--chdir", cwd,
                 "--info-fd", str(info_fd)]
        return args

    def launcher(self, kernel_cmd: list[str], cwd: str) -> list[str]:
        """``python -c LAUNCHER spec kernel_cmd...``: the rlimits, then the kernel."""
        limits = {"RLIMIT_CPU": (self.cpu_seconds, self.cpu_seconds + 5),
                  "RLIMIT_DATA": (self.memory_mb * MIB,) * 2, "RLIMIT_AS": (self.address_space_mb * MIB,) * 2,
                  "RLIMIT_FSIZE": (self.disk_mb * MIB,) * 2, "RLIMIT_NPROC": (self.max_processes,) * 2,
                  "RLIMIT_NOFILE": (self.open_files,) * 2, "RLIMIT_CORE": (0, 0)}
        spec = {"src": INNER_SUBMISSION, "dst": cwd, "limits": limits}
        return ["--", kernel_cmd[0], "-I", "-c", LAUNCHER, json.dumps(spec), *kernel_cmd]

    # -- the end of the sandbox --------------------------------------------------------------------
    async def _async_cleanup_resources(self, restart: bool = False):
        process = getattr(self.provisioner, "process", None)
        if getattr(self, "_sandbox", False) and process is not None and process.poll() is None:
            process.kill()  # bwrap's pid 1 dies with it, and with it every process of the namespace
            process.wait()
        await super()._async_cleanup_resources(restart=restart)
        scratch = getattr(self, "_scratch", None)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
            self._scratch = None

    cleanup_resources = _async_cleanup_resources  # AsyncKernelManager binds the base class's method by name
