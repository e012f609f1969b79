"""Where text lies on a page: OCR boxes, reading order (lines, then columns by XY-cut), and
which boxes hold a character span of the page text."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class OcrBox:
    """One detected text line: ``box`` is four (x, y) pixel corners on the page image as read
    (turned upright when ``OcrPage.rotation`` is not 0)."""

    box: tuple[tuple[float, float], ...]
    text: str
    confidence: float


@dataclass(frozen=True)
class OcrPage:
    """OCR result of one page image: text lines joined in reading order, plus boxes.

    ``boxes`` are in the same reading order as ``text`` (``text == "\\n".join(b.text for b
    in boxes)``), so character offsets in ``text`` map back to boxes (``span_boxes``).
    ``width``/``height`` are the size in pixels of the image as read, and ``rotation`` the
    degrees (0, 90, 180, 270, counter-clockwise) the page was turned to read it upright: the
    boxes are coordinates on that turned image, so a page is shown turned
    (``workbench.ingest.orientation.turn_image``) for its boxes to fall on its text.
    """

    text: str
    boxes: tuple[OcrBox, ...]
    width: int
    height: int
    rotation: int = 0


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


#: A soft gutter (:func:`_soft_gutter`) may be crossed by at most this share of a region's boxes
#: (and by 2 in any region): a caption or a pull quote between two columns, a headline above.
CROSSERS = 0.05
#: ...and each side of it holds at least this share of the boxes, at least 3...
SIDE = 0.1
#: ...and runs at least this many line heights down: no soft gutter inside a few lines,
#: where the gaps between words line up by chance.
SIDE_LINES = 5


def _runs(values: list[int], first: int, last: int, keep) -> list[tuple[int, int]]:
    """(start, end) index pairs, inclusive, of the maximal runs of ``values[first:last + 1]``
    whose values satisfy ``keep``."""
    runs: list[tuple[int, int]] = []
    for index in range(first, last + 1):
        if not keep(values[index]):
            continue
        if runs and runs[-1][1] == index - 1:
            runs[-1] = (runs[-1][0], index)
        else:
            runs.append((index, index))
    return runs


def _soft_gutter(items: list[tuple[OcrBox, tuple]], min_gutter: float) -> tuple[list, list, list] | None:
    """Two columns separated by a vertical gutter that a few boxes cross (see ``CROSSERS``,
    ``SIDE``, ``SIDE_LINES``): ``(left, right, crossing)``, or None. The gutter is the stretch
    of least x-coverage, widened to ``min_gutter``, of the run of low coverage that the fewest
    boxes cross."""
    n = len(items)
    limit = max(2, int(CROSSERS * n))
    if n < 2 * max(3, SIDE * n) + 1:
        return None
    x0, x1 = min(r[0] for _, r in items), max(r[2] for _, r in items)
    step = max(1.0, min_gutter / 4)
    cells = int((x1 - x0) / step) + 1
    cover = [0] * cells
    for _, r in items:
        for cell in range(int((r[0] - x0) / step), min(int((r[2] - x0) / step), cells - 1) + 1):
            cover[cell] += 1
    need = math.ceil(min_gutter / step)  # cells in a gutter's width
    best: tuple | None = None
    for start, end in _runs(cover, 0, cells - 1, lambda c: c <= limit):
        if end - start + 1 >= need:
            low = min(cover[start : end + 1])
            # the longest stretch at the lowest coverage (the rightmost of equals)...
            _, a, b = max((last - first, first, last) for first, last in _runs(cover, start, end, lambda c: c == low))
            while b - a + 1 < need:  # ...widened to a gutter's width on its emptier side
                if a > start and (b >= end or cover[a - 1] <= cover[b + 1]):
                    a -= 1
                else:
                    b += 1
            lo, hi = x0 + a * step, x0 + (b + 1) * step
            crossing = [it for it in items if it[1][0] < hi and it[1][2] > lo]
            left = [it for it in items if it[1][2] <= lo]
            right = [it for it in items if it[1][0] >= hi]
            score = (len(crossing), -(end - start))  # fewest crossing boxes, then the widest run
            if min(len(left), len(right)) >= max(3, SIDE * n) and (best is None or score < best[0]):
                spans = [(min(r[1] for _, r in side), max(r[3] for _, r in side)) for side in (left, right)]
                extent = [bottom - top for top, bottom in spans]
                overlap = min(spans[0][1], spans[1][1]) - max(spans[0][0], spans[1][0])
                if min(extent) >= SIDE_LINES * 2 * min_gutter and overlap >= 0.5 * min(extent):  # side by side
                    best = (score, left, right, crossing)
    return best[1:] if best else None


def _xy_cut(items: list[tuple[OcrBox, tuple]], min_gutter: float) -> list[OcrBox]:
    """Recursive XY-cut (Nagy & Seth, 1984): split at the widest vertical gutter with at least
    two boxes on each side (columns, left first); else at a soft gutter a few boxes cross
    (boxes above both columns first, then the left column, the crossing boxes beside them, the
    right column, the boxes below); else at every horizontal gap (bands, top first); else
    order the remaining boxes as lines."""
    if len(items) <= 1:
        return [box for box, _ in items]
    for _, a, b in sorted(((b - a, a, b) for a, b in _gaps([(r[0], r[2]) for _, r in items]) if b - a >= min_gutter), reverse=True):
        left = [it for it in items if it[1][2] <= a]
        right = [it for it in items if it[1][0] >= b]
        if len(left) >= 2 and len(right) >= 2:
            return _xy_cut(left, min_gutter) + _xy_cut(right, min_gutter)
    soft = _soft_gutter(items, min_gutter)
    if soft:
        left, right, crossing = soft
        top = min(r[1] for _, r in left + right)
        bottom = max(r[3] for _, r in left + right)
        above = [it for it in crossing if it[1][3] <= top]
        below = [it for it in crossing if it[1][1] >= bottom and it[1][3] > top]
        beside = [it for it in crossing if it[1][3] > top and it[1][1] < bottom]
        return [box for part in (above, left, beside, right, below) for box in _xy_cut(part, min_gutter)]
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
    median line height wide, running the full height of its region, or crossed by a few boxes
    such as a caption between the columns or a headline above them), within them lines top
    to bottom, boxes left to right. Measured on ../shared/corpus/ocr (benchmarks/ocr.py): the
    two-column linn scan reads at CER 0.17 instead of 0.40 in EasyOCR's own order; the UNLV
    magazine pages (columns crossed by a caption and headlines) at 0.11 and 0.19 instead of
    0.74 and 0.66 with empty gutters only (0.07 when our lines are put in the reference's zone
    order: what is left is recognition); single lines no longer split where a 10-pixel row
    banding did. Caveat: a two-column table (keys left, values right) is read column by
    column."""
    items = [(box, _rect(box)) for box in boxes]
    if not items:
        return []
    heights = sorted(r[3] - r[1] for _, r in items)
    return _xy_cut(items, 0.5 * heights[len(heights) // 2])


def block_order(blocks: Iterable[tuple[object, tuple[float, float, float, float]]], min_gutter: float) -> list:
    """The blocks of ``(block, (x0, y0, x1, y1))`` pairs in reading order, for an engine that
    finds text blocks itself (Tesseract's columns and paragraphs): XY-cut on their rectangles
    at the widest gap first, vertical (at least ``min_gutter`` pixels: half a line height) or
    horizontal, recursively (Nagy & Seth, 1984, cutting the widest gap as Ha, Haralick and
    Phillips, 1995); blocks no gap separates (a drop cap beside its paragraph, a caption
    inside a column's span) top to bottom, then left to right. Unlike :func:`reading_order`'s
    line-level cut, a horizontal gap does not cut the whole page: a gap that happens to line up
    in two columns is narrower than the gutter between them. Measured on ../shared/corpus/ocr
    (benchmarks/ocr.py) with Tesseract: the UNLV magazine pages 8071 and 8087 read at CER 0.035
    and 0.019 instead of 0.094 and 0.078 in Tesseract's own block order (footer and caption put
    between the columns)."""
    items = list(blocks)
    if len(items) <= 1:
        return [block for block, _ in items]
    cuts = [(b - a, 0, a) for a, b in _gaps([(r[0], r[2]) for _, r in items]) if b - a >= min_gutter]
    cuts += [(b - a, 1, a) for a, b in _gaps([(r[1], r[3]) for _, r in items])]
    if not cuts:
        return [block for block, _ in sorted(items, key=lambda it: (it[1][1], it[1][0]))]
    _, axis, at = max(cuts)
    first = [it for it in items if it[1][axis + 2] <= at]
    rest = [it for it in items if it[1][axis + 2] > at]
    return block_order(first, min_gutter) + block_order(rest, min_gutter)


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
