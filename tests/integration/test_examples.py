"""The sample documents in examples/docs go through the real ingest path and each example
question of examples/README.md finds its own file first; the example scripts in examples/ run as
a user runs them (``python examples/X.py``), with the tiny models.

The tiny models write gibberish, so the script tests check what does not depend on the weights:
exit status, numbered sources and which file ranks first, chunk and token counts, one answer
per input."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chinese_mixtral_rag.qa.retrieval import HybridRetriever
from chinese_mixtral_rag.store import KnowledgeBase
from chinese_mixtral_rag.testing import TinyModel
from chinese_mixtral_rag.testing.stores import ingest_with_tiny_models

pytest.importorskip("chromadb", reason="needs the rag extra")

SCRIPTS = Path(__file__).resolve().parents[2] / "examples"
EXAMPLES = SCRIPTS / "docs"
FILES = {
    "公司差旅报销制度.docx",
    "混合专家模型简介.md",
    "西湖龙井茶.txt",
    "城市公园开放时间.csv",
    "常见问题.html",
}
# The example questions of examples/README.md, the file that answers each, and the answer.
QUESTIONS = [
    ("出差到一线城市，普通员工住宿费每晚最多报销多少元？", "公司差旅报销制度.docx", "550 元"),
    ("Mixtral 8x7B 有几个专家，每个词元激活几个专家？", "混合专家模型简介.md", "选出 2 个专家"),
    ("冲泡西湖龙井茶用多少度的水合适？", "西湖龙井茶.txt", "80至85摄氏度"),
    ("鹭洲湿地公园几点开放，门票要钱吗？", "城市公园开放时间.csv", "6:00-18:00"),
    ("导入文档支持哪些文件格式？", "常见问题.html", ".docx、.pptx"),
]


@pytest.fixture(scope="module")
def examples(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: TinyModel, tiny_embedder: Path
) -> KnowledgeBase:
    base = tmp_path_factory.mktemp("examples")
    folder = base / "docs"
    shutil.copytree(EXAMPLES, folder)  # ingest never writes there, but keep the checkout clean
    kb, report = ingest_with_tiny_models(
        folder, base / "store", "examples", tiny_model.gguf_path, tiny_embedder
    )
    assert not report.failures, report.failures
    assert {o.source: o.status for o in report.outcomes} == dict.fromkeys(FILES, "added")
    return kb


def test_every_example_file_is_ingested(examples: KnowledgeBase) -> None:
    assert {p.name for p in EXAMPLES.iterdir()} == FILES
    states = examples.file_states()
    assert set(states) == FILES
    assert all(state.chunks == state.expected > 0 for state in states.values())


def test_the_text_file_is_decoded_as_gb18030(examples: KnowledgeBase) -> None:
    raw = (EXAMPLES / "西湖龙井茶.txt").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")  # really a GB18030 file, not UTF-8
    chunks = examples.chunks_of("西湖龙井茶.txt")
    assert chunks
    assert {chunk.metadata["encoding"] for chunk in chunks} == {"gb18030"}
    assert "明前茶" in "".join(chunk.page_content for chunk in chunks)


@pytest.mark.parametrize(
    ("question", "expected", "answer"), QUESTIONS, ids=[Path(q[1]).suffix[1:] for q in QUESTIONS]
)
def test_example_question_finds_its_file(
    examples: KnowledgeBase, question: str, expected: str, answer: str
) -> None:
    hits = HybridRetriever(kb=examples).invoke(question)
    assert hits[0].metadata["source"] == expected
    assert any(answer in hit.page_content for hit in hits[:3])  # the answer is near the top


# -- the example scripts ----------------------------------------------------------------------


def script_env(tiny_model: TinyModel, tiny_embedder: Path, persist_dir: Path) -> dict[str, str]:
    """The environment a user would set, pointing at the tiny models and a store in tmp."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CMR_")}
    env.update(
        CMR_MODEL_PATH=str(tiny_model.gguf_path),
        CMR_N_CTX="4096",
        CMR_MAX_TOKENS="16",
        CMR_TEMPERATURE="0",
        CMR_EMBEDDING_MODEL=str(tiny_embedder),
        CMR_PERSIST_DIR=str(persist_dir),
        CMR_INGEST_WORKERS="0",  # 5 small files: worker processes would cost more than they save
    )
    return env


