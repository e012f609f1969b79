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

A text-line image (:func:`is_text_line`) is read differently, because there the detection
pass costs as much as the read (measured 1.7-2.8x the plain read with the steps above): its
long side gives the axis, it is turned so that it lies flat, read once (EasyOCR's detection
and recognition, as ``readtext``), and only when that read's confidence is below ``LINE_SURE`` are the
same boxes recognised on the line turned 180 degrees, which wins by ``FLIP_MARGIN``.

The caller then reads the turned page once (:func:`workbench.ingest.ocr.ocr_image`). Measured
with easyocr 1.7.2, canvas 1280 (benchmarks/ocr.py, CPU seconds, 2026-12-02): the four rotated
phototest copies read at CER 0.007 like the upright page; all 16 corpus images are turned
right, and so are phototest, eurotext, linn and 8087 each turned all four ways. On idle cores
the pass costs ~2 s (a 320-px detection ~1.2 s, 8 words one recognizer call each ~0.7 s per
direction) against a 7-8 s read of phototest: the rotated copies take 1.25-1.48x the upright
read in all (1.57-2.05x at a load average of 3). The 7 ocropy lines, read by
:func:`read_text_line`, take 0.83-1.16x the plain read (1.7-2.8x before, with a detection pass
of their own). Tried and left: all words of both directions in one recognizer batch (every
crop is padded to the widest, slower: 9.2 s instead of 4.2 s on linn); 5 words instead of 8
(17% less time, the 90/270 margin on phototest shrinks to 0.17; 4 words turns it wrong).
EasyOCR's own ``rotation_info`` (every box recognised at each angle) was worse: CER 0.67-0.78
at 2-3x.

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
#: A text-line image: its short side is at most this many pixels and its long side at least
#: ``LINE_ASPECT`` times longer (the ocropy line images of ../shared/corpus/ocr are 37-88 px by
#: 719-1742 px). Such an image is read by :func:`read_text_line` instead: detecting words on
#: a strip that thin takes a full-size pass, as long as the read's own.
LINE_MAX_SHORT_SIDE = 128
LINE_ASPECT = 8
#: A text line read at this length-weighted mean confidence (0..1) or more is not tried upside
#: down (the second recognition costs about half the read). Measured on the 7 ocropy lines
#: turned all four ways: read the right way up they score 0.76-0.99; upside down at most 0.50
#: (and the phototest page's 8 longest words upside down 0.49-0.56).
LINE_SURE = 0.7
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


def turn_point(x: float, y: float, rotation: int, width: int, height: int) -> tuple[float, float]:
    """The point (x, y) of a ``width`` x ``height`` image (pixel edges), as it lies on that image
    turned ``rotation`` degrees counter-clockwise."""
    return {
        0: lambda: (x, y),
        90: lambda: (y, width - x),
        180: lambda: (width - x, height - y),
        270: lambda: (height - y, x),
    }[_check(rotation)]()


def turn_rect(rect: Rect, rotation: int, width: int, height: int) -> Rect:
    """``rect`` on a ``width`` x ``height`` image, as it lies on that image turned ``rotation``
    degrees counter-clockwise (pixel edges, so the turned image is exactly covered)."""
    x0, y0, x1, y1 = rect
    (ax, ay), (bx, by) = turn_point(x0, y0, rotation, width, height), turn_point(x1, y1, rotation, width, height)
    return min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)


# --- skew: a page fed crooked into the scanner ------------------------------------------------

#: The largest skew looked for, in degrees either way: a page fed crooked lies 0.5-3 degrees
#: off; a larger angle is a picture's, not a scan's.
MAX_SKEW = 5.0
#: The search's steps (degrees): every COARSE_STEP across +-MAX_SKEW, then FINE_STEP around the best.
COARSE_STEP, FINE_STEP = 0.5, 0.1
#: A page less skewed than this (degrees) is read as it is: Tesseract follows a line drifting
#: 15 pixels across a 1700-pixel page, and turning it would resample the page (8071_093.3B.tif,
#: 0.3 degrees off, read 0.4 s slower straightened, at the same CER).
MIN_SKEW = 0.5
#: Long side (pixels) of the copy the skew is measured on (~20 ms for a 200-dpi page).
SKEW_SIDE = 800


