"""The token-budget packer: property tests over random files, chunkings, histories and budgets,
measured on the real prompt (Mixtral-Instruct template) with the approximate Mixtral counter."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.documents import Document

from chinese_mixtral_rag.chat_template import render_prompt
from chinese_mixtral_rag.documents.splitter import ChineseTextSplitter
from chinese_mixtral_rag.documents.tokens import ApproximateCounter
from chinese_mixtral_rag.qa.packing import Passage, hit_passages, merge_chunks, pack
from chinese_mixtral_rag.qa.prompts import passage_header, qa_messages

APPROX = ApproximateCounter()
ALPHABET = "天下大势分久必合周末七国争并入于秦逝淘渚龘𠀀。！？，、“”《》 \nHello world3.14😀"


def chunk_file(source: str, pages: Sequence[str], size: int, overlap: int) -> list[Document]:
    """Chunks exactly as ingest stores them (the real splitter, per-page offsets, ids)."""
    splitter = ChineseTextSplitter(chunk_size=size, chunk_overlap=overlap, counter=APPROX)
    docs = [Document(p, metadata={"source": source, "page": n}) for n, p in enumerate(pages, 1)]
    chunks = splitter.split_documents(docs)
    for chunk in chunks:
        chunk.metadata["id"] = f"{source}#{chunk.metadata['chunk_index']}"
    return chunks


@st.composite
def corpora(draw: st.DrawFn) -> dict[str, list[Document]]:
    size = draw(st.integers(12, 80))
    overlap = draw(st.integers(0, size // 3))
    files: dict[str, list[Document]] = {}
    for n in range(draw(st.integers(1, 4))):
        pages = draw(st.lists(st.text(ALPHABET, min_size=1, max_size=300), min_size=1, max_size=3))
        chunks = chunk_file(f"file{n}.txt", pages, size, overlap)
        if chunks:
            files[f"file{n}.txt"] = chunks
    return files


def measure_for(question: str, history: list[tuple[str, str]]):  # type: ignore[no-untyped-def]
    def measure(passages: Sequence[Passage]) -> int:
        return APPROX.count(render_prompt(qa_messages(passages, question, history)))

    return measure


histories = st.lists(
    st.tuples(st.text(ALPHABET, max_size=40), st.text(ALPHABET, max_size=80)), max_size=3
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    files=corpora(),
    history=histories,
    question=st.text(ALPHABET, min_size=1, max_size=60),
    limit=st.integers(50, 3000),
    data=st.data(),
)
def test_prompt_never_exceeds_the_limit_and_passages_are_whole_chunks(
    files: dict[str, list[Document]],
    history: list[tuple[str, str]],
    question: str,
    limit: int,
    data: st.DataObject,
) -> None:
    all_chunks = [c for chunks in files.values() for c in chunks]
    hits = data.draw(st.permutations(all_chunks)).copy()[: data.draw(st.integers(0, 30))]
    offer_whole = data.draw(st.booleans())
    measure = measure_for(question, history)
    if measure([]) > limit:
        return  # covered by test_a_prompt_without_room_is_a_clear_error
    packed = pack(
        hits,
        limit=limit,
        measure=measure,
        count=APPROX.count,
        documents=files if offer_whole else None,
    )
    assert measure(packed.passages) <= limit
    assert packed.report.prompt_tokens == measure(packed.passages)
    texts = {c.metadata["id"]: c.page_content for c in all_chunks}
    for passage in packed.passages:
        # Every passage is whole chunks of one file, in file order, joined without cutting.
        chunk_texts = [texts[i] for i in passage.chunk_ids]
        assert passage.text.startswith(chunk_texts[0])
        assert passage.text.endswith(chunk_texts[-1])
        for text in chunk_texts:
            assert text in passage.text
        assert all(i.startswith(passage.source + "#") for i in passage.chunk_ids)
        indexes = [int(i.rsplit("#", 1)[1]) for i in passage.chunk_ids]
        assert indexes == list(range(indexes[0], indexes[0] + len(indexes)))
    # Whole-document mode exactly when all the candidate files fit.
    if offer_whole:
        whole = merge_chunks(all_chunks, by_part=True)
        assert (packed.report.mode == "whole") == (measure(whole) <= limit)
        if packed.report.mode == "whole":  # one passage per page: [n] names a page
            assert all(p.page == p.last_page for p in packed.passages)
    else:
        assert packed.report.mode != "whole"
    if packed.report.mode == "passages":
        used = {i for p in packed.passages for i in p.chunk_ids}
        assert used <= {h.metadata["id"] for h in hits}
        left = {x.chunk_id for x in packed.report.left_out}
        assert used | left == {h.metadata["id"] for h in hits}


@settings(max_examples=60, deadline=None)
@given(pages=st.lists(st.text(ALPHABET, min_size=1, max_size=400), min_size=1, max_size=4))
def test_merging_all_chunks_of_a_page_gives_back_its_text(pages: list[str]) -> None:
    """Overlaps are taken once: merged neighbours are the page text (minus edge whitespace)."""
    chunks = chunk_file("f.txt", pages, 30, 8)
    for page_no, page in enumerate(pages, 1):
        on_page = [c for c in chunks if c.metadata["page"] == page_no]
        if not on_page:
            continue
        start = on_page[0].metadata["start_index"]
        end = on_page[-1].metadata["end_index"]
        merged = merge_chunks(on_page)
        joined = "\n".join(p.text for p in merged)
        assert len(merged) == 1
        # Gaps between chunks (whitespace only) come back as a line break.
        assert joined.split() == page[start:end].split()


def test_best_hits_go_first_when_not_everything_fits() -> None:
    text = "。".join(f"第{n}条规定了事项{n}" for n in range(200)) + "。"
    chunks = chunk_file("law.txt", [text], 40, 0)
    hits = [chunks[30], chunks[5], chunks[17]]
    measure = measure_for("问题", [])
    limit = measure([]) + 70  # room for about one chunk
    packed = pack(hits, limit=limit, measure=measure, count=APPROX.count, documents=None)
    assert [p.chunk_ids for p in packed.passages] == [(chunks[30].metadata["id"],)]
    assert [x.reason for x in packed.report.left_out] == ["budget", "budget"]
    assert packed.report.tokens_by_source == {"law.txt": APPROX.count(chunks[30].page_content)}


def test_whole_files_go_in_when_they_fit_and_neighbours_merge_otherwise() -> None:
    text = "。".join(f"第{n}条规定了事项{n}" for n in range(60)) + "。"
    chunks = chunk_file("law.txt", [text], 40, 10)
    measure = measure_for("问题", [])
    roomy = pack(
        chunks[3:5],
        limit=100_000,
        measure=measure,
        count=APPROX.count,
        documents={"law.txt": chunks},
    )
    assert roomy.report.mode == "whole"
    assert roomy.report.whole_sources == ["law.txt"]
    assert roomy.passages[0].text == text
    tight = pack(
        [chunks[4], chunks[3], chunks[9]],
        limit=measure([]) + 200,
        measure=measure,
        count=APPROX.count,
        documents={"law.txt": chunks},
    )
    assert tight.report.mode == "passages"
    assert [p.chunk_index for p in tight.passages] == [3, 9]
    merged = tight.passages[0]
    assert merged.text in text
    assert chunks[3].page_content in merged.text
    assert chunks[4].page_content in merged.text


def test_a_whole_file_is_numbered_page_by_page() -> None:
    """A 31-page file packed whole gives a passage per page, so ``[n]`` cites "第 3 页", never
    "p. 1-31"; the pages together are the whole text, in order."""
    pages = [f"第{n}页。" + "。".join(f"第{n}页第{k}句话" for k in range(12)) for n in range(1, 32)]
    chunks = chunk_file("宪法.pdf", pages, 40, 8)
    packed = pack(
        chunks[:2],
        limit=100_000,
        measure=measure_for("问题", []),
        count=APPROX.count,
        documents={"宪法.pdf": chunks},
    )
    assert packed.report.mode == "whole"
    assert [p.pages for p in packed.passages] == [str(n) for n in range(1, 32)]
    assert [p.text for p in packed.passages] == pages


def test_a_prompt_without_room_is_a_clear_error() -> None:
    import pytest

    from chinese_mixtral_rag.errors import ContextLengthError

    measure = measure_for("很长的问题" * 50, [])
    with pytest.raises(ContextLengthError, match="max_new_tokens"):
        pack([], limit=20, measure=measure, count=APPROX.count)


def sheet_chunk(index: int, sheet: str, rows: tuple[int, int], text: str) -> Document:
    """A chunk as ingest stores a part of rows: offsets start at 0 in every part."""
    meta = {"source": "销售.xlsx", "id": f"销售.xlsx#{index}", "chunk_index": index}
    meta.update(sheet=sheet, row_start=rows[0], row_end=rows[1])
    return Document(text, metadata={**meta, "start_index": 0, "end_index": len(text)})


def test_neighbouring_chunks_of_rows_merge_into_one_range_of_one_sheet() -> None:
    chunks = [
        sheet_chunk(0, "一季度销售", (2, 3), "门店: 第1店; 销量: 10\n门店: 第2店; 销量: 20"),
        sheet_chunk(1, "一季度销售", (4, 12), "门店: 第3店; 销量: 30"),
        sheet_chunk(2, "联系人", (2, 2), "姓名: 王芳; 电话: 0571"),
    ]
    sales, contacts = merge_chunks(chunks)
    # Both parts' rows are there (offsets restart in each part: no overlap to cut).
    assert sales.text == f"{chunks[0].page_content}\n{chunks[1].page_content}"
    assert (sales.sheet, sales.rows, sales.pages) == ("一季度销售", "2-12", "")
    assert (contacts.sheet, contacts.rows) == ("联系人", "2")  # another sheet: its own passage
    assert passage_header(1, sales) == "[1] 来源：销售.xlsx，工作表 一季度销售 第 2-12 行"
    assert passage_header(2, contacts) == "[2] 来源：销售.xlsx，工作表 联系人 第 2 行"


def test_a_document_table_and_its_page_both_show_in_the_header() -> None:
    meta = {"source": "汇报.pptx", "id": "汇报.pptx#4", "chunk_index": 4, "page": 3}
    table = Document("地区: 华东; 销售额: 120万", metadata={**meta, "table": 2, "row_start": 5})
    (passage,) = merge_chunks([table])
    assert passage_header(1, passage) == "[1] 来源：汇报.pptx，第 3 页，表 2 第 5 行"


def scored(chunk: Document, score: float, relevance: float) -> Document:
    """A chunk as the retriever returns it."""
    return Document(
        chunk.page_content, metadata={**chunk.metadata, "score": score, "relevance": relevance}
    )


def test_search_hits_that_are_neighbours_are_one_passage_in_the_rank_of_their_best_hit() -> None:
    """An article cut by the splitter and by a page break, found as two hits, reads as one
    passage ("p. 1-2") with its best score and relevance; passages follow the rank of their best
    hit, not file order; a chunk between two hits that was not found is not filled in."""
    first = "。".join(f"第{n}条规定了事项{n}" for n in range(1, 13)) + "。第十三条 其余事项"
    then = "由国务院另行规定。" + "。".join(f"第{n}条规定了事项{n}" for n in range(14, 20))
    chunks = chunk_file("宪法.pdf", [first, then], 40, 8)
    on_first = [c for c in chunks if c.metadata["page"] == 1]
    end_of_page, top_of_next = on_first[-1], chunks[len(on_first)]
    assert len(on_first) >= 5  # chunks 0 and 2 lie apart from the page's end
    other = Document("居住权不得继承。", metadata={"source": "a.txt", "id": "a.txt#0"})
    hits = [
        scored(top_of_next, 0.3, 0.5),
        scored(other, 0.25, 0.6),
        scored(end_of_page, 0.2, 0.9),
        scored(chunks[2], 0.1, 0.4),
        scored(chunks[0], 0.05, 0.3),
    ]
    passages = hit_passages(hits)
    assert [p.rank for p in passages] == [1, 2, 4, 5]
    article = passages[0]
    assert article.chunk_ids == (end_of_page.metadata["id"], top_of_next.metadata["id"])
    assert article.pages == "1-2"
    assert article.text == f"{end_of_page.page_content}\n{top_of_next.page_content}"
    assert "其余事项\n由国务院另行规定" in article.text
    assert (article.score, article.relevance) == (0.3, 0.9)
    assert passages[1].source == "a.txt"
    assert [p.chunk_ids for p in passages[2:]] == [
        (chunks[2].metadata["id"],),
        (chunks[0].metadata["id"],),
    ]


def test_search_hits_in_two_sections_stay_two_passages() -> None:
    """Neighbouring hits under two headings are two results, each naming its own section
    (the packer still merges them into one passage of the prompt)."""
    meta = {"source": "制度.docx", "title": "制度"}
    a = Document("第一条 目的", metadata={**meta, "id": "d#0", "chunk_index": 0, "heading": "总则"})
    b = Document("第二条 范围", metadata={**meta, "id": "d#1", "chunk_index": 1, "heading": "附则"})
    assert [p.chunk_ids for p in hit_passages([b, a])] == [("d#1",), ("d#0",)]
    assert [p.chunk_ids for p in merge_chunks([b, a])] == [("d#0", "d#1")]