def run_script(
    script: str, env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``python examples/<script> args...`` from the repository root; asserts exit status 0."""
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / script), *args],
        cwd=SCRIPTS.parent,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done


SOURCE_LINE = re.compile(r"^[ *]?\[(\d+)\] (\S+)(.*)\(相关度 (\d\.\d\d)\)", re.MULTILINE)


def sources_after(text: str) -> list[tuple[int, str, float]]:
    """The numbered sources a script printed under 来源：, up to the next question."""
    section = text.split("来源：", 1)[1].split("\n问：", 1)[0]
    return [(int(n), name, float(rel)) for n, name, _, rel in SOURCE_LINE.findall(section)]


@pytest.fixture
def model_env(tiny_model: TinyModel, tiny_embedder: Path, tmp_path: Path) -> dict[str, str]:
    pytest.importorskip("llama_cpp", reason="needs the llama-cpp extra")
    return script_env(tiny_model, tiny_embedder, tmp_path / "store")


def test_chat_streaming_prints_chunks_and_usage(model_env: dict[str, str]) -> None:
    out = run_script("chat_streaming.py", model_env).stdout
    usage = re.findall(
        r"^\[(\w+)\] (?:(\d+) chunks, )?usage: "
        r"input_tokens=(\d+) output_tokens=(\d+) total_tokens=(\d+)$",
        out,
        re.MULTILINE,
    )
    assert [u[0] for u in usage] == ["invoke", "stream", "astream"], out
    for _, _, prompt, answer, total in usage:
        assert int(prompt) > 0
        assert 0 < int(answer) <= 16  # CMR_MAX_TOKENS
        assert int(total) == int(prompt) + int(answer)
    assert len({u[2] for u in usage}) == 1  # the same prompt, counted the same three ways
    assert int(usage[1][1]) > 1  # stream printed the reply piece by piece
    assert int(usage[2][1]) > 1  # astream too
    assert re.search(r"^\[invoke\] finish_reason: (stop|length)$", out, re.MULTILINE)


def test_structured_and_tools_gives_an_object_a_call_and_an_answer(
    model_env: dict[str, str],
) -> None:
    out = run_script("structured_and_tools.py", model_env).stdout
    terms = re.search(r"^\[terms\] (.+)$", out, re.MULTILINE)
    assert terms, out
    parsed = json.loads(terms[1])
    assert set(parsed) == {"lessor", "lessee", "monthly_rent_yuan", "kind"}
    assert parsed["kind"] in {"买卖", "租赁", "借款", "其他"}
    call = re.search(r"^\[call\] civil_code_article \{'number': (-?\d+)\}$", out, re.MULTILINE)
    assert call, out
    result = re.search(r"^\[result\] (.+)$", out, re.MULTILINE)
    assert result
    assert result[1].startswith(("居住权人", "租赁合同", f"第 {call[1]} 条"))
    assert re.search(r"^\[answer\] ", out, re.MULTILINE)


def test_lcel_chain_batch_answers_each_input(model_env: dict[str, str]) -> None:
    lines = run_script("lcel_chain.py", model_env).stdout.splitlines()
    asked = [i for i, line in enumerate(lines) if re.match(r"\[\d/3\] ", line)]
    assert [lines[i][:5] for i in asked] == ["[1/3]", "[2/3]", "[3/3]"]
    assert all(lines[i + 1].startswith("答：") for i in asked)  # one answer per input, in order
    assert any(line.startswith("[stream] ") for line in lines)


def test_qa_with_sources_cites_the_expected_file(
    examples: KnowledgeBase, model_env: dict[str, str]
) -> None:
    env = {**model_env, "CMR_PERSIST_DIR": str(examples.persist_dir)}
    question, expected, _ = QUESTIONS[0]  # the script's default question
    out = run_script("qa_with_sources.py", env, "--question", question).stdout
    assert f"问：{question}" in out
    first = sources_after(out)
    assert [n for n, _, _ in first] == list(range(1, len(first) + 1))  # numbered 1, 2, ...
    assert max(first, key=lambda s: s[2])[1] == expected  # the most relevant passage
    follow_up = out.split("问：那二线城市呢？", 1)[1]  # the follow-up ran, with history
    assert "检索用：" in follow_up
    assert "来源：" in follow_up or "没有找到" in follow_up


def test_retriever_chain_is_a_langchain_retriever(
    examples: KnowledgeBase, model_env: dict[str, str]
) -> None:
    env = {**model_env, "CMR_PERSIST_DIR": str(examples.persist_dir)}
    out = run_script("retriever_chain.py", env).stdout  # default question: the tea one
    assert "HybridRetriever is a BaseRetriever: True" in out
    ranked = re.findall(r"^#(\d) (\S+)  \(相关度 \d\.\d\d\)$", out, re.MULTILINE)
    assert ranked[0] == ("1", "西湖龙井茶.txt")
    assert len(ranked) == 4  # k=4
    cited = re.findall(r"^\[(\d)\] (\S+)$", out.split("来源：", 1)[1], re.MULTILINE)
    assert cited == ranked  # the chain's sources are the retriever's documents
    assert "答：" in out


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_ingest_and_ask_search_only_needs_no_model(
    tiny_model: TinyModel, tiny_embedder: Path, tmp_path: Path
) -> None:
    env = script_env(tiny_model, tiny_embedder, tmp_path / "unused")
    del env["CMR_MODEL_PATH"]  # no model at all: chunks sized by the approximation
    before = snapshot(EXAMPLES)
    questions = [q for q, _, _ in QUESTIONS]
    store = tmp_path / "kb"
    out = run_script(
        "ingest_and_ask.py", env, "--search-only", "--persist-dir", str(store), *questions
    ).stdout
    assert re.search(r"files added\s*│\s*5\b", out), out  # ingest's summary table
    assert snapshot(EXAMPLES) == before  # nothing written into the docs folder
    assert (store / "lexical").is_dir()  # the store went where it was told
    assert not (tmp_path / "unused").exists()
    sections = out.split("\n问：")[1:]
    assert len(sections) == len(QUESTIONS)
    for section, (question, expected, _) in zip(sections, QUESTIONS, strict=True):
        assert section.startswith(question)
        assert "答：" not in section  # search only: passages, no answer
        hits = sources_after(section)
        # The five best chunks; neighbours in a file (a section cut in two) are one passage.
        assert [n for n, _, _ in hits] == list(range(1, len(hits) + 1))
        assert 2 <= len(hits) <= 5
        assert hits[0][1] == expected, section


def test_ingest_and_ask_answers_at_the_prompt(
    examples: KnowledgeBase, model_env: dict[str, str]
) -> None:
    # The knowledge base the fixture ingested from a copy of examples/docs: the same files, so
    # ingest finds them all unchanged, and the questions come from standard input.
    env = {**model_env, "CMR_PERSIST_DIR": str(examples.persist_dir)}
    typed = "冲泡西湖龙井茶用多少度的水合适？\n那保存呢？\n"
    out = run_script("ingest_and_ask.py", env, stdin=typed).stdout
    assert re.search(r"files unchanged\s*│\s*5\b", out), out
    assert re.search(r"chunks written\s*│\s*0\b", out), out
    assert out.count("问题（直接回车退出）> ") == 3  # two questions, then end of input
    answers = out.split("答：")[1:]
    assert len(answers) == 2
    tea = sources_after(answers[0])
    assert tea
    assert max(tea, key=lambda s: s[2])[1] == "西湖龙井茶.txt"
