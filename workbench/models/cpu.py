"""The CPU the encoder runs on: its flags, and the encoder precision they call for.

Read once at start-up (``cpu_flags``); ``choose_precision`` turns the flags, EMBEDDING_BACKEND
and EMBEDDING_PRECISION into the precision the embedder compiles with. Only stdlib here.

Why these choices: ``benchmarks/encoder.py`` on 2 cores of an Intel Xeon (Sapphire Rapids
class: avx512f, avx512_vnni, avx512_bf16, avx512_fp16, amx_bf16, amx_int8), 2026-12-02, 512
chunks of ``shared/corpus/text`` (133 tokens on average), batch 32, variants taking turns block
by block. Other jobs kept the load at 8-10 on the 2 cores, so absolute chunks/s are ~4x below
an idle machine's; the ratios to torch fp32 in the same rounds are what to read. SQuAD recall@5
is exact vector search, 300 dev questions over the 1,150 chunks of the 24 articles.

======================= ======== ========= ==================== ==========
variant                 chunks/s x torch   cosine to torch fp32 recall@5
                                 fp32      min / mean
======================= ======== ========= ==================== ==========
torch fp32              6.1      1.00      1 / 1                0.927
torch bf16 (autocast)   8.3      1.47      0.99996 / 0.99998    0.927
OpenVINO fp32 (f32)     8.4      1.55      0.9999999 / 1.0      0.927
OpenVINO bf16 (AMX)     21.8     3.52      0.99997 / 0.99998    0.927
OpenVINO f16            7.6      1.22      0.999999 / 0.999999  0.927
OpenVINO int8 (nncf)    24.2     4.00      0.9918 / 0.9969      0.923
======================= ======== ========= ==================== ==========

- **bf16 with AMX** (``amx_bf16``): 2.3x OpenVINO fp32 (3.52 vs 1.55 x torch fp32; 2.5x,
  3.78 vs 1.52, in a second run on 256 chunks), with the same vectors (min cosine 0.99997 >= 0.999) and the same recall@5. OpenVINO with no hint
  already runs bf16 on such a CPU; the explicit hint makes it visible and overridable.
- **fp32 with AVX512_BF16 but no AMX** (Cooper Lake, Zen 4): with oneDNN capped below AMX
  (``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16``) bf16 ran 0.78x fp32 (three rounds, 0.75-0.78), so
  auto keeps fp32 there. An emulation on this CPU, not a real such machine: EMBEDDING_PRECISION=
  bf16 is honoured on it.
- **fp32 everywhere else** (AVX2-only, AVX-512 without BF16, non-x86, unknown OS). bf16 is even
  refused when asked for: OpenVINO accepts the hint on any AVX-512 CPU and emulates bf16, which
  ran ~20x slower than fp32 (``ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI``: 0.5-0.9 vs 11.6-16.1
  chunks/s).
- **torch is always fp32**: it is only the fallback when OpenVINO cannot load, and its bf16,
  though close in vectors, is no faster than OpenVINO fp32 (1.47x vs 1.55x torch fp32).
- **int8 is never chosen**: static int8 (nncf, transformer preset, calibrated on 300 other
  corpus chunks) was only ~10 % faster than bf16 here, its vectors are not the same (min cosine
  0.992 < 0.999) and recall@5 fell by 0.003 (inside the 0.005 allowed, but for no real gain).
- f16 (``avx512_fp16``) is exact but no faster than fp32 on this CPU (no AMX-FP16).
- Not changed here: PERFORMANCE_HINT THROUGHPUT (2 streams of 1 thread; one synchronous
  request then runs on 1 thread) was 1.2x LATENCY for bf16 under this load, likely because a
  single thread suffers less from the shared cores; worth measuring on an idle machine.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Iterable
from pathlib import Path

#: Precisions the embedder can run; "auto" picks one from the CPU flags.
PRECISIONS = ("fp32", "bf16")
#: CPU flags that make OpenVINO bf16 native (AVX512_BF16 dot products or AMX tiles).
BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
#: Flag prefixes worth reporting (Status page, benchmark results): the vector ISA families.
REPORTED_PREFIXES = ("avx2", "avx512", "amx")

_CPUINFO = Path("/proc/cpuinfo")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The ``flags`` of the first processor in /proc/cpuinfo (Linux, also in a container),
    e.g. ``{"avx2", "avx512f", "amx_bf16", ...}``; an empty set on other OSes or when the file
    cannot be read (then every choice falls back to fp32)."""
    return parse_cpuinfo(_read_cpuinfo())


