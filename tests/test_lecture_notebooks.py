"""Static checks of every lecture notebook (fast: nothing is executed; nbval re-runs them elsewhere).

For each ``lectures/*.ipynb``: valid nbformat; the generated badge and set-up cells are current;
every code cell was executed, in order, with its outputs stored and no errors; no absolute paths of
this machine leak into sources, outputs or metadata; the file stays small; the only nbval tag is
``nbval-ignore-output``; no lecture calls a course_lib Task (those raise NotImplementedError in the
student edition); and relative links point at notebooks that exist. The data files that lectures plot
(``lectures/data/*.csv``) name their source on every row.
"""
from __future__ import annotations

import ast
import copy
import json
import re
from pathlib import Path

import nbformat
import pytest

import notebooks  # tools/notebooks.py (tests/conftest.py puts tools/ on sys.path)
from course_lib.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]
LECTURES = sorted((ROOT / "lectures").glob("*.ipynb"))
TASK_NAMES = frozenset(t.name for t in TASKS)
MAX_BYTES = 1_500_000
ALLOWED_NBVAL_TAGS = {"nbval-ignore-output"}
# nbval reads these tags (and any nbval-*); a lecture may only use nbval-ignore-output.
NBVAL_TAGS = {"raises-exception", "nbval-raises-exception", "nbval-skip", "nbval-check-output", "nbval-ignore-output"}
ABSOLUTE_PATH = re.compile(r"(?<![\w.~/-])(?:/work|/home|/root|/tmp)(?=/|\b)|\b[A-Za-z]:\\\\?[A-Za-z]")
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _text_of_output(out) -> str:
    """The text of one output, images left out (base64 can contain anything)."""
    if out.get("output_type") == "stream":
        return out.get("text", "")
    if out.get("output_type") == "error":
        return "\n".join(out.get("traceback", []))
    data = out.get("data", {})
    return "\n".join(v if isinstance(v, str) else json.dumps(v) for k, v in data.items() if not k.startswith("image/"))


def test_there_are_lectures():
    assert LECTURES, "no notebooks in lectures/"
    assert (ROOT / "lectures" / "00_start_here.ipynb") in LECTURES, "the start page lectures/00_start_here.ipynb is missing"


@pytest.mark.parametrize("path", LECTURES, ids=_ids(LECTURES))
def test_valid_nbformat(path):
    nb = _read(path)
    nbformat.validate(nb)
    assert nb.nbformat == 4


@pytest.mark.parametrize("path", LECTURES, ids=_ids(LECTURES))
def test_badge_and_setup_cells_are_current(path):
    nb = _read(path)
    assert notebooks.BADGE_TAG in nb.cells[0].metadata.get("tags", []), "cell 1 must be the Colab badge (run `make notebooks`)"
    assert notebooks.SETUP_TAG in nb.cells[1].metadata.get("tags", []), "cell 2 must be the set-up cell (run `make notebooks`)"
    changed = notebooks.stamp(copy.deepcopy(nb), notebooks.load_config(), path.relative_to(ROOT).as_posix())
    assert not changed, f"{path.name}: badge or set-up cell is out of date with course.toml (run `make notebooks`)"


@pytest.mark.parametrize("path", LECTURES, ids=_ids(LECTURES))
def test_outputs_are_stored_in_order_and_error_free(path):
    cells = _code_cells(_read(path))
    assert cells, f"{path.name} has no code cells"
    counts = [c.execution_count for c in cells]
    assert None not in counts, f"{path.name}: code cells {[i for i, n in enumerate(counts) if n is None]} were never executed"
    assert counts == sorted(counts) and len(set(counts)) == len(counts), (
        f"{path.name}: execution counts {counts} are not in order; re-run the notebook top to bottom")
    assert any(c.outputs for c in cells), f"{path.name}: no stored outputs (execute it before committing)"
    for i, cell in enumerate(cells):
        for out in cell.outputs:
            assert out.output_type != "error", f"{path.name}, code cell {i}: stored error {out.get('ename')}: {out.get('evalue')}"
            if out.output_type == "stream" and out.name == "stderr":
                assert "Traceback" not in out.text and "Error" not in out.text, (
                    f"{path.name}, code cell {i}: stored stderr looks like an error:\n{out.text[:500]}")


@pytest.mark.parametrize("path", LECTURES, ids=_ids(LECTURES))
def test_no_absolute_paths(path):
    nb = _read(path)
    places = [("notebook metadata", json.dumps(nb.metadata))]
    for i, cell in enumerate(nb.cells):
        places.append((f"cell {i} source", cell.source))
        places.append((f"cell {i} metadata", json.dumps(cell.metadata)))
        for out in cell.get("outputs", []):
            places.append((f"cell {i} output", _text_of_output(out)))
    hits = [f"{where}: {text[max(0, m.start() - 40):m.end() + 40]!r}" for where, text in places for m in ABSOLUTE_PATH.finditer(text)]
    assert not hits, f"{path.name} contains absolute paths of this machine:\n" + "\n".join(hits[:10])


