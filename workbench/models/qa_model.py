"""The extractive QA model (QA_MODEL): found on disk, never downloaded, loaded once.

Transformers 5 removed the ``question-answering`` pipeline, so the model is loaded as
``AutoModelForQuestionAnswering`` with its fast tokenizer (needed for answer offsets); the
decoding lives in :mod:`workbench.answer.reader`.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from workbench.config import Settings
from workbench.errors import ConfigError, ModelMissingError
from workbench.models.files import use_offline_hub

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QaModel:
    """A loaded extractive QA model: ``name`` (QA_MODEL), ``path`` (weights folder),
    ``tokenizer`` (fast tokenizer, needed for offset mappings), ``model`` (torch, eval mode),
    ``lock`` (hold it while using the tokenizer: each call reconfigures its truncation and
    padding, and a call from another thread meanwhile fails "RuntimeError: Already borrowed";
    the app's sessions share one QaModel)."""

    name: str
    path: Path
    tokenizer: object
    model: object
    lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)


def resolve_qa_model(settings: Settings) -> Path:
    """Folder holding QA_MODEL's weights, never a download: QA_MODEL itself when it is a folder
    with a config.json, else ``MODEL_CACHE_DIR/<last part of the name>``.

    Raises ModelMissingError naming the model and ``python -m workbench prefetch``.
    """
    name = settings.qa_model
    direct = Path(name).expanduser()
    if direct.is_dir() and (direct / "config.json").is_file():
        return direct
    cached = Path(settings.model_cache_dir) / Path(name.rstrip("/")).name
    if (cached / "config.json").is_file():
        return cached
    raise ModelMissingError(
        f"QA model {name!r} is not on disk (looked in {cached}); "
        "run `python -m workbench prefetch` to fetch it"
    )


@functools.lru_cache(maxsize=2)
def _load(name: str, path: str) -> QaModel:
    use_offline_hub()
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar on the CLI's stderr
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForQuestionAnswering.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"QA model {name!r} in {path} cannot be loaded ({type(exc).__name__}: {exc})") from exc
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"QA model {name!r}: a fast tokenizer (tokenizer.json) is needed for answer offsets")
    model.eval()
    log.info("QA model %s loaded from %s", name, path)
    return QaModel(name, Path(path), tokenizer, model)


def load_qa_model(settings: Settings) -> QaModel:
    """The process-wide QA model for QA_MODEL (loaded on the first call, then reused).

    Raises ModelMissingError when it is not on disk, ConfigError when the folder is broken.
    """
    return _load(settings.qa_model, str(resolve_qa_model(settings)))
