"""The Tesseract OCR engine on this machine: the ``tesseract`` binary (Debian's
``tesseract-ocr``, ``-eng`` and ``-osd`` packages; installed in the Docker image, by ``make
install-ocr`` and by CI) driven through ``pytesseract``. Its language data are local files: it
never downloads anything.

:func:`ocr_engine` says which engine reads a page: ``OCR_ENGINE=auto`` (the default) takes
Tesseract when its binary and the language and orientation data are present, else EasyOCR.
Measured on ../shared/corpus/ocr (benchmarks/ocr.py): Tesseract 5.3 reads its 16 scans at CER
0.021 where EasyOCR reads 0.136 (the hand-checked UNLV magazine pages at 0.035 and 0.019
against 0.187 and 0.113), in 20 CPU seconds instead of 287; EasyOCR stays the engine where
Tesseract is not installed (a laptop's ``make run`` without ``make install-ocr``).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from workbench.config import Settings
from workbench.errors import ModelMissingError

log = logging.getLogger(__name__)

#: EasyOCR language codes (``OCR_LANGUAGES``) to Tesseract's traineddata names; any other code
#: is passed through as it is (``OCR_LANGUAGES=eng`` works too).
TESSERACT_LANGUAGES = {
    "en": "eng", "de": "deu", "fr": "fra", "es": "spa", "it": "ita", "pt": "por", "nl": "nld",
    "pl": "pol", "sv": "swe", "da": "dan", "no": "nor", "fi": "fin", "cs": "ces", "ru": "rus",
}
#: The orientation-and-script data (``tesseract-ocr-osd``) page orientation needs.
OSD = "osd"


@dataclass(frozen=True)
class TesseractInfo:
    """What the binary ``command`` offers: ``version`` (e.g. "5.3.0"), the traineddata it finds
    (``languages``), or why it cannot be used (``problem``, empty when it can)."""

    command: str
    version: str
    languages: tuple[str, ...]
    problem: str


def tesseract_languages(settings: Settings) -> str:
    """The ``-l`` argument for OCR_LANGUAGES: Tesseract names joined by "+" ("en" -> "eng")."""
    return "+".join(TESSERACT_LANGUAGES.get(code, code) for code in settings.ocr_languages)


@functools.lru_cache(maxsize=4)
def _probe(command: str) -> tuple[str, tuple[str, ...], str]:
    import pytesseract

    pytesseract.pytesseract.tesseract_cmd = command
    try:
        version = str(pytesseract.get_tesseract_version())
        languages = tuple(pytesseract.get_languages(config=""))
    except (pytesseract.TesseractNotFoundError, pytesseract.TesseractError, OSError) as exc:
        return "", (), f"tesseract not usable ({command}): {str(exc).strip() or type(exc).__name__}"
    return version, languages, ""


def tesseract_info(settings: Settings) -> TesseractInfo:
    """Probe TESSERACT_CMD once per process (two short subprocess calls, ~50 ms) and say
    whether it can read OCR_LANGUAGES with orientation detection: ``problem`` names what is
    missing (the binary, a language's traineddata, or ``osd``)."""
    version, languages, problem = _probe(settings.tesseract_cmd)
    if not problem:
        missing = [name for name in [*tesseract_languages(settings).split("+"), OSD] if name not in languages]
        if missing:
            problem = f"tesseract {version} lacks the language data {', '.join(missing)} (Debian: tesseract-ocr-eng, tesseract-ocr-osd)"
    return TesseractInfo(settings.tesseract_cmd, version, languages, problem)


def ocr_engine(settings: Settings) -> str:
    """"tesseract" or "easyocr": the engine that reads pages under these settings.

    OCR_ENGINE=auto takes Tesseract when :func:`tesseract_info` finds no problem, else EasyOCR
    (logged once). OCR_ENGINE=tesseract raises ModelMissingError naming what is missing and
    the packages that bring it; OCR_ENGINE=easyocr never probes Tesseract."""
    if settings.ocr_engine == "easyocr":
        return "easyocr"
    info = tesseract_info(settings)
    if not info.problem:
        return "tesseract"
    if settings.ocr_engine == "tesseract":
        raise ModelMissingError(f"OCR_ENGINE=tesseract but {info.problem}; install tesseract-ocr (make install-ocr) or set OCR_ENGINE=easyocr")
    _fallback_logged(info.problem)
    return "easyocr"


@functools.lru_cache(maxsize=4)
def _fallback_logged(problem: str) -> None:
    log.info("OCR with EasyOCR: %s", problem)
