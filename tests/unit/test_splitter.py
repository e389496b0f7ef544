"""The Chinese-aware splitter with the approximate counter: no model, no tokenizer files."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.documents import Document
from langchain_text_splitters import TextSplitter

from chinese_mixtral_rag.documents.splitter import ChineseTextSplitter
from chinese_mixtral_rag.documents.tokens import ApproximateCounter, TokenCounter


class CharCounter:
    """A second tokenizer for ``limits``: one token per character plus [CLS]/[SEP], like BERT
    on Chinese text."""

    name = "chars+2"

    def count(self, text: str) -> int:
        return len(text) + 2

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        return [self.count(t) for t in texts]


class SuperadditiveCounter:
    """A tokenizer whose count of a whole is more than the sum of its parts' counts, so the
    splitter's additive estimate is too low and it must give pieces back after recounting."""

    name = "superadditive"

    def count(self, text: str) -> int:
        return int(len(text) ** 1.25)

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        return [self.count(t) for t in texts]


APPROX = ApproximateCounter()

FRAGMENTS = [
    *"天下大势分久必合合久必分周末七国分争并入于秦",  # common characters (1 token each)
    *"逝淘渚樵壶浊酒龘𠀀",  # rare ones (byte fallback) and outside the BMP
    *"。！？；…，、：“”‘’「」『』（）《》【】",
    *".!?;:,'\"()[]",
    " ",
    "\u3000",
    "\n",
    "\n\n",
    "\n \n\t",
    "Hello",
    " world",
    "Mixtral-8x7B",
    "3.14",
    "1,000",
    "http://example.com/a.txt",
    "😀",
    "👨‍👩‍👧",
    "e.g.",
    "……",
    "。”",
    "！」",
]
texts = st.lists(st.sampled_from(FRAGMENTS), max_size=300).map("".join)
raw_texts = st.text(
    alphabet=st.sampled_from(list("天下大势逝淘。，！？“” \n\t\u3000aZ.,1😀")), max_size=400
)


def check_chunks(splitter: ChineseTextSplitter, text: str) -> list[tuple[int, int]]:
    """Every property a caller relies on, recounted exactly on the final chunks."""
    spans = splitter.split_spans(text)
    assert splitter.split_text(text) == [text[s:e] for s, e in spans]
    covered = bytearray(len(text))
    for i, (start, end) in enumerate(spans):
        chunk = text[start:end]
        assert chunk, (start, end)
        assert chunk == chunk.strip(), (start, end)
        for counter, max_tokens in splitter.limits:
            assert counter.count(chunk) <= max_tokens, (counter.name, chunk)
        if i:
            prev_start, prev_end = spans[i - 1]
            assert start > prev_start
            assert end > prev_end
            if start < prev_end:
                shared = text[start:prev_end]
                assert splitter.counter.count(shared) <= splitter._chunk_overlap
        covered[start:end] = b"\1" * (end - start)
    missing = [i for i, ch in enumerate(text) if not covered[i] and not ch.isspace()]
    assert not missing, missing[:5]
    return spans


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, chunk_size=st.integers(16, 160), overlap_fraction=st.floats(0, 0.5))
def test_chunks_are_exact_ordered_complete_and_within_limits(
    text: str, chunk_size: int, overlap_fraction: float
) -> None:
    splitter = ChineseTextSplitter(chunk_size, int(chunk_size * overlap_fraction))
    check_chunks(splitter, text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.one_of(texts, raw_texts),
    chunk_size=st.integers(16, 120),
    embed_max=st.integers(12, 80),
    overlap=st.integers(0, 12),
)
def test_every_extra_limit_holds_too(
    text: str, chunk_size: int, embed_max: int, overlap: int
) -> None:
    splitter = ChineseTextSplitter(chunk_size, overlap, limits=[(CharCounter(), embed_max)])
    check_chunks(splitter, text)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, chunk_size=st.integers(16, 120), overlap=st.integers(0, 12))
def test_limits_hold_when_counts_are_not_additive(text: str, chunk_size: int, overlap: int) -> None:
    counter = SuperadditiveCounter()
    check_chunks(ChineseTextSplitter(chunk_size, overlap, counter=counter), text)
    limited = ChineseTextSplitter(chunk_size, overlap, limits=[(counter, chunk_size)])
    check_chunks(limited, text)


