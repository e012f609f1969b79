"""A kept conversation as a file: Markdown (answers with their numbered citations and a Sources
list) or JSON (everything stored)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict

from workbench.answer.conversations import SCHEMA_VERSION, Citation, Conversation

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|<>~$])")


def _md(text: str) -> str:
    """Markdown-inert text: links, images, HTML and emphasis in stored text stay literal."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


def _quote(text: str) -> str:
    return "\n".join("> " + _md(line) if line.strip() else ">" for line in str(text).strip().splitlines()) or ">"


def citation_label(c: Citation) -> str:
    """``file.pdf, page 3, chunk 7`` (plain text; escape it before rendering as markdown)."""
    return f"{c.file_name}, page {c.page}, chunk {c.chunk_index}"


def export_markdown(conv: Conversation) -> str:
    """The conversation as a Markdown document: title, settings, then per turn the question (a
    quote), the answer as the model wrote it with its [n] citations, any error, and a numbered
    Sources list (file, page, chunk, score, the cited text as a quote; gone chunks marked).
    Stored text other than the answers is escaped so it cannot turn into links or images."""
    lines = [f"# {_md(conv.title or 'Untitled conversation')}", "",
             f"Conversation `{conv.id}` · collection `{conv.collection}` · model `{conv.model}` · "
             f"retrieval {conv.search_mode} · created {conv.created_at} · updated {conv.updated_at}", ""]
    for turn in conv.turns:
        lines += [f"## {turn.number}. Question", "", _quote(turn.question), "", "**Answer**", ""]
        lines += [turn.answer.strip() if turn.answer.strip() else "_No answer (retrieval only, or the model failed)._", ""]
        if turn.error:
            fixes = f" To fix: {'; '.join(turn.error_fixes)}" if turn.error_fixes else ""
            lines += [f"**Error:** {_md(turn.error + fixes)}", ""]
        if turn.citations:
            lines += ["**Sources**", ""]
            for c in turn.citations:
                gone = " — *no longer in the collection*" if c.present is False else ""
                lines += [f"{c.number}. \\[{c.number}\\] {_md(citation_label(c))} (score {c.score:.3f}, "
                          f"{c.mode}){gone}", "", "   " + _quote(c.text).replace("\n", "\n   "), ""]
        lines += [f"_{_md(turn.model)} · {_md(turn.collection)} · {turn.search_mode} · {turn.created_at}_", ""]
    return "\n".join(lines).rstrip() + "\n"


def export_json(conv: Conversation) -> str:
    """The conversation as JSON: ``{"format": "rag-workbench-conversation", "schema": 1, id,
    title, collection, model, search_mode, created_at, updated_at, turn_count, turns: [{id,
    number, question, answer, citations: [{number, chunk_id, document_id, file_name, source,
    page, chunk_index, text, score, mode, vector_score, keyword_score, rank, section, present}],
    model, collection, search_mode, created_at, timings, error, error_fixes}]}``."""
    return json.dumps({"format": "rag-workbench-conversation", "schema": SCHEMA_VERSION, **asdict(conv)},
                      ensure_ascii=False, indent=2) + "\n"
