"""The architecture contracts of pyproject.toml (import-linter) hold, and each one is shown to
catch a violation planted in a temporary copy of the code."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_contracts_hold():
    r = lint(REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 kept, 0 broken" in r.stdout


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("arch")
    for name in ("workbench", "ui", "views"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.mark.parametrize(
    "module, line, contract",
    [
        ("workbench/store/records.py", "import streamlit", "the core library knows nothing of Streamlit"),
        ("workbench/ingest/chunking.py", "import ui", "the core library knows nothing of Streamlit"),
        ("views/search.py", "import chromadb", "views use the core's functions"),
        ("ui/charts.py", "from transformers import AutoModel", "views use the core's functions"),
        ("workbench/store/chroma.py", "from workbench.retrieval import bm25", "workbench layers"),
        ("workbench/models/embeddings.py", "from workbench.ingest import chunking", "workbench layers"),
        ("workbench/config.py", "from workbench import logs", "workbench layers"),
        ("workbench/ingest/ocr.py", "from workbench.ingest import loaders", "no import circles"),
    ],
)
def test_a_planted_violation_breaks_its_contract(copy, module, line, contract):
    path = copy / module
    original = path.read_text()
    # After the module docstring, as a function-local import would be found too.
    path.write_text(original + f"\n\ndef _planted():\n    {line}\n")
    try:
        r = lint(copy)
    finally:
        path.write_text(original)
    assert r.returncode == 1, r.stdout
    broken = re.findall(r"^(.*?) BROKEN$", r.stdout.replace("\n", " ").replace("KEPT", "KEPT\n").replace("BROKEN", "BROKEN\n"), re.M)
    assert any(contract in b for b in broken), r.stdout


def test_no_module_shadows_a_standard_library_module():
    names = {p.stem for d in ("workbench", "ui", "views") for p in (REPO / d).rglob("*.py")}
    names |= {p.name for d in ("workbench", "ui") for p in (REPO / d).rglob("*") if p.is_dir()}
    assert not names & set(sys.stdlib_module_names), names & set(sys.stdlib_module_names)


def test_the_record_format_has_one_owner():
    """The chunk-id format, the commit flag and the committed-chunk filter are spelled out only in
    workbench/store/records.py."""
    patterns = {
        "chunk-id format": re.compile(r":06d\}|-000000"),
        "commit flag": re.compile(r"[\"']complete[\"']"),
        "committed filter": re.compile(r"[\"']chunk_index[\"']\s*:\s*0"),
    }
    owner = REPO / "workbench" / "store" / "records.py"
    for path in [*(REPO / "workbench").rglob("*.py"), *(REPO / "ui").rglob("*.py"), *(REPO / "views").glob("*.py")]:
        if path == owner:
            continue
        text = path.read_text()
        for what, pattern in patterns.items():
            assert not pattern.search(text), f"{path.relative_to(REPO)} spells out the {what}"
    for what, pattern in patterns.items():
        assert pattern.search(owner.read_text()), what