def skew_angle(array: np.ndarray) -> float:
    """Degrees counter-clockwise that straighten the text lines of the upright (h, w[, 3]) uint8
    page ``array``: the angle within +-``MAX_SKEW`` at which the ink's row profile is sharpest
    (the largest variance of ink per row: the projection-profile method, Postl 1986; the same
    criterion as Leptonica's ``pixFindSkew`` sweep), searched every ``COARSE_STEP`` then
    ``FINE_STEP`` around the best on a ``SKEW_SIDE``-pixel copy. 0.0 for a page without ink.
    Measured: ../shared/corpus/pdfs' rotated_skew.pdf (the linn scan set crooked) -2.7, linn.pdf
    itself -0.1."""
    import cv2  # easyocr's own dependency (opencv-python-headless)

    grey = array if array.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_RGB2GRAY)
    scale = min(1.0, SKEW_SIDE / max(grey.shape))
    small = cv2.resize(grey, (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    ink = (small < 128).astype(np.float32)
    if not ink.any():
        return 0.0
    centre = (ink.shape[1] / 2, ink.shape[0] / 2)

    def sharpness(angle: float) -> float:
        turned = cv2.warpAffine(ink, cv2.getRotationMatrix2D(centre, angle, 1.0), ink.shape[::-1], flags=cv2.INTER_NEAREST)
        return float(np.var(turned.sum(axis=1)))

    coarse = max(np.arange(-MAX_SKEW, MAX_SKEW + 1e-9, COARSE_STEP), key=sharpness)
    fine = max(np.arange(coarse - COARSE_STEP, coarse + COARSE_STEP + 1e-9, FINE_STEP), key=sharpness)
    return round(float(np.clip(fine, -MAX_SKEW, MAX_SKEW)), 2)


def _skew_matrix(angle: float, width: int, height: int) -> np.ndarray:
    """The 2x3 affine matrix (OpenCV's) turning a ``width`` x ``height`` image ``angle`` degrees
    counter-clockwise about its centre."""
    import cv2

    return cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)


def straighten(array: np.ndarray, angle: float) -> np.ndarray:
    """``array`` turned ``angle`` degrees counter-clockwise about its centre, same size, the
    corners filled white (linear interpolation). The same object for a 0.0 angle."""
    import cv2

    if not angle:
        return array
    height, width = array.shape[:2]
    fill = (255,) * (array.shape[2] if array.ndim == 3 else 1)
    return cv2.warpAffine(np.ascontiguousarray(array), _skew_matrix(angle, width, height), (width, height),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=fill)


def unstraighten(points, angle: float, width: int, height: int) -> tuple[tuple[float, float], ...]:
    """Points (x, y) of a ``width`` x ``height`` page :func:`straighten` turned by ``angle``, as
    they lie on the page before it was: a box read on the straightened page, drawn on the page
    as shown, is the same box tilted back with its text."""
    import cv2

    if not angle:
        return tuple((float(x), float(y)) for x, y in points)
    back = cv2.invertAffineTransform(_skew_matrix(angle, width, height))
    return tuple((float(back[0, 0] * x + back[0, 1] * y + back[0, 2]), float(back[1, 0] * x + back[1, 1] * y + back[1, 2])) for x, y in points)


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


def _weighted_confidence(results) -> float:
    """Length-weighted mean confidence (0..1) of EasyOCR results ``[(box, text, confidence)]``;
    0 when they hold no text."""
    total = sum(len(text.strip()) for _, text, _ in results)
    if not total:
        return 0.0
    return sum(float(conf) * len(text.strip()) for _, text, conf in results) / total


def _easyocr_box(rect: Rect) -> list[int]:
    """``rect`` as an EasyOCR horizontal box ``[x_min, x_max, y_min, y_max]`` (whole pixels)."""
    x0, y0, x1, y1 = rect
    return [int(x0), int(round(x1)), int(y0), int(round(y1))]


def _confidence(reader, grey: np.ndarray, rects: list[Rect], rotation: int) -> float:
    """Length-weighted mean confidence (0..1) of the recognised text of ``rects`` (pixels of
    ``grey``) on ``grey`` turned ``rotation`` degrees."""
    height, width = grey.shape
    boxes = [_easyocr_box(turn_rect(rect, rotation, width, height)) for rect in rects]
    results = reader.recognize(turn_array(grey, rotation), horizontal_list=boxes, free_list=[], detail=1, reformat=False)
    return _weighted_confidence(results)


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


def is_text_line(array: np.ndarray) -> bool:
    """True for an image of one text line lying flat or on its side: at most
    ``LINE_MAX_SHORT_SIDE`` px across and ``LINE_ASPECT`` times as long."""
    short, long = sorted(array.shape[:2])
    return short <= LINE_MAX_SHORT_SIDE and long >= LINE_ASPECT * max(1, short)


def _turn_box(box, rotation: int, width: int, height: int):
    """An EasyOCR horizontal box ``[x_min, x_max, y_min, y_max]`` of a ``width`` x ``height``
    image, as it lies on that image turned ``rotation`` degrees."""
    return _easyocr_box(turn_rect((box[0], box[2], box[1], box[3]), rotation, width, height))


def _turn_polygon(points, rotation: int, width: int, height: int):
    """EasyOCR free-box corners ``[[x, y] x 4]`` as they lie on the image turned ``rotation``."""
    return [list(turn_point(x, y, rotation, width, height)) for x, y in points]


def read_text_line(reader, array: np.ndarray, canvas_size: int) -> tuple[int, list, Orientation]:
    """Read the (h, w, 3) uint8 RGB text-line image ``array`` (see :func:`is_text_line`) the
    right way up with ``reader`` (an ``easyocr.Reader``) in one detection pass:

    - a line taller than wide is first turned 90 degrees so that it lies flat;
    - EasyOCR's detection (``readtext``'s defaults, ``canvas_size`` pixels) and recognition
      read it as it lies; the length-weighted mean confidence of that read is its score;
    - below ``LINE_SURE``, the same boxes are recognised on the line turned a further 180 degrees,
      which is kept when it scores ``FLIP_MARGIN`` more (upright is the default).

    Returns (rotation in degrees counter-clockwise, ``readtext``-style results
    ``[(corners, text, confidence)]`` with corners on the image turned by that rotation, the
    :class:`Orientation` with both scores). Costs one ``readtext`` plus, when unsure, one more
    recognition of the same boxes."""
    import cv2  # easyocr's own dependency; the same conversion readtext makes

    height, width = array.shape[:2]
    base = 90 if height > width else 0
    line = turn_array(array, base)
    grey = cv2.cvtColor(np.ascontiguousarray(line), cv2.COLOR_BGR2GRAY)
    horizontal, free = reader.detect(line, canvas_size=canvas_size)
    horizontal, free = horizontal[0], free[0]
    results = reader.recognize(grey, horizontal, free, reformat=False)
    scores = {base: _weighted_confidence(results)}
    rotation = base
    if scores[base] < LINE_SURE:
        line_height, line_width = grey.shape
        flipped = reader.recognize(
            turn_array(grey, 180),
            [_turn_box(b, 180, line_width, line_height) for b in horizontal],
            [_turn_polygon(p, 180, line_width, line_height) for p in free],
            reformat=False,
        )
        scores[(base + 180) % 360] = _weighted_confidence(flipped)
        if scores[(base + 180) % 360] > scores[base] + FLIP_MARGIN:
            rotation, results = (base + 180) % 360, flipped
    log.debug("orientation: text line turned %d degrees (scores %s)", rotation, scores)
    found = Orientation(rotation, {k: round(v, 4) for k, v in scores.items()}, len(horizontal) + len(free), max(height, width))
    return rotation, results, found
