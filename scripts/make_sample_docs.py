"""Generate the two non-Markdown samples of ``knowledge_base/`` from its Markdown guides.

scripts/README: regenerate after editing a guide with
    .venv/bin/python scripts/make_sample_docs.py            # writes into knowledge_base/
    .venv/bin/python scripts/make_sample_docs.py --out DIR  # writes into DIR instead
then commit the two files. Needs fpdf2 (requirements-dev.txt) and Pillow.

Writes:

- ``workbench-quick-reference.pdf``: ``01-getting-started.md`` followed by the "Settings" and
  "Docker Compose" sections of ``06-configuration-and-troubleshooting.md``, typeset with
  fpdf2's built-in Helvetica/Courier fonts: A4, 3 pages, a real text layer (pypdf extracts
  it), ~8 KB.
- ``scanned-troubleshooting.png``: the "Ollama: connection refused" paragraph of
  ``06-configuration-and-troubleshooting.md`` (see :func:`scan_passage`) drawn like a scanned
  page: 200 dpi (A4 width 1654 px), DejaVu Serif 11 pt (PIL's default font if DejaVu is
  missing), grey paper, dark-grey ink, rotated 0.5 degrees, Gaussian blur and noise, 8-bit
  greyscale, ~820 KB. No text layer: only OCR reads it (CER 1.8 % with EasyOCR 1.7.2).

Both outputs are deterministic: fixed creation date, fixed noise seed (same bytes on every run
with the same fpdf2, Pillow and font). Run ``--check`` to print the OCR character error rate of
the PNG against :func:`scan_passage` (needs the workbench and the EasyOCR weights).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROOT = Path(__file__).resolve().parent.parent
KNOWLEDGE_BASE = ROOT / "knowledge_base"
PDF_NAME = "workbench-quick-reference.pdf"
PNG_NAME = "scanned-troubleshooting.png"

# (guide file, heading of the one "## " section to take, or None for the whole file)
PDF_SOURCES: tuple[tuple[str, str | None], ...] = (
    ("01-getting-started.md", None),
    ("06-configuration-and-troubleshooting.md", "Settings"),
    ("06-configuration-and-troubleshooting.md", "Docker Compose"),
)
SCAN_SOURCE = "06-configuration-and-troubleshooting.md"
SCAN_TITLE = "Troubleshooting: Ollama connection refused"
SCAN_PARAGRAPH_START = "**Ollama: connection refused from the container.**"

CREATION_DATE = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
SEED = 20260101
DPI = 200
NOISE_SIGMA = 6.0  # grey levels
GREY_STEP = 4  # quantisation step, grey levels
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
    "/usr/share/fonts/dejavu/DejaVuSerif.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
)


# --- Markdown ------------------------------------------------------------------------------


def plain(text: str) -> str:
    """Inline Markdown to plain text: drop ``**``/backticks, keep the words (ASCII in, ASCII out)."""
    return text.replace("**", "").replace("`", "")


def markdown_section(markdown: str, heading: str | None) -> str:
    """The whole document (``heading`` None) or the ``## heading`` section, heading included."""
    if heading is None:
        return markdown
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    if not match:
        raise ValueError(f"section {heading!r} not found")
    return match.group(0)


def blocks(markdown: str) -> list[tuple[str, object]]:
    """Split Markdown into ("h1"|"h2"|"p"|"li"|"code"|"table", content) blocks.

    Covers only what the guides use: ATX headings, paragraphs, "-"/"1." list items with
    indented continuation lines, fenced code and pipe tables (content: list of row cells).
    """
    out: list[tuple[str, object]] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append(("code", "\n".join(lines[i + 1 : j])))
            i = j + 1
        elif line.startswith("# "):
            out.append(("h1", plain(line[2:])))
            i += 1
        elif line.startswith("## "):
            out.append(("h2", plain(line[3:])))
            i += 1
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [plain(c.strip()) for c in lines[i].strip().strip("|").split("|")]
                if not all(set(c) <= {"-", ":"} for c in cells):
                    rows.append(cells)
                i += 1
            out.append(("table", rows))
        elif re.match(r"(- |\d+\. )", line):
            marker, text = re.match(r"(- |\d+\. )(.*)", line).groups()
            i += 1
            while i < len(lines) and lines[i].startswith("  ") and lines[i].strip():
                text += " " + lines[i].strip()
                i += 1
            out.append(("li", ("-" if marker == "- " else marker.strip(), plain(text))))
        else:
            text = line.strip()
            i += 1
            while i < len(lines) and lines[i].strip() and not re.match(r"(#|```|\||- |\d+\. )", lines[i]):
                text += " " + lines[i].strip()
                i += 1
            out.append(("p", plain(text)))
    return out


