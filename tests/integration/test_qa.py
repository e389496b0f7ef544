"""Question answering end to end on the real code path: real ingest into real Chroma, the hybrid
retriever, the packer with the model's own tokenizer, and the tiny Mixtral on llama.cpp and on
transformers generating the (random) answer text. The documents are real statutes from
../shared/data plus two small files written here."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler, CallbackManagerForLLMRun
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from chinese_mixtral_rag import ChineseMixtralChat, build_qa_chain
from chinese_mixtral_rag.documents.pipeline import ChunkingSpec
from chinese_mixtral_rag.errors import ChineseMixtralError
from chinese_mixtral_rag.eval.datasets import ingest_corpus, load_dataset
from chinese_mixtral_rag.eval.runs import evaluate_qa
from chinese_mixtral_rag.qa.prompts import NOT_FOUND
from chinese_mixtral_rag.store import KnowledgeBase
from chinese_mixtral_rag.store.embeddings import resolve_embedding_model
from chinese_mixtral_rag.testing import TinyModel
from chinese_mixtral_rag.testing.servers import SERVER_N_CTX
from chinese_mixtral_rag.testing.stores import ingest_with_tiny_models

pytest.importorskip("chromadb", reason="needs the rag extra")

REPO = Path(__file__).resolve().parents[2]
LAWS = REPO.parent / "shared" / "data" / "docs" / "laws"
CONSTITUTION = "中华人民共和国宪法.pdf"
MENTAL_HEALTH = "中华人民共和国精神卫生法.docx"
N_CTX = 8192
MAX_TOKENS = 24

pytestmark = pytest.mark.skipif(not LAWS.is_dir(), reason=f"shared data not found at {LAWS}")

RESIDENCE = (
    "居住权是民法典新设立的一种用益物权。居住权人有权按照合同约定，对他人的住宅享有占有、"
    "使用的用益物权，以满足生活居住的需要。\n\n"
    "设立居住权，当事人应当采用书面形式订立居住权合同。居住权无偿设立，但是当事人另有约定的"
    "除外。设立居住权的，应当向登记机构申请居住权登记。居住权自登记时设立。\n\n"
    "居住权不得转让、继承。设立居住权的住宅不得出租，但是当事人另有约定的除外。"
)


@pytest.fixture(scope="module")
def library(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: TinyModel, tiny_embedder: Path
) -> KnowledgeBase:
    base = tmp_path_factory.mktemp("qa-library")
    folder = base / "docs"
    folder.mkdir()
    shutil.copy(LAWS / CONSTITUTION, folder)
    shutil.copy(LAWS / MENTAL_HEALTH, folder)
    (folder / "居住权.txt").write_text(RESIDENCE, encoding="utf-8")
    kb, report = ingest_with_tiny_models(
        folder, base / "store", "qa-library", tiny_model.gguf_path, tiny_embedder
    )
    assert not report.failures
    return kb


@pytest.fixture(params=["llama_cpp", "transformers", "openai"])
def chat(request: pytest.FixtureRequest, tiny_model: TinyModel) -> ChineseMixtralChat:
    if request.param == "llama_cpp":
        return gguf_chat(tiny_model)
    if request.param == "openai":  # the tiny GGUF behind llama-cpp-python's OpenAI server
        return ChineseMixtralChat(
            base_url=request.getfixturevalue("llama_server"),
            n_ctx=SERVER_N_CTX,
            max_tokens=MAX_TOKENS,
            temperature=0.0,
        )
    return ChineseMixtralChat(
        backend="transformers",
        model_path=str(tiny_model.hf_dir),
        max_tokens=MAX_TOKENS,
        temperature=0.0,
        device_map=None,
    )


def gguf_chat(tiny_model: TinyModel, **options: Any) -> ChineseMixtralChat:
    """The tiny GGUF as a greedy chat model with a short answer."""
    pytest.importorskip("llama_cpp", reason="needs the llama-cpp extra")
    defaults: dict[str, Any] = {"n_ctx": N_CTX, "max_tokens": MAX_TOKENS, "temperature": 0.0}
    return ChineseMixtralChat(model_path=str(tiny_model.gguf_path), **{**defaults, **options})


def page_with(text: str) -> int:
    """The 1-based page of the constitution PDF whose text contains ``text``."""
    from pypdf import PdfReader

    reader = PdfReader(LAWS / CONSTITUTION)
    pages = [n for n, p in enumerate(reader.pages, 1) if text in "".join(p.extract_text().split())]
    assert len(pages) == 1
    return pages[0]


def test_streamed_answer_cites_the_right_file_and_page(
    library: KnowledgeBase, chat: ChineseMixtralChat
) -> None:
    # The HF tiny model's window is 32K; the budget must follow the model, so cap the material
    # to keep the transformers run short.
    qa = build_qa_chain(chat, kb=library, context_tokens=3000)
    events = list(qa.stream({"question": "中华人民共和国的行政区域是怎样划分的？"}))
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "question"
    assert kinds[-1] == "sources"
    assert kinds.count("answer") >= 1  # streamed piece by piece between the two
    result: dict[str, Any] = {}
    for event in events:
        for key, value in event.items():
            result[key] = result.get(key, "") + value if key == "answer" else value
    assert result["found"] is True
    assert result["answer"].strip()
    sources = result["sources"]
    assert [s.n for s in sources] == list(range(1, len(sources) + 1))
    best = max(sources, key=lambda s: s.relevance)
    assert best.source == CONSTITUTION
    assert best.page.split("-")[0] == str(page_with("行政区域划分如下"))
    assert "行政区域划分如下" in "".join(best.text.split())
    report = result["report"]
    window = chat.get_backend().context_length
    assert report.prompt_tokens <= window - MAX_TOKENS
    assert report.material_tokens <= 3000
    assert result["usage"]["input_tokens"] == report.prompt_tokens
    # Markers in the answer only ever point at listed sources.
    assert all(1 <= n <= len(sources) for n in result["cited"])


def test_material_fills_a_model_servers_window_without_overflowing_it(
    library: KnowledgeBase, llama_server: str
) -> None:
    """backend="openai": the packer measures with the server's tokenizer, so material up to the
    whole window goes in and the server (which refuses a prompt over its window) accepts it."""
    chat = ChineseMixtralChat(
        base_url=llama_server, n_ctx=SERVER_N_CTX, max_tokens=MAX_TOKENS, temperature=0.0
    )
    assert chat.get_backend().tokenizer == "llama-cpp-python"  # type: ignore[union-attr]
    qa = build_qa_chain(chat, kb=library, min_relevance=0.0)
    result = qa.invoke({"question": "中华人民共和国的行政区域是怎样划分的？"})
    report = result["report"]
    assert report.limit == SERVER_N_CTX - MAX_TOKENS
    assert report.limit - 400 < report.prompt_tokens <= report.limit  # filled, not overflowed
    assert result["usage"]["input_tokens"] == report.prompt_tokens  # the server counted the same
    assert result["answer"].strip()


def test_a_question_restricted_to_one_file_only_cites_that_file(
    library: KnowledgeBase, chat: ChineseMixtralChat
) -> None:
    qa = build_qa_chain(chat, kb=library, context_tokens=3000, min_relevance=0.0)
    result = qa.invoke(
        {"question": "中华人民共和国的行政区域是怎样划分的？", "sources": [MENTAL_HEALTH]}
    )
    assert result["sources"]
    assert {s.source for s in result["sources"]} == {MENTAL_HEALTH}


def test_a_small_chosen_file_goes_into_the_prompt_whole(
    library: KnowledgeBase, tiny_model: TinyModel
) -> None:
    chat = gguf_chat(tiny_model)
    qa = build_qa_chain(chat, kb=library)
    result = qa.invoke({"question": "居住权可以继承吗？", "sources": ["居住权.txt"]})
    assert result["report"].mode == "whole"
    assert result["report"].whole_sources == ["居住权.txt"]
    assert "".join(s.text for s in result["sources"]).split() == RESIDENCE.split()
    assert result["sources"][0].relevance > 0
    # A chosen file that fits is read whole even when the question shares no words with it:
    # the model judges, not the search score.
    vague = qa.invoke({"question": "请概括要点", "sources": ["居住权.txt"]})
    assert vague["found"] is True
    assert vague["report"].mode == "whole"


def test_nothing_relevant_gets_the_not_found_answer_without_asking_the_model(
    library: KnowledgeBase, tiny_model: TinyModel
) -> None:
    chat = gguf_chat(tiny_model)
    qa = build_qa_chain(chat, kb=library)
    result = qa.invoke({"question": "量子计算机的超导量子比特如何纠错？"})
    assert result["found"] is False
    assert result["answer"] == NOT_FOUND["zh"]
    assert result["sources"] == []
    assert result["cited"] == []
    assert result["usage"] is None  # the model was not asked
    words_only = build_qa_chain(chat, kb=library, dense_weight=0.0)
    english = words_only.invoke({"question": "How do superconducting qubits correct errors?"})
    assert english["answer"] == NOT_FOUND["en"]
    assert english["usage"] is None
    # With dense search, English over Chinese statutes is a question relevance (shared words)
    # cannot judge: the passages dense search found go to the model, which judges.
    english = qa.invoke({"question": "How do superconducting qubits correct errors?"})
    assert english["found"] is True
    assert english["usage"] is not None


class SentMessages(BaseCallbackHandler):
    """Records the conversations sent to chat models."""

    def __init__(self) -> None:
        self.messages: list[list[BaseMessage]] = []

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], **kwargs: Any
    ) -> None:
        self.messages.extend(messages)


def test_history_feeds_the_search_and_the_prompt(
    library: KnowledgeBase, tiny_model: TinyModel
) -> None:
    chat = gguf_chat(tiny_model)
    history = [("居住权怎样设立？", "应当采用书面形式订立居住权合同，并申请登记。[1]")]
    concat = build_qa_chain(chat, kb=library, condense="concat", context_tokens=2000)
    follow = concat.invoke({"question": "可以出租吗？", "history": history})
    assert follow["search_query"] == "居住权怎样设立？\n可以出租吗？"
    assert follow["found"]
    assert "居住权.txt" in {s.source for s in follow["sources"]}
    # The earlier turn is in the conversation the model gets, after the material.
    seen = SentMessages()
    concat.invoke({"question": "可以出租吗？", "history": history}, {"callbacks": [seen]})
    roles = [m.type for m in seen.messages[-1]]
    assert roles == ["human", "ai", "human"]
    assert "资料：" in seen.messages[-1][0].text
    assert "居住权怎样设立？" in seen.messages[-1][0].text
    assert seen.messages[-1][1].text == history[0][1]
    assert seen.messages[-1][2].text == "可以出租吗？"
    rewritten = build_qa_chain(chat, kb=library, context_tokens=2000, min_relevance=0.0)
    by_model = rewritten.invoke({"question": "可以出租吗？", "history": history})
    # The model's rewrite comes first; the question itself is always kept for the search.
    assert by_model["search_query"].endswith("可以出租吗？")
    assert by_model["search_query"] != "可以出租吗？"


def test_async_stream_gives_the_same_answer(library: KnowledgeBase, tiny_model: TinyModel) -> None:
    chat = gguf_chat(tiny_model)
    qa = build_qa_chain(chat, kb=library, context_tokens=2000)
    question = {"question": "居住权可以继承吗？"}
    sync = qa.invoke(question)

    async def collect() -> str:
        return "".join([e.get("answer", "") async for e in qa.astream(question)])

    assert asyncio.run(collect()) == sync["answer"]


def test_cli_ask_prints_the_answer_and_numbered_sources(
    library: KnowledgeBase, tiny_model: TinyModel, tiny_embedder: Path
) -> None:
    env = {
        **os.environ,
        "CMR_PERSIST_DIR": str(library.persist_dir),
        "CMR_EMBEDDING_MODEL": str(tiny_embedder),
        "CMR_MODEL_PATH": str(tiny_model.gguf_path),
        "CMR_N_CTX": str(N_CTX),
        "CMR_TEMPERATURE": "0",
    }
    args = [sys.executable, "-m", "chinese_mixtral_rag", "ask", "--collection", library.name]
    done = subprocess.run(
        [*args, "--max-tokens", "16", "--context-tokens", "2000", "居住权可以继承吗？"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "来源：" in done.stdout
    assert "居住权.txt" in done.stdout.split("来源：")[1]
    assert "上下文：" in done.stderr
    missing = subprocess.run(
        [*args, "量子计算机的超导量子比特如何纠错？"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 0, missing.stderr
    assert NOT_FOUND["zh"] in missing.stdout
    assert "来源：" not in missing.stdout
    empty = subprocess.run([*args, " "], env=env, capture_output=True, text=True, timeout=300)
    assert empty.returncode == 2
    assert "question" in empty.stderr


def test_search_mode_needs_no_model(library: KnowledgeBase) -> None:
    qa = build_qa_chain(None, kb=library)
    result = qa.invoke({"question": "居住权可以继承吗？", "mode": "search"})
    assert result["sources"][0].source == "居住权.txt"
    assert "继承" in result["sources"][0].text
    with pytest.raises(ChineseMixtralError, match="CMR_MODEL_PATH"):
        qa.invoke({"question": "居住权可以继承吗？"})


def test_summary_of_a_file_larger_than_the_window_is_map_reduced(
    library: KnowledgeBase, tiny_model: TinyModel
) -> None:
    # A 2K window against the ~20K-token constitution: many parts, then a combination.
    chat = gguf_chat(tiny_model, n_ctx=2048, max_tokens=32)
    qa = build_qa_chain(chat, kb=library)
    seen = SentMessages()
    events = list(
        qa.stream({"mode": "summarize", "sources": [CONSTITUTION]}, {"callbacks": [seen]})
    )
    stages = [stage for e in events for stage, _, _ in e.get("progress", [])]
    maps = stages.count("map")
    assert maps >= 5
    assert stages[-1] == "combine"
    assert "".join(e.get("answer", "") for e in events).strip()
    # Every prompt sent fitted the window with room for the answer.
    assert len(seen.messages) >= maps + 1
    for messages in seen.messages:
        assert len(chat.prompt_ids(messages)) <= 2048 - 32
    # Every part of the file was read: the parts together hold all of its chunks' text.
    parts = "".join(m[0].text for m in seen.messages[:maps])
    for chunk in library.chunks_of(CONSTITUTION)[::7]:
        assert chunk.page_content[:40] in parts


def test_a_small_file_is_summarised_in_one_call(
    library: KnowledgeBase, tiny_model: TinyModel
) -> None:
    chat = gguf_chat(tiny_model, max_tokens=16)
    qa = build_qa_chain(chat, kb=library)
    seen = SentMessages()
    result = qa.invoke({"mode": "summarize", "sources": ["居住权.txt"]}, {"callbacks": [seen]})
    assert result["progress"] == [("summary", 1, 1)]
    assert len(seen.messages) == 1
    assert "居住权不得转让、继承" in seen.messages[0][0].text
    with pytest.raises(ChineseMixtralError, match=r"没有这个文件\.txt"):
        qa.invoke({"mode": "summarize", "sources": ["没有这个文件.txt"]})


def test_a_question_over_the_same_material_evaluates_only_its_new_tokens(
    library: KnowledgeBase, tiny_model: TinyModel
) -> None:
    """Prefix reuse through the chain, with a question over other material in between: the
    second question over the file restores the saved state of the first and llama.cpp
    evaluates only the tokens after the shared material."""
    chat = gguf_chat(tiny_model, max_tokens=8, prefix_cache_bytes=64 * 2**20)
    backend = chat.get_backend()
    qa = build_qa_chain(chat, kb=library, context_tokens=2000)
    seen = SentMessages()
    first = qa.invoke(
        {"question": "居住权怎样设立？", "sources": ["居住权.txt"]}, {"callbacks": [seen]}
    )
    qa.invoke({"question": "中华人民共和国的行政区域是怎样划分的？"})  # other material
    between = backend.last_prompt_reused  # shares only the instructions with the first
    second = qa.invoke(
        {"question": "居住权可以出租吗？", "sources": ["居住权.txt"]}, {"callbacks": [seen]}
    )
    assert first["report"].mode == second["report"].mode == "whole"
    prompts = [chat.prompt_ids(messages) for messages in seen.messages]
    shared = next(i for i, (a, b) in enumerate(zip(prompts[0], prompts[1], strict=False)) if a != b)
    assert shared > 250  # instructions and material
    assert between < shared - 100  # so the live context no longer held the material
    assert backend.last_prefix_source == "cache"
    assert backend.last_prompt_reused == shared
    assert backend.last_prompt_evaluated == len(prompts[1]) - shared
    assert second["usage"]["input_tokens"] == len(prompts[1])


class ScriptedChat(GenericFakeChatModel):
    """A chat model that answers what ``script`` writes for its prompt (the numbered material
    and the question), streamed word by word as GenericFakeChatModel streams: random-weight tiny
    models cannot write a meaningful answer, and a real model's citations are what is tested."""

    script: Callable[[str], str]
    messages: Iterator[AIMessage | str] = Field(default_factory=lambda: iter(()))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        answer = AIMessage(self.script(messages[0].text))
        return ChatResult(generations=[ChatGeneration(message=answer)])

    def get_num_tokens(self, text: str) -> int:
        return len(text)  # a character a token: no tokenizer to download


