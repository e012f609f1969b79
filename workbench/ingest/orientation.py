"""Page orientation: which quarter turn puts a scan's text upright before it is read.

EasyOCR reads text lines left to right only: a page lying sideways or upside down reads at a
character error rate of 0.82-0.89 (the rotated phototest copies of ../shared/corpus/ocr,
against 0.007 upright). :func:`detect_rotation` finds the turn in three steps:

1. Detection only (``reader.detect``, no recognition) on a copy whose long side is 320 px,
   again at 640 and then 1024 px while fewer than ``MIN_BOXES`` elongated word boxes are found.
2. The axis from the boxes' shape: words and lines are wider than tall, so when most elongated
   boxes are taller than wide the page lies sideways (90 or 270), else it is 0 or 180.
3. The direction: the ``RECOGNISED_BOXES`` longest boxes on that axis are recognised on the
   full-resolution image turned both ways (0 vs 180, or 90 vs 270) and the length-weighted
   mean recognition confidences compared. 180 must beat 0 by ``FLIP_MARGIN`` (upright is the
   default; so when 0 scores 0.9 or more, 180 is not tried); when the better confidence is
   below ``MIN_CONFIDENCE`` (no readable text, e.g. a photo) nothing is turned.

The caller then reads the turned page once (:func:`workbench.ingest.ocr.ocr_image`). Measured
with easyocr 1.7.2, canvas 1280, on 2 shared cores (benchmarks/ocr.py, CPU seconds,
2026-12-02): the four rotated phototest copies read at CER 0.007 like the upright page; all
16 corpus images are turned right. The pass costs 1.8 s on upright phototest (1.06x its 8.4-s
read), 3.9-5.8 s on the rotated copies (1.57-2.05x the upright read in all), 2.6-5.4 s on
the single-line ocropy images (1.7-2.8x: each of up to 8 words is one recognizer call). An
earlier attempt measured 1.11-1.49x for the rotated copies. EasyOCR's own ``rotation_info``
(every box recognised at each angle) was worse: CER 0.67-0.78 at 2-3x.

Rotations are degrees counter-clockwise (the direction of ``np.rot90`` and PIL's
``Image.rotate``), one of 0, 90, 180, 270.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

#: Long sides (pixels) of the downscaled copies detection runs on, smallest first.
DETECT_SIDES = (320, 640, 1024)
#: The copy's short side is not made smaller than this (pixels): a single text line (e.g.
#: 1742x39) is detected once, at full size, instead of at three sizes too small to show text.
MIN_SHORT_SIDE = 96
#: Fewest elongated word boxes that settle the axis; fewer: detect again on a larger copy.
MIN_BOXES = 6
#: A box counts for the axis when its long side is at least this many times its short side.
ELONGATION = 1.5
#: How many of the longest boxes are recognised both ways (at least 3 when there are 3).
RECOGNISED_BOXES = 8
#: 180 must beat 0 by this much length-weighted mean confidence (0..1): upright is the default.
FLIP_MARGIN = 0.1
#: Below this best confidence (0..1) the page is not turned: there is no text to trust.
MIN_CONFIDENCE = 0.4

ROTATIONS = (0, 90, 180, 270)

Rect = tuple[float, float, float, float]  # (x0, y0, x1, y1) pixels, origin top-left


@dataclass(frozen=True)
class Orientation:
    """What :func:`detect_rotation` found.

    rotation: degrees counter-clockwise to turn the image so its text is upright (0, 90, 180,
    270). scores: length-weighted mean recognition confidence (0..1) of each rotation tried
    (two of them; only 0 when it scored 0.9 or more; none when no text was found). boxes: how many word boxes were detected,
    side: long side (pixels) of the copy they were detected on (0 when the image was empty).
    """

    rotation: int
    scores: dict[int, float] = field(default_factory=dict)
    boxes: int = 0
    side: int = 0


def _check(rotation: int) -> int:
    if rotation not in ROTATIONS:
        raise ValueError(f"rotation must be one of {ROTATIONS}, not {rotation!r}")
    return rotation


def turn_array(array: np.ndarray, rotation: int) -> np.ndarray:
    """``array`` ((h, w) or (h, w, c)) turned ``rotation`` degrees counter-clockwise, as a
    contiguous array ((w, h[, c]) for 90 and 270); the same object for 0. Raises ValueError
    for any other angle than 0, 90, 180, 270."""
    if _check(rotation) == 0:
        return array
    return np.ascontiguousarray(np.rot90(array, rotation // 90))


def turn_image(image, rotation: int):
    """A PIL image turned ``rotation`` degrees counter-clockwise (exact, no resampling); the
    same image for 0. This is how a page is shown once OCR found it turned
    (``OcrPage.rotation``): its boxes are coordinates on the turned image. Raises ValueError
    for any other angle than 0, 90, 180, 270."""
    from PIL import Image

    steps = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}
    if _check(rotation) == 0:
        return image
    return image.transpose(steps[rotation])


def turn_rect(rect: Rect, rotation: int, width: int, height: int) -> Rect:
    """``rect`` on a ``width`` x ``height`` image, as it lies on that image turned ``rotation``
    degrees counter-clockwise (pixel edges, so the turned image is exactly covered)."""
    x0, y0, x1, y1 = rect
    turned = {
        0: lambda x, y: (x, y),
        90: lambda x, y: (y, width - x),
        180: lambda x, y: (width - x, height - y),
        270: lambda x, y: (height - y, x),
    }[_check(rotation)]
    (ax, ay), (bx, by) = turned(x0, y0), turned(x1, y1)
    return min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)


def _word_boxes(reader, array: np.ndarray) -> tuple[list[Rect], int]:
    """Elongated word boxes (rects in ``array`` pixels) from detection on downscaled copies,
    and the long side of the copy that gave them."""
    from PIL import Image

    height, width = array.shape[:2]
    long_side = max(height, width)
    boxes: list[Rect] = []
    side = 0
    for side in DETECT_SIDES:
        scale = min(1.0, max(side / long_side, MIN_SHORT_SIDE / max(1, min(height, width))))
        small = array
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = np.asarray(Image.fromarray(array).resize(size, Image.Resampling.BOX))
        # width_ths=0: words stay separate, so the columns of a sideways page are not merged
        # into one block (its boxes would lose their shape).
        horizontal, free = reader.detect(small, canvas_size=max(small.shape[:2]), mag_ratio=1.0, width_ths=0.0, min_size=8)
        rects = [(x0, y0, x1, y1) for x0, x1, y0, y1 in horizontal[0]]
        rects += [(min(p[0] for p in poly), min(p[1] for p in poly), max(p[0] for p in poly), max(p[1] for p in poly)) for poly in free[0]]
        # Inside the page (detection adds a margin) and at least 2 px each way: recognition
        # divides by a crop's width and height.
        rects = [(max(0, x0), max(0, y0), min(small.shape[1], x1), min(small.shape[0], y1)) for x0, y0, x1, y1 in rects]
        boxes = [
            (x0 / scale, y0 / scale, x1 / scale, y1 / scale)
            for x0, y0, x1, y1 in rects
            if min(x1 - x0, y1 - y0) >= 2 and max(x1 - x0, y1 - y0) >= ELONGATION * min(x1 - x0, y1 - y0)
        ]
        if len(boxes) >= MIN_BOXES or scale == 1.0:
            break
    return boxes, min(side, long_side)


def _confidence(reader, grey: np.ndarray, rects: list[Rect], rotation: int) -> float:
    """Length-weighted mean confidence (0..1) of the recognised text of ``rects`` (pixels of
    ``grey``) on ``grey`` turned ``rotation`` degrees."""
    height, width = grey.shape
    turned = turn_array(grey, rotation)
    boxes = []
    for rect in rects:
        x0, y0, x1, y1 = turn_rect(rect, rotation, width, height)
        boxes.append([int(x0), int(round(x1)), int(y0), int(round(y1))])
    results = reader.recognize(turned, horizontal_list=boxes, free_list=[], detail=1, reformat=False)
    total = sum(len(text.strip()) for _, text, _ in results)
    if not total:
        return 0.0
    return sum(float(conf) * len(text.strip()) for _, text, conf in results) / total


def detect_rotation(reader, array: np.ndarray) -> Orientation:
    """How far to turn the (h, w, 3) uint8 RGB page ``array`` so that ``reader`` (an
    ``easyocr.Reader``) reads it upright: see the module docstring for the method and the
    thresholds. Never raises for a page without text (rotation 0)."""
    boxes, side = _word_boxes(reader, array)
    if not boxes:
        return Orientation(0, {}, 0, side)
    wide = [b for b in boxes if b[2] - b[0] >= b[3] - b[1]]
    tall = [b for b in boxes if b[2] - b[0] < b[3] - b[1]]
    sideways = len(tall) > len(wide)
    chosen = sorted(tall if sideways else wide, key=lambda b: max(b[2] - b[0], b[3] - b[1]), reverse=True)[:RECOGNISED_BOXES]
    grey = array
    if array.ndim == 3:
        import cv2  # easyocr's own dependency; the same conversion readtext makes

        grey = cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_BGR2GRAY)
    if not sideways:
        scores = {0: _confidence(reader, grey, chosen, 0)}
        if scores[0] + FLIP_MARGIN >= 1.0:  # confidences are <= 1: 180 cannot win, don't try it
            log.debug("orientation: upright (score %.3f, %d boxes at %d px)", scores[0], len(boxes), side)
            return Orientation(0, {0: round(scores[0], 4)}, len(boxes), side)
        scores[180] = _confidence(reader, grey, chosen, 180)
    else:
        scores = {90: _confidence(reader, grey, chosen, 90), 270: _confidence(reader, grey, chosen, 270)}
    if max(scores.values()) < MIN_CONFIDENCE:
        rotation = 0
    elif sideways:
        rotation = 90 if scores[90] >= scores[270] else 270
    else:
        rotation = 180 if scores[180] > scores[0] + FLIP_MARGIN else 0
    log.debug("orientation: %d degrees (scores %s, %d boxes at %d px)", rotation, scores, len(boxes), side)
    return Orientation(rotation, {k: round(v, 4) for k, v in scores.items()}, len(boxes), side)
