"""Chat page: questions answered by an Ollama model from the retrieved chunks, with citations.

Conversations are kept in the conversation database (workbench.answer.conversations): the open one is
the ``?conversation=ID`` query parameter, so a reload (or a bookmark) reopens it; the history on
screen is always read back from the database."""

import contextlib
from pathlib import Path

import streamlit as st

from ui import (collection_picker, get_settings, md_escape, require_conversations, require_embedder,
                require_store, safe_markdown, score_text, search_mode_picker, set_active_collection)
from workbench.answer import chat
from workbench.answer import ollama as ollama_api
from workbench.answer.conversations import (MAX_QUESTION_CHARS, MAX_TITLE_CHARS, ConversationError,
                                            ConversationNotFoundError)
from workbench.answer.conversation_export import export_json, export_markdown
from workbench.errors import OllamaError, WorkbenchError

PARAM = "conversation"  # query parameter naming the open conversation
PROMPT_INFO = "chat-prompt-info"  # turn id -> prompt budget of that answer (this session only)
INTERRUPTED = "the answer was interrupted before it was complete (a new question or a click stopped it)"
DOCUMENTS_PAGE = "views/documents.py"  # opens ?collection=&document=&chunk=
SOURCE_PAGE = "views/source.py"  # the same link: the cited chunk on its page
_HAS_DOCUMENTS_PAGE = (Path(__file__).parent / "documents.py").exists()
_HAS_SOURCE_PAGE = (Path(__file__).parent / "source.py").exists()


@st.cache_data(ttl=15, show_spinner=False)
def ollama_models(base_url: str) -> tuple[list[str], dict | None]:
    """(models, error) for the server at base_url; the error is cached too (15 s) so a dead
    host does not cost a connect timeout on every rerun."""
    try:
        return ollama_api.list_models(get_settings()), None
    except OllamaError as exc:
        return [], {"what": getattr(exc, "what", str(exc)), "fixes": getattr(exc, "fixes", [])}


def show_error(what: str, fixes=(), *, escape: bool = False, prefix: str = "Ollama: ") -> None:
    esc = md_escape if escape else str
    lines = "\n".join(f"- {esc(fix)}" for fix in fixes)
    st.error(f"**{prefix}{esc(what)}**" + (f"\n\nHow to fix:\n{lines}" if lines else ""), icon="🚫")


def show_turn(turn, show_context: bool) -> None:
    """One stored answer: text (inert markdown), error, citations, prompt budget, timings."""
    if turn.answer:
        st.markdown(safe_markdown(turn.answer))
    if turn.error:
        show_error(turn.error, turn.error_fixes, escape=True, prefix="")
    if not turn.citations:
        st.caption("No passages were retrieved for this question.")
    else:
        st.caption("Sources" if turn.answer else "Retrieved passages")
    for c in turn.citations:
        gone = c.present is False
        label = (f"[{c.number}] {md_escape(c.file_name)} · page {c.page} · {score_text(c)}"
                 + (" · no longer in the collection" if gone else ""))
        with st.expander(label, icon="⚠️" if gone else None):
            if gone:
                st.caption(f"This chunk is no longer in the collection `{turn.collection}` (its document was "
                           "re-ingested or deleted). Its text as it was cited:")
            st.text(c.text)
            params = {"collection": turn.collection, "document": c.document_id, "chunk": c.chunk_id}
            if _HAS_SOURCE_PAGE and not gone:
                st.page_link(SOURCE_PAGE, label="Open source page", icon="📑", query_params=params)
            if _HAS_DOCUMENTS_PAGE and not gone:
                st.page_link(DOCUMENTS_PAGE, label="Open in Documents", icon="📄", query_params=params)
    info = st.session_state.get(PROMPT_INFO, {}).get(turn.id)
    if show_context and info:
        with st.expander("Retrieved context and prompt budget"):
            st.caption(f"{info['retrieved']} retrieved, {len(turn.citations)} in the prompt "
                       f"(≈{info['tokens']} of {info['budget']} tokens), {len(info['dropped'])} dropped "
                       f"to fit CONTEXT_WINDOW={info['context_window']}")
            for hit in info["dropped"]:
                st.text(f"dropped: {hit.file_name}, page {hit.page}, score {hit.score:.3f} ({hit.mode})")
    if turn.answer and not turn.error and turn.timings:
        st.caption(timing_line(turn))


def timing_line(turn) -> str:
    t = turn.timings
    parts = [md_escape(turn.model), f"retrieval {t.get('retrieval_s') or 0:.2f} s"]
    if t.get("first_token_s") is not None:
        parts.append(f"first token {t['first_token_s']:.2f} s")
    if t.get("eval_count") and t.get("tokens_per_s"):
        parts.append(f"{t['eval_count']} tokens at {t['tokens_per_s']:.1f} tok/s")
    return " · ".join(parts)


def open_conversation(conversation_id: str | None) -> None:
    """Button callback: show that conversation (None: a new one, made by the first question)."""
    if conversation_id:
        st.query_params[PARAM] = conversation_id
    else:
        st.query_params.pop(PARAM, None)


def rename(conversation_id: str) -> None:
    try:
        require_conversations().rename(conversation_id, st.session_state[f"chat-title-{conversation_id}"])
    except ConversationError as exc:
        st.error(str(exc))


def delete(conversation_id: str) -> None:
    try:
        require_conversations().delete(conversation_id)
    except ConversationNotFoundError:
        pass  # deleted in another tab meanwhile
    st.session_state.pop("chat-following", None)
    open_conversation(None)


