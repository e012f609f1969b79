"""The real PDF corpus (../shared/corpus/pdfs, see its MANIFEST.md): every PDF either ingests
or fails alone with a clear message naming it; the batch goes on."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import make_settings
from workbench.ingest.pipeline import ingest_paths
from workbench.retrieval.search import search
from workbench.store.chroma import open_store

#: From the corpus MANIFEST: PDFs that need a user password.
NEEDS_PASSWORD = {
    "libreoffice-writer-password.pdf",
    "r2-user-password.pdf",
    "r4-aes-user-password.pdf",
    "r6-both-passwords.pdf",
    "crazyones-encrypted-256.pdf",
    "encrypted-file.pdf",
}
BROKEN = {"invalid.pdf"}

#: Ingesting all 50 PDFs OCRs 22 scanned pages; on 2 busy cores that took over 15 minutes at
#: the default 200 dpi, so this module renders at 100 dpi (still real OCR) and allows 50 min.
pytestmark = [pytest.mark.timeout(3000), pytest.mark.slow]
#: Dense newspaper scans (~130 text lines a page, 5 pages in all) that take minutes each on
#: 2 cores; OCR quality and speed on them are covered by tests/test_ocr.py and benchmarks/ocr.py.
DENSE_SCANS = {"linn.pdf", "cardinal.pdf"}
#: Full-page scans of 3,000-4,300 characters (a CCITT G4 fax, a JBIG2 image, a skewed page), 15-20 s
#: of OCR each at 100 dpi: ~55 s of this module's setup. The ingest leaves them out and
#: test_heavy_scans_decode_to_pages_with_ink checks their images decode; reading dense pages is
#: tests/test_ocr.py's (linn.pdf) and benchmarks/ocr.py's.
HEAVY_SCANS = {"ccitt.pdf", "jbig2.pdf", "rotated_skew.pdf"}


@pytest.fixture(scope="module")
def pdf_run(corpus_dir, tmp_path_factory, embedder):
    # Orientation detection off: these scans lie upright, and its pass on each of the ~17
    # scanned pages is time the suite spends elsewhere (tests/test_ocr_orientation.py).
    settings = make_settings(tmp_path_factory.mktemp("pdfs"), collection_name="pdfs", ocr_dpi=100, ocr_detect_orientation=False)
    store = open_store(settings)
    pdfs = tmp_path_factory.mktemp("corpus") / "pdfs"
    shutil.copytree(corpus_dir / "pdfs", pdfs, ignore=lambda d, names: [n for n in names if n in DENSE_SCANS | HEAVY_SCANS])
    summary = ingest_paths([pdfs], settings=settings, store=store, embedder=embedder)
    return settings, store, summary


def test_every_pdf_ingests_or_fails_alone_with_a_reason(pdf_run, corpus_dir):
    _, store, summary = pdf_run
    # The folder also holds READMEs, licences and JSON next to the PDFs; they ingest too, but
    # this test is about the PDFs (file names are unique across the corpus's PDF folders).
    pdf_results = [r for r in summary.results if r.source.lower().endswith(".pdf")]
    by_name = {r.source.rsplit("/", 1)[-1]: r for r in pdf_results}
    assert len(pdf_results) == len(by_name) == len(list((corpus_dir / "pdfs").rglob("*.pdf"))) - len(DENSE_SCANS | HEAVY_SCANS) == 45
    for result in summary.results:
        assert result.status in {"added", "failed"}, result
        if result.status == "failed":
            name = result.source.rsplit("/", 1)[-1]
            assert name in result.message and len(result.message) > len(name) + 10, result
            assert "Traceback" not in result.message
    for name in NEEDS_PASSWORD:
        assert by_name[name].status == "failed" and "needs a password" in by_name[name].message, by_name[name]
    for name in BROKEN:
        assert by_name[name].status == "failed" and "not a readable PDF" in by_name[name].message
    assert by_name["r6-owner-password.pdf"].status == "added", "owner-password-only PDF must open"
    assert by_name["GeoBase_NHNC1_Data_Model_UML_EN.pdf"].pages == 19
    assert sum(1 for r in pdf_results if r.status == "added") >= 30
    added = [r for r in summary.results if r.status == "added"]
    assert sum(r.chunks for r in added) == store.collection_info("pdfs").chunks


def test_scanned_pdfs_are_ocrd_and_searchable(pdf_run, embedder):
    settings, store, summary = pdf_run
    by_name = {r.source.rsplit("/", 1)[-1]: r for r in summary.results}
    assert by_name["c02-22.pdf"].status == "added" and by_name["c02-22.pdf"].ocr_pages == 1
    assert by_name["Seige_of_Vicksburg_Sample_OCR.pdf"].ocr_pages == 0, "a text layer must not be OCR'd"
    docs = {d.file_name: d for d in store.documents("pdfs")}
    assert sum(1 for d in docs.values() if d.ocr_pages) >= 2, "scanned PDFs were not OCR'd"
    hits = search("siege of Vicksburg", settings=settings, store=store, embedder=embedder, top_k=5)
    assert "Seige_of_Vicksburg_Sample_OCR.pdf" in {h.file_name for h in hits}


def test_heavy_scans_decode_to_pages_with_ink(corpus_dir):
    """The scans the ingest above leaves out (HEAVY_SCANS) have no text layer and render (CCITT
    G4, JBIG2 and all) to a page with the ink of a page of text: 5-10% dark pixels."""
    import numpy as np
    from pypdf import PdfReader

    from workbench.ingest.loaders import render_pdf_page

    for name in sorted(HEAVY_SCANS):
        path = corpus_dir / "pdfs" / "ocrmypdf-test-resources" / name
        assert [page.extract_text() for page in PdfReader(path).pages] == [""], name
        pixels = np.asarray(render_pdf_page(path, 0, 100).convert("L"))
        assert pixels.shape == (1100, 850), (name, pixels.shape)
        assert 0.05 < float((pixels < 128).mean()) < 0.10, name
