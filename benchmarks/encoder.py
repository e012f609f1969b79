"""Encoder benchmark (issue 13 goal 4): which encoder runtime and precision is fastest while
keeping the same vectors (cosine >= 0.999 to torch fp32) on this CPU.

1. Speed and vectors: ~512 real chunks of ``shared/corpus/text`` (the project's Chunker, header +
   text as ingest embeds them, every k-th chunk), encoded (batch 32) by each variant:
   torch fp32, torch bf16 (autocast), OpenVINO with no precision hint (the library default),
   f32 and bf16 hints (and f16, THROUGHPUT hint, batch 64 with --extra; nncf int8 with --int8).
   Variants take turns block by block (``--block`` chunks per encode call, rotating order), so
   that other load on the shared cores hits all of them alike; the table gives the median over
   ``--rounds`` of chunks/s and of the ratio to torch fp32 in the same round.
2. Quality: SQuAD dev recall@5 of exact (numpy) vector search over the chunks of
   ``shared/corpus/squad/docs`` for ``--questions`` questions (default 300), per variant.

Writes benchmarks/results/encoder.json (with the CPU flags and the precision start-up chooses).
Usage: python benchmarks/encoder.py [--chunks 512] [--rounds 3] [--questions 300] [--int8] [--extra]
       [--variants torch-fp32,ov-f32,ov-bf16] [--out NAME]
To approximate a lesser CPU on an AMX one, cap oneDNN's kernels: ``ONEDNN_MAX_CPU_ISA=
AVX512_CORE_BF16`` (AVX512_BF16, no AMX) or ``AVX512_CORE_VNNI`` (no native bf16: bf16 is then
emulated). OpenVINO still reads the real CPU for its default precision; ``AVX2`` breaks its
Softmax ("Supported primitive descriptors list is empty").
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from _common import cpu_report, require_corpus, write_result

from tests.conftest import make_settings

BATCH = 32


def corpus_chunks(files: list[Path], settings, embedder) -> list[SimpleNamespace]:
    """Every chunk of ``files`` as ingest makes it: ``embed`` (header + text), ``text``, ``file_name``."""
    from workbench.ingest.chunking import Chunker
    from workbench.ingest.pipeline import document_id_for
    from workbench.ingest.loaders import iter_pages

    chunker = Chunker(embedder.backend_tokenizer, settings.chunk_size, settings.chunk_overlap, embedder.max_seq_length, context=settings.chunk_context)
    out = []
    for path in files:
        for chunk in chunker.chunk_pages(iter_pages(path, settings), document_id=document_id_for(path.name), source=path.name, file_name=path.name):
            out.append(SimpleNamespace(embed=chunk.header + chunk.text, text=chunk.text, file_name=path.name, source=path.name))
    return out


def ov_variant(export_dir: Path, ov_config: dict, file_name: str | None = None):
    from sentence_transformers import SentenceTransformer

    kwargs = {"ov_config": {"PERFORMANCE_HINT": "LATENCY", **ov_config}}
    if file_name:
        kwargs["file_name"] = file_name
    model = SentenceTransformer(str(export_dir), device="cpu", backend="openvino", model_kwargs=kwargs)
    request = model[0].auto_model.request
    info = {k: request.get_property(k) for k in ("INFERENCE_PRECISION_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS")}
    info = {k: v.to_string() if hasattr(v, "to_string") else str(v) for k, v in info.items()}
    return (lambda texts: model.encode(texts, batch_size=BATCH, normalize_embeddings=True, show_progress_bar=False)), info


def torch_variants(path: Path) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device="cpu")

    def fp32(texts):
        return model.encode(texts, batch_size=BATCH, normalize_embeddings=True, show_progress_bar=False)

    def autocast_bf16(texts):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.encode(texts, batch_size=BATCH, normalize_embeddings=True, show_progress_bar=False, convert_to_tensor=True)
        return out.float().numpy()

    threads = {"INFERENCE_NUM_THREADS": str(torch.get_num_threads())}
    return {"torch-fp32": (fp32, {**threads, "precision": "f32"}), "torch-bf16-autocast": (autocast_bf16, {**threads, "precision": "bf16 autocast"})}


def quantize_int8(export_dir: Path, calibration: list[str], tokenizer, tmp: Path) -> tuple[Path, str]:
    """Static int8 of the OpenVINO IR with nncf (transformer preset), calibrated on ``calibration``
    chunks; a copy of ``export_dir`` holding ``openvino/openvino_model_qint8.xml``."""
    import nncf
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(export_dir / "openvino" / "openvino_model.xml"))
    names = {i.get_any_name() for i in model.inputs}
    items = []
    for text in calibration:
        enc = tokenizer([text], return_tensors="np", truncation=True, max_length=256)
        items.append({k: v for k, v in enc.items() if k in names})
    quantized = nncf.quantize(model, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(items))
    folder = tmp / "int8"
    shutil.copytree(export_dir, folder)
    ov.save_model(quantized, str(folder / "openvino" / "openvino_model_qint8.xml"))
    return folder, "openvino/openvino_model_qint8.xml"


def cosine_stats(vectors: np.ndarray, reference: np.ndarray) -> dict:
    a = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    b = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    cos = (a * b).sum(axis=1)
    return {"cosine_min": float(cos.min()), "cosine_mean": float(cos.mean())}


def squad_recall(encode, chunks, questions) -> float:
    from workbench.evaluate import is_relevant

    vectors = encode([c.embed for c in chunks])
    queries = encode([q.question for q in questions])
    top = np.argsort(-(queries @ vectors.T), axis=1)[:, :5]
    return float(np.mean([any(is_relevant(chunks[j], q) for j in row) for q, row in zip(questions, top)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--block", type=int, default=64, help="chunks per encode call; variants take turns block by block")
    parser.add_argument("--questions", type=int, default=300, help="SQuAD questions for recall@5 (0: skip)")
    parser.add_argument("--int8", action="store_true", help="also nncf static int8 (calibrated on 300 other corpus chunks)")
    parser.add_argument("--extra", action="store_true", help="also OpenVINO f16 and bf16 with the THROUGHPUT hint / batch 64")
    parser.add_argument("--variants", default="", help="comma-separated subset of variant names")
    parser.add_argument("--out", default="encoder", help="result name (benchmarks/results/<out>.json)")
    args = parser.parse_args()
    corpus = require_corpus()
    from workbench.models.embeddings import get_embedder, openvino_export_dir
    from workbench.evaluate import squad_questions

    settings = make_settings(Path(tempfile.gettempdir()), embedding_precision="fp32")
    embedder = get_embedder(settings)
    export_dir = openvino_export_dir(embedder.path, Path(settings.model_cache_dir))
    from workbench.ingest.pipeline import discover

    files = [f.path for f in discover([corpus / "text"]) if f.path.name != "MANIFEST.md"]  # what ingest would read
    every = corpus_chunks(files, settings, embedder)
    step = max(1, len(every) // args.chunks)
    chunks = [c.embed for c in every[::step][: args.chunks]]
    tokens = sum(len(embedder.tokenizer(t)["input_ids"]) for t in chunks)
    print(f"{len(chunks)} of {len(every)} chunks, {tokens / len(chunks):.0f} tokens on average; CPU {cpu_report()}", flush=True)

    variants = torch_variants(embedder.path)
    variants["ov-default"] = ov_variant(export_dir, {})
    variants["ov-f32"] = ov_variant(export_dir, {"INFERENCE_PRECISION_HINT": "f32"})
    variants["ov-bf16"] = ov_variant(export_dir, {"INFERENCE_PRECISION_HINT": "bf16"})
    if args.extra:
        variants["ov-f16"] = ov_variant(export_dir, {"INFERENCE_PRECISION_HINT": "f16"})
        variants["ov-bf16-throughput"] = ov_variant(export_dir, {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "THROUGHPUT"})
        from sentence_transformers import SentenceTransformer

        m64 = SentenceTransformer(str(export_dir), device="cpu", backend="openvino", model_kwargs={"ov_config": {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "bf16"}})
        variants["ov-bf16-batch64"] = (lambda texts: m64.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)), {"INFERENCE_PRECISION_HINT": "bf16", "batch_size": "64"}
    tmp = Path(tempfile.mkdtemp(prefix="bench-encoder-"))
    if args.int8:
        rest = [c.embed for i, c in enumerate(every) if i % step][:: max(1, (len(every) - len(chunks)) // 300)][:300]
        t = time.perf_counter()
        folder, file_name = quantize_int8(export_dir, rest, embedder.tokenizer, tmp)
        print(f"int8 quantization {time.perf_counter() - t:.0f} s", flush=True)
        variants["ov-int8"] = ov_variant(folder, {}, file_name)
    if args.variants:
        keep = set(args.variants.split(",")) | {"torch-fp32"}
        variants = {k: v for k, v in variants.items() if k in keep}

    names = list(variants)
    for name in names:  # warm-up: first inference compiles kernels / allocates
        variants[name][0](chunks[:BATCH])
    speeds: dict[str, list[float]] = {n: [] for n in names}
    ratios: dict[str, list[float]] = {n: [] for n in names}
    vectors: dict[str, np.ndarray] = {}
    blocks = [chunks[i : i + args.block] for i in range(0, len(chunks), args.block)]
    turn = 0
    for r in range(args.rounds):
        seconds = dict.fromkeys(names, 0.0)
        outputs: dict[str, list] = {n: [] for n in names}
        for block in blocks:  # every variant encodes each block in turn, in a rotating order
            turn += 1
            for name in names[turn % len(names):] + names[: turn % len(names)]:
                t = time.perf_counter()
                outputs[name].append(np.asarray(variants[name][0](block), dtype=np.float32))
                seconds[name] += time.perf_counter() - t
        for name in names:
            vectors.setdefault(name, np.concatenate(outputs[name]))
            speeds[name].append(len(chunks) / seconds[name])
            ratios[name].append(seconds["torch-fp32"] / seconds[name])
        print(f"round {r + 1}: " + ", ".join(f"{n} {len(chunks) / seconds[n]:.1f}" for n in names), flush=True)

    questions = squad_questions(corpus, args.questions) if args.questions else []
    squad_chunks = corpus_chunks(sorted((corpus / "squad" / "docs").glob("*.md")), settings, embedder) if questions else []
    rows = {}
    for name in names:
        row = {"chunks_per_s": round(statistics.median(speeds[name]), 1), "x_torch_fp32": round(statistics.median(ratios[name]), 2),
               **{k: round(v, 7) for k, v in cosine_stats(vectors[name], vectors["torch-fp32"]).items()}, **variants[name][1]}
        if questions:
            row["squad_recall@5"] = round(squad_recall(variants[name][0], squad_chunks, questions), 4)
        rows[name] = row
        print(name, row, flush=True)
    shutil.rmtree(tmp, ignore_errors=True)

    result = {"corpus": "shared/corpus/text", "chunks": len(chunks), "mean_tokens": round(tokens / len(chunks), 1), "batch_size": BATCH,
              "rounds": args.rounds, "block": args.block, "squad_questions": len(questions), "squad_chunks": len(squad_chunks), "variants": rows}
    if os.environ.get("ONEDNN_MAX_CPU_ISA"):  # oneDNN (torch and OpenVINO's CPU plugin) capped to a lesser ISA
        result["ONEDNN_MAX_CPU_ISA"] = os.environ["ONEDNN_MAX_CPU_ISA"]
    write_result(args.out, result)
    print(f"\n{'variant':<22} {'chunks/s':>9} {'x torch':>8} {'cos min':>10} {'cos mean':>10} {'recall@5':>9}  runs as")
    for name, row in rows.items():
        print(f"{name:<22} {row['chunks_per_s']:>9} {row['x_torch_fp32']:>8} {row['cosine_min']:>10.6f} {row['cosine_mean']:>10.7f} "
              f"{row.get('squad_recall@5', float('nan')):>9.3f}  {row.get('INFERENCE_PRECISION_HINT', row.get('precision'))}")


if __name__ == "__main__":
    main()
