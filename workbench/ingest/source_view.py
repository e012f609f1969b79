"""A cited chunk on its source page: what the Source view shows for ``collection / document /
chunk``, so a search hit or a citation can be checked against the page it came from.

- PDF page with a text layer: the page rendered with pypdfium2 (at OCR_DPI, within
  MAX_PAGE_MEGAPIXELS) and the rectangles of the chunk's text on it, found with pdfium's own
  text search (the whole chunk, else its first and last :data:`ANCHOR_CHARS` characters, as
  pypdf's extracted text and pdfium's differ in whitespace and ligatures).
- OCR'd PDF page or image file: the page image, its OCR boxes and the boxes of the chunk's
  character span (:func:`workbench.ingest.layout.span_boxes`; the OCR result is the cached one).
- Every other format: the page's text (a window of it) with the chunk's span marked.
- File gone, refused or unreadable: the chunk's stored text with a note saying why.

The stored ``source_path`` is read only through :func:`workbench.ingest.uploads.confine`.
Work per view is bounded: one page is rendered, and the rendered image is cached under
``OCR_CACHE_DIR/pages/`` (key: sha256 of the file hash, page, DPI and pixel cap), so the next
view of that page renders nothing.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.config import Settings
from workbench.documents import DocumentInfo, Hit
from workbench.errors import DocumentError, WorkbenchError
from workbench.ingest import loaders
from workbench.ingest.layout import OcrBox, span_boxes
from workbench.ingest.ocr import ocr_image
from workbench.ingest.orientation import turn_image
from workbench.ingest.uploads import confine
from workbench.store import Store

log = logging.getLogger(__name__)

#: Characters of the chunk's start and end searched for when the whole chunk is not found.
ANCHOR_CHARS = 60
#: Characters of page text kept on each side of the span in a text view (a text file is one
#: page, however long).
CONTEXT_CHARS = 6000
#: Bump when the cached page images change (rendering options): old entries are then unused.
RENDER_CACHE_VERSION = 1

Rect = tuple[float, float, float, float]  # (x0, y0, x1, y1) image pixels, origin top-left


@dataclass(frozen=True, eq=False)
class SourceView:
    """One chunk shown on its source page.

    kind: "pdf" (text-layer PDF page: ``image`` + ``highlights``), "ocr" (OCR'd page or image
    file: ``image``, all ``ocr_boxes`` + ``highlights``), "text" (``text`` with the chunk at
    ``text[start:end]``), "chunk" (the file could not be read: only ``chunk.text``; ``note``
    says why).
    image: RGB PIL image of the page (kinds pdf/ocr), else None; kind ocr: turned upright as
    OCR read it, the boxes lie on it as shown. rotation: degrees counter-clockwise the page was
    turned (``OcrPage.rotation``: 0, 90, 180 or 270; 0 for the other kinds).
    highlights: rectangles ``(x0, y0, x1, y1)`` in image pixels, origin top-left, covering the
    chunk's text (pdf: one per text line; ocr: one per OCR box); empty when not located.
    ocr_boxes: every OCR line of the page (kind ocr), in reading order.
    text/start/end: kind text: a window of the page's text, the chunk at ``text[start:end]``;
    ``text_offset`` is where the window starts in the page's text of ``page_chars`` characters.
    exact: True when the highlight is the chunk's own text as stored (False: approximate,
    partial or missing; ``note`` says which).
    cached: True when the page image came from the render cache.
    previous_chunk/next_chunk: the first chunk of the nearest earlier/later page that has
    chunks (None at the ends), for page navigation.
    """

    collection: str
    document: DocumentInfo
    chunk: Hit
    kind: str
    page: int
    image: Any = None
    highlights: tuple[Rect, ...] = ()
    ocr_boxes: tuple[OcrBox, ...] = ()
    rotation: int = 0
    text: str = ""
    start: int = 0
    end: int = 0
    text_offset: int = 0
    page_chars: int = 0
    exact: bool = False
    note: str = ""
    cached: bool = False
    previous_chunk: Hit | None = None
    next_chunk: Hit | None = None


def source_view(settings: Settings, store: Store, collection: str, document_id: str, chunk_id: str) -> SourceView:
    """The page of ``document_id`` that holds chunk ``chunk_id`` (its id, or its index as a
    string), with the chunk located on it (see the module docstring for each kind).

    The source file is opened only when :func:`~workbench.ingest.uploads.confine` accepts its
    stored path; when it is refused, gone or unreadable the result is kind "chunk" with a note.
    Raises StoreError when the collection does not exist, DocumentError when the document or
    the chunk is not (or no longer) in it.
    """
    document = store.document(collection, document_id)
    if document is None:
        raise DocumentError(f"document {document_id} is not in collection {collection} (deleted?)")
    chunks = store.document_chunks(collection, document_id)
    chunk = next((c for c in chunks if chunk_id in (c.chunk_id, str(c.chunk_index))), None)
    if chunk is None:
        raise DocumentError(
            f"{document.source}: chunk {chunk_id} is no longer in collection {collection} (the document was re-ingested)"
        )
    earlier = [c for c in chunks if c.page < chunk.page]
    later = [c for c in chunks if c.page > chunk.page]
    base = dict(
        collection=collection, document=document, chunk=chunk, page=chunk.page,
        previous_chunk=next((c for c in chunks if earlier and c.page == earlier[-1].page), None),
        next_chunk=later[0] if later else None,
    )
    try:
        path = _source_path(document, settings)
        loaders.check_file_size(path, settings)
        digest = loaders.file_hash(path)
        changed = "" if digest == document.content_hash else (
            f"{document.source} changed since it was ingested (re-ingest it): the page may no longer match the chunk. "
        )
        suffix = path.suffix.lower()
        if suffix == ".pdf":
            return _pdf_view(path, digest, chunk, settings, base, changed)
        if suffix in loaders.IMAGE_EXTENSIONS:
            frames = list(loaders._image_frames(path, settings, only=chunk.page))
            if not frames:
                raise DocumentError(f"{path.name}: no page {chunk.page}")
            return _ocr_view(frames[0][1], chunk, settings, base, changed)
        return _text_view(path, chunk, settings, base, changed)
    except WorkbenchError as exc:
        return SourceView(kind="chunk", note=f"{exc}. Showing the chunk's text as stored.", **base)
    except Exception as exc:  # a library failing on this file: the stored text is still shown
        log.warning("%s page %d: source view failed", document.source, chunk.page, exc_info=True)
        note = f"{document.source}: page {chunk.page} cannot be shown ({type(exc).__name__}: {exc}). Showing the chunk's text as stored."
        return SourceView(kind="chunk", note=note, **base)


def _source_path(document: DocumentInfo, settings: Settings) -> Path:
    """The stored path, confined to the knowledge base or the upload area, that still exists.
    Raises DocumentError saying which of these failed (nothing outside is ever looked at)."""
    if not document.source_path:
        raise DocumentError(f"{document.source}: no original file was recorded for this document")
    path = confine(document.source_path, settings)
    if not path.is_file():
        raise DocumentError(f"{document.source}: the original file is gone ({document.file_name} no longer exists where it was ingested from)")
    return path


# --- PDF --------------------------------------------------------------------------------------


def _pdf_view(path: Path, digest: str, chunk: Hit, settings: Settings, base: dict, changed: str) -> SourceView:
    layers = loaders._pdf_text_layers(path, only=chunk.page - 1)
    if not 1 <= chunk.page <= len(layers):
        raise DocumentError(f"{path.name}: no page {chunk.page} (it has {len(layers)})")
    layer = layers[chunk.page - 1] or ""
    image, cached = page_image(path, digest, chunk.page, settings)
    if not loaders._has_text_layer(layer):
        return _ocr_view(image, chunk, settings, {**base, "cached": cached}, changed)
    rects, exact = _locate_in_pdf(path, chunk, layer, image.size)
    if not rects:
        note = "The chunk's text was not found on the rendered page (its text layer differs from the extracted text)."
    elif not exact:
        note = "Highlight approximate: only the start and/or end of the chunk were found on the page."
    else:
        note = ""
    return SourceView(kind="pdf", image=image, highlights=tuple(rects), exact=exact and not changed,
                      note=(changed + note).strip(), cached=cached, **base)


def page_image(path: Path, digest: str, page: int, settings: Settings):
    """Page ``page`` (1-based) of the PDF at ``path`` as an RGB PIL image rendered at OCR_DPI
    within MAX_PAGE_MEGAPIXELS (the same pixels ingest OCR'd, so the OCR cache applies), and
    whether it came from the render cache. ``digest``: sha256 hex of the file's bytes. A cache
    that cannot be read or written only logs. Raises DocumentError when the page cannot be
    rendered."""
    from PIL import Image

    max_pixels = int(settings.max_page_megapixels * 1_000_000)
    key = hashlib.sha256(f"v{RENDER_CACHE_VERSION}|{digest}|{page}|{settings.ocr_dpi}|{max_pixels}".encode()).hexdigest()
    cache = Path(settings.ocr_cache_dir) / "pages" / f"{key}.png"
    try:
        with Image.open(cache) as stored:
            return stored.convert("RGB"), True
    except FileNotFoundError:
        pass
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        log.warning("ignoring unreadable page image cache entry %s (%s)", cache, exc)
    image = loaders.render_pdf_page(path, page - 1, settings.ocr_dpi, max_pixels=max_pixels).convert("RGB")
    tmp = None
    try:  # atomically: a killed write never leaves a truncated entry
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=cache.parent)
        with os.fdopen(fd, "wb") as handle:
            image.save(handle, format="PNG", compress_level=1)
        os.replace(tmp, cache)
    except OSError as exc:
        log.warning("cannot write page image cache entry %s (%s)", cache, exc)
        if tmp:
            Path(tmp).unlink(missing_ok=True)
    return image, False


def _normal(text: str) -> str:
    return " ".join(text.split())


def _nearest(haystack: str, needle: str, expected: int) -> int:
    """Which occurrence of ``needle`` in ``haystack`` (0: the first) starts nearest to position
    ``expected``; 0 when there is none."""
    starts, at = [], haystack.find(needle) if needle else -1
    while at >= 0:
        starts.append(at)
        at = haystack.find(needle, at + 1)
    return min(range(len(starts)), key=lambda i: abs(starts[i] - expected)) if starts else 0


def _find(textpage, needle: str, skip: int = 0) -> tuple[int, int] | None:
    """``(char index, char count)`` of the ``skip``-th match of ``needle`` on the page (0: the
    first), or of the last match when there are fewer; None when there is none."""
    if not needle:
        return None
    searcher = textpage.search(needle, match_case=True)
    found = None
    try:
        for _ in range(skip + 1):
            match = searcher.get_next()
            if match is None:
                break
            found = match
    finally:
        searcher.close()
    return found


def _locate_in_pdf(path: Path, chunk: Hit, layer: str, size: tuple[int, int]) -> tuple[list[Rect], bool]:
    """Rectangles (image pixels of an image of ``size``) of the chunk's text on its page, and
    whether the whole chunk matched. ``layer``: pypdf's text of the page, whose ``[start:end]``
    is the chunk: when the text (or an anchor) repeats on the page, pdfium's occurrence with the
    same rank as the one nearest to the chunk's place in ``layer`` is taken."""
    import pypdfium2 as pdfium

    needle = _normal(chunk.text)
    prefix = len(_normal(layer[: chunk.start]))
    flat = _normal(layer)
    try:
        pdf = pdfium.PdfDocument(str(path))
    except Exception as exc:  # pdfium raises PdfiumError and plain Exceptions
        raise DocumentError(f"{path.name}: cannot be opened to locate the chunk ({exc})") from exc
    try:
        page = pdf[chunk.page - 1]
        textpage = page.get_textpage()
        exact = True
        span = _find(textpage, needle, _nearest(flat, needle, prefix))
        if span is None:
            exact = False
            head, tail = needle[:ANCHOR_CHARS].rstrip(), needle[-ANCHOR_CHARS:].lstrip()
            first = _find(textpage, head, _nearest(flat, head, prefix))
            last = _find(textpage, tail, _nearest(flat, tail, prefix + len(needle) - len(tail)))
            if first and last and last[0] >= first[0]:
                span = (first[0], last[0] + last[1] - first[0])
            else:
                span = first or last
        if span is None:
            return [], False
        rects = [textpage.get_rect(i) for i in range(textpage.count_rects(*span))]
        return [_to_pixels(page, rect, size) for rect in rects], exact
    finally:
        pdf.close()


def _to_pixels(page, rect: tuple[float, float, float, float], size: tuple[int, int]) -> Rect:
    """A (left, bottom, right, top) rectangle in PDF points -> (x0, y0, x1, y1) pixels of the
    page rendered at ``size`` (pdfium's own page-to-device mapping: origin top-left, crop box
    and page rotation applied)."""
    import pypdfium2.raw as raw

    corners = []
    for x, y in ((rect[0], rect[1]), (rect[2], rect[3])):
        dx, dy = ctypes.c_int(), ctypes.c_int()
        raw.FPDF_PageToDevice(page.raw, 0, 0, size[0], size[1], 0, x, y, ctypes.byref(dx), ctypes.byref(dy))
        corners.append((dx.value, dy.value))
    (x0, y0), (x1, y1) = corners
    return float(min(x0, x1)), float(min(y0, y1)), float(max(x0, x1)), float(max(y0, y1))


# --- OCR'd pages and images ---------------------------------------------------------------------


def _ocr_view(image, chunk: Hit, settings: Settings, base: dict, changed: str) -> SourceView:
    """The page image with its OCR boxes (the cached OCR result when ingest read these pixels)
    and the boxes of the chunk's span; the image turned upright as OCR read it
    (``OcrPage.rotation``), so boxes and highlights fall on its text. An OCR failure (missing
    weights) leaves the image as it is, without boxes, and says so."""
    try:
        page = ocr_image(image, settings)
    except WorkbenchError as exc:
        return SourceView(kind="ocr", image=image, note=(changed + f"OCR boxes unavailable: {exc}.").strip(), **base)
    start, end, exact = _span_in(page.text, chunk)
    marked = span_boxes(page, start, end) if end > start else []
    note = "" if exact else (
        "Highlight approximate: this page's OCR text differs from the chunk's (the page was read again)."
        if marked else "The chunk's text was not found in this page's OCR text."
    )
    return SourceView(kind="ocr", image=turn_image(image, page.rotation), rotation=page.rotation, ocr_boxes=page.boxes, highlights=tuple(_bounds(b) for b in marked),
                      exact=exact and not changed, note=(changed + note).strip(), **base)


def _bounds(box: OcrBox) -> Rect:
    xs, ys = [p[0] for p in box.box], [p[1] for p in box.box]
    return min(xs), min(ys), max(xs), max(ys)


def _span_in(text: str, chunk: Hit) -> tuple[int, int, bool]:
    """``(start, end, exact)`` of the chunk in ``text``: its stored span when the text there is
    the chunk's, else the occurrence nearest to the stored start (exact False), else (0, 0,
    False)."""
    if chunk.end > chunk.start and text[chunk.start : chunk.end] == chunk.text:
        return chunk.start, chunk.end, True
    hits, at = [], text.find(chunk.text) if chunk.text else -1
    while at >= 0:
        hits.append(at)
        at = text.find(chunk.text, at + 1)
    if hits:
        best = min(hits, key=lambda h: abs(h - chunk.start))
        return best, best + len(chunk.text), False
    return 0, 0, False


# --- text and the other formats -----------------------------------------------------------------


def _text_view(path: Path, chunk: Hit, settings: Settings, base: dict, changed: str) -> SourceView:
    """The page's text read again with the loaders (pages are read lazily up to the chunk's),
    a window of CONTEXT_CHARS on each side of the chunk's span."""
    text = None
    pages = loaders.iter_pages(path, settings)
    try:
        for page in pages:
            if page.page >= chunk.page:
                text = page.text if page.page == chunk.page else None
                break
    finally:
        pages.close()
    if text is None:
        raise DocumentError(f"{path.name}: page {chunk.page} has no text now")
    start, end, exact = _span_in(text, chunk)
    if end <= start:
        raise DocumentError(f"{path.name}: the chunk's text is no longer on page {chunk.page}"
                            + (" (the file changed since it was ingested)" if changed else ""))
    low, high = max(0, start - CONTEXT_CHARS), min(len(text), end + CONTEXT_CHARS)
    note = "" if exact else "The chunk was found at another place of the page (the file changed since it was ingested)."
    return SourceView(kind="text", text=text[low:high], start=start - low, end=end - low, text_offset=low,
                      page_chars=len(text), exact=exact and not changed, note=(changed + note).strip(), **base)