def headers_of(prompt: str) -> dict[int, str]:
    """Passage number -> its header in the prompt (``来源：居住权.txt``)."""
    return {int(n): h for n, h in re.findall(r"^\[(\d+)\] (来源：.+)$", prompt, re.MULTILINE)}


def test_a_citation_shows_only_where_its_passage_says_the_sentence(
    library: KnowledgeBase,
) -> None:
    """The answer cites the passage its sentences come from and copies another passage's header
    onto a line of its own, as models do: the reader sees and is listed only the first."""
    seen: dict[int, str] = {}

    def cite_one_and_echo_another(prompt: str) -> str:
        seen.update(headers_of(prompt))
        right = next(n for n, h in seen.items() if h.startswith("来源：居住权.txt"))
        other = next(n for n in seen if n != right)
        return (
            f"居住权不得转让、继承[{right}]。\n[{other}] {seen[other]}\n"
            f"设立居住权的住宅不得出租，但是当事人另有约定的除外[{right}]。"
        )

    qa = build_qa_chain(
        ScriptedChat(script=cite_one_and_echo_another), kb=library, context_length=N_CTX
    )
    events = list(qa.stream({"question": "居住权可以继承吗？"}))
    pieces = [e["answer"] for e in events if "answer" in e]
    result = {k: v for e in events for k, v in e.items() if k != "answer"}
    right = next(n for n, h in seen.items() if h.startswith("来源：居住权.txt"))
    other = next(n for n in seen if n != right)
    assert len(pieces) > 1  # streamed, not held to the end
    assert "".join(pieces) == (
        f"居住权不得转让、继承[{right}]。\n {seen[other]}\n"
        f"设立居住权的住宅不得出租，但是当事人另有约定的除外[{right}]。"
    )
    assert result["cited"] == [right]
    assert result["sources"][right - 1].source == "居住权.txt"
    assert result["sources"][other - 1].source != "居住权.txt"  # listed, just not cited


