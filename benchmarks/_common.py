"""Helpers shared by the benchmarks: where the corpus is, settings on temp folders, JSON out."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("WORKBENCH_SHARED", REPO.parent / "shared"))
CORPUS = SHARED / "corpus"
RESULTS = REPO / "benchmarks" / "results"


def require_corpus() -> Path:
    if not CORPUS.is_dir():
        sys.exit(f"benchmark needs the shared corpus at {CORPUS} (set WORKBENCH_SHARED)")
    return CORPUS


def write_result(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2))
    print(f"wrote {path}")
    return path


def cpu_flags() -> str:
    """The CPU's AVX-512 and AMX flags from /proc/cpuinfo, sorted and space-separated ("" when
    it has none or the file is not there): speed figures depend on them (../shared/ENV.md)."""
    import re

    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return " ".join(sorted(set(re.findall(r"\b(avx512[a-z_0-9]*|amx[a-z_0-9]*)\b", text))))