st.title("💬 Chat")
settings = get_settings()
store = require_store()
conversations = require_conversations()

conversation = None
if PARAM in st.query_params:
    try:
        conversation = conversations.get(st.query_params[PARAM], store=store)
    except ConversationNotFoundError as exc:
        st.warning(f"{md_escape(str(exc))}. Ask a question to start a new conversation.")
        open_conversation(None)
    except ConversationError as exc:
        st.error(str(exc))
        st.stop()
if conversation and st.session_state.get("chat-following") != conversation.id:
    # the first view of a conversation in this session: retrieve from its collection
    st.session_state["chat-following"] = conversation.id
    if conversation.collection and store.has_collection(conversation.collection):
        set_active_collection(conversation.collection)
        st.session_state.pop("chat-collection", None)

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
    left.button("New", icon="🆕", key="chat-new", help="Start a new conversation",
                on_click=open_conversation, args=(None,))
    if right.button("Models", icon="🔄", key="chat-refresh", help="Ask Ollama again for its models"):
        ollama_models.clear()
        st.rerun()
    st.caption(f"Ollama: `{settings.ollama_base_url}`")

    st.subheader("Conversations")
    if conversation:
        st.text_input("Title", conversation.title, max_chars=MAX_TITLE_CHARS, key=f"chat-title-{conversation.id}",
                      on_change=rename, args=(conversation.id,))
        md, js = st.columns(2)
        md.download_button("MD", export_markdown(conversation), f"conversation-{conversation.id}.md",
                           "text/markdown", key="chat-export-md", icon="⬇️", on_click="ignore",
                           help="Download as Markdown (answers with numbered citations, then the sources)")
        js.download_button("JSON", export_json(conversation), f"conversation-{conversation.id}.json",
                           "application/json", key="chat-export-json", icon="⬇️", on_click="ignore",
                           help="Download as JSON (every turn with its exact citations and timings)")
        st.button("Delete conversation", key="chat-delete", icon="🗑️", on_click=delete, args=(conversation.id,),
                  help="Delete this conversation and its turns from the conversation database")
    for c in conversations.list(limit=50):
        current = conversation is not None and c.id == conversation.id
        st.button(f"{md_escape(c.title or 'Untitled')} · {c.turn_count}", key=f"chat-open-{c.id}",
                  type="primary" if current else "tertiary", on_click=open_conversation, args=(c.id,),
                  help=f"{c.collection} · {c.model} · updated {c.updated_at[:16].replace('T', ' ')} UTC")

if models_error and not retrieval_only:
    show_error(models_error["what"], models_error["fixes"])
    st.caption("Questions still retrieve passages; the answer will fail until Ollama is reachable.")
elif models and not ollama_api.resolve_model(settings.ollama_model, models):
    st.warning(f"OLLAMA_MODEL {md_escape(settings.ollama_model)} is not pulled on the server; "
               f"using {md_escape(model)}. Run `ollama pull {settings.ollama_model}` to get it.")

for turn in conversation.turns if conversation else ():
    with st.chat_message("user"):
        st.markdown(md_escape(turn.question))
    with st.chat_message("assistant"):
        show_turn(turn, show_context)

question = st.chat_input("Ask about your documents…", disabled=not collection, max_chars=MAX_QUESTION_CHARS)
if not question:
    if not conversation or not conversation.turns:
        st.info("Ask a question: the answer is written from the passages retrieved from the collection, "
                "with numbered citations. Conversations are kept: reload the page, or reopen one from the "
                "sidebar.")
    st.stop()

if conversation is None:
    conversation = conversations.create(title=question, collection=collection, model=model, search_mode=search_mode)
    st.query_params[PARAM] = conversation.id
    st.session_state["chat-following"] = conversation.id
with st.chat_message("user"):
    st.markdown(md_escape(question))

with st.chat_message("assistant"):
    stream, error = None, None
    keep = dict(model=model, collection=collection, search_mode=search_mode)
    try:
        stream = chat.ask_stream(question, settings=settings, store=store, embedder=require_embedder(),
                                 collection=collection, top_k=top_k, model=model, temperature=temperature,
                                 history=conversation.messages(), mode="retrieval" if retrieval_only else "rag",
                                 search_mode=search_mode)
        placeholder = st.empty()
        for _ in stream:
            placeholder.markdown(safe_markdown(stream.text) + " ▌")
    except (WorkbenchError, ValueError) as exc:
        error = exc
    except BaseException:  # Streamlit stopped this run (a new question, a click): keep what came
        if stream is not None:
            stream.close()
        with contextlib.suppress(WorkbenchError):
            conversations.append_turn(conversation.id, question, stream, error=INTERRUPTED, **keep)
        raise
    try:
        turn = conversations.append_turn(conversation.id, question, stream, error=error, **keep)
    except ConversationError as exc:  # e.g. deleted in another tab meanwhile
        st.error(f"This answer was not kept: {exc}")
        st.stop()
    if stream is not None:
        st.session_state.setdefault(PROMPT_INFO, {})[turn.id] = {
            "retrieved": len(stream.retrieved), "dropped": stream.prompt.dropped,
            "tokens": stream.prompt.estimated_tokens, "budget": stream.prompt.budget,
            "context_window": stream.prompt.context_window}
st.rerun()  # show the turn as stored, and the conversation list with it