# --- PDF -----------------------------------------------------------------------------------


def make_pdf(kb_dir: Path, out_path: Path) -> Path:
    """Typeset PDF_SOURCES from ``kb_dir`` into ``out_path`` (A4, text layer). Returns out_path."""
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos

    class QuickReference(FPDF):
        def header(self):
            self.set_font("Helvetica", "I", 8)
            self.set_text_color(110)
            self.cell(0, 4, "RAG workbench - quick reference", align="L")
            self.ln(7)
            self.set_text_color(0)

        def footer(self):
            self.set_y(-12)
            self.set_font("Helvetica", "I", 8)
            self.set_text_color(110)
            self.cell(0, 4, f"Page {self.page_no()}/{{nb}}", align="C")
            self.set_text_color(0)

    pdf = QuickReference(format="A4", unit="mm")
    pdf.set_creation_date(CREATION_DATE)
    pdf.set_title("RAG workbench - quick reference")
    pdf.set_author("RAG workbench")
    pdf.set_subject("Getting started, settings and Docker Compose, from the knowledge_base guides")
    pdf.set_margins(18, 16, 18)
    pdf.set_auto_page_break(True, margin=16)
    pdf.add_page()
    width = pdf.epw
    nl = {"new_x": XPos.LMARGIN, "new_y": YPos.NEXT}

    for name, heading in PDF_SOURCES:
        for kind, content in blocks(markdown_section((kb_dir / name).read_text("utf-8"), heading)):
            if kind == "h1":
                pdf.set_font("Helvetica", "B", 15)
                pdf.multi_cell(width, 7, content, **nl)
                pdf.ln(1.5)
            elif kind == "h2":
                pdf.ln(1.5)
                pdf.set_font("Helvetica", "B", 11.5)
                pdf.multi_cell(width, 5.5, content, **nl)
                pdf.ln(0.8)
            elif kind == "p":
                pdf.set_font("Helvetica", "", 9.5)
                pdf.multi_cell(width, 4.3, content, align="L", **nl)
                pdf.ln(1.5)
            elif kind == "li":
                marker, text = content
                pdf.set_font("Helvetica", "", 9.5)
                pdf.set_x(pdf.l_margin + 2)
                pdf.cell(5, 4.3, marker)
                pdf.multi_cell(width - 7, 4.3, text, align="L", **nl)
                pdf.ln(0.6)
            elif kind == "code":
                pdf.set_font("Courier", "", 8.5)
                pdf.set_fill_color(240, 240, 240)
                pdf.multi_cell(width, 4.0, content, fill=True, align="L", padding=1.5, **nl)
                pdf.ln(1.5)
            elif kind == "table":
                pdf.set_font("Helvetica", "", 8.5)
                columns = len(content[0])
                widths = (0.3, 0.3, 0.4) if columns == 3 else tuple(1 / columns for _ in range(columns))
                with pdf.table(col_widths=widths, line_height=4.2, text_align="LEFT",
                               first_row_as_headings=True) as table:
                    for row in content:
                        table.row(row)
                pdf.ln(2)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(out_path))
    return out_path


# --- scanned PNG ---------------------------------------------------------------------------


def scan_passage(kb_dir: Path = KNOWLEDGE_BASE) -> str:
    """The text drawn into the PNG: SCAN_TITLE, a blank line, then the troubleshooting
    paragraph that starts with SCAN_PARAGRAPH_START, as plain text on one line."""
    markdown = (kb_dir / SCAN_SOURCE).read_text("utf-8")
    start = markdown.index(SCAN_PARAGRAPH_START)
    end = markdown.find("\n\n", start)
    paragraph = " ".join(markdown[start : end if end >= 0 else None].split())
    paragraph = plain(paragraph.removeprefix(SCAN_PARAGRAPH_START)).strip()
    return f"{SCAN_TITLE}\n\n{paragraph}"


def _font(size_px: int) -> ImageFont.ImageFont:
    for candidate in FONT_CANDIDATES:
        if Path(candidate).exists():
            return ImageFont.truetype(candidate, size_px)
    return ImageFont.load_default(size=size_px)


