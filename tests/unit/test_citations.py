"""Citation markers in a streamed answer: kept when they point at a source, removed otherwise,
whatever the pieces the text arrives in."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from chinese_mixtral_rag.qa.citations import CitationFilter


def run(pieces: list[str], valid: int) -> tuple[str, list[int]]:
    citations = CitationFilter(valid)
    out = "".join(citations.feed(p) for p in pieces) + citations.flush()
    return out, citations.cited


def test_dangling_markers_are_removed_and_cited_ones_listed() -> None:
    text = "居住权不得继承[2]，也不得转让[7][1]。见第[3条和[x]。"
    assert run([text], valid=3) == ("居住权不得继承[2]，也不得转让[1]。见第[3条和[x]。", [2, 1])
    assert run([text], valid=0)[0] == "居住权不得继承，也不得转让。见第[3条和[x]。"


@given(
    text=st.text(alphabet="居住权[]0123456789x。 ", max_size=80),
    cuts=st.lists(st.integers(0, 80), max_size=10),
    valid=st.integers(0, 12),
)
def test_streaming_in_any_pieces_gives_the_same_text(
    text: str, cuts: list[int], valid: int
) -> None:
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    pieces = [text[a:b] for a, b in pairwise(bounds)]
    assert run(pieces, valid) == run([text], valid)
