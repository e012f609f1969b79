"""Model files on disk: where model folders live, atomic writes, and offline mode.

Nothing here downloads: :mod:`workbench.models.prefetch` fills MODEL_CACHE_DIR (the Docker build
runs it), and every loader reads only from disk with the Hub switched off
(:func:`use_offline_hub`, the one place that sets HF_HUB_OFFLINE).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) asks for no Hub access."""
    return any(os.environ.get(v, "").strip().upper() in {"1", "ON", "YES", "TRUE"} for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def use_offline_hub() -> None:
    """Tell huggingface_hub and transformers never to reach the Hub in this process (the
    models are on disk). The one place that sets HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE;
    a value the user set is kept."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def folder_size(path: Path) -> int:
    """Total bytes of the files under ``path`` (0 when it does not exist)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def model_short_name(name: str) -> str:
    """``sentence-transformers/all-MiniLM-L6-v2`` -> ``all-MiniLM-L6-v2``; folders -> their name."""
    return Path(name.rstrip("/")).name


def fill_atomically(target: Path, fill: Callable[[Path], None]) -> None:
    """Run ``fill(tmp)`` on a fresh temp folder next to ``target``, then rename it to
    ``target``: an interrupted prefetch never leaves a half-written model folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        fill(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
