"""Reading order of OCR boxes (``workbench.ingest.layout.reading_order``) on pages drawn as
boxes: the magazine layouts of ../shared/corpus/ocr (UNLV 8087: two columns with a headline
above and a caption between them) must read column by column, not line by line across both."""

from __future__ import annotations

from workbench.ingest.layout import OcrBox, reading_order

LINE = 48  # pixels from one line to the next; boxes are 44 px tall (EasyOCR's margins)


def box(x0: float, y0: float, x1: float, y1: float, text: str) -> OcrBox:
    return OcrBox(((x0, y0), (x1, y0), (x1, y1), (x0, y1)), text, 0.9)


def column(x0: float, x1: float, top: float, lines: int, name: str) -> list[OcrBox]:
    return [box(x0, top + i * LINE, x1, top + i * LINE + 44, f"{name}{i}") for i in range(lines)]


def test_two_columns_with_a_caption_between_them_read_column_by_column():
    """Lines of the two columns share their pitch, so every gap between lines runs across the
    page; a caption in the gutter and a headline across it (4 of 84 boxes, within CROSSERS)
    leave no empty gutter. Read: the headline, the left column, the caption, the right column
    (the columns' lines beside the caption are shortened to make room for it)."""
    headline = [box(500, 100, 800, 150, "headline")]
    left = column(100, 620, 200, 40, "L")
    right = column(660, 1180, 200, 40, "R")
    caption = [box(560, 900 + i * LINE, 720, 944 + i * LINE, f"caption{i}") for i in range(3)]
    beside = lambda b: 880 < b.box[0][1] < 1060  # noqa: E731
    left = [b if not beside(b) else box(100, b.box[0][1], 540, b.box[2][1], b.text) for b in left]
    right = [b if not beside(b) else box(740, b.box[0][1], 1180, b.box[2][1], b.text) for b in right]
    shuffled = sorted(headline + left + right + caption, key=lambda b: (b.box[0][1], -b.box[0][0]))
    order = [b.text for b in reading_order(shuffled)]
    assert order == ["headline", *[f"L{i}" for i in range(40)], *[f"caption{i}" for i in range(3)], *[f"R{i}" for i in range(40)]]


def test_a_single_column_keeps_its_lines_whole():
    """Words of a few lines whose gaps line up are not columns: no soft gutter inside a few
    lines (SIDE_LINES), lines read left to right, top to bottom."""
    words = []
    for i in range(4):
        y = 100 + i * LINE
        words += [box(100, y, 300, y + 44, f"a{i}"), box(330, y, 700, y + 44, f"b{i}")]
    words.append(box(100, 100 + 4 * LINE, 700, 144 + 4 * LINE, "whole"))
    assert [b.text for b in reading_order(words)] == ["a0", "b0", "a1", "b1", "a2", "b2", "a3", "b3", "whole"]
