"""Pre-flight diagnostics for the Status page (and anyone else): is the model loaded, is Chroma
reachable, do the collections agree with the model, is Ollama reachable, is there disk and
memory to spare. Every failed check carries the exact fix.

The Ollama fixes are the troubleshooting of the hybrid Docker setup (app in a container,
Ollama on the host): ``OLLAMA_HOST=172.17.0.1`` (the docker bridge) on the host, ``extra_hosts: host-gateway`` in
compose, or the Linux bridge address ``172.17.0.1``.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from workbench.answer.ollama import OllamaCallError, list_models, server_version
from workbench.config import Settings
from workbench.errors import ModelMissingError, WorkbenchError
from workbench.models.cpu import reported_flags
from workbench.models.embeddings import get_embedder
from workbench.models.tesseract import ocr_engine, tesseract_info, tesseract_languages
from workbench.retrieval.search import search
from workbench.ingest.uploads import clean_upload_area
from workbench.store import Store, open_store
from workbench.store.admin import recover

#: Free disk below this at the store fails the check; below WARN_DISK_GB it warns (GiB).
MIN_DISK_GB, WARN_DISK_GB = 1.0, 5.0
#: Available memory below this fails (the model and Chroma need ~1 GiB); below WARN_MEMORY_GB warns.
MIN_MEMORY_GB, WARN_MEMORY_GB = 1.0, 4.0
#: Seconds the Status page waits for Ollama (connect and read), whatever OLLAMA_TIMEOUT says.
OLLAMA_STATUS_TIMEOUT = 3.0

_GIB = 1024**3


@dataclass(frozen=True)
class Diagnosis:
    """One check. level: "ok" | "warn" | "fail". fixes: what to do, in order (empty when ok)."""

    name: str
    level: str
    detail: str
    fixes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.level == "ok"


@dataclass
class StatusReport:
    """All checks, in the order they ran."""

    checks: list[Diagnosis] = field(default_factory=list)

    @property
    def level(self) -> str:
        """Worst level: "fail" if any failed, else "warn" if any warned, else "ok"."""
        levels = {c.level for c in self.checks}
        return "fail" if "fail" in levels else "warn" if "warn" in levels else "ok"

    def get(self, name: str) -> list[Diagnosis]:
        return [c for c in self.checks if c.name == name]


def embedder_device(embedder) -> str:
    """Where the model runs, e.g. ``"cpu"`` (torch) or ``"CPU (OpenVINO)"``."""
    if getattr(embedder, "backend", "") == "openvino":
        return "CPU (OpenVINO)"
    return str(getattr(embedder.model, "device", "cpu"))


def embedder_precision(embedder) -> str:
    """The encoder's precision and why, e.g. ``"bf16 (auto: the CPU has amx_bf16; ...)"``."""
    precision = getattr(embedder, "precision", "fp32")
    reason = getattr(embedder, "precision_reason", "")
    return f"{precision} ({reason})" if reason else precision


def embedder_cpu(embedder) -> str:
    """The CPU flags that decide the encoder's speed (avx2/avx512*/amx*)."""
    flags = getattr(embedder, "cpu_flags", None)
    flags = reported_flags() if flags is None else flags
    return " ".join(flags) if flags else "none of avx2/avx512/amx"


def check_model(settings: Settings, embedder=None) -> tuple[Diagnosis, object | None]:
    """The embedding model loads with EMBEDDING_DIMENSIONS; the detail says its backend, its
    precision and why (chosen from the CPU flags, workbench.models.cpu), and those flags. Returns the
    diagnosis and the embedder (None when it failed)."""
    try:
        if embedder is None:
            embedder = get_embedder(settings)
    except WorkbenchError as exc:
        fix = "run `python -m workbench prefetch` (fills MODEL_CACHE_DIR), or set EMBEDDING_MODEL to a local folder"
        return Diagnosis("model", "fail", str(exc), (fix,)), None
    detail = (
        f"{embedder.name} · backend {embedder.backend} · precision {embedder_precision(embedder)} · "
        f"{embedder.dimension}-d · max {embedder.max_seq_length} tokens · device {embedder_device(embedder)} · "
        f"CPU flags: {embedder_cpu(embedder)}"
    )
    return Diagnosis("model", "ok", detail), embedder


