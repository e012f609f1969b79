"""Turn files into pages of text.

PDF: pypdf, one Page per page, page by page (a 1,000-page PDF never sits in memory as text).
Pages with no text layer, and image files, are read by OCR (pypdfium2 render +
:func:`workbench.ingest.ocr.ocr_image`); with Tesseract several pages of a PDF at once.
Text formats (.txt .md .rst .html) are decoded as UTF-8 when valid, else with the encoding
chardet detects.
Slides, spreadsheets, CSV, EPUB, e-mail and JSON (.pptx .xlsx .csv .epub .eml .json .jsonl):
see :mod:`workbench.ingest.formats`; an e-mail's attachments in these formats are read as files of
their own by the pipeline (:mod:`workbench.ingest.attachments`). Zip containers (.docx too) pass ``containers.check_zip`` first.
Every failure is a DocumentError whose message names the file and says why.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import os
import re
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

from dataclasses import asdict, dataclass

from workbench.config import Settings
from workbench.documents import Page
from workbench.errors import DocumentError, WorkbenchError
from workbench.ingest.containers import check_zip
from workbench.ingest.formats import FORMAT_EXTENSIONS, iter_format_pages
from workbench.ingest.layout import OcrBox
from workbench.ingest.ocr import ocr_image
from workbench.ingest.orientation import turn_image
from workbench.models.tesseract import ocr_engine

log = logging.getLogger(__name__)

TEXT_EXTENSIONS = {".txt", ".md", ".markdown", ".rst"}
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
SUPPORTED_EXTENSIONS = TEXT_EXTENSIONS | IMAGE_EXTENSIONS | FORMAT_EXTENSIONS | {".pdf", ".docx", ".html", ".htm"}

#: A PDF page with fewer non-space characters than this in its text layer is OCR'd.
MIN_TEXT_CHARS = 10
#: The most pages of one PDF OCR'd at once with Tesseract (see :func:`_ocr_in_order`).
MAX_OCR_WORKERS = 4
#: Bytes of a non-UTF-8 text file that chardet looks at to guess its encoding (its cost grows
#: with the input; a sample is as good for one-encoding files).
ENCODING_SAMPLE_BYTES = 256 * 1024

_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$")


def is_supported(path: Path) -> bool:
    """True when the file extension is one the loaders read (case-insensitive)."""
    return Path(path).suffix.lower() in SUPPORTED_EXTENSIONS


def file_hash(path: Path) -> str:
    """sha256 hex digest of the file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def iter_pages(path: Path, settings: Settings) -> Iterator[Page]:
    """Yield the pages of ``path`` in order.

    Raises DocumentError (message names the file) when the format is unsupported or the file
    is corrupt, password-protected, or has no text at all.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DocumentError(f"{path.name}: file not found or not a regular file")
    check_file_size(path, settings)
    try:
        if suffix == ".pdf":
            pages = _pdf_pages(path, settings)
        elif suffix in TEXT_EXTENSIONS:
            pages = _text_pages(path, suffix)
        elif suffix == ".docx":
            pages = _docx_pages(path)
        elif suffix in (".html", ".htm"):
            pages = _html_pages(path)
        elif suffix in IMAGE_EXTENSIONS:
            pages = _image_pages(path, settings)
        elif suffix in FORMAT_EXTENSIONS:
            pages = iter_format_pages(path, read_text=read_text_file)
        else:
            raise DocumentError(
                f"{path.name}: unsupported file type {suffix or '(none)'}; supported: "
                + " ".join(sorted(SUPPORTED_EXTENSIONS))
            )
        produced = False
        for page in pages:
            if page.text.strip():
                produced = True
                yield page
        if not produced:
            raise DocumentError(f"{path.name}: no text found (empty file, or nothing OCR could read)")
    except DocumentError as exc:
        raise _named(exc, path) from exc.__cause__
    except WorkbenchError:
        raise
    except Exception as exc:  # library errors become one clear line naming the file
        raise DocumentError(f"{path.name}: cannot be read ({type(exc).__name__}: {exc})") from exc


def check_file_size(path: Path, settings: Settings) -> None:
    """Raise DocumentError naming the file when it is larger than MAX_FILE_MB."""
    size = Path(path).stat().st_size
    if size > settings.max_file_mb * 1024 * 1024:
        raise DocumentError(f"{Path(path).name}: {size / 2**20:,.0f} MB is above MAX_FILE_MB={settings.max_file_mb}")


def _check_page_count(path: Path, count: int, settings: Settings, what: str = "pages") -> None:
    if count > settings.max_pages:
        raise DocumentError(f"{path.name}: {count} {what}, more than MAX_PAGES={settings.max_pages}")


def ocr_workers(settings: Settings) -> int:
    """How many pages of one PDF are OCR'd at once: with Tesseract (one process per page, one
    thread each) every core this process may use, up to ``MAX_OCR_WORKERS``; with EasyOCR 1
    (torch already uses every core). Measured on 2 cores: cardinal.pdf's four scanned pages
    ingest in 10.9 s instead of 19.0 s."""
    if ocr_engine(settings) != "tesseract":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(MAX_OCR_WORKERS, cores))


def _ocr_in_order(jobs: Iterator[tuple[object, object]], settings: Settings) -> Iterator[tuple[object, object]]:
    """For each ``(item, image or None)`` of ``jobs``: ``(item, ocr_image(image) or None)``, in
    the order of ``jobs``, with up to :func:`ocr_workers` reads running at once in threads
    (``jobs`` itself, e.g. pdfium rendering, which is not thread-safe, runs in the caller's
    thread, at most that many pages ahead). An OCR error is raised where its page's turn comes;
    when the caller stops early, reads not yet started are cancelled."""
    workers = ocr_workers(settings)
    if workers <= 1:
        for item, image in jobs:
            yield item, (None if image is None else ocr_image(image, settings))
        return
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ocr-page")
    pending: deque = deque()
    try:
        for item, image in jobs:
            pending.append((item, None if image is None else pool.submit(ocr_image, image, settings)))
            while len(pending) > workers:
                head, future = pending.popleft()
                yield head, (None if future is None else future.result())
        while pending:
            head, future = pending.popleft()
            yield head, (None if future is None else future.result())
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _read_pdf_pages(path: Path, layers: Iterable[str], settings: Settings) -> Iterator[tuple[int, str, object]]:
    """``(index, text layer, OcrPage or None)`` for the pages of the PDF ``path`` whose text
    layers are ``layers``, in order: a page without a text layer (:func:`_has_text_layer`) is
    rendered at OCR_DPI and read by OCR, several at once (:func:`_ocr_in_order`)."""
    jobs = (
        ((index, text), None if _has_text_layer(text) else render_pdf_page(path, index, settings.ocr_dpi, max_pixels=_max_pixels(settings)))
        for index, text in enumerate(layers)
    )
    for (index, text), result in _ocr_in_order(jobs, settings):
        yield index, text, result


def _pdf_pages(path: Path, settings: Settings) -> Iterator[Page]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path), strict=False)
        if reader.is_encrypted:
            # An owner-password-only PDF opens with the empty user password.
            if not reader.decrypt(""):
                raise DocumentError(f"{path.name}: PDF is encrypted and needs a password")
        count = len(reader.pages)
    except DocumentError:
        raise
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        raise DocumentError(f"{path.name}: not a readable PDF ({exc})") from exc
    if count == 0:
        raise DocumentError(f"{path.name}: PDF has no pages")
    _check_page_count(path, count, settings)

    def layers() -> Iterator[str]:
        for index in range(count):
            try:
                yield reader.pages[index].extract_text() or ""
            except Exception as exc:  # one bad page: fall back to OCR for it
                log.warning("%s page %d: text extraction failed (%s); trying OCR", path.name, index + 1, exc)
                yield ""

    for index, text, result in _read_pdf_pages(path, layers(), settings):
        if result is None:
            yield Page(text=text, page=index + 1)
        else:
            yield Page(text=result.text or text, page=index + 1, ocr=bool(result.text))


def read_text_file(path: Path) -> str:
    """Decode a text file: strict UTF-8 (BOM allowed) first, else the encoding chardet
    detects. Raises DocumentError when the file is empty or binary."""
    import chardet

    name = Path(path).name
    data = Path(path).read_bytes()
    if not data.strip():
        raise DocumentError(f"{name}: file is empty")
    try:
        return data.decode("utf-8-sig").replace("\r\n", "\n")
    except UnicodeDecodeError:
        pass
    guess = chardet.detect(data[:ENCODING_SAMPLE_BYTES])
    encoding = guess.get("encoding")
    if not encoding or (b"\x00" in data and not encoding.lower().startswith("utf-16")):
        raise DocumentError(f"{name}: not a text file (no text encoding fits its bytes)")
    try:
        text = data.decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        raise DocumentError(f"{name}: cannot decode as {encoding} ({exc})") from exc
    log.info("%s: decoded as %s (chardet confidence %.2f)", name, encoding, guess.get("confidence") or 0)
    return text.replace("\r\n", "\n")


def _text_pages(path: Path, suffix: str) -> Iterator[Page]:
    text = read_text_file(path)
    section = _first_heading(text, suffix) or path.stem
    yield Page(text=text, page=1, section=section)


def _first_heading(text: str, suffix: str) -> str:
    lines = text.splitlines()
    for i, line in enumerate(lines[:50]):
        if suffix in (".md", ".markdown"):
            match = _MD_HEADING.match(line)
            if match:
                return match.group(1)
        elif suffix == ".rst" and i + 1 < len(lines):
            under = lines[i + 1].strip()
            if line.strip() and len(under) >= len(line.strip()) and set(under) <= set("=-~^*#+"):
                if under:
                    return line.strip()
    return ""


def _docx_pages(path: Path) -> Iterator[Page]:
    import docx

    check_zip(path)
    document = docx.Document(str(path))
    parts = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            parts.append(" | ".join(cell.text for cell in row.cells))
    yield Page(text="\n".join(parts), page=1, section=path.stem)


def _html_pages(path: Path) -> Iterator[Page]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(read_text_file(path), "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    title = soup.title.get_text(strip=True) if soup.title else path.stem
    text = re.sub(r"\n{3,}", "\n\n", soup.get_text("\n"))
    yield Page(text=text, page=1, section=title)


def _image_pages(path: Path, settings: Settings) -> Iterator[Page]:
    for number, frame in _image_frames(path, settings):
        yield Page(text=ocr_image(frame, settings).text, page=number, ocr=True)


def _max_pixels(settings: Settings) -> int:
    return int(settings.max_page_megapixels * 1_000_000)


def _image_frames(path: Path, settings: Settings, only: int | None = None) -> Iterator[tuple[int, object]]:
    """``(1-based frame number, RGB PIL image)`` of each frame of an image file, decoded one at
    a time (a multi-page TIFF is never held whole); with ``only``, just that frame. Raises
    DocumentError naming the file when it is unreadable, has more than MAX_PAGES frames, or a
    frame has more than MAX_PAGE_MEGAPIXELS pixels (checked from the header, before decoding)."""
    from PIL import Image, ImageSequence, UnidentifiedImageError

    limit = _max_pixels(settings)
    try:
        image = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise DocumentError(f"{path.name}: image too large to decode ({exc})") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise DocumentError(f"{path.name}: not a readable image ({exc})") from exc
    with image:
        frames = getattr(image, "n_frames", 1)
        _check_page_count(path, frames, settings, "frames")
        for number, frame in enumerate(ImageSequence.Iterator(image), start=1):
            if only is not None and number != only:
                continue
            width, height = frame.size
            if width * height > limit:
                raise DocumentError(
                    f"{path.name}: frame {number} is {width}x{height} pixels, more than "
                    f"MAX_PAGE_MEGAPIXELS={settings.max_page_megapixels:g} million"
                )
            try:
                yield number, frame.convert("RGB")
            except (OSError, Image.DecompressionBombError) as exc:
                raise DocumentError(f"{path.name}: frame {number} cannot be decoded ({exc})") from exc


# --- pages as images: rendering, OCR of whole files, page views ------------------------------


@dataclass(frozen=True)
class FilePage:
    """One page of a file as ``ocr_file`` reads it.

    page: 1-based page (frame) number. ocr: True when the text came from OCR; False when the
    PDF page has a text layer (then ``boxes`` is empty and width/height are 0). rotation:
    degrees counter-clockwise the page was turned to be read upright (``OcrPage.rotation``);
    boxes, width and height are those of the turned page.
    """

    page: int
    ocr: bool
    text: str
    boxes: tuple[OcrBox, ...] = ()
    width: int = 0
    height: int = 0
    rotation: int = 0

    def to_dict(self) -> dict:
        """JSON-ready dict (boxes as lists of [x, y] corners)."""
        data = asdict(self)
        data["boxes"] = [
            {"box": [list(p) for p in b.box], "text": b.text, "confidence": round(b.confidence, 4)}
            for b in self.boxes
        ]
        return data


#: Lowest DPI a page is rendered at to fit MAX_PAGE_MEGAPIXELS; a page that needs less fails.
MIN_RENDER_DPI = 50


def render_pdf_page(path: Path, page_index: int, dpi: int, *, max_pixels: int | None = None):
    """Render page ``page_index`` (0-based) of a PDF to a PIL image at ``dpi`` with pypdfium2.

    With ``max_pixels``, a page that would have more pixels at ``dpi`` is rendered at the DPI
    that fits (logged); when that is below MIN_RENDER_DPI the page fails. Raises DocumentError
    when the page cannot be rendered or is too large.
    """
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(str(path))
        try:
            page = pdf[page_index]
            width_pt, height_pt = page.get_size()
            scale = dpi / 72
            if max_pixels and width_pt * height_pt * scale * scale > max_pixels:
                scale = 0.999 * (max_pixels / max(width_pt * height_pt, 1.0)) ** 0.5  # pdfium rounds sizes up
                if scale * 72 < MIN_RENDER_DPI:
                    raise DocumentError(
                        f"{Path(path).name}: page {page_index + 1} is {width_pt / 72:.0f}x{height_pt / 72:.0f} inches, too "
                        f"large to render under MAX_PAGE_MEGAPIXELS={max_pixels / 1e6:g} million pixels"
                    )
                log.warning("%s page %d: rendered at %.0f DPI to stay under %d pixels", Path(path).name, page_index + 1, scale * 72, max_pixels)
            return page.render(scale=scale).to_pil()
        finally:
            pdf.close()
    except DocumentError:
        raise
    except Exception as exc:  # pypdfium2 raises PdfiumError and plain Exceptions
        raise DocumentError(f"{Path(path).name}: page {page_index + 1} cannot be rendered for OCR ({exc})") from exc




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
    return len("".join(text.split())) >= MIN_TEXT_CHARS


def _named(exc: DocumentError, path: Path) -> DocumentError:
    """``exc`` itself when its message starts with the file's name, else a DocumentError whose
    message does (a page's OCR failing deep down knows no file name)."""
    return exc if str(exc).startswith(path.name) else DocumentError(f"{path.name}: {exc}")


def ocr_file(path: Path, settings: Settings) -> list[FilePage]:
    """Text of every page of a PDF or image file, with OCR boxes where OCR was needed.

    PDF pages with a text layer (at least ``loaders.MIN_TEXT_CHARS`` non-space characters)
    skip OCR (``ocr=False``, no boxes); the others are rendered at OCR_DPI and read. Each frame
    of an image file is read directly. Raises DocumentError naming the file when it is missing,
    unsupported, encrypted or corrupt; ModelMissingError when the OCR weights are missing.
    """
    path = Path(path)
    try:
        return _ocr_file(path, settings)
    except DocumentError as exc:
        raise _named(exc, path) from exc.__cause__


def _ocr_file(path: Path, settings: Settings) -> list[FilePage]:
    if not path.is_file():
        raise DocumentError(f"{path.name}: file not found or not a regular file")
    check_file_size(path, settings)
    pages: list[FilePage] = []
    if path.suffix.lower() == ".pdf":
        layers = _pdf_text_layers(path)
        _check_page_count(path, len(layers), settings)
        for index, text, result in _read_pdf_pages(path, layers, settings):
            if result is None:
                pages.append(FilePage(index + 1, False, text))
            else:
                pages.append(FilePage(index + 1, True, result.text, result.boxes, result.width, result.height, result.rotation))
        return pages
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise DocumentError(
            f"{path.name}: OCR reads PDF and image files ({' '.join(sorted(IMAGE_EXTENSIONS | {'.pdf'}))})"
        )
    for number, frame in _image_frames(path, settings):
        result = ocr_image(frame, settings)
        pages.append(FilePage(number, True, result.text, result.boxes, result.width, result.height, result.rotation))
    return pages


def page_view(path: Path, page: int, settings: Settings):
    """The image and OCR result of 1-based ``page`` of a PDF/image file, for display.

    Returns ``(PIL image, OcrPage)``, or None when the page has a text layer (no OCR boxes to
    show) or the file type has no pages to draw. The image is the page as read: turned upright
    by ``OcrPage.rotation`` degrees when OCR found it sideways or upside down, so the boxes fall
    on its text. Served from the OCR cache when the page was read before (same DPI and
    settings). Raises DocumentError when the page does not exist.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        texts = _pdf_text_layers(path, only=page - 1)
        if not 1 <= page <= len(texts):
            raise DocumentError(f"{path.name}: no page {page} (it has {len(texts)})")
        if _has_text_layer(texts[page - 1]):
            return None
        image = render_pdf_page(path, page - 1, settings.ocr_dpi, max_pixels=_max_pixels(settings))
    else:
        if suffix not in IMAGE_EXTENSIONS:
            return None
        frames = list(_image_frames(path, settings, only=page))
        if not frames:
            raise DocumentError(f"{path.name}: no page {page}")
        image = frames[0][1]
    result = ocr_image(image, settings)
    return turn_image(image, result.rotation), result
