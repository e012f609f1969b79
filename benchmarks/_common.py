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


def cpu_report(embedder=None) -> dict:
    """What the speed figures depend on: ``{"model", "cores", "flags", "load_average"}`` and,
    given an :class:`~workbench.models.embeddings.Embedder`, its ``backend``, ``precision`` and
    the reason for that precision. ``flags`` are the avx2/avx512*/amx* flags (machines differ:
    the issue asks every result to name them); ``load_average`` is the 1-minute load when the
    report is made (a busy machine shows here)."""
    from workbench.models import cpu

    report = {
        "model": cpu.cpu_model_name(),
        "cores": os.cpu_count(),
        "flags": " ".join(cpu.reported_flags()),
        "load_average": round(os.getloadavg()[0], 2),
    }
    if embedder is not None:
        report.update(backend=embedder.backend, precision=embedder.precision, precision_reason=embedder.precision_reason)
    return report


def write_result(name: str, data: dict, embedder=None) -> Path:
    """Write ``benchmarks/results/<name>.json``: ``data`` plus ``"machine"`` (:func:`cpu_report`)
    and ``"measured_at"`` (UTC, ISO 8601)."""
    import datetime

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {**data, "machine": cpu_report(embedder), "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    path.write_text(json.dumps(data, indent=2))
    print(f"wrote {path}")
    return path


def cpu_flags() -> str:
    """The CPU's avx2/avx512*/amx* flags, space-separated ("" when none or not Linux): speed
    figures depend on them (../shared/ENV.md)."""
    from workbench.models import cpu

    return " ".join(cpu.reported_flags())