def check_store(settings: Settings, store=None) -> tuple[Diagnosis, object | None]:
    """Chroma opens and answers a heartbeat (server) or a listing (embedded)."""
    where = f"{settings.chroma_mode} Chroma at {settings.chroma_location}"
    if settings.chroma_host:
        fixes = (
            f"start the server: `chroma run --path DIR --host 0.0.0.0 --port {settings.chroma_port}`",
            "check CHROMA_HOST/CHROMA_PORT (in docker compose: the chroma service name, e.g. CHROMA_HOST=chroma)",
            "or unset CHROMA_HOST to use the embedded store at CHROMA_PERSIST_PATH",
        )
    else:
        fixes = (f"make CHROMA_PERSIST_PATH ({settings.chroma_persist_path}) a writable folder (in a container: a mounted volume)",)
    try:
        if store is None:
            store = open_store(settings)
        if settings.chroma_host:
            store.client.heartbeat()
        names = store.collection_names()
    except WorkbenchError as exc:
        return Diagnosis("chroma", "fail", f"{where}: {exc}", fixes), None
    except Exception as exc:  # the client raises its own types when a server goes away
        return Diagnosis("chroma", "fail", f"{where} does not answer ({type(exc).__name__}: {exc})", fixes), None
    return Diagnosis("chroma", "ok", f"{where} · reachable · {len(names)} collection(s)"), store


def check_collections(store, embedder) -> list[Diagnosis]:
    """One diagnosis per collection: built with the loaded model and dimension?"""
    infos = store.list_collections()
    if not infos:
        return [Diagnosis("collections", "warn", "no collections yet", ("ingest documents on the Ingest page or with `python -m workbench ingest`",))]
    out = []
    for info in infos:
        what = f"{info.name}: {info.documents} documents, {info.chunks} chunks, built with {info.embedding_model or '?'} ({info.embedding_dimensions}-d)"
        if embedder is None:
            out.append(Diagnosis("collections", "warn", what + "; cannot compare: the model did not load"))
        elif info.embedding_model == embedder.name and info.embedding_dimensions == embedder.dimension:
            out.append(Diagnosis("collections", "ok", what + " · matches the loaded model"))
        else:
            out.append(
                Diagnosis(
                    "collections",
                    "fail",
                    what + f" but the loaded model is {embedder.name} ({embedder.dimension}-d): its search results would be meaningless",
                    (
                        f"rebuild {info.name!r} with {embedder.name} (Collections page → Rebuild)",
                        f"or set EMBEDDING_MODEL={info.embedding_model} EMBEDDING_DIMENSIONS={info.embedding_dimensions} and restart",
                    ),
                )
            )
    return out


def ollama_fixes(settings: Settings) -> tuple[str, ...]:
    """The generic fixes for an unreachable Ollama, host side first."""
    return (
        "start Ollama on the host: `ollama serve`, and check `curl http://localhost:11434/api/version` answers there",
        "Linux host: Ollama listens on 127.0.0.1 only; let it listen on the docker bridge, not every interface: "
        "`OLLAMA_HOST=172.17.0.1 ollama serve` (systemd: `systemctl edit ollama` → Environment=\"OLLAMA_HOST=172.17.0.1\"; "
        "the address of `ip addr show docker0`) so a container can reach it and the network cannot",
        "app in a container: OLLAMA_BASE_URL=http://host.docker.internal:11434, and in docker-compose.yml "
        "`extra_hosts: [\"host.docker.internal:host-gateway\"]` on the app service",
        "Linux without host-gateway: use the docker bridge address, OLLAMA_BASE_URL=http://172.17.0.1:11434",
        f"check OLLAMA_BASE_URL (now {settings.ollama_base_url}) points at Ollama itself, without /v1",
    )