INHERITANCE = (
    "继承开始后，按照法定继承办理；有遗嘱的，按照遗嘱继承或者遗赠办理。继承开始后，继承人放弃继承"
    "的，应当在遗产处理前，以书面形式作出放弃继承的表示；没有表示的，视为接受继承。"
)


def test_eval_counts_the_gold_file_cited_only_where_it_supports_the_answer(
    tmp_path: Path, tiny_embedder: Path
) -> None:
    """``cited_gold`` follows ``cited``: a gold passage whose marker ends a sentence it does not
    say (or its own copied header) is not counted as cited; one that says it is."""
    rows = [
        {"input": "居住权可以继承吗？", "context": RESIDENCE, "answers": ["不得继承"]},
        {"input": "继承人怎样放弃继承？", "context": INHERITANCE, "answers": ["书面形式"]},
    ]
    path = tmp_path / "laws.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    dataset = load_dataset(path)
    kb = KnowledgeBase(
        "eval-cites", resolve_embedding_model(str(tiny_embedder)), persist_dir=tmp_path / "store"
    )
    spec = ChunkingSpec(embedding_path=str(tiny_embedder))
    assert not ingest_corpus(dataset, kb, spec, tmp_path / "corpus", workers=0).failures

    def answer(prompt: str) -> str:
        gold = "00000.txt" if "居住权可以继承吗" in prompt.rsplit("问题：", 1)[-1] else "00001.txt"
        n = next(n for n, h in headers_of(prompt).items() if h.startswith(f"来源：{gold}"))
        claim = "继承人放弃继承的，应当在遗产处理前以书面形式表示"  # what 00001.txt says
        return f"[{n}] 来源：{gold}\n{claim}[{n}]。"

    chain = build_qa_chain(ScriptedChat(script=answer), kb=kb, context_length=N_CTX)
    report = evaluate_qa(chain, dataset, restrict=False)
    residence, inheritance = report.outcomes
    assert (residence.gold_in_sources, inheritance.gold_in_sources) == (True, True)
    assert (residence.found, residence.cited_gold) == (True, False)
    assert (inheritance.found, inheritance.cited_gold) == (True, True)
    assert report.metrics()["cited_gold"] == 0.5


def test_a_file_not_in_the_knowledge_base_is_named_with_the_knowledge_bases_name(
    tmp_path: Path, tiny_embedder: Path
) -> None:
    """The error says the name the user gave the knowledge base, not its internal id."""
    kb = KnowledgeBase(
        "kb-0123456789ab",
        resolve_embedding_model(str(tiny_embedder)),
        persist_dir=tmp_path / "store",
        display_name="2024年 合同",
    )
    chain = build_qa_chain(ScriptedChat(script=lambda _: ""), kb=kb, context_length=N_CTX)
    with pytest.raises(ChineseMixtralError, match=r"Not in knowledge base '2024年 合同': 甲\.txt"):
        chain.invoke({"mode": "summarize", "sources": ["甲.txt"]})
