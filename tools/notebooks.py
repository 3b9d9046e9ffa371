"""Keep every notebook's Colab badge and set-up cell in step with ``course.toml``.

Each lecture, exercise and solution notebook starts with two generated cells:

* a Markdown cell tagged ``course-badge`` holding the "Open in Colab" badge, and
* a code cell tagged ``course-setup``: a few lines that, on Colab, clone the student edition
  and otherwise put the checkout the notebook is in first on ``sys.path``, then call
  ``course_lib.bootstrap.setup`` (Google Drive on Colab, missing packages but never torch,
  the device).

Usage::

    python tools/notebooks.py          # rewrite the cells in place
    python tools/notebooks.py --check  # exit 1 and list notebooks that are out of date

``tests/test_notebooks_config.py`` runs the check, so a changed ``course.toml``
that was not followed by ``make notebooks`` fails the tests.
"""
from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIRS = ("lectures", "exercises", "solutions")
BADGE_TAG = "course-badge"
SETUP_TAG = "course-setup"


def load_config(root: Path = ROOT) -> dict:
    """The ``[course]`` table of ``course.toml``."""
    with open(root / "course.toml", "rb") as f:
        return tomllib.load(f)["course"]


def badge_source(cfg: dict, rel_path: str) -> str:
    """Markdown for the "Open in Colab" badge of the notebook at ``rel_path``.

    Solutions are published as the exercise of the same name, so their badge
    points at ``exercises/``.
    """
    rel_path = rel_path.replace("solutions/", "exercises/", 1)
    url = f"https://colab.research.google.com/github/{cfg['repository']}/blob/{cfg['branch']}/{rel_path}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def setup_source(cfg: dict) -> str:
    """The set-up cell's code: a few lines that hand over to ``course_lib.bootstrap.setup``.

    Locally the checkout the notebook lives in (its folder or the one above) comes first on
    ``sys.path``; on Colab the student edition is cloned into ``colab_dir`` first, and ``setup``
    offers to keep it in Google Drive.
    """
    clone = cfg["colab_dir"]
    repo = f"https://github.com/{cfg['repository']}.git"
    return f'''# Set-up: finds the course (on Colab: fetches it, offers to keep it in Google Drive) and picks the device.
import os, subprocess, sys
KEEP_IN_DRIVE = True  # Colab: keep the course and your course_lib edits in Google Drive, so they outlive the runtime
if "google.colab" in sys.modules and not os.path.isdir("{clone}"):
    subprocess.run(["git", "clone", "-q", "--depth", "1", "-b", "{cfg['branch']}", "{repo}", "{clone}"], check=True)
sys.path[:0] = [os.getcwd(), os.path.dirname(os.getcwd()), "{clone}"]
from course_lib.bootstrap import setup
device = setup(keep_in_drive=KEEP_IN_DRIVE)'''


def _tagged(nb, tag: str):
    for i, cell in enumerate(nb.cells):
        if tag in cell.get("metadata", {}).get("tags", []):
            return i
    return None


def stamp(nb, cfg: dict, rel_path: str) -> bool:
    """Insert or refresh the badge and set-up cells of ``nb``; True when it changed."""
    changed = False
    wanted = [
        (BADGE_TAG, "markdown", badge_source(cfg, rel_path)),
        (SETUP_TAG, "code", setup_source(cfg)),
    ]
    for position, (tag, kind, source) in enumerate(wanted):
        i = _tagged(nb, tag)
        if i is None:
            cell = nbformat.v4.new_markdown_cell(source) if kind == "markdown" else nbformat.v4.new_code_cell(source)
            cell.metadata["tags"] = [tag]
            nb.cells.insert(position, cell)
            changed = True
        elif nb.cells[i].source != source:
            nb.cells[i].source = source
            changed = True
    return changed


def notebooks(root: Path = ROOT):
    for folder in NOTEBOOK_DIRS:
        yield from sorted((root / folder).glob("*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report out-of-date notebooks, change nothing")
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: every course notebook)")
    args = parser.parse_args(argv)
    cfg = load_config()
    stale = []
    for path in args.paths or list(notebooks()):
        path = path.resolve()
        nb = nbformat.read(path, as_version=4)
        if stamp(nb, cfg, path.relative_to(ROOT).as_posix()):
            stale.append(path.relative_to(ROOT))
            if not args.check:
                nbformat.write(nb, path)
    if args.check and stale:
        print("out of date with course.toml (run `make notebooks`):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
