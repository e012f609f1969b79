"""Drawing OCR boxes and highlights on a page image (PIL), for the views."""

from __future__ import annotations

from collections.abc import Iterable

from workbench.ingest.layout import OcrBox


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


def draw_highlights(image, rects: Iterable[tuple[float, float, float, float]], outlines: Iterable[OcrBox] = (), *, pad: int | None = None):
    """A copy of ``image`` (PIL) with each rectangle ``(x0, y0, x1, y1)`` (pixels, origin
    top-left) filled in translucent yellow with an orange outline, grown by ``pad`` pixels
    (default: about 0.2% of the image's larger side); ``outlines`` (e.g. every OCR line of the
    page) are drawn first, in thin blue."""
    from PIL import Image, ImageDraw

    base = image.convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    grow = pad if pad is not None else max(2, round(max(base.size) / 500))
    for box in outlines:
        draw.polygon([tuple(p) for p in box.box], outline=(30, 100, 255, 160), width=max(1, grow // 2))
    for x0, y0, x1, y1 in rects:
        draw.rectangle((x0 - grow, y0 - grow, x1 + grow, y1 + grow), fill=(255, 230, 0, 100), outline=(235, 140, 0, 255), width=grow)
    return Image.alpha_composite(base, overlay).convert("RGB")
