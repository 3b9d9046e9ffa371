"""Keep every notebook's Colab badge and set-up cell in step with ``course.toml``.

Each lecture, exercise and solution notebook starts with two generated cells:

* a Markdown cell tagged ``course-badge`` holding the "Open in Colab" badge, and
* a code cell tagged ``course-setup`` that, on Colab, clones the student edition
  and installs only the packages that are missing (never torch), and locally
  only makes ``course_lib`` importable from the checkout the notebook is in.

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
    """The set-up cell's code (see the module docstring)."""
    packages = ", ".join(repr(p) for p in cfg["colab_packages"])
    return f'''# Set-up: generated from course.toml by tools/notebooks.py (edit there, not here).
import importlib.util, os, subprocess, sys
from pathlib import Path

COURSE_REPO = "https://github.com/{cfg['repository']}.git"
if "google.colab" in sys.modules:  # Colab: fetch the student edition, install what is missing, never torch
    root = Path("{cfg['colab_dir']}")
    if not root.exists():
        subprocess.run(["git", "clone", "--quiet", "--depth", "1", "--branch", "{cfg['branch']}", COURSE_REPO, str(root)], check=True)
    import_names = {{"scikit-learn": "sklearn"}}
    missing = [p for p in [{packages}] if importlib.util.find_spec(import_names.get(p, p)) is None]
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *missing], check=True)
else:  # locally: use the course_lib of the checkout this notebook lives in; install nothing
    # (while autograding, only the notebook's folder and the one above: never an instructor's checkout
    # further up, such as the repository root above grading/autograded/<student>/<exercise>/)
    here = Path.cwd()
    search = [here, here.parent] if os.environ.get("NBGRADER_EXECUTION") else [here, *here.parents]
    root = next((p for p in search if (p / "course_lib").is_dir()), here)
sys.path.insert(0, str(root))
from course_lib.device import describe_device, get_device

device = get_device()
print("Device:", describe_device(device))
if "google.colab" in sys.modules and device.type == "cpu":
    print("No GPU: Runtime > Change runtime type > T4 GPU makes training much faster.")'''


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