def _read_cpuinfo() -> str:
    try:
        return _CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def parse_cpuinfo(text: str) -> frozenset[str]:
    """Flags from the text of /proc/cpuinfo: the first ``flags`` line (x86; ``Features`` on
    ARM). Every core of a machine reports the same flags."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def cpu_model_name() -> str:
    """The ``model name`` line of /proc/cpuinfo (e.g. "Intel(R) Xeon(R) ..."), else
    ``platform.processor()`` or "unknown"."""
    for line in _read_cpuinfo().splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == "model name":
            return value.strip()
    return platform.processor() or "unknown"


def reported_flags(flags: Iterable[str] | None = None) -> list[str]:
    """The avx2 / avx512* / amx* flags, sorted (what decides the encoder's speed)."""
    flags = cpu_flags() if flags is None else flags
    return sorted(f for f in flags if f.startswith(REPORTED_PREFIXES))


def has_native_bf16(flags: Iterable[str]) -> bool:
    """True when the CPU computes bf16 natively (AMX or AVX512_BF16)."""
    return bool(BF16_FLAGS & set(flags))


def choose_precision(flags: Iterable[str], backend: str, requested: str = "auto") -> str:
    """The encoder precision, "fp32" or "bf16" (measurements in the module docstring).

    ``backend``: EMBEDDING_BACKEND ("openvino" or "torch"); ``requested``: EMBEDDING_PRECISION.

    - torch: always fp32 (torch is the fallback; its bf16 is slower than OpenVINO fp32).
    - "auto" with OpenVINO: bf16 when the CPU has ``amx_bf16`` (2.3x fp32, same vectors),
      else fp32 -- also with ``avx512_bf16`` alone, where bf16 measured 0.78x fp32.
    - "fp32": fp32. "bf16": bf16 when the CPU has ``amx_bf16`` or ``avx512_bf16``; on a CPU
      without either it stays fp32, because OpenVINO would accept the hint and emulate bf16
      ~20x slower than fp32.
    """
    flags = frozenset(flags)
    if requested not in ("auto", *PRECISIONS):
        raise ValueError(f"EMBEDDING_PRECISION must be auto, fp32 or bf16, not {requested!r}")
    if backend != "openvino":
        return "fp32"
    if requested == "bf16":
        return "bf16" if has_native_bf16(flags) else "fp32"
    if requested == "fp32":
        return "fp32"
    return "bf16" if "amx_bf16" in flags else "fp32"


def precision_reason(flags: Iterable[str], backend: str, requested: str = "auto") -> str:
    """Why ``choose_precision`` picks what it picks, in one line (logs, Status page)."""
    flags = frozenset(flags)
    chosen = choose_precision(flags, backend, requested)
    if backend != "openvino":
        return "torch runs fp32"
    if requested == "bf16" and chosen != "bf16":
        return "EMBEDDING_PRECISION=bf16 refused: this CPU has no amx_bf16/avx512_bf16, bf16 would be emulated (~20x slower)"
    if requested != "auto":
        return f"EMBEDDING_PRECISION={requested}"
    if chosen == "bf16":
        return "auto: the CPU has amx_bf16; bf16 on AMX keeps the vectors (cosine >= 0.9999) at ~2.3x fp32 speed"
    if "avx512_bf16" in flags:
        return "auto: avx512_bf16 without AMX, where bf16 measured slower than fp32"
    return "auto: the CPU has no amx_bf16"