def test_absolute_path_pattern():
    for text in ("/tmp/x.png", "open('/work/main/data')", "cwd: /root", "/home/me/course", r"C:\\Users\\me", r"C:\Users"):
        assert ABSOLUTE_PATH.search(text), text
    for text in ("https://example.org/tmp/x", "/content/vit-basics", "../exercises/01_attention.ipynb", "lectures/tmp_note", "a /b"):
        assert not ABSOLUTE_PATH.search(text), text


@pytest.mark.parametrize("path", LECTURES, ids=_ids(LECTURES))
def test_size(path):
    size = path.stat().st_size
    assert size < MAX_BYTES, f"{path.name} is {size / 1e6:.2f} MB (limit {MAX_BYTES / 1e6:.1f} MB): smaller or fewer figures"


@pytest.mark.parametrize("path", LECTURES, ids=_ids(LECTURES))
def test_only_nbval_ignore_output_tag(path):
    for i, cell in enumerate(_read(path).cells):
        tags = set(cell.metadata.get("tags", []))
        bad = {t for t in tags if t in NBVAL_TAGS or t.startswith("nbval")} - ALLOWED_NBVAL_TAGS
        assert not bad, f"{path.name}, cell {i}: nbval tags {sorted(bad)}; only nbval-ignore-output is allowed"


def _course_lib_task_uses(source: str) -> list[str]:
    """Task names that ``source`` takes from course_lib (imports and attribute uses), via the AST."""
    # IPython magics and shell escapes are not Python: blank them out before parsing.
    lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()]
    tree = ast.parse("\n".join(lines))
    module_aliases = {"course_lib"}  # names bound to course_lib or one of its modules
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "course_lib" or alias.name.startswith("course_lib."):
                    module_aliases.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and (node.module == "course_lib" or node.module.startswith("course_lib.")):
            for alias in node.names:
                if alias.name == "*":
                    hits.append(f"from {node.module} import *")
                elif alias.name in TASK_NAMES:
                    hits.append(f"from {node.module} import {alias.name}")
                else:  # e.g. `from course_lib import attention`: a module alias
                    module_aliases.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in TASK_NAMES:
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in module_aliases:
                hits.append(f"{ast.unparse(node)}")
    return hits


@pytest.mark.parametrize("path", LECTURES, ids=_ids(LECTURES))
def test_no_course_lib_tasks_in_lectures(path):
    for i, cell in enumerate(_code_cells(_read(path))):
        hits = _course_lib_task_uses(cell.source)
        assert not hits, (f"{path.name}, code cell {i} uses course_lib Tasks {hits}: they raise NotImplementedError in the "
                          "student edition; write the demonstration inline or with torch built-ins")


def test_task_detector():
    """The detector above flags course_lib Tasks and nothing else."""
    assert _course_lib_task_uses("from course_lib.attention import MultiHeadAttention")
    assert _course_lib_task_uses("from course_lib.analysis import count_parameters as cp")
    assert _course_lib_task_uses("import course_lib.embeddings as emb\nemb.patchify(x, 16)")
    assert _course_lib_task_uses("from course_lib import attention\nattention.scaled_dot_product_attention(q, k, v)")
    assert _course_lib_task_uses("import course_lib\ncourse_lib.vit.VisionTransformer(cfg)")
    assert _course_lib_task_uses("from course_lib.vit import *")
    assert not _course_lib_task_uses("import torch.nn.functional as F\nF.scaled_dot_product_attention(q, k, v)")
    assert not _course_lib_task_uses("from torchvision.models.vision_transformer import VisionTransformer")
    assert not _course_lib_task_uses("import torch.nn as nn\nnn.LayerNorm(8)\nnn.MultiheadAttention(8, 2)")
    assert not _course_lib_task_uses("from course_lib.device import get_device, seed_everything\n%matplotlib inline")
    assert not _course_lib_task_uses("from course_lib.vit import ViTConfig, vit_config")


@pytest.mark.parametrize("path", LECTURES, ids=_ids(LECTURES))
def test_relative_links_resolve(path):
    """Links to other notebooks exist (exercises may exist as exercises/ or as their solutions/ source)."""
    missing = []
    for i, cell in enumerate(_read(path).cells):
        if cell.cell_type != "markdown":
            continue
        for target in MARKDOWN_LINK.findall(cell.source):
            if "://" in target or target.startswith(("#", "mailto:")):
                continue
            file = target.split("#")[0]
            if not file:
                continue
            resolved = (path.parent / file).resolve()
            candidates = [resolved]
            if resolved.parent == ROOT / "exercises":
                candidates.append(ROOT / "solutions" / resolved.name)
            if not any(c.exists() for c in candidates):
                missing.append(f"cell {i}: {target}")
    assert not missing, f"{path.name} links to missing files:\n  " + "\n  ".join(missing)


DATA = sorted((ROOT / "lectures" / "data").glob("*.csv"))


@pytest.mark.parametrize("path", DATA, ids=_ids(DATA))
def test_lecture_data_name_their_source(path):
    """Every published number a lecture plots names where it comes from, row by row."""
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert rows, f"{path.name} is empty"
    assert "source" in rows[0], f"{path.name} needs a 'source' column"
    missing = [i + 2 for i, r in enumerate(rows) if not (r.get("source") or "").strip()]
    assert not missing, f"{path.name}: rows {missing} have no source"
