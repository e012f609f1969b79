"""Input caps: one hostile file fails alone with a named error and never exhausts memory."""

from __future__ import annotations

import pytest
from PIL import Image
from pypdf import PdfWriter

from tests.conftest import make_settings
from workbench.errors import DocumentError
from workbench.ingest.loaders import iter_pages, ocr_file, read_text_file, render_pdf_page


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path)


def test_a_file_over_max_file_mb_fails_before_it_is_read(tmp_path, settings):
    big = tmp_path / "huge.txt"
    with open(big, "wb") as handle:
        handle.truncate(1 << 30)  # 1 GiB, sparse: nothing is written to disk
    small = settings.model_copy(update={"max_file_mb": 64})
    with pytest.raises(DocumentError, match=r"huge\.txt: 1,024 MB is above MAX_FILE_MB=64"):
        list(iter_pages(big, small))
    with pytest.raises(DocumentError, match="MAX_FILE_MB"):
        ocr_file(big.rename(tmp_path / "huge.png"), small)


def _blank_pdf(path, pages, inches=8.5):
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=inches * 72, height=inches * 72)
    with open(path, "wb") as handle:
        writer.write(handle)
    return path


def test_a_pdf_with_more_pages_than_max_pages_fails(tmp_path, settings):
    pdf = _blank_pdf(tmp_path / "long.pdf", 12)
    with pytest.raises(DocumentError, match=r"long\.pdf: 12 pages, more than MAX_PAGES=10"):
        list(iter_pages(pdf, settings.model_copy(update={"max_pages": 10})))


def test_a_huge_pdf_page_is_rendered_smaller_or_refused(tmp_path):
    poster = _blank_pdf(tmp_path / "poster.pdf", 1, inches=40)  # 40 in at 200 dpi: 64 Mpx
    image = render_pdf_page(poster, 0, 200, max_pixels=40_000_000)
    assert image.width * image.height <= 40_000_000 and image.width > 5000
    billboard = _blank_pdf(tmp_path / "billboard.pdf", 1, inches=200)  # 200 in at 200 dpi: 1.6 Gpx
    with pytest.raises(DocumentError, match=r"billboard\.pdf: page 1 is 200x200 inches, too large"):
        render_pdf_page(billboard, 0, 200, max_pixels=40_000_000)


def test_an_image_over_the_pixel_cap_fails_from_its_header(tmp_path, settings):
    path = tmp_path / "wide.png"
    Image.new("L", (4000, 3000), 255).save(path)  # 12 Mpx
    with pytest.raises(DocumentError, match=r"wide\.png: frame 1 is 4000x3000 pixels, more than MAX_PAGE_MEGAPIXELS=10 million"):
        list(iter_pages(path, settings.model_copy(update={"max_page_megapixels": 10})))


def test_a_tiff_with_more_frames_than_max_pages_fails(tmp_path, settings):
    path = tmp_path / "stack.tif"
    frames = [Image.new("L", (64, 64), 255) for _ in range(5)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with pytest.raises(DocumentError, match=r"stack\.tif: 5 frames, more than MAX_PAGES=3"):
        list(iter_pages(path, settings.model_copy(update={"max_pages": 3})))


def test_the_text_encoding_is_guessed_from_a_sample(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes(("Caf\xe9 cr\xe8me br\xfbl\xe9e. " * 40000).encode("latin-1"))  # ~1 MB, not UTF-8
    text = read_text_file(path)
    assert text == "Café crème brûlée. " * 40000
