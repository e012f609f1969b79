"""Encoder precision from the CPU flags (workbench.models.cpu) and the real bf16 encoder."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import REPO, SAMPLE_DOCS, make_settings
from workbench.models import cpu
from workbench.models.cpu import (
    choose_precision,
    cpu_flags,
    has_native_bf16,
    parse_cpuinfo,
    precision_reason,
    reported_flags,
)

AVX2_ONLY = frozenset(["fpu", "sse4_2", "avx", "avx2", "fma", "bmi2"])  # e.g. the AMD EPYC build machine
AVX512_NO_BF16 = AVX2_ONLY | {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"}  # Cascade Lake
AVX512_BF16 = AVX512_NO_BF16 | {"avx512_bf16"}  # Cooper Lake, Zen 4
AMX = AVX512_BF16 | {"amx_bf16", "amx_int8", "amx_tile", "avx512_fp16"}  # Sapphire Rapids (this one)


@pytest.mark.parametrize(
    "flags, backend, requested, expected",
    [
        (AVX2_ONLY, "openvino", "auto", "fp32"),
        (AVX512_NO_BF16, "openvino", "auto", "fp32"),
        (AVX512_BF16, "openvino", "auto", "fp32"),  # no AMX: bf16 measured 0.78x fp32
        (AMX, "openvino", "auto", "bf16"),
        (frozenset({"amx_bf16"}), "openvino", "auto", "bf16"),
        (frozenset(), "openvino", "auto", "fp32"),  # not Linux: no flags known
        (AMX, "torch", "auto", "fp32"),  # torch always fp32
        (AMX, "torch", "bf16", "fp32"),
        (AMX, "openvino", "fp32", "fp32"),  # EMBEDDING_PRECISION overrides
        (AVX512_BF16, "openvino", "bf16", "bf16"),
        (AVX2_ONLY, "openvino", "bf16", "fp32"),  # would be emulated, ~20x slower: refused
        (AVX512_NO_BF16, "openvino", "bf16", "fp32"),
    ],
)
def test_choose_precision(flags, backend, requested, expected):
    assert choose_precision(flags, backend, requested) == expected


def test_choose_precision_defaults_to_auto_and_rejects_unknown():
    assert choose_precision(AMX, "openvino") == "bf16"
    assert choose_precision(AVX2_ONLY, "openvino") == "fp32"
    with pytest.raises(ValueError, match="auto, fp32 or bf16"):
        choose_precision(AMX, "openvino", "int8")


def test_precision_reason_says_why():
    assert "amx_bf16" in precision_reason(AMX, "openvino")
    assert "without AMX" in precision_reason(AVX512_BF16, "openvino")
    assert "refused" in precision_reason(AVX2_ONLY, "openvino", "bf16")
    assert precision_reason(AMX, "openvino", "fp32") == "EMBEDDING_PRECISION=fp32"
    assert precision_reason(AMX, "torch") == "torch runs fp32"


def test_flags_from_cpuinfo_text():
    text = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 avx512f amx_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n"
    assert parse_cpuinfo(text) == {"fpu", "avx2", "avx512f", "amx_bf16"}
    assert parse_cpuinfo("Features\t: fp asimd bf16\n") == {"fp", "asimd", "bf16"}  # ARM
    assert parse_cpuinfo("") == frozenset()
    assert reported_flags(parse_cpuinfo(text)) == ["amx_bf16", "avx2", "avx512f"]


def test_no_cpuinfo_means_no_flags_and_fp32(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu, "_CPUINFO", tmp_path / "missing")
    cpu.cpu_flags.cache_clear()
    try:
        assert cpu_flags() == frozenset()
        assert choose_precision(cpu_flags(), "openvino") == "fp32"
    finally:
        cpu.cpu_flags.cache_clear()


def test_embedding_precision_setting(monkeypatch):
    assert make_settings(REPO).embedding_precision == "auto"
    monkeypatch.setenv("EMBEDDING_PRECISION", "fp32")
    assert make_settings(REPO).embedding_precision == "fp32"
    monkeypatch.setenv("EMBEDDING_PRECISION", "int8")
    with pytest.raises(ValueError):
        make_settings(REPO)


def test_bf16_encoder_keeps_the_fp32_vectors(tmp_path):
    """The real model with EMBEDDING_PRECISION=bf16 vs fp32 (OpenVINO) and torch fp32."""
    if not has_native_bf16(cpu_flags()):
        pytest.skip(f"this CPU has neither amx_bf16 nor avx512_bf16 (flags: {' '.join(reported_flags()) or 'none'}): OpenVINO would not run bf16")
    from workbench.models.embeddings import Embedder
    from workbench.diagnostics import check_model

    sentences = [text.split("\n\n")[-1].strip() for text in SAMPLE_DOCS.values()]
    sentences += [
        "What is the maximum sequence length of the embedding model?",
        (REPO / "knowledge_base" / "02-ingesting-documents.md").read_text(encoding="utf-8")[:1500],  # ~256 tokens, truncated
    ]
    bf16 = Embedder(make_settings(tmp_path, embedding_precision="bf16"))
    fp32 = Embedder(make_settings(tmp_path, embedding_precision="fp32"))
    torch32 = Embedder(make_settings(tmp_path, embedding_backend="torch"))
    assert (bf16.backend, bf16.precision) == ("openvino", "bf16")
    assert (fp32.backend, fp32.precision) == ("openvino", "fp32")
    assert (torch32.backend, torch32.precision) == ("torch", "fp32")
    a, b, t = bf16.encode(sentences), fp32.encode(sentences), torch32.encode(sentences)
    assert a.dtype == np.float32 and a.shape == (len(sentences), 384)
    assert (a * b).sum(axis=1).min() >= 0.999
    assert (a * t).sum(axis=1).min() >= 0.999
    assert (b * t).sum(axis=1).min() >= 0.9999
    assert not np.array_equal(a, b)  # really a different precision

    auto = Embedder(make_settings(tmp_path))
    expected = "bf16" if "amx_bf16" in cpu_flags() else "fp32"
    assert auto.precision == expected and auto.precision_reason.startswith("auto:")
    diag, _ = check_model(make_settings(tmp_path), auto)
    assert diag.ok and "backend openvino" in diag.detail and f"precision {expected} (auto:" in diag.detail
    assert "avx512_bf16" in diag.detail  # the CPU flags are listed