def check_ollama(settings: Settings) -> list[Diagnosis]:
    """Ollama answers /api/version and /api/tags within OLLAMA_STATUS_TIMEOUT seconds, and
    OLLAMA_MODEL is pulled."""
    quick = settings.model_copy(update={"ollama_timeout": min(settings.ollama_timeout, OLLAMA_STATUS_TIMEOUT)})
    url = settings.ollama_base_url
    try:
        version = server_version(quick)
        models = list_models(quick)
    except OllamaCallError as exc:
        fixes = tuple(exc.fixes) or ollama_fixes(settings)
        what = exc.what
        detail = f"Ollama at {url} is not reachable from where the app runs: {what} (Chat needs it; ingest and search do not)"
        return [Diagnosis("ollama", "fail", detail, fixes)]
    out = [Diagnosis("ollama", "ok", f"Ollama {version} at {url} · {len(models)} model(s): {', '.join(models) or 'none'}")]
    wanted = settings.ollama_model
    norm = lambda name: name if ":" in name else name + ":latest"  # noqa: E731 - Ollama: no tag means :latest
    if norm(wanted) not in {norm(m) for m in models}:
        out.append(
            Diagnosis("ollama model", "warn", f"OLLAMA_MODEL {wanted!r} is not pulled on {url}", (f"run `ollama pull {wanted}` on the Ollama host", "or set OLLAMA_MODEL to one of the models listed above"))
        )
    else:
        out.append(Diagnosis("ollama model", "ok", f"OLLAMA_MODEL {wanted!r} is available"))
    return out


def _existing_parent(path: Path) -> Path:
    path = Path(path).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(settings: Settings) -> Diagnosis:
    """Free space on the filesystem of the embedded store (or the working folder in server mode)."""
    where = Path(".") if settings.chroma_host else settings.chroma_persist_path
    folder = _existing_parent(where)
    free = shutil.disk_usage(folder).free / _GIB
    detail = f"{free:.1f} GiB free at {folder}" + (" (store is on the Chroma server; this is the app's disk)" if settings.chroma_host else "")
    fix = ("free disk space, or point CHROMA_PERSIST_PATH at a larger volume",)
    if free < MIN_DISK_GB:
        return Diagnosis("disk", "fail", detail + f" (< {MIN_DISK_GB:g} GiB)", fix)
    if free < WARN_DISK_GB:
        return Diagnosis("disk", "warn", detail + f" (< {WARN_DISK_GB:g} GiB)", fix)
    return Diagnosis("disk", "ok", detail)


def check_memory() -> Diagnosis:
    """Available memory (psutil ``virtual_memory().available``)."""
    import psutil

    mem = psutil.virtual_memory()
    free, total = mem.available / _GIB, mem.total / _GIB
    detail = f"{free:.1f} GiB available of {total:.1f} GiB"
    fix = ("close other programs, give the container more memory, or use a smaller Ollama model",)
    if free < MIN_MEMORY_GB:
        return Diagnosis("memory", "fail", detail, fix)
    if free < WARN_MEMORY_GB:
        return Diagnosis("memory", "warn", detail, fix)
    return Diagnosis("memory", "ok", detail)


def check_ocr(settings: Settings) -> Diagnosis:
    """Which OCR engine reads scans (``OCR_ENGINE``, :func:`workbench.models.tesseract.ocr_engine`):
    ok for Tesseract, or EasyOCR chosen by OCR_ENGINE=easyocr; warn when auto fell back to
    EasyOCR (Tesseract missing: CER 0.136 instead of 0.021 on ../shared/corpus/ocr, ~5x the
    time); fail when OCR_ENGINE=tesseract cannot run."""
    install = ("run `make install-ocr` (Debian: apt-get install tesseract-ocr tesseract-ocr-eng tesseract-ocr-osd), or use the Docker image",)
    try:
        engine = ocr_engine(settings)
    except ModelMissingError as exc:
        return Diagnosis("ocr", "fail", str(exc), install)
    if engine == "tesseract":
        info = tesseract_info(settings)
        return Diagnosis("ocr", "ok", f"Tesseract {info.version} ({tesseract_languages(settings)}; orientation by osd)")
    if settings.ocr_engine == "easyocr":
        return Diagnosis("ocr", "ok", "EasyOCR (OCR_ENGINE=easyocr)")
    problem = tesseract_info(settings).problem
    return Diagnosis("ocr", "warn", f"EasyOCR, because {problem}: scans read with ~6x the errors in ~5x the time", install)


