"""Reading a page with Tesseract (``OCR_ENGINE``, :mod:`workbench.models.tesseract`): the page
turned upright by Tesseract's orientation detection, its words grouped into the lines of its
own layout analysis, its blocks put in reading order by :func:`workbench.ingest.layout.block_order`.

The result has the shape EasyOCR's has in :func:`workbench.ingest.ocr.ocr_image`: a rotation
(degrees counter-clockwise) and :class:`~workbench.ingest.layout.OcrBox` lines (four corners
on the turned page, text, confidence 0..1) in reading order.
"""

from __future__ import annotations

import logging
import os
import re
from collections import ChainMap

import numpy as np

from workbench.config import Settings
from workbench.ingest.layout import OcrBox, block_order
from workbench.ingest.orientation import (
    FLIP_MARGIN,
    LINE_SURE,
    MIN_SKEW,
    ROTATIONS,
    skew_angle,
    straighten,
    turn_array,
    unstraighten,
)
from workbench.models.tesseract import tesseract_languages

log = logging.getLogger(__name__)

#: Tesseract's orientation detection (``--psm 0``) this sure (its "Orientation confidence")
#: turns a page at its word; less sure, a turn it proposes is checked by reading the page both
#: ways (see :func:`read_page`). Measured: the pages of ../shared/corpus/ocr score 10-34 (the
#: rotated phototest copies 9.3-11, all right), a three-line test page 4.5-5.9 (right too).
OSD_SURE = 8.0
#: Page segmentation: 3 = automatic layout (blocks, paragraphs, lines), no orientation of its
#: own (done first, above); 7 = the image is one text line.
PAGE_PSM, LINE_PSM = 3, 7


def _pytesseract(settings: Settings):
    """pytesseract set to run TESSERACT_CMD with one OpenMP thread (unless OMP_THREAD_LIMIT is
    set): Tesseract's OpenMP threads spin-wait, so on 2 cores 8071_093.3B.tif took 6.5 s of
    wall time and 10.8 CPU seconds with them against 2.55 s and 2.55 with one. The limit goes
    to the tesseract process only (pytesseract passes its module's ``environ`` to it): set in
    this process, it would hold torch to one thread too."""
    import pytesseract

    pytesseract.pytesseract.tesseract_cmd = settings.tesseract_cmd
    if not isinstance(pytesseract.pytesseract.environ, ChainMap):
        pytesseract.pytesseract.environ = ChainMap(os.environ, {"OMP_THREAD_LIMIT": "1"})  # a set limit wins
    return pytesseract


def osd_rotation(array: np.ndarray, settings: Settings) -> tuple[int, float]:
    """(rotation, confidence) from Tesseract's orientation and script detection on the (h, w,
    3) uint8 page: the degrees counter-clockwise that put its text upright (Tesseract's
    "Rotate" is clockwise) and its "Orientation confidence". (0, 0.0) when it finds too few
    characters to say. Raises ``pytesseract.TesseractError`` for any other failure."""
    pytesseract = _pytesseract(settings)
    try:
        report = pytesseract.image_to_osd(array, config="--psm 0")
    except pytesseract.TesseractError as exc:
        if "few characters" in str(exc) or "Invalid resolution" in str(exc):
            return 0, 0.0
        raise
    rotate = re.search(r"Rotate:\s*(\d+)", report)
    confidence = re.search(r"Orientation confidence:\s*([\d.]+)", report)
    if not rotate or not confidence:
        return 0, 0.0
    rotation = (360 - int(rotate.group(1))) % 360
    return (rotation if rotation in ROTATIONS else 0), float(confidence.group(1))


def _lines(data: dict) -> list[tuple[int, OcrBox, tuple[float, float, float, float]]]:
    """Tesseract's word table (``image_to_data`` as a dict) grouped into text lines:
    (block number, line box, line rect) in Tesseract's order. A line's confidence is the mean
    of its words' (0..100 scaled to 0..1)."""
    words: dict[tuple[int, int, int], list[int]] = {}
    for i, text in enumerate(data["text"]):
        if str(text).strip() and float(data["conf"][i]) >= 0:
            words.setdefault((data["block_num"][i], data["par_num"][i], data["line_num"][i]), []).append(i)
    lines = []
    for (block, _, _), index in words.items():
        x0 = min(data["left"][i] for i in index)
        y0 = min(data["top"][i] for i in index)
        x1 = max(data["left"][i] + data["width"][i] for i in index)
        y1 = max(data["top"][i] + data["height"][i] for i in index)
        text = " ".join(str(data["text"][i]).strip() for i in index)
        confidence = sum(float(data["conf"][i]) for i in index) / len(index) / 100
        corners = ((float(x0), float(y0)), (float(x1), float(y0)), (float(x1), float(y1)), (float(x0), float(y1)))
        lines.append((block, OcrBox(corners, text, round(confidence, 4)), (float(x0), float(y0), float(x1), float(y1))))
    return lines


def _read(array: np.ndarray, settings: Settings, psm: int) -> list[tuple[int, OcrBox, tuple]]:
    pytesseract = _pytesseract(settings)
    data = pytesseract.image_to_data(
        array, lang=tesseract_languages(settings), config=f"--psm {psm}", output_type=pytesseract.Output.DICT
    )
    return _lines(data)


