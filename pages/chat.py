"""Chat page: questions answered by an Ollama model from the retrieved chunks, with citations."""

from pathlib import Path

import streamlit as st

from workbench.answer import chat
from workbench.answer import ollama as ollama_api
from workbench.errors import OllamaError, WorkbenchError
from ui import collection_picker, get_settings, md_escape, require_embedder, require_store, score_text, search_mode_picker

HISTORY = "chat_history"
COLLECTIONS_PAGE = "pages/collections.py"
_HAS_COLLECTIONS_PAGE = (Path(__file__).parent / "collections.py").exists()


@st.cache_data(ttl=15, show_spinner=False)
def ollama_models(base_url: str) -> tuple[list[str], dict | None]:
    """(models, error) for the server at base_url; the error is cached too (15 s) so a dead
    host does not cost a connect timeout on every rerun."""
    try:
        return ollama_api.list_models(get_settings()), None
    except OllamaError as exc:
        return [], {"what": getattr(exc, "what", str(exc)), "fixes": getattr(exc, "fixes", [])}


def show_ollama_error(error: dict) -> None:
    fixes = "\n".join(f"- {fix}" for fix in error["fixes"])
    st.error(f"**Ollama: {error['what']}**" + (f"\n\nHow to fix:\n{fixes}" if fixes else ""), icon="🚫")


def show_citations(turn: dict, show_context: bool) -> None:
    citations = turn["citations"]
    if not citations:
        st.caption("No passages were retrieved for this question.")
    else:
        st.caption("Sources" if turn.get("content") else "Retrieved passages")
    for n, hit in enumerate(citations, 1):
        label = f"[{n}] {md_escape(hit.file_name)} · page {hit.page} · {score_text(hit)}"
        with st.expander(label):
            st.text(hit.text)
            if _HAS_COLLECTIONS_PAGE:
                st.page_link(COLLECTIONS_PAGE, label="Open in Collections", icon="🗂️",
                             query_params={"collection": turn["collection"], "document": hit.document_id,
                                           "chunk": hit.chunk_id})
    if show_context and turn.get("prompt_info"):
        info = turn["prompt_info"]
        with st.expander("Retrieved context and prompt budget"):
            st.caption(f"{info['retrieved']} retrieved, {len(citations)} in the prompt "
                       f"(≈{info['tokens']} of {info['budget']} tokens), {len(info['dropped'])} dropped "
                       f"to fit CONTEXT_WINDOW={info['context_window']}")
            for hit in info["dropped"]:
                st.text(f"dropped: {hit.file_name}, page {hit.page}, score {hit.score:.3f} ({hit.mode})")
    if turn.get("timings"):
        st.caption(turn["timings"])


def timing_line(stream: chat.ChatStream) -> str:
    t = stream.timings
    parts = [stream.model, f"retrieval {t.retrieval_s:.2f} s"]
    if t.first_token_s is not None:
        parts.append(f"first token {t.first_token_s:.2f} s")
    if t.eval_count and t.tokens_per_s:
        parts.append(f"{t.eval_count} tokens at {t.tokens_per_s:.1f} tok/s")
    return " · ".join(parts)


def prompt_history(history: list[dict]) -> list[dict[str, str]]:
    """Earlier question/answer pairs that got an answer, as chat messages."""
    messages: list[dict[str, str]] = []
    for question, reply in zip(history[::2], history[1::2]):
        if reply.get("content") and not reply.get("error"):
            messages += [{"role": "user", "content": question["content"]},
                         {"role": "assistant", "content": reply["content"]}]
    return messages


st.title("💬 Chat")
settings = get_settings()
store = require_store()
history: list[dict] = st.session_state.setdefault(HISTORY, [])

with st.sidebar:
    st.subheader("Chat")
    collection = collection_picker(key="chat-collection")
    models, models_error = ollama_models(settings.ollama_base_url)
    if models:
        default = ollama_api.resolve_model(settings.ollama_model, models)
        model = st.selectbox("Model", models, index=models.index(default) if default else 0, key="chat-model")
    else:
        model = st.text_input("Model", settings.ollama_model, key="chat-model-name")
    top_k = st.slider("top_k", 1, max(20, settings.top_k), settings.top_k, key="chat-top-k")
    search_mode = search_mode_picker(key="chat-search-mode", horizontal=False)
    temperature = st.slider("Temperature", 0.0, 1.5, chat.DEFAULT_TEMPERATURE, 0.05, key="chat-temperature")
    show_context = st.toggle("Show retrieved context", key="chat-show-context")
    retrieval_only = st.toggle("Retrieval only (no LLM)", key="chat-retrieval-only")
    left, right = st.columns(2)
    if left.button("New chat", icon="🆕", key="chat-new"):
        history.clear()
    if right.button("Models", icon="🔄", key="chat-refresh", help="Ask Ollama again for its models"):
        ollama_models.clear()
        st.rerun()
    st.caption(f"Ollama: `{settings.ollama_base_url}`")

if models_error and not retrieval_only:
    show_ollama_error(models_error)
    st.caption("Questions still retrieve passages; the answer will fail until Ollama is reachable.")
elif models and not ollama_api.resolve_model(settings.ollama_model, models):
    st.warning(f"OLLAMA_MODEL {md_escape(settings.ollama_model)} is not pulled on the server; "
               f"using {md_escape(model)}. Run `ollama pull {settings.ollama_model}` to get it.")

for turn in history:
    with st.chat_message(turn["role"]):
        if turn["role"] == "user":
            st.markdown(md_escape(turn["content"]))
            continue
        if turn.get("content"):
            st.markdown(turn["content"])
        if turn.get("error"):
            show_ollama_error(turn["error"])
        show_citations(turn, show_context)

question = st.chat_input("Ask about your documents…", disabled=not collection)
if not question:
    if not history:
        st.info("Ask a question: the answer is written from the passages retrieved from the collection, "
                "with numbered citations.")
    st.stop()

earlier = prompt_history(history)
history.append({"role": "user", "content": question})
with st.chat_message("user"):
    st.markdown(md_escape(question))

with st.chat_message("assistant"):
    turn = {"role": "assistant", "content": "", "citations": [], "collection": collection, "error": None}
    try:
        stream = chat.ask_stream(question, settings=settings, store=store, embedder=require_embedder(),
                                 collection=collection, top_k=top_k, model=model, temperature=temperature,
                                 history=earlier, mode="retrieval" if retrieval_only else "rag",
                                 search_mode=search_mode)
    except (WorkbenchError, ValueError) as exc:
        st.error(str(exc))
        turn["error"] = {"what": str(exc), "fixes": []}
        history.append(turn)
        st.stop()
    if retrieval_only:
        st.info("Retrieval only: no model was asked.")
    else:
        try:
            st.write_stream(stream)
        except OllamaError as exc:
            turn["error"] = {"what": getattr(exc, "what", str(exc)), "fixes": getattr(exc, "fixes", [])}
            show_ollama_error(turn["error"])
            st.caption("The passages retrieved for your question:")
    turn.update(
        content=stream.text,
        citations=stream.citations,
        timings=timing_line(stream) if stream.done and not retrieval_only else "",
        prompt_info={"retrieved": len(stream.retrieved), "dropped": stream.prompt.dropped,
                     "tokens": stream.prompt.estimated_tokens, "budget": stream.prompt.budget,
                     "context_window": stream.prompt.context_window},
    )
    show_citations(turn, show_context)
    history.append(turn)
