"""Logging to ``LOG_DIR/workbench.log`` (and stderr for warnings)."""

from __future__ import annotations

import logging
from logging.handlers import RotatingFileHandler

from workbench.config import Settings

_configured: set[str] = set()


def configure_logging(settings: Settings) -> None:
    """Attach a rotating file handler (5 MB x 3) at LOG_DIR/workbench.log to the ``workbench``
    logger, once per process and folder. A log folder that cannot be created is skipped."""
    path = settings.log_dir / "workbench.log"
    if str(path) in _configured:
        return
    logger = logging.getLogger("workbench")
    logger.setLevel(settings.log_level.upper())
    try:
        settings.log_dir.mkdir(parents=True, exist_ok=True)
        handler = RotatingFileHandler(path, maxBytes=5_000_000, backupCount=3, encoding="utf-8")
    except OSError:
        return
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    _configured.add(str(path))