@settings(max_examples=300, deadline=None)
@given(a=st.one_of(texts, raw_texts), b=st.one_of(texts, raw_texts))
def test_approximate_count_is_subadditive(a: str, b: str) -> None:
    # So adding up pieces while merging never under-estimates a chunk.
    assert APPROX.count(a + b) <= APPROX.count(a) + APPROX.count(b)


def test_approximate_counter_matches_mixtral_on_chinese() -> None:
    # Mixtral's tokenizer: ▁ 滚 滚 长 江 东 <0xE9> <0x80> <0x9D> 水 ， 浪 花 <0xE6> <0xB7> <0x98>
    # 尽 英 雄 。 -- 逝 and 淘 are not in the vocabulary and fall back to three bytes each.
    assert APPROX.count("滚滚长江东逝水，浪花淘尽英雄。") == 20
    assert APPROX.count("") == 0
    assert APPROX.count("的") == 2  # dummy prefix + the character
    assert APPROX.count("😀") == 5  # prefix + 4 bytes (conservative)
    assert APPROX.count(" 123") == 5  # digits are split one by one
    assert isinstance(APPROX, TokenCounter)
    assert APPROX.name == "approx-v1"
    assert APPROX.count_batch(["的", "", "Hello world"]) == [2, 0, APPROX.count("Hello world")]


def test_sentence_end_keeps_its_closing_quote() -> None:
    text = "他说：“今天天气很好，我们出去走走吧。”大家都同意了。然后一起出门。"
    splitter = ChineseTextSplitter(24, 0)
    chunks = splitter.split_text(text)
    assert len(chunks) > 1
    assert chunks[0].endswith("。”")
    assert not any(chunk.startswith("”") for chunk in chunks)
    assert "".join(chunks) == text


def test_short_sentences_split_only_at_sentence_ends() -> None:
    text = "".join(f"这是第{i}句话，内容很短。" for i in range(60))
    splitter = ChineseTextSplitter(64, 0)
    chunks = check_chunks(splitter, text)
    assert len(chunks) > 3
    assert all(text[e - 1] == "。" for _, e in chunks)
    assert all(s == 0 or text[s - 1] == "。" for s, _ in chunks)


def test_long_sentence_splits_at_commas_before_characters() -> None:
    text = "，".join("甲乙丙丁戊己庚辛" for _ in range(30)) + "。"
    spans = check_chunks(ChineseTextSplitter(40, 0), text)
    assert len(spans) > 3
    assert all(text[e - 1] in "，。" for _, e in spans)


def test_paragraph_breaks_are_preferred_when_paragraphs_fit() -> None:
    paragraphs = ["第一段。" * 6, "第二段。" * 6, "第三段。" * 6]
    text = "\n\n".join(paragraphs)
    chunks = ChineseTextSplitter(30, 0).split_text(text)
    assert chunks == paragraphs


def test_overlap_is_whole_trailing_sentences() -> None:
    text = "".join(f"第{i}句。" for i in range(100))
    splitter = ChineseTextSplitter(40, 12)
    spans = check_chunks(splitter, text)
    for (_, prev_end), (start, _) in itertools.pairwise(spans):
        assert start < prev_end  # sentences are short, so there is always some overlap
        assert text[start - 1] == "。"  # and it starts at a sentence start


def test_no_overlap_when_the_last_piece_is_larger_than_the_overlap() -> None:
    text = "这是一个相当长的句子，用来确认重叠不会切开句子。" * 8
    spans = check_chunks(ChineseTextSplitter(60, 5), text)
    assert all(start >= prev_end for (_, prev_end), (start, _) in itertools.pairwise(spans))


def test_text_without_any_separator_is_cut_into_characters() -> None:
    text = "中文没有标点也没有空格的超长内容" * 200
    spans = check_chunks(ChineseTextSplitter(50, 0), text)
    assert sum(e - s for s, e in spans) == len(text)  # contiguous, nothing lost


def test_english_sentences_split_after_the_period() -> None:
    text = "The model is small. It runs on a laptop (really). Version 3.14 is out. " * 6
    spans = check_chunks(ChineseTextSplitter(40, 0), text)
    assert all(text[e - 1] in ".)" for _, e in spans)
    assert all("3." not in text[e - 2 : e] for _, e in spans)


