"""A one-server class for tests/test_jupyterhub.py: Unix users, commands run as them, and a JupyterHub.

Everything here needs root (``useradd``, ``setuid``): the CI machine runs as root. Every server
binds to 127.0.0.1 on a free port; every user, process and folder made here is removed by
``Users.remove``, ``Hub.stop`` and the caller's temporary folder.
"""
from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent  # the .venv the tests run in: jupyterhub, jupyterlab, nbgrader
INTERPRETER = Path(sys.executable).resolve()  # what the venv's python links to
PROXY = ROOT / ".hub" / "node_modules" / ".bin" / "configurable-http-proxy"  # `make hub-deps`


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: Path

    def env(self, **extra: str) -> dict[str, str]:
        """A clean environment for this user: their HOME, the course's venv first on PATH, one thread."""
        return {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name, "LANG": "C.UTF-8",
                "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "OMP_NUM_THREADS": "1", **extra}

    def run(self, *argv: str, cwd: Path | None = None, timeout: float = 120) -> str:
        """Run ``argv`` as this user (setuid, their groups only) in ``cwd`` (default: HOME).

        Returns:
            stdout and stderr together; a non-zero exit fails with both.
        """
        proc = subprocess.run(argv, check=False, cwd=cwd or self.home, env=self.env(), user=self.uid, group=self.gid,
                              extra_groups=[], capture_output=True, text=True, timeout=timeout)
        out = proc.stdout + proc.stderr
        if proc.returncode:
            raise AssertionError(f"`{' '.join(argv)}` as {self.name} exited with {proc.returncode}:\n{out[-4000:]}")
        return out

    def write(self, relpath: str, text: str) -> Path:
        """Write a file in this user's home (folders made as needed), owned by the user."""
        path = self.home / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        chown_tree(self.home, self)
        return path


def chown_tree(path: Path, user: User) -> None:
    """Give ``path`` and everything under it to ``user``."""
    for p in [path, *path.rglob("*")]:
        os.chown(p, user.uid, user.gid, follow_symlinks=False)


class Users:
    """Unix users made for one test run (names with a random suffix), removed with their processes."""

    def __init__(self, homes: Path):
        self.homes, self.made, self.tag = homes, [], secrets.token_hex(3)

    def add(self, role: str) -> User:
        name = f"vit-{role}-{self.tag}"
        home = self.homes / name
        subprocess.run(["useradd", "--create-home", "--home-dir", str(home), "--shell", "/bin/bash",
                        "--user-group", name], check=True, capture_output=True)
        entry = pwd.getpwnam(name)
        user = User(name, entry.pw_uid, entry.pw_gid, home)
        self.made.append(user)
        home.chmod(0o700)  # students never read each other's or the instructor's files
        return user

    def remove(self) -> None:
        for user in self.made:
            kill_processes_of(user.uid)
            subprocess.run(["userdel", "--force", "--remove", user.name], check=False, capture_output=True)
        self.made = []


def kill_processes_of(uid: int) -> None:
    """End every process still running as ``uid`` (servers and kernels this test started as that user)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    os.kill(int(entry.name), signal.SIGKILL)


@contextlib.contextmanager
def traversable(*paths: Path):
    """Let every user reach ``paths`` (o+x on each folder above them lacking it), restored afterwards.

    The test users run the course's venv inside the checkout, and its interpreter, which may live
    under a private folder (pyenv's ``/root/.pyenv``, a clone under ``/root``).
    """
    changed = []
    for path in paths:
        for parent in reversed(Path(path).resolve().parents):
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(mode | stat.S_IXOTH)
                changed.append((parent, mode))
    try:
        yield
    finally:
        for parent, mode in reversed(changed):
            parent.chmod(stat.S_IMODE(mode))


def free_ports(n: int) -> list[int]:
    """n distinct free ports on 127.0.0.1 (all held open while choosing, so none is handed out twice)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


class Hub:
    """JupyterHub on 127.0.0.1: DummyAuthenticator with a password, each user's JupyterLab as that user.

    Args:
        folder: where the hub's config, database, cookie secret and log go (root only).
        users: who may log in.
    """

    def __init__(self, folder: Path, users: list[User]):
        self.folder, self.users = folder, users
        self.port, self.hub_port, self.api_port = free_ports(3)  # public proxy, hub, proxy API
        self.password = secrets.token_urlsafe(12)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "jupyterhub.log"
        self.proc: subprocess.Popen | None = None

    def config(self) -> str:
        return f"""\
c = get_config()  # noqa
c.JupyterHub.bind_url = {self.url!r}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {self.hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.api_port}"
c.ConfigurableHTTPProxy.command = [{str(PROXY)!r}]
c.JupyterHub.db_url = "sqlite:///{self.folder / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = {str(self.folder / 'cookie_secret')!r}
c.JupyterHub.pid_file = {str(self.folder / 'jupyterhub.pid')!r}
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {self.password!r}
c.Authenticator.allowed_users = {sorted(u.name for u in self.users)!r}
# Each user's JupyterLab runs as that Unix user, from the course's environment, in their home.
c.JupyterHub.spawner_class = "jupyterhub.spawner.LocalProcessSpawner"
c.Spawner.cmd = [{str(VENV_BIN / 'jupyterhub-singleuser')!r}]
c.Spawner.default_url = "/lab"
c.Spawner.notebook_dir = "~"
c.Spawner.ip = "127.0.0.1"
c.Spawner.environment = {{"PATH": "{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "OMP_NUM_THREADS": "1"}}
c.Spawner.start_timeout = 90
c.Spawner.http_timeout = 90
"""

    def start(self) -> None:
        (self.folder / "jupyterhub_config.py").write_text(self.config())
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([str(VENV_BIN / "jupyterhub"), "-f", "jupyterhub_config.py"],
                                         cwd=self.folder, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"},
                                         start_new_session=True)

    def wait(self, timeout: float = 60) -> None:
        """Until the hub answers through its proxy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"jupyterhub exited with {self.proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/hub/api", timeout=2) as response:
                if response.status == 200:
                    return
            time.sleep(0.3)
        raise AssertionError(f"jupyterhub did not answer on {self.url} within {timeout:.0f} s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else "(no log)"

    def stop(self) -> None:
        """Stop the hub, its proxy and the users' servers (the hub's process group, then theirs)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        for user in self.users:
            kill_processes_of(user.uid)