def _wrap(text: str, font, max_width: float) -> list[str]:
    lines, current = [], ""
    for word in text.split():
        trial = f"{current} {word}".strip()
        if current and font.getlength(trial) > max_width:
            lines.append(current)
            current = word
        else:
            current = trial
    if current:
        lines.append(current)
    return lines


def make_scan(kb_dir: Path, out_path: Path) -> Path:
    """Draw :func:`scan_passage` as a scanned page into ``out_path`` (PNG, greyscale).

    Page: A4 width at DPI (1654 px), height fitted to the text; 11 pt body, 13 pt title.
    Degradation: paper grey ~228 with a soft gradient, ink ~45, rotation 0.5 degrees
    (clockwise), Gaussian blur radius 0.6 px, Gaussian noise NOISE_SIGMA grey levels (seed
    SEED), quantised to GREY_STEP-level steps.
    Returns out_path.
    """
    rng = np.random.default_rng(SEED)
    pt = DPI / 72
    body, title = _font(round(11 * pt)), _font(round(13 * pt))
    margin = round(1.0 * DPI)
    width = round(8.27 * DPI)
    line_h = round(11 * pt * 1.55)

    heading, paragraph = scan_passage(kb_dir).split("\n\n", 1)
    lines = _wrap(paragraph, body, width - 2 * margin)
    height = margin + round(13 * pt * 2.2) + line_h * len(lines) + margin

    page = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(page)
    y = margin
    draw.text((margin, y), heading, font=title, fill=0)
    y += round(13 * pt * 2.2)
    for line in lines:
        draw.text((margin, y), line, font=body, fill=0)
        y += line_h

    page = page.rotate(-0.5, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=255)
    page = page.filter(ImageFilter.GaussianBlur(0.6))

    ink = np.asarray(page, dtype=np.float32) / 255.0  # 1 = paper, 0 = ink
    yy, xx = np.mgrid[0:height, 0:width]
    paper = 228 - 10 * (xx / width) + 6 * (yy / height)  # uneven lighting of a flatbed scan
    image = 45 + (paper - 45) * ink
    image += rng.normal(0, NOISE_SIGMA, size=image.shape)
    # 64 grey levels, like a cheap scanner's 6-bit output; keeps the PNG well under 1 MB.
    image = np.clip(np.rint(image / GREY_STEP) * GREY_STEP, 0, 255).astype(np.uint8)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image, mode="L").save(out_path, format="PNG", optimize=True, dpi=(DPI, DPI))
    return out_path


# --- check ---------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """Lower-case, whitespace collapsed to single spaces: the form CER is computed on."""
    return " ".join(text.lower().split())


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate: Levenshtein distance / len(reference), on :func:`normalise`d text."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, rc in enumerate(ref, 1):
        current = [i]
        for j, hc in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (rc != hc)))
        previous = current
    return previous[-1] / max(len(ref), 1)


def check(kb_dir: Path, out_dir: Path) -> int:
    """Print the PDF's page count and the PNG's OCR text and its CER against the passage
    from the guides in ``kb_dir``; 0 when CER < 5 %."""
    sys.path.insert(0, str(ROOT))
    from pypdf import PdfReader

    from workbench.config import Settings
    from workbench.ingest.ocr import ocr_image

    pdf = PdfReader(out_dir / PDF_NAME)
    print(f"{PDF_NAME}: {len(pdf.pages)} pages, {(out_dir / PDF_NAME).stat().st_size} bytes")
    with tempfile.TemporaryDirectory() as cache:  # an empty OCR cache: a real read
        page = ocr_image(Image.open(out_dir / PNG_NAME), Settings(ocr_cache_dir=Path(cache)))
    rate = cer(scan_passage(kb_dir), page.text)
    print(f"{PNG_NAME}: {(out_dir / PNG_NAME).stat().st_size} bytes, OCR:\n{page.text}\nCER {rate:.2%}")
    return 0 if rate < 0.05 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=KNOWLEDGE_BASE, help="folder of the guides")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: --source)")
    parser.add_argument("--check", action="store_true", help="also OCR the PNG and print its CER")
    args = parser.parse_args(argv)
    out = args.out or args.source
    for path in (make_pdf(args.source, out / PDF_NAME), make_scan(args.source, out / PNG_NAME)):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return check(args.source, out) if args.check else 0


if __name__ == "__main__":
    sys.exit(main())