def _ordered(lines: list[tuple[int, OcrBox, tuple]]) -> list[OcrBox]:
    """Lines in reading order: blocks by :func:`block_order` (half the median line height the
    narrowest gutter), lines within a block in Tesseract's order."""
    if not lines:
        return []
    blocks: dict[int, list] = {}
    for block, box, rect in lines:
        blocks.setdefault(block, []).append((box, rect))
    rects = {
        block: (min(r[0] for _, r in members), min(r[1] for _, r in members), max(r[2] for _, r in members), max(r[3] for _, r in members))
        for block, members in blocks.items()
    }
    heights = sorted(rect[3] - rect[1] for _, _, rect in lines)
    order = block_order(((block, rects[block]) for block in blocks), 0.5 * heights[len(heights) // 2])
    return [box for block in order for box, _ in blocks[block]]


def _score(lines: list[tuple[int, OcrBox, tuple]]) -> float:
    """Length-weighted mean confidence of a read (0 when nothing was read)."""
    total = sum(len(box.text) for _, box, _ in lines)
    return sum(box.confidence * len(box.text) for _, box, _ in lines) / total if total else 0.0


def read_page(array: np.ndarray, settings: Settings, text_line: bool) -> tuple[int, np.ndarray, list[OcrBox]]:
    """Read the (h, w[, 3]) uint8 page ``array`` with Tesseract: (rotation in degrees
    counter-clockwise, the page in grey turned by it, its lines in reading order with corners
    on the turned page).

    With OCR_DETECT_ORIENTATION a page is turned by :func:`osd_rotation` and straightened
    (:func:`_read_straightened`: its boxes are read on the straightened page and tilted back
    with its text, so they fall on the page as shown, turned by the rotation only): at its word when it
    is at least ``OSD_SURE`` sure, else the page is read both turned and as it lies and the
    turned read kept unless the other scores ``FLIP_MARGIN`` more (length-weighted mean word
    confidence); an upright page costs the orientation pass only. A text line (``text_line``, see
    :func:`workbench.ingest.orientation.is_text_line`), too short for that, is laid flat, read
    as one line, and read again turned 180 degrees only when its confidence is below
    ``LINE_SURE`` (kept when it scores ``FLIP_MARGIN`` more), as the EasyOCR path does. Raises
    ``pytesseract.TesseractError`` when Tesseract fails on the image.

    Tesseract is handed the page in grey (ITU-R 601 luma, OpenCV's), which it would make
    itself: the image it is sent is a third the size, and 8071_093.3B.tif reads in 2.9 CPU s
    instead of 3.4-3.7 and its orientation in 1.1 instead of 1.7, with the same lines."""
    import cv2  # easyocr's own dependency (opencv-python-headless)

    if array.ndim == 3:
        array = cv2.cvtColor(np.ascontiguousarray(array[..., :3]), cv2.COLOR_RGB2GRAY)
    if text_line:
        base = 90 if settings.ocr_detect_orientation and array.shape[0] > array.shape[1] else 0
        flat = turn_array(array, base)
        lines = _read(flat, settings, LINE_PSM)
        rotation, upright = base, flat
        if settings.ocr_detect_orientation and _score(lines) < LINE_SURE:
            flipped = turn_array(flat, 180)
            other = _read(flipped, settings, LINE_PSM)
            if _score(other) > _score(lines) + FLIP_MARGIN:
                rotation, upright, lines = (base + 180) % 360, flipped, other
        return rotation, upright, [box for _, box, _ in lines]
    if not settings.ocr_detect_orientation:
        return 0, array, _ordered(_read(array, settings, PAGE_PSM))
    rotation, confidence = osd_rotation(array, settings)
    upright = turn_array(array, rotation)
    lines, skew = _read_straightened(upright, settings)
    if rotation and confidence < OSD_SURE:
        as_is, as_is_skew = _read_straightened(array, settings)
        if _score(as_is) > _score(lines) + FLIP_MARGIN:
            rotation, upright, lines, skew = 0, array, as_is, as_is_skew
    log.debug("orientation (tesseract): %d degrees at confidence %.2f, skew %.2f", rotation, confidence, skew)
    height, width = upright.shape[:2]
    return rotation, upright, [
        OcrBox(unstraighten(box.box, skew, width, height), box.text, box.confidence) for box in _ordered(lines)
    ]


def _read_straightened(page: np.ndarray, settings: Settings) -> tuple[list[tuple[int, OcrBox, tuple]], float]:
    """Read the upright ``page`` straightened by :func:`~workbench.ingest.orientation.skew_angle`
    when it is at least ``MIN_SKEW`` degrees off: (lines with boxes on the straightened page, the
    angle it was turned, 0.0 when not). Tesseract reads a crooked page's words, but its lines
    and blocks come out cut and out of order: rotated_skew.pdf (the linn scan 2.7 degrees off)
    read at CER 0.352 as it lay and 0.019 straightened, like linn.pdf itself."""
    skew = skew_angle(page)
    if abs(skew) < MIN_SKEW:
        return _read(page, settings, PAGE_PSM), 0.0
    return _read(straighten(page, skew), settings, PAGE_PSM), skew
