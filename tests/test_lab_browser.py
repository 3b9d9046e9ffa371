"""`make lab` works: JupyterLab opens the start page, and a lecture runs top to bottom in a real browser.

Starts the command of the Makefile's ``lab`` target (``.venv/bin/jupyter lab lectures/00_start_here.ipynb``)
on a free localhost port, drives Debian's headless Chromium with Playwright, opens the start page,
follows its link to lecture 04, clears the outputs, runs every cell from the Run menu and checks
that each cell ran and none printed an error. Nothing is saved: autosave is off and the lecture
file is compared byte for byte afterwards.

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``) and ``pip install playwright``
(never ``playwright install``: the system browser is used). Without them the test is skipped,
except in CI (environment variable ``CI`` set), where it fails.
"""
from __future__ import annotations

import json
import os
import posixpath
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from urllib.parse import unquote, urlsplit
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
START_PAGE = "lectures/00_start_here.ipynb"
LECTURE = "lectures/04_single_head_attention.ipynb"
EXERCISE_LINK = "../exercises/01_attention.ipynb"  # as the start page links it
LECTURE_LINK_TEXT = "Lecture 04 · Single-head attention"  # a link on the start page
BUDGET_S = 85  # the whole test, server start to shutdown

pytestmark = pytest.mark.slow


def _missing(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_lab_command() -> list[str]:
    """The command of the Makefile's `lab` target, with $(VENV) expanded and $(LAB_ARGS) left empty."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"^lab\s*:", line))
    recipe = next(line.strip() for line in lines[start + 1:] if line.startswith("\t"))
    venv = re.search(r"^VENV\s*:?=\s*(\S+)", "\n".join(lines), re.M)
    recipe = recipe.replace("$(VENV)", venv.group(1) if venv else ".venv").replace("$(LAB_ARGS)", "")
    assert "$(" not in recipe, f"cannot expand the lab recipe {recipe!r}"
    command = shlex.split(recipe)
    assert Path(command[0]).name == "jupyter" and command[1] == "lab", f"unexpected lab recipe {recipe!r}"
    return command


def _wait_for_server(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(f"jupyter lab did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server and its kernels (its own process group)."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _open_url(runtime: Path, timeout: float = 10) -> str:
    """The URL `make lab` would open in a browser: the server writes it to jpserver-file-to-run-*-open.html."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for html in runtime.glob("jpserver-file-to-run-*-open.html"):
            match = re.search(r'url=([^"]+)"', html.read_text())
            if match:
                return match.group(1)
        time.sleep(0.2)
    pytest.fail(f"jupyter lab wrote no file-to-run page to {runtime}")


def _lab_settings(folder: Path) -> None:
    """User settings for this server only: no autosave (the lecture stays untouched), every cell in the DOM."""
    docmanager = folder / "@jupyterlab" / "docmanager-extension"
    notebook = folder / "@jupyterlab" / "notebook-extension"
    docmanager.mkdir(parents=True)
    notebook.mkdir(parents=True)
    (docmanager / "plugin.jupyterlab-settings").write_text(json.dumps({"autosave": False}))
    (notebook / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))


