"""Measure retrieval: a question set -> recall@k, MRR@10 and nDCG@10 for each search mode.

A question set is JSONL, one object a line: ``question`` and at least one of
``expected_source`` (a document's ``source`` or file name) and ``expected_text``. Lines in the
SQuAD form (``question``, ``title``, ``answers``) are read as ``expected_source = title + ".md"``,
``expected_text = answers[0]``.

**Relevance is binary.** A retrieved chunk is relevant when it comes from ``expected_source``
(when given) and contains ``expected_text`` (when given), compared case-insensitively with
whitespace collapsed. A question is *found at rank r* when the r-th chunk is the first relevant
one (r = 0: not in the top k). Over n questions:

- recall@k = |{q : 1 <= r_q <= k}| / n: with one target passage per question this is the
  "top-k retrieval accuracy" of Karpukhin et al., "Dense Passage Retrieval" (EMNLP 2020), i.e.
  recall (Manning, Raghavan & Schütze, *Introduction to Information Retrieval*, 2008, §8.3) of
  that one passage.
- MRR@10 = mean of 1/r_q over questions with 1 <= r_q <= 10, 0 otherwise (Voorhees, "The TREC-8
  Question Answering Track Report", 1999).
- nDCG@10 = mean of DCG@10/IDCG@10 with DCG = sum_i rel_i / log2(i + 1) (Järvelin &
  Kekäläinen, "Cumulated gain-based evaluation of IR techniques", TOIS 2002), one relevant
  passage per question, so IDCG = 1 and nDCG@10 = 1/log2(r_q + 1) for r_q <= 10, else 0.
  Later chunks that also qualify (overlapping chunks of the same passage) are not counted again.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from workbench.config import Settings
from workbench.documents import Hit
from workbench.models.embeddings import Embedder
from workbench.errors import InvalidRequestError, DocumentError
from workbench.retrieval.search import MODES, search
from workbench.store.chroma import Store

#: Cut-offs reported for recall.
RECALL_KS = (1, 5, 10)


@dataclass(frozen=True)
class Question:
    """One evaluation question; at least one of expected_source / expected_text is set."""

    question: str
    expected_source: str | None = None
    expected_text: str | None = None
    id: str = ""


@dataclass
class EvalReport:
    """Ranks and hits of every question for every mode.

    ``ranks[mode][i]``: 1-based rank where question i was found, 0 when not in the top k.
    ``hits[mode][i]``: the chunks retrieved for question i. ``seconds[mode]``: wall time.
    """

    collection: str
    top_k: int
    questions: list[Question]
    modes: list[str]
    ranks: dict[str, list[int]] = field(default_factory=dict)
    hits: dict[str, list[list[Hit]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def metrics(self, mode: str) -> dict[str, float]:
        """``{"recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"}`` for one mode."""
        return metrics_from_ranks(self.ranks[mode])

    def recall_curve(self, mode: str) -> list[float]:
        """recall@k for k = 1..top_k (list index k-1)."""
        r = np.asarray(self.ranks[mode])
        return [float(((r >= 1) & (r <= k)).mean()) if len(r) else 0.0 for k in range(1, self.top_k + 1)]

    def as_dict(self) -> dict:
        """``{mode: metrics, ..., "questions": n}`` (the CLI's JSON)."""
        out: dict = {mode: self.metrics(mode) for mode in self.modes}
        out["questions"] = len(self.questions)
        return out


# --- question sets ----------------------------------------------------------------------------
def load_questions(path: Path) -> list[Question]:
    """Read a JSONL question set (see module docstring). Raises DocumentError naming the file
    and line for invalid JSON, a missing ``question``, or neither expected field."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DocumentError(f"{path.name}: cannot read the question set ({exc})") from exc
    return parse_questions(lines, name=path.name)


def parse_questions(lines: Sequence[str], *, name: str = "questions") -> list[Question]:
    """Parse JSONL lines (blank lines skipped) into Questions; errors as :func:`load_questions`."""
    out: list[Question] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DocumentError(f"{name} line {number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict) or not str(record.get("question") or "").strip():
            raise DocumentError(f"{name} line {number}: needs a non-empty \"question\"")
        source = record.get("expected_source")
        text = record.get("expected_text")
        if source is None and text is None and record.get("title") and record.get("answers"):
            source, text = f"{record['title']}.md", record["answers"][0]
        if not source and not text:
            raise DocumentError(f"{name} line {number}: needs \"expected_source\" and/or \"expected_text\"")
        out.append(Question(str(record["question"]), source or None, text or None, str(record.get("id", number))))
    if not out:
        raise DocumentError(f"{name}: no questions in the file")
    return out


def save_questions(questions: Sequence[Question], path: Path) -> Path:
    """Write questions as JSONL (fields that are None left out); returns ``path``."""
    path = Path(path)
    path.write_text(to_jsonl(questions), encoding="utf-8")
    return path


def to_jsonl(questions: Sequence[Question]) -> str:
    """Questions as JSONL text."""
    rows = ({k: v for k, v in asdict(q).items() if v not in (None, "")} for q in questions)
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def squad_questions(corpus_dir: Path, n: int | None = None) -> list[Question]:
    """SQuAD dev questions (``<corpus_dir>/squad/dev.jsonl`` or ``<corpus_dir>/dev.jsonl``) as
    Questions: expected_source = ``f"{title}.md"``, expected_text = the first answer.

    With ``n``, a deterministic sample spread evenly over every article: each article gets
    n // articles questions (the first n % articles one more), at evenly spaced positions in
    its question list. Raises DocumentError when dev.jsonl is missing."""
    corpus_dir = Path(corpus_dir)
    path = corpus_dir / "squad" / "dev.jsonl"
    if not path.exists():
        path = corpus_dir / "dev.jsonl"
    if not path.exists():
        raise DocumentError(f"no SQuAD dev.jsonl under {corpus_dir}")
    by_title: dict[str, list[Question]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            by_title.setdefault(r["title"], []).append(Question(r["question"], f"{r['title']}.md", r["answers"][0], r["id"]))
    if n is None:
        return [q for qs in by_title.values() for q in qs]
    out: list[Question] = []
    titles = list(by_title)
    for i, title in enumerate(titles):
        qs = by_title[title]
        quota = min(len(qs), n // len(titles) + (1 if i < n % len(titles) else 0))
        if quota:
            out.extend(qs[int(j)] for j in np.linspace(0, len(qs) - 1, quota).round().astype(int))
    return out


_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def generate_questions(store: Store, collection: str, n: int, *, seed: int = 0) -> list[Question]:
    """A **self-retrieval sanity set** from a collection's own chunks: for up to ``n`` chunks
    (documents visited in a seeded random order, round-robin, so every document contributes) one
    sentence of 6-40 words is the question, expected_source is the chunk's document and
    expected_text the sentence itself. It checks that search finds text that is in the
    collection; it says little about real questions, which share fewer words with the answer.
    Raises StoreError when the collection does not exist."""
    rng = random.Random(seed)
    documents = store.documents(collection)
    rng.shuffle(documents)
    pools: dict[str, list[Hit]] = {}
    out: list[Question] = []
    seen: set[str] = set()
    while len(out) < n and documents:
        progressed = False
        for doc in list(documents):
            if len(out) >= n:
                break
            if doc.document_id not in pools:
                pools[doc.document_id] = store.document_chunks(collection, doc.document_id)
                rng.shuffle(pools[doc.document_id])
            pool = pools[doc.document_id]
            while pool:
                chunk = pool.pop()
                sentences = [s.strip() for s in _SENTENCE.split(" ".join(chunk.text.split()))]
                sentences = [s for s in sentences if 6 <= len(s.split()) <= 40 and s not in seen]
                if sentences:
                    sentence = rng.choice(sentences)
                    seen.add(sentence)
                    out.append(Question(sentence, doc.source, sentence, f"{doc.source}#{chunk.chunk_index}"))
                    progressed = True
                    break
            if not pool:
                documents.remove(doc)
        if not progressed:
            break
    return out


# --- metrics ------------------------------------------------------------------------------------
def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


def is_relevant(hit: Hit, question: Question) -> bool:
    """True when ``hit`` comes from the expected source (its ``source`` or ``file_name``) and
    contains the expected text (case-insensitive, whitespace collapsed), for whichever is given."""
    if question.expected_source and question.expected_source not in (hit.source, hit.file_name):
        return False
    if question.expected_text and _norm(question.expected_text) not in _norm(hit.text):
        return False
    return True


def found_rank(hits: Sequence[Hit], question: Question) -> int:
    """1-based rank of the first relevant hit, 0 when none is relevant."""
    for rank, hit in enumerate(hits, start=1):
        if is_relevant(hit, question):
            return rank
    return 0


def metrics_from_ranks(ranks: Sequence[int], ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """recall@k for each k, MRR@10 and nDCG@10 from per-question found ranks (0 = not found);
    definitions in the module docstring. Empty input gives zeros."""
    r = np.asarray(ranks, dtype=float)
    found = r >= 1
    out = {f"recall@{k}": float((found & (r <= k)).mean()) if len(r) else 0.0 for k in ks}
    top10 = found & (r <= 10)
    safe = np.where(top10, r, 1.0)
    out["mrr@10"] = float(np.where(top10, 1.0 / safe, 0.0).mean()) if len(r) else 0.0
    out["ndcg@10"] = float(np.where(top10, 1.0 / np.log2(safe + 1.0), 0.0).mean()) if len(r) else 0.0
    return out


class _QueryCache:
    """Wraps an Embedder so that questions embedded in one batch are not embedded again by each
    mode (same vectors as ``embedder.encode`` one at a time)."""

    def __init__(self, embedder: Embedder, texts: Sequence[str]):
        self.embedder = embedder
        unique = list(dict.fromkeys(texts))
        self.vectors = dict(zip(unique, embedder.encode(unique))) if unique else {}

    def encode(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in texts if t not in self.vectors]
        if missing:
            self.vectors.update(zip(missing, self.embedder.encode(missing)))
        return np.stack([self.vectors[t] for t in texts])

    def __getattr__(self, name):
        return getattr(self.embedder, name)


def evaluate(
    questions: Sequence[Question],
    *,
    settings: Settings,
    store: Store,
    embedder: Embedder,
    collection: str | None = None,
    modes: Sequence[str] = MODES,
    top_k: int = 10,
    progress: Callable[[str, int, int], None] | None = None,
    fusion: str = "convex",
) -> EvalReport:
    """Run every question through :func:`workbench.retrieval.search.search` in each mode and record where
    the expected passage was found. ``top_k`` (>= 10 for MRR@10/nDCG@10 to mean what they say)
    chunks are retrieved per question. ``progress(mode, done, total)`` is called as it goes;
    ``fusion`` is passed to hybrid search.
    Raises StoreError when the collection does not exist, ValueError for an unknown mode."""
    name = collection or settings.collection_name
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise InvalidRequestError(f"unknown search mode(s) {', '.join(unknown)}; use {', '.join(MODES)}")
    store.get_collection(name)
    report = EvalReport(collection=name, top_k=top_k, questions=list(questions), modes=list(modes))
    cached = _QueryCache(embedder, [q.question for q in questions]) if set(modes) - {"keyword"} else embedder
    for mode in modes:
        t0 = time.perf_counter()
        ranks, hits = [], []
        for i, q in enumerate(questions):
            found = search(q.question, settings=settings, store=store, embedder=cached, collection=name, top_k=top_k, mode=mode, fusion=fusion)
            hits.append(found)
            ranks.append(found_rank(found, q))
            if progress is not None and (i + 1) % 25 == 0:
                progress(mode, i + 1, len(questions))
        report.ranks[mode], report.hits[mode] = ranks, hits
        report.seconds[mode] = time.perf_counter() - t0
        if progress is not None:
            progress(mode, len(questions), len(questions))
    return report
