"""The one home of Chinese text rules: which characters are Han, and how full-width forms fold.

Cleaning, the lexical index, the loaders, encoding detection and the prompts all ask these
questions; answering them in one place is what keeps a document's text and a user's query folded
the same way (a chunk cleaned with one rule and a query tokenized with another never match).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

__all__ = [
    "CJK_PUNCTUATION",
    "FULL_WIDTH_FORMS",
    "HAN",
    "HAN_RANGES",
    "LEXICAL_SCRIPTS",
    "fold_full_width",
    "has_han",
    "is_han",
    "strip_question_words",
]

#: Han ideographs as code point ranges: the unit Chinese text breaks, indexes and counts on.
HAN_RANGES: tuple[tuple[int, int], ...] = (
    (0x3005, 0x3007),  # 々 〆 〇
    (0x3400, 0x4DBF),  # Extension A
    (0x4E00, 0x9FFF),  # Unified Ideographs
    (0xF900, 0xFAFF),  # Compatibility Ideographs
    (0x20000, 0x3FFFF),  # the ideographic planes: Extensions B-I and compatibility supplement
)


def _char_class(ranges: tuple[tuple[int, int], ...]) -> str:
    return "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in ranges)


#: :data:`HAN_RANGES` as the inside of a regular-expression character class (``f"[{HAN}]"``).
HAN = _char_class(HAN_RANGES)
#: Ideographic space, 、。〈〉《》「」『』【】〔〕 and the other CJK symbols and punctuation.
CJK_PUNCTUATION = "\u3000-\u303f"
#: Full-width and half-width forms: ，！？（）：； and full-width letters and digits.
FULL_WIDTH_FORMS = "\uff00-\uffef"
#: Scripts written without spaces between words, indexed character by character (Han, kana,
#: Hangul syllables); other letters and digits are indexed as whole words.
LEXICAL_SCRIPTS = HAN + "\u3040-\u30ff\uac00-\ud7af"

_HAN_CHAR = re.compile(f"[{HAN}]")

#: Full-width ASCII letters and digits (ＡＢＣ１２３) -> ASCII. Full-width punctuation is kept:
#: Chinese is written with it, and a question typed with "，" must match a chunk with "，".
FULL_WIDTH_ALNUM: dict[int, int] = {
    code: code - 0xFEE0
    for code in (*range(0xFF10, 0xFF1A), *range(0xFF21, 0xFF3B), *range(0xFF41, 0xFF5B))
}


#: Question words: they say what kind of answer is wanted, not where it is, so relevance ignores
#: them (a passage never contains "哪两个" but does contain the answer), and so does the support
#: of a citation (an answer that repeats the question's "是否" claims nothing by it).
_QUESTION_WORDS = re.compile(
    "为什么|为何|什么|哪些|哪个|哪里|哪儿|哪一|哪|谁|多少|几个|几|怎么样|怎么|怎样|如何|是否|吗|呢|请问"
)


def strip_question_words(text: str) -> str:
    """``text`` without its question words (什么, 多少, 吗 …): what a passage must contain."""
    return _QUESTION_WORDS.sub(" ", text)


def is_han(ch: str) -> bool:
    """True for one Han ideograph (a character of :data:`HAN_RANGES`)."""
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in HAN_RANGES)


def has_han(text: str) -> bool:
    """True when ``text`` holds at least one Han ideograph."""
    return _HAN_CHAR.search(text) is not None


def fold_full_width(text: str) -> str:
    """Full-width letters and digits as ASCII; everything else unchanged."""
    return text.translate(FULL_WIDTH_ALNUM)


@lru_cache(maxsize=1)
def _t2s() -> Any:
    try:
        import opencc
    except ImportError as exc:
        from chinese_mixtral_rag.errors import MissingDependencyError

        raise MissingDependencyError("opencc", "rag", "Traditional/Simplified folding") from exc
    return opencc.OpenCC("t2s")


def to_simplified(text: str) -> str:
    """Traditional characters and phrases as Simplified (OpenCC's t2s, ~60 MB/s), so that the
    two scripts find each other in search; text that is already Simplified stays as it is."""
    if not has_han(text):
        return text
    return str(_t2s().convert(text))
