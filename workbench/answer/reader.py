"""Extractive question answering (the reader): find the span of some texts that answers a
question, with a confidence score, or say that nothing scores high enough.

transformers 5 removed the ``question-answering`` pipeline, so the model is loaded with
``AutoTokenizer`` + ``AutoModelForQuestionAnswering`` and its start/end logits are decoded by
``decode_spans``, which follows Hugging Face's own QA post-processing. Long texts are read in
overlapping windows (``stride``), and the best span over every window and context wins.
Weights come from disk only (QA_MODEL as a folder, or MODEL_CACHE_DIR/<name>, filled by
``python -m workbench prefetch``).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from workbench.config import Settings
from workbench.errors import WorkbenchError
from workbench.models.qa_model import QaModel, load_qa_model

log = logging.getLogger(__name__)

#: Defaults of Hugging Face's QA examples (run_qa.py / utils_qa.py): 384-token windows with a
#: 128-token stride, 20 best start and end logits, answers of at most 30 tokens.
MAX_LENGTH = 384
STRIDE = 128
N_BEST = 20
MAX_ANSWER_LENGTH = 30


# --- span decoding ------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """A candidate answer in one window: token indices (inclusive), character offsets in the
    context (end exclusive), and ``score`` = P(start) · P(end) in [0, 1]."""

    start_token: int
    end_token: int
    start: int
    end: int
    score: float


def _softmax(logits: np.ndarray, keep: np.ndarray) -> np.ndarray:
    masked = np.where(keep, logits, -np.inf)
    exp = np.exp(masked - masked.max())
    return exp / exp.sum()


def decode_spans(
    start_logits: Sequence[float],
    end_logits: Sequence[float],
    offset_mapping: Sequence[tuple[int, int] | None],
    context_mask: Sequence[bool],
    *,
    n_best: int = N_BEST,
    max_answer_length: int = MAX_ANSWER_LENGTH,
    null_index: int | None = None,
) -> list[Span]:
    """Turn one window's start/end logits into candidate answer spans, best first.

    Inputs are per token of the window, all of length n: logits (floats), ``offset_mapping``
    ((char start, char end) in the context, from a fast tokenizer; None or an empty span for
    tokens that are not text) and ``context_mask`` (True for tokens of the context, i.e.
    ``sequence_ids == 1`` with the question first).

    Follows ``postprocess_qa_predictions`` in Hugging Face transformers
    ``examples/pytorch/question-answering/utils_qa.py`` (also the course, chapter 7, "Question
    answering"): take the ``n_best`` highest start and end logits, keep pairs whose tokens are
    both in the context, with end >= start and at most ``max_answer_length`` tokens, and map
    them to characters with the offsets. As the transformers v4 ``QuestionAnsweringPipeline``
    (``select_starts_ends``/``decode_spans``) does, tokens outside the context are masked
    *before* the top-n selection (so a question token with a huge logit cannot crowd out the
    context) and the score is P(start) · P(end) with each a softmax over the context tokens
    (plus ``null_index``, the [CLS] token, when given, as the pipeline keeps it): a probability
    in [0, 1] comparable across windows. Ties keep the order of the summed logits.
    """
    start = np.asarray(start_logits, dtype=np.float64).reshape(-1)
    end = np.asarray(end_logits, dtype=np.float64).reshape(-1)
    n = len(start)
    if not (len(end) == len(offset_mapping) == len(context_mask) == n):
        raise ValueError(
            f"decode_spans: lengths differ (start {n}, end {len(end)}, offsets {len(offset_mapping)}, "
            f"mask {len(context_mask)})"
        )
    valid = np.array(
        [bool(m) and off is not None and len(off) == 2 and off[1] > off[0] for m, off in zip(context_mask, offset_mapping)],
        dtype=bool,
    )
    if n == 0 or not valid.any() or n_best < 1 or max_answer_length < 1:
        return []
    keep = valid.copy()
    if null_index is not None:
        keep[null_index] = True
    p_start, p_end = _softmax(start, keep), _softmax(end, keep)
    k = min(n_best, int(valid.sum()))
    starts = np.argsort(np.where(valid, start, -np.inf), kind="stable")[::-1][:k]
    ends = np.argsort(np.where(valid, end, -np.inf), kind="stable")[::-1][:k]
    spans = []
    for s in starts:
        for e in ends:
            if e < s or e - s + 1 > max_answer_length:
                continue
            spans.append(
                (start[s] + end[e], Span(int(s), int(e), int(offset_mapping[s][0]), int(offset_mapping[e][1]), float(p_start[s] * p_end[e])))
            )
    spans.sort(key=lambda item: -item[0])
    return [span for _, span in spans]


# --- answering ----------------------------------------------------------------------------


@dataclass(frozen=True)
class QaContext:
    """A text to search for the answer. ``page``: 1-based page (None if unknown);
    ``offset``: where ``text`` starts in its page's text (chunks), in characters."""

    text: str
    page: int | None = None
    source: str = ""
    chunk_id: str = ""
    ocr: bool = False
    offset: int = 0


@dataclass(frozen=True)
class Answer:
    """The best answer span. ``text == context[start:end]`` (character offsets in ``context``,
    end exclusive); ``score``: P(start)·P(end) in [0, 1] (see ``decode_spans``);
    ``page_start``/``page_end``: the same span in the page's text (``offset + start``)."""

    text: str
    score: float
    start: int
    end: int
    context: str
    page: int | None = None
    source: str = ""
    chunk_id: str = ""
    ocr: bool = False
    page_start: int = 0
    page_end: int = 0

    def excerpt(self, chars: int = 300) -> tuple[str, str, str]:
        """(before, answer, after): up to ``chars`` characters of context on each side."""
        lo, hi = max(0, self.start - chars), min(len(self.context), self.end + chars)
        before = ("…" if lo else "") + self.context[lo : self.start]
        after = self.context[self.end : hi] + ("…" if hi < len(self.context) else "")
        return before, self.context[self.start : self.end], after


@dataclass(frozen=True)
class QaResult:
    """Outcome of one question. ``answer`` is None when no span scored at least
    ``min_score`` (QA_MIN_SCORE); ``best_score`` is the best candidate's score either way
    (0.0 without candidates). ``windows``: model windows read; ``seconds``: wall time."""

    question: str
    answer: Answer | None
    min_score: float
    best_score: float = 0.0
    contexts: int = 0
    windows: int = 0
    seconds: float = 0.0
    alternatives: tuple[Answer, ...] = field(default=())

    @property
    def found(self) -> bool:
        return self.answer is not None

    @property
    def message(self) -> str:
        """One line for users: the answer with its score, or why there is none."""
        if self.answer is not None:
            where = f" (page {self.answer.page})" if self.answer.page else ""
            return f"{self.answer.text}{where} — score {self.answer.score:.2f}"
        if not self.contexts:
            return "no answer: there was no text to search"
        return (
            f"no answer scored above QA_MIN_SCORE={self.min_score:.2f} "
            f"(best candidate {self.best_score:.3f}); the document may not contain it"
        )


def _as_context(item) -> QaContext:
    if isinstance(item, QaContext):
        return item
    if isinstance(item, str):
        return QaContext(item)
    raise TypeError(f"contexts must be str or QaContext, not {type(item).__name__}")


def answer_question(
    question: str,
    contexts: Sequence[QaContext | str],
    *,
    settings: Settings,
    qa: QaModel | None = None,
    min_score: float | None = None,
    max_length: int = MAX_LENGTH,
    stride: int = STRIDE,
    n_best: int = N_BEST,
    max_answer_length: int = MAX_ANSWER_LENGTH,
    batch_size: int = 8,
) -> QaResult:
    """Find the best answer span to ``question`` in ``contexts``.

    Each context is tokenized with the question first and split into windows of at most
    ``max_length`` tokens overlapping by ``stride`` tokens (``return_overflowing_tokens``), so
    long contexts are read whole; spans are decoded per window (``decode_spans``) and the best
    over all windows and contexts wins. Returns ``answer=None`` when the best score is below
    ``min_score`` (default QA_MIN_SCORE): nothing is invented.

    Raises ModelMissingError/ConfigError from ``load_qa_model``; WorkbenchError when the
    question is empty or too long to leave room for context.
    """
    import torch

    started = time.perf_counter()
    threshold = settings.qa_min_score if min_score is None else float(min_score)
    question = " ".join(question.split())
    if not question:
        raise WorkbenchError("the question is empty")
    items = [c for c in map(_as_context, contexts) if c.text.strip()]
    if not items:
        return QaResult(question, None, threshold)
    qa = qa or load_qa_model(settings)
    tokenizer, model = qa.tokenizer, qa.model
    limit = getattr(model.config, "max_position_embeddings", max_length) or max_length
    max_length = min(max_length, limit)
    with qa.lock:  # the tokenizer is shared by the app's sessions (QaModel.lock)
        question_tokens = len(tokenizer(question, add_special_tokens=False)["input_ids"])
        room = max_length - question_tokens - tokenizer.num_special_tokens_to_add(pair=True)
        if room < 32:
            raise WorkbenchError(
                f"the question is too long ({question_tokens} tokens); keep it under {max_length // 2} tokens"
            )
        stride = max(0, min(stride, room // 2))
        encoded = tokenizer(
            [question] * len(items),
            [c.text for c in items],
            truncation="only_second",
            max_length=max_length,
            stride=stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding="longest",
            return_tensors="pt",
        )
    windows = int(encoded["input_ids"].shape[0])
    accepted = set(inspect.signature(model.forward).parameters)
    inputs = {k: v for k, v in encoded.items() if k in ("input_ids", "attention_mask", "token_type_ids") and k in accepted}
    start_all, end_all = [], []
    with torch.inference_mode():
        for lo in range(0, windows, batch_size):
            out = model(**{k: v[lo : lo + batch_size] for k, v in inputs.items()})
            start_all.append(out.start_logits.float().numpy())
            end_all.append(out.end_logits.float().numpy())
    start_logits, end_logits = np.concatenate(start_all), np.concatenate(end_all)
    cls_id = tokenizer.cls_token_id
    candidates: list[tuple[float, int, Span]] = []
    for w in range(windows):
        sequence_ids = encoded.sequence_ids(w)
        ids = encoded["input_ids"][w].tolist()
        spans = decode_spans(
            start_logits[w],
            end_logits[w],
            [tuple(o) for o in encoded["offset_mapping"][w].tolist()],
            [sid == 1 for sid in sequence_ids],
            n_best=n_best,
            max_answer_length=max_answer_length,
            null_index=ids.index(cls_id) if cls_id is not None and cls_id in ids else None,
        )
        context_index = int(encoded["overflow_to_sample_mapping"][w])
        candidates.extend((s.score, context_index, s) for s in spans[:3])
    candidates.sort(key=lambda c: -c[0])
    answers: list[Answer] = []
    seen: set[tuple[int, int, int]] = set()
    for score, index, span in candidates:
        key = (index, span.start, span.end)
        if key in seen:
            continue  # the same span read in two overlapping windows
        seen.add(key)
        c = items[index]
        answers.append(
            Answer(
                text=c.text[span.start : span.end],
                score=score,
                start=span.start,
                end=span.end,
                context=c.text,
                page=c.page,
                source=c.source,
                chunk_id=c.chunk_id,
                ocr=c.ocr,
                page_start=c.offset + span.start,
                page_end=c.offset + span.end,
            )
        )
        if len(answers) == 4:
            break
    best = answers[0].score if answers else 0.0
    above = [a for a in answers if a.score >= threshold]
    return QaResult(
        question,
        above[0] if above else None,
        threshold,
        best_score=best,
        contexts=len(items),
        windows=windows,
        seconds=time.perf_counter() - started,
        alternatives=tuple(above[1:]),
    )
