"""OCR: an image in, its text lines in reading order out, read by Tesseract where it is
installed (:mod:`workbench.ingest.tesseract`) or else by EasyOCR (``OCR_ENGINE``,
:func:`workbench.models.tesseract.ocr_engine`).

Pages without a text layer and image files come here (files and pages are
:mod:`workbench.ingest.loaders`'; the reader is :mod:`workbench.models.ocr_reader`'s). Results are cached on disk by a hash of the page
image (``OCR_CACHE_DIR``), so asking a second question about a scanned page costs no OCR.
A page lying sideways or upside down is turned upright before it is read
(:mod:`workbench.ingest.orientation`, ``OCR_DETECT_ORIENTATION``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from workbench.config import Settings
from workbench.errors import DocumentError
from workbench.ingest.layout import OcrBox, OcrPage, reading_order
from workbench.ingest.orientation import ROTATIONS, detect_rotation, is_text_line, read_text_line, turn_array
from workbench.ingest.tesseract import read_page
from workbench.models.ocr_reader import get_reader
from workbench.models.tesseract import ocr_engine, tesseract_info

log = logging.getLogger(__name__)

#: Bump when the cached JSON layout or the line ordering changes: old entries are then ignored.
#: 3: pages are turned upright first (``rotation`` stored, boxes on the turned image).
#: 4: the engine (and Tesseract's version) is part of the key. 5: Tesseract straightens skew.
CACHE_VERSION = 5
#: A page whose every channel spans at most this many of 255 levels is taken as blank (no text
#: can show at a 3% contrast; a blank scan's noise is a few levels): it is not read. Reading
#: it anyway costs the full detection pass, 6-9 s for a page at 100 dpi on 2 cores.
BLANK_CONTRAST = 8


# --- cache ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _easyocr_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("easyocr")
    except PackageNotFoundError:
        return "unknown"


def image_cache_key(array: np.ndarray, settings: Settings) -> str:
    """sha256 hex of the page pixels (shape, dtype, bytes) and of everything that changes the
    OCR result: the engine (``ocr_engine``) and its version (easyocr's, with the canvas size;
    tesseract's), languages, orientation detection on/off, CACHE_VERSION."""
    digest = hashlib.sha256()
    engine = ocr_engine(settings)
    if engine == "tesseract":
        engine_part = f"tesseract-{tesseract_info(settings).version}"
    else:
        engine_part = f"{_easyocr_version()}|{settings.ocr_canvas_size}"
    header = (
        f"v{CACHE_VERSION}|{engine_part}|{','.join(settings.ocr_languages)}"
        f"|orient={int(settings.ocr_detect_orientation)}"
    )
    digest.update(f"{header}|{array.shape}|{array.dtype}|".encode())
    digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def cache_path(key: str, settings: Settings) -> Path:
    """Where the OCR result for ``key`` lives: ``OCR_CACHE_DIR/<key[:2]>/<key>.json``."""
    return Path(settings.ocr_cache_dir) / key[:2] / f"{key}.json"


def _read_cache(path: Path) -> OcrPage | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        boxes = tuple(
            OcrBox(tuple((float(x), float(y)) for x, y in b["box"]), str(b["text"]), float(b["confidence"]))
            for b in data["boxes"]
        )
        rotation = int(data["rotation"])
        if rotation not in ROTATIONS:
            raise ValueError(f"rotation {rotation}")
        return OcrPage(str(data["text"]), boxes, int(data["width"]), int(data["height"]), rotation)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:  # corrupt entry: OCR again
        log.warning("ignoring unreadable OCR cache entry %s (%s)", path, exc)
        return None


def _write_cache(path: Path, page: OcrPage) -> None:
    """Write atomically (temp file + rename); a cache that cannot be written only logs."""
    data = {
        "text": page.text,
        "width": page.width,
        "height": page.height,
        "rotation": page.rotation,
        "boxes": [{"box": [list(p) for p in b.box], "text": b.text, "confidence": b.confidence} for b in page.boxes],
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, ensure_ascii=False)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write OCR cache entry %s (%s)", path, exc)


# --- OCR ------------------------------------------------------------------------------


def _as_array(image) -> np.ndarray:
    """(h, w, 3) uint8 RGB array from a PIL image or an array."""
    if hasattr(image, "convert"):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return array


def ocr_image(image, settings: Settings) -> OcrPage:
    """Read text from a PIL image or an (h, w[, 3]) uint8 array with the engine
    :func:`~workbench.models.tesseract.ocr_engine` picks.

    Tesseract: :func:`workbench.ingest.tesseract.read_page` (its orientation detection, its
    lines, blocks in ``layout.block_order``); a failed read raises DocumentError.
    EasyOCR: with OCR_DETECT_ORIENTATION (default on) the page is first turned upright
    (``orientation.detect_rotation``: a detection pass on a small copy and a few words
    recognised both ways), then read once; a one-line image is read by
    ``orientation.read_text_line`` (one detection pass, a second recognition only when
    unsure). Measured on idle cores: 1.25-1.48x the read of the upright page for the rotated
    phototest copies, 0.83-1.16x for the ocropy lines (see that module).
    ``OcrPage.rotation`` says how far it was turned; its boxes, width and height are those of
    the turned image. Uses canvas_size=OCR_CANVAS_SIZE pixels. Boxes and text lines follow
    ``reading_order``. Either way, the result is cached under OCR_CACHE_DIR by ``image_cache_key`` (of the
    pixels as given): the same pixels with the same settings are read once. A blank page (each
    channel within BLANK_CONTRAST levels) is not read: empty text, no boxes. Raises
    ModelMissingError when the weights are not on disk (or OCR_ENGINE=tesseract is not installed).
    """
    array = _as_array(image)
    if array.size == 0 or int(np.ptp(array.reshape(-1, array.shape[-1]), axis=0).max()) <= BLANK_CONTRAST:
        return OcrPage("", (), int(array.shape[1]), int(array.shape[0]), 0)
    path = cache_path(image_cache_key(array, settings), settings)
    cached = _read_cache(path)
    if cached is not None:
        return cached
    if ocr_engine(settings) == "tesseract":
        page = _read_with_tesseract(array, settings)
        _write_cache(path, page)
        return page
    reader = get_reader(settings)
    if settings.ocr_detect_orientation and is_text_line(array):
        rotation, raw, _ = read_text_line(reader, array, settings.ocr_canvas_size)
        upright = turn_array(array, rotation)
    else:
        rotation = detect_rotation(reader, array).rotation if settings.ocr_detect_orientation else 0
        upright = turn_array(array, rotation)
        raw = reader.readtext(upright, canvas_size=settings.ocr_canvas_size)
    boxes = tuple(
        reading_order(
            OcrBox(tuple((float(x), float(y)) for x, y in box), str(text), float(conf)) for box, text, conf in raw
        )
    )
    height, width = upright.shape[:2]
    page = OcrPage("\n".join(b.text for b in boxes), boxes, width, height, rotation)
    _write_cache(path, page)
    return page


def _read_with_tesseract(array: np.ndarray, settings: Settings) -> OcrPage:
    import pytesseract

    try:
        rotation, upright, boxes = read_page(array, settings, is_text_line(array))
    except pytesseract.TesseractError as exc:
        raise DocumentError(f"tesseract could not read the page: {str(exc.message).strip() or exc}") from exc
    height, width = upright.shape[:2]
    return OcrPage("\n".join(b.text for b in boxes), tuple(boxes), width, height, rotation)


def character_error_rate(hypothesis: str, reference: str) -> float:
    """Levenshtein distance between the two texts over the reference length, after
    collapsing all whitespace runs to one space (the usual CER; 0 is perfect, can exceed 1).
    Uses rapidfuzz when installed, else a pure-Python dynamic programme (O(n·m))."""
    hyp = " ".join(hypothesis.split())
    ref = " ".join(reference.split())
    if not ref:
        return 0.0 if not hyp else 1.0
    try:
        from rapidfuzz.distance import Levenshtein

        distance = Levenshtein.distance(hyp, ref)
    except ImportError:
        previous = list(range(len(ref) + 1))
        for i, h in enumerate(hyp, start=1):
            current = [i]
            for j, r in enumerate(ref, start=1):
                current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (h != r)))
            previous = current
        distance = previous[-1]
    return distance / len(ref)