def test_whitespace_only_text_gives_no_chunks() -> None:
    splitter = ChineseTextSplitter()
    assert splitter.split_spans("") == []
    assert splitter.split_spans(" \n\n\t\u3000 ") == []
    assert splitter.split_text("  你好  ") == ["你好"]
    assert splitter.split_spans("  你好  ") == [(2, 4)]


def test_markdown_passes_through_verbatim_with_metadata() -> None:
    markdown = (
        "# 标题\n\n说明文字，包含**粗体**和`代码`。\n\n"
        "- 列表项一\n- 列表项二\n\n```python\nprint('你好')\n```\n"
    )
    metadata = {"source": "docs/readme.md", "page": 3, "tags": ["a"]}
    splitter = ChineseTextSplitter()
    [chunk] = splitter.split_documents([Document(page_content=markdown, metadata=metadata)])
    assert chunk.page_content == markdown.strip()
    assert chunk.metadata == {
        **metadata,
        "chunk_index": 0,
        "start_index": 0,
        "end_index": len(markdown.rstrip()),
    }
    chunk.metadata["tags"].append("b")
    assert metadata["tags"] == ["a"]  # metadata is copied, not shared


def test_chunk_index_runs_across_documents_and_offsets_are_exact() -> None:
    # Repeated text: str.find-based offsets (LangChain's add_start_index) would point at the
    # first occurrence.
    page = "同一句话重复出现。" * 12
    documents = [
        Document(page_content=page, metadata={"page": 1}),
        Document(page_content="  \n", metadata={"page": 2}),
        Document(page_content=page, metadata={"page": 3}),
    ]
    splitter = ChineseTextSplitter(30, 10)
    chunks = splitter.split_documents(documents)
    assert [c.metadata["chunk_index"] for c in chunks] == list(range(len(chunks)))
    assert {c.metadata["page"] for c in chunks} == {1, 3}
    for chunk in chunks:
        source = documents[chunk.metadata["page"] - 1].page_content
        start, end = chunk.metadata["start_index"], chunk.metadata["end_index"]
        assert source[start:end] == chunk.page_content
    starts = [c.metadata["start_index"] for c in chunks if c.metadata["page"] == 1]
    assert starts == sorted(set(starts))
    assert len(starts) > 2
    assert splitter.transform_documents(documents) == chunks
    assert splitter.create_documents([page], [{"page": 1}]) == [
        c for c in chunks if c.metadata["page"] == 1
    ]


def test_is_a_langchain_text_splitter() -> None:
    splitter = ChineseTextSplitter(100, 10, add_start_index=True)
    assert isinstance(splitter, TextSplitter)
    assert splitter.describe() == {
        "splitter": "chinese-v1",
        "counter": "approx-v1",
        "chunk_size": 100,
        "chunk_overlap": 10,
        "limits": [],
    }


def test_bad_arguments_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="counter="):
        ChineseTextSplitter(length_function=len)
    with pytest.raises(ValueError, match="keep_separator"):
        ChineseTextSplitter(keep_separator="start")
    with pytest.raises(ValueError, match="strip_whitespace"):
        ChineseTextSplitter(strip_whitespace=False)
    with pytest.raises(ValueError, match="chunk overlap"):
        ChineseTextSplitter(10, 20)
    with pytest.raises(ValueError, match="must be > 0"):
        ChineseTextSplitter(limits=[(CharCounter(), 0)])
    with pytest.raises(ValueError, match="leaves nothing"):
        ChineseTextSplitter(limits=[(CharCounter(), 2)])
    with pytest.raises(ValueError, match="single character"):
        ChineseTextSplitter(4, 0).split_text("你好😀")  # the emoji alone counts 5


def test_five_megabyte_line_without_punctuation() -> None:
    text = ("这是一个没有任何标点符号也没有空格的超长行" * 90_000)[:1_750_000]  # 5.25 MB UTF-8
    spans = ChineseTextSplitter().split_spans(text)
    assert spans[0][0] == 0
    assert spans[-1][1] == len(text)
    assert all(b[0] < a[1] <= b[1] for a, b in itertools.pairwise(spans))  # overlapping, no gaps
    assert max(APPROX.count_batch([text[s:e] for s, e in spans])) <= 384


def test_five_megabyte_ascii_line() -> None:
    text = ("abcdefghij" * 500_000)[:5_000_000]
    spans = ChineseTextSplitter().split_spans(text)
    assert spans[0][0] == 0
    assert spans[-1][1] == len(text)