def run_checks(settings: Settings, *, store=None, embedder=None, include: Sequence[str] = ("model", "chroma", "collections", "ollama", "ocr", "disk", "memory")) -> StatusReport:
    """Run the checks named in ``include`` (all by default), reusing ``store``/``embedder``
    when given. Never raises for a failed check: it becomes a "fail" Diagnosis."""
    report = StatusReport()
    if "model" in include:
        diag, embedder = check_model(settings, embedder)
        report.checks.append(diag)
    if "chroma" in include or "collections" in include:
        diag, store = check_store(settings, store)
        report.checks.append(diag)
        if store is not None and "collections" in include:
            report.checks.extend(check_collections(store, embedder))
    if "ollama" in include:
        report.checks.extend(check_ollama(settings))
    if "ocr" in include:
        report.checks.append(check_ocr(settings))
    if "disk" in include:
        report.checks.append(check_disk(settings))
    if "memory" in include:
        report.checks.append(check_memory())
    return report


# --- verify (the seed pipeline's pre-flight step) ------------------------------------------------


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class VerifyReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def verify(settings: Settings, *, collection: str | None = None, query: str = "What is this about?") -> VerifyReport:
    """The pre-flight checks of the seed pipeline's verify step (``python -m workbench verify``):
    the store opens, the model loads with the configured dimension, the collection agrees with
    the model and has chunks, and a sample query returns results. Never raises for a failed
    check (it is recorded as not ok)."""
    report = VerifyReport()
    add = report.checks.append
    try:
        store = open_store(settings)
        add(Check("store", True, f"{settings.chroma_mode} Chroma at {settings.chroma_location}"))
    except WorkbenchError as exc:
        add(Check("store", False, str(exc)))
        return report
    try:
        embedder = get_embedder(settings)
        add(Check("model", True, f"{embedder.name} ({embedder.backend} {embedder.precision}, {embedder.dimension}-d, max {embedder.max_seq_length} tokens)"))
    except WorkbenchError as exc:
        add(Check("model", False, str(exc)))
        return report
    name = collection or settings.collection_name
    if not store.has_collection(name):
        add(Check("collection", False, f"collection {name!r} does not exist; run `python -m workbench ingest`"))
        return report
    info = store.collection_info(name)
    agrees = info.embedding_model == embedder.name and info.embedding_dimensions == embedder.dimension
    add(Check("dimensions", agrees, f"{name}: built with {info.embedding_model} ({info.embedding_dimensions}-d), loaded {embedder.name} ({embedder.dimension}-d)"))
    add(Check("counts", info.chunks > 0, f"{name}: {info.documents} documents, {info.chunks} chunks"))
    try:
        hits = search(query, settings=settings, store=store, embedder=embedder, collection=name, top_k=3)
        add(Check("query", bool(hits), f"{len(hits)} results for {query!r}" + (f", best {hits[0].score:.3f} from {hits[0].source}" if hits else "")))
    except WorkbenchError as exc:
        add(Check("query", False, str(exc)))
    return report


# --- start-up ---------------------------------------------------------------------------------


def start_up(settings: Settings, store: Store) -> list[str]:
    """What a process that serves the app does once before its first page: finish or undo what
    a kill interrupted (a swap, an import, an ingest or a delete: :func:`workbench.store.admin.recover`,
    which skips collections another process is writing) and empty the upload area (no job of this
    process can be using it yet). Returns one line per action taken; never raises for a
    collection it cannot recover (that is logged)."""
    actions = recover(store)
    removed = clean_upload_area(settings)
    if removed:
        actions.append(f"removed {removed} staged uploads left by an earlier run")
    return actions