def test_make_lab_opens_start_page_and_runs_a_lecture(tmp_path):
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install playwright)")

    started = time.monotonic()
    lecture = ROOT / LECTURE
    original = lecture.read_bytes()
    checkpoints = ROOT / "lectures" / ".ipynb_checkpoints"  # JupyterLab adds one per opened notebook
    existing_checkpoints = set(checkpoints.iterdir()) if checkpoints.is_dir() else None
    n_code_cells = sum(c.cell_type == "code" for c in nbformat.read(lecture, as_version=4).cells)

    port, token = _free_port(), secrets.token_hex(16)
    settings, log, runtime = tmp_path / "settings", tmp_path / "jupyter-lab.log", tmp_path / "runtime"
    _lab_settings(settings)
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime), "BROWSER": "true"}
    command = [*_make_lab_command(),  # the Makefile's `lab` target ...
               "--no-browser", f"--port={port}", "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.token={token}", "--allow-root",  # ... on a private port, as root in containers
               f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}"]
    with open(log, "w") as log_file:
        server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    screenshot = tmp_path / "failure.png"
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for_server(f"{base}/api/status?token={token}", server, log, timeout=40)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            try:
                # 1. The start page opens (at the URL `make lab` opens) and renders.
                start_url = _open_url(runtime)
                start_path = unquote(urlsplit(start_url).path).split("/lab/tree/", 1)[-1]  # relative to the server root
                assert start_path.endswith("00_start_here.ipynb"), f"`make lab` opens {start_url}, not the start page"
                page.goto(start_url if "://" in start_url else f"{base}{start_url}?token={token}")
                page.get_by_role("heading", name="Vision Transformer Basics · Start here").wait_for()

                # 2. Its link opens lecture 04 in a new JupyterLab tab.
                page.locator(".jp-RenderedMarkdown a", has_text=LECTURE_LINK_TEXT).first.click()
                panel = page.locator(".jp-NotebookPanel:visible").filter(
                    has=page.get_by_role("heading", name="Lecture 04 · Single-head self-attention"))
                panel.wait_for()
                page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']:visible").wait_for(timeout=40_000)

                # 3. Clear the stored outputs, then run every cell from the Run menu.
                page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Edit$")).click()
                page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Clear Outputs of All Cells$")).click()
                page.wait_for_function(  # a clean slate: no execution count left anywhere
                    """() => ![...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')]
                             .some(e => /\\d/.test(e.textContent))""")
                page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
                page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()

                # 4. Wait until every code cell shows an execution count and the kernel is idle again.
                remaining_ms = max(10_000, int((BUDGET_S - (time.monotonic() - started)) * 1000) - 8_000)
                page.wait_for_function(
                    """n => {
                        const panel = [...document.querySelectorAll('.jp-NotebookPanel')].find(p => p.offsetParent !== null);
                        if (!panel) return false;
                        const prompts = [...panel.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(e => e.textContent.trim());
                        const done = prompts.filter(t => /^\\[\\d+\\]:$/.test(t)).length;
                        const status = panel.querySelector('.jp-Notebook-ExecutionIndicator');
                        return prompts.length === n && done === n && (!status || status.dataset.status === 'idle');
                    }""",
                    arg=n_code_cells, timeout=remaining_ms)

                # 5. No errors, and the figures are there.
                stderr = panel.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').all_inner_texts()
                errors = [t for t in stderr if "Traceback" in t or "Error" in t]
                assert not errors, "the lecture printed errors in JupyterLab:\n" + "\n---\n".join(t[:1500] for t in errors)
                assert panel.locator(".jp-OutputArea-output img").count() >= 3, "the lecture's figures did not render"
                assert panel.locator(".jp-OutputArea-output", has_text="Device:").count() == 1, "the set-up cell did not run"

                # 6. The start page's exercise links must resolve inside the server's root.
                exercise_path = posixpath.normpath(posixpath.join(posixpath.dirname(start_path), EXERCISE_LINK))
                assert not exercise_path.startswith(".."), (
                    f"`make lab` serves {posixpath.dirname(start_path) or 'the folder of the start page'} as its root, so the "
                    f"start page's link {EXERCISE_LINK} leads outside it; serve the repository root, e.g. "
                    "`jupyter lab --ServerApp.root_dir=. lectures/00_start_here.ipynb`")
            except BaseException:
                page.screenshot(path=str(screenshot), full_page=True)
                print(f"screenshot of the failure: {screenshot}\njupyter lab log: {log}")
                raise
            finally:
                browser.close()
    finally:
        _stop(server)
        if lecture.read_bytes() != original:  # never leave a modified lecture behind
            lecture.write_bytes(original)
            pytest.fail(f"JupyterLab wrote to {LECTURE}; the original was restored")
        shutil.rmtree(tmp_path / "runtime", ignore_errors=True)
        if existing_checkpoints is None:
            shutil.rmtree(checkpoints, ignore_errors=True)
        elif checkpoints.is_dir():
            for path in set(checkpoints.iterdir()) - existing_checkpoints:
                path.unlink(missing_ok=True)
    assert server.poll() is not None, "jupyter lab is still running"
    elapsed = time.monotonic() - started
    assert elapsed < 90, f"the browser test took {elapsed:.0f} s (limit 90 s)"
