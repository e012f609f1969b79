"""The chat prompt: a system prompt and the question with numbered context passages, fitted
to the model's context window (token budget)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


from workbench.errors import ConfigError
from workbench.documents import Hit

#: Sampling temperature of an answer: low, so answers stick to the retrieved text.
DEFAULT_TEMPERATURE = 0.1

SYSTEM_PROMPT = (
    "You are a careful assistant that answers questions about the user's documents.\n"
    "Answer ONLY from the numbered context passages in the user's message; do not use outside "
    "knowledge and do not guess.\n"
    "Cite the passages you used with their numbers in square brackets right after the "
    "statement they support, like [1] or [2][3].\n"
    "If the passages do not contain the answer, say that the documents do not answer the "
    "question.\n"
    "Answer concisely, in the language of the question."
)

MESSAGE_OVERHEAD_TOKENS = 8  # role markers of a chat template (Llama 3 uses 4-5 per message)
SAFETY_FACTOR = 0.9  # WordPiece counts are an estimate of the chat model's tokens: keep 10% spare

# --------------------------------------------------------------------------------------------
# prompt
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prompt:
    """Messages for ``/api/chat`` and what went into them.

    hits: the chunks put in the context, in the order of their numbers [1], [2], ...
    dropped: retrieved chunks left out because they did not fit the budget.
    history_used: number of history messages kept (the oldest are dropped first).
    estimated_tokens: estimated prompt size in tokens; budget: tokens the prompt may use
    (= (context_window - answer_tokens) * SAFETY_FACTOR).
    """

    messages: list[dict[str, str]]
    hits: list[Hit]
    dropped: list[Hit]
    history_used: int
    estimated_tokens: int
    budget: int
    context_window: int
    answer_tokens: int


def _batch_counter(embedder_or_token_counter: Any) -> Callable[[list[str]], list[int]]:
    """texts -> token counts. An Embedder's tokenizer is called once for the whole list (one
    call per text costs ~1 ms each); a plain function ``text -> int`` is called per text."""
    tokenizer = getattr(embedder_or_token_counter, "tokenizer", None)
    if tokenizer is not None and callable(tokenizer):
        def batch(texts: list[str]) -> list[int]:
            if not texts:
                return []
            return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
        return batch
    single = getattr(embedder_or_token_counter, "count_tokens", embedder_or_token_counter)
    if not callable(single):
        raise TypeError("expected an Embedder (with .count_tokens) or a function text -> token count")
    return lambda texts: [int(single(t)) for t in texts]


def passage_header(number: int, hit: Hit) -> str:
    """``[n] file.pdf, page 3 — section``."""
    return f"[{number}] {hit.file_name}, page {hit.page}" + (f" — {hit.section}" if hit.section else "")


def format_passage(number: int, hit: Hit) -> str:
    """The passage header, then the chunk text on the next line."""
    return f"{passage_header(number, hit)}\n{hit.text.strip()}"


def build_messages(
    question: str,
    hits: Sequence[Hit],
    history: Sequence[dict[str, str]] = (),
    *,
    embedder_or_token_counter: Any,
    context_window: int,
    answer_tokens: int | None = None,
    system_prompt: str = SYSTEM_PROMPT,
) -> Prompt:
    """Build the ``/api/chat`` messages: system prompt, earlier turns, then one user message
    holding the numbered passages and the question, fitted into ``context_window`` by tokens.

    Token counts come from the *embedding* model's tokenizer (``Embedder.count_tokens``, MiniLM
    WordPiece; a Hit's stored ``token_count`` is used when set), an approximation of the chat model's own tokenizer, which the Ollama API does not
    expose; for English prose the two agree within ~10-15 %, so only ``SAFETY_FACTOR`` (90 %) of
    the budget is used and each message is charged ``MESSAGE_OVERHEAD_TOKENS`` for its
    chat-template markers.

    Budget: ``(context_window - answer_tokens) * SAFETY_FACTOR`` tokens, ``answer_tokens``
    defaulting to ``min(1024, context_window // 4)`` reserved for the reply. The system prompt and
    question always go in; history (``[{"role": "user"|"assistant", "content": str}]``) keeps its
    newest messages within half of what is left; passages then fill the rest in rank order
    (a passage that does not fit is dropped and smaller later ones may still go in).

    Raises ConfigError when the question and system prompt alone exceed the budget.
    """
    count = _batch_counter(embedder_or_token_counter)
    answer_tokens = min(1024, context_window // 4) if answer_tokens is None else answer_tokens
    budget = int((context_window - answer_tokens) * SAFETY_FACTOR)
    head, tail = "Context passages:\n\n", f"\n\nQuestion: {question.strip()}"
    history = list(history)
    hits = list(hits)
    # One tokenizer call for everything. A hit from the store carries its chunk's token_count
    # (same tokenizer), so only its header is counted; others are counted whole. Passages are
    # counted with their rank as number and charged one token more in case renumbering (after
    # a drop) changes the header's tokens.
    counts = count([system_prompt, head, tail, *(m["content"] for m in history),
                    *(passage_header(i, h) if h.token_count > 0 else format_passage(i, h)
                      for i, h in enumerate(hits, 1))])
    counts[3 + len(history):] = [c + max(h.token_count, 0) for c, h in zip(counts[3 + len(history):], hits)]
    fixed, history_costs, hit_costs = counts[:3], counts[3:3 + len(history)], counts[3 + len(history):]
    used = sum(fixed) + 2 * MESSAGE_OVERHEAD_TOKENS
    if used > budget:
        raise ConfigError(
            f"the question needs about {used} tokens but CONTEXT_WINDOW={context_window} leaves "
            f"{budget} for the prompt; shorten the question or raise CONTEXT_WINDOW"
        )

    kept: list[dict[str, str]] = []
    history_budget = (budget - used) // 2
    history_used_tokens = 0
    for message, tokens in zip(reversed(history), reversed(history_costs)):
        cost = tokens + MESSAGE_OVERHEAD_TOKENS
        if history_used_tokens + cost > history_budget:
            break
        kept.insert(0, {"role": message["role"], "content": message["content"]})
        history_used_tokens += cost
    used += history_used_tokens

    chosen: list[Hit] = []
    dropped: list[Hit] = []
    blocks: list[str] = []
    for hit, tokens in zip(hits, hit_costs):
        cost = tokens + 1 + 2  # renumbering slack + the blank line between passages
        if used + cost <= budget:
            chosen.append(hit)
            blocks.append(format_passage(len(chosen), hit))
            used += cost
        else:
            dropped.append(hit)
    body = "\n\n".join(blocks) if blocks else "(no passages were found in the documents)"
    messages = [{"role": "system", "content": system_prompt}, *kept,
                {"role": "user", "content": head + body + tail}]
    return Prompt(messages, chosen, dropped, len(kept), used, budget, context_window, answer_tokens)
