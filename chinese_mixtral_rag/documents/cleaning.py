"""Text cleaning for retrieval: remove what hurts matching, never what carries meaning.

Chinese text is fragile under generic normalisers: NFKC turns "，" into "," and "。" stays, so a
cleaned sentence no longer matches the question the user types. Everything here is therefore a
targeted rule, and plain prose passes through byte-identical.
"""

from __future__ import annotations

import re
import unicodedata

from chinese_mixtral_rag.chinese import FULL_WIDTH_ALNUM, HAN, is_han

__all__ = ["clean_text", "join_broken_lines", "remove_repeated_lines"]

# Characters that render as nothing but split words for the tokenizer and BM25.
_ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"
# Breaks that mean "new line" in some source (form feed between pages, Unicode line separators).
_LINE_BREAKS = "\v\f\x1c\x1d\x1e\x85\u2028\u2029"
# Spaces of every other width, including the ideographic space U+3000 used for indentation.
_ODD_SPACES = "\u00a0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u202f\u205f\u3000"


def _build_table() -> dict[int, str | None]:
    table: dict[int, str | None] = {}
    for code in range(0x20):
        if chr(code) not in "\n\t":
            table[code] = None
    for code in range(0x7F, 0xA0):
        table[code] = None
    for ch in _LINE_BREAKS:
        table[ord(ch)] = "\n"
    table[ord("\r")] = "\n"  # after CRLF -> LF, a lone CR is an old Mac line end
    for ch in _ZERO_WIDTH:
        table[ord(ch)] = None
    for ch in _ODD_SPACES:
        table[ord(ch)] = " "
    # Full-width digits and Latin letters (ＡＢＣ１２３) -> ASCII; full-width punctuation stays.
    table.update((code, chr(ascii_code)) for code, ascii_code in FULL_WIDTH_ALNUM.items())
    return table


_TABLE = _build_table()
_SPACE_RUN = re.compile(r"[ \t]+")
_LINE_EDGE_SPACE = re.compile(r" *\n *")
_MANY_NEWLINES = re.compile(r"\n{3,}")


def clean_text(text: str) -> str:
    """Normalise whitespace and invisible characters so equal text looks equal to the retriever.

    CRLF/CR become LF; zero-width and control characters (other than newline and tab) go; odd
    spaces (NBSP, U+3000 ...) become a plain space; full-width ASCII letters and digits become
    half-width while Chinese full-width punctuation is kept exactly; runs of spaces/tabs become
    one space; lines lose leading and trailing spaces; 3+ newlines become one blank line.
    """
    text = text.replace("\r\n", "\n").translate(_TABLE)
    text = _SPACE_RUN.sub(" ", text)
    text = _LINE_EDGE_SPACE.sub("\n", text)
    text = _MANY_NEWLINES.sub("\n\n", text)
    return text.strip()


# --- broken lines -------------------------------------------------------------------------

# A line ending with one of these continues on the next line (comma-like or an opening bracket).
_CONTINUING_PUNCT = "，、（《“‘【「『〔［｛〈"
# Sentence punctuation: a short line containing none of it may be a heading.
_PUNCT = "，、。！？；：,.!?;:"

# The next line starts a new item: 第…条/章/节/编, (一), 一、, 1、 1. 1．, ①, bullets, # heading.
_NEW_ITEM = re.compile(
    r"""^(?:
        第[一二三四五六七八九十百千零〇两\d]+(?:分编|编|章|节|条|款|项|部分|篇|卷|回|讲|课)
      | [（(][一二三四五六七八九十百\d]+[)）]
      | [一二三四五六七八九十百]+[、.．]
      | \d+(?:\.\d+)*\s*[、.．)）]
      | [①-⑳⑴-⒇⒈-⒛]
      | [•·●○■□◆◇▪►\-*+]\s
      | \#
      | 附\s*[则录件]
      | [\u4e00-\u9fff]{1,6}[：:]\s  # a label: "主编： 某某"
    )""",
    re.VERBOSE,
)
# pypdf renders letter-spaced text ("目 录", "第一章 总 纲") with a space between characters.
_HAN = f"[{HAN}]"
_HAN_SPACE_HAN = re.compile(f"(?<={_HAN}) (?={_HAN})")
_CHAPTER = re.compile(r"^第[一二三四五六七八九十百千零〇两\d]+(?:分编|编|章|节|条|部分|篇|卷|回) ")


def _unspace_letters(line: str) -> str:
    """Remove the spaces of a letter-spaced line; spaces between words and names stay.

    A line is letter-spaced when every space-separated token is a single character, optionally
    after a chapter number ("第一章 总 纲" -> "第一章 总纲"). A list of names such as
    "干红梅 于 珊 王 劼" is left alone: its spaces cannot be told from padding.
    """
    prefix_match = _CHAPTER.match(line)
    prefix = prefix_match.group() if prefix_match else ""
    tokens = line[len(prefix) :].split(" ")
    if len(tokens) < 2 or any(len(token) != 1 for token in tokens):
        return line
    return prefix + _HAN_SPACE_HAN.sub("", line[len(prefix) :])


def _width(line: str) -> int:
    """Display width in half-width cells: how full a printed line was."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in line)


def _is_list_row(line: str) -> bool:
    """Names or table cells separated by spaces ("杨启光 陈光磊 陈学超"): not running prose."""
    return len(_HAN_SPACE_HAN.findall(line)) >= 2


def _looks_like_heading(line: str, full_width: int) -> bool:
    return bool(_NEW_ITEM.match(line)) or (
        _width(line) < full_width // 2 and not any(ch in _PUNCT for ch in line)
    )


def join_broken_lines(text: str) -> str:
    """Undo the line breaks that PDF layout puts in the middle of Chinese sentences.

    A line is joined with the next (without a space) when it ends with a Han character or
    comma-like punctuation, it fills most of the printed width (a short line is a heading or the
    end of a paragraph), and the next line does not start a new item (第…条/章/节, list markers,
    "1、", a heading). Lines ending with 。！？：； or a closing bracket keep their break. A line
    ending with a Latin letter or digit is joined only to a line starting with a Han character
    ("1982\\n年" -> "1982年"); English lines are never glued together, nor are rows of names
    or cells separated by spaces. Spaces in letter-spaced lines ("目 录") are removed.
    """
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    lines = [_unspace_letters(line) for line in lines]
    widths = [_width(line.strip()) for line in lines]
    full_width = max(widths, default=0)
    out: list[str] = []
    current = ""
    for index, line in enumerate(lines):
        current = current + line.lstrip() if current else line
        nxt = lines[index + 1].strip() if index + 1 < len(lines) else ""
        if not (current.strip() and nxt):
            out.append(current)
            current = ""
            continue
        last = current[-1]
        joinable = (
            (is_han(last) or last in _CONTINUING_PUNCT)
            or (last.isascii() and last.isalnum() and is_han(nxt[0]))
        ) and widths[index] * 4 >= full_width * 3
        if not joinable or _is_list_row(line) or _looks_like_heading(nxt, full_width):
            out.append(current)
            current = ""
    if current:
        out.append(current)
    return "\n".join(out)


# --- page furniture ----------------------------------------------------------------------------

_PAGE_NUMBER = re.compile(
    r"""^(?:
        [-—–_~·\s]*\d{1,4}[-—–_~·\s]*
      | 第\s*\d{1,4}\s*页(?:\s*[/，,、]?\s*共\s*\d{1,4}\s*页)?
      | \d{1,4}\s*/\s*\d{1,4}
      | (?:page|p\.)\s*\d{1,4}(?:\s*(?:of|/)\s*\d{1,4})?
      | [-—–\s]*(?=[ivx])x{0,3}(?:ix|iv|v?i{0,3})[-—–\s]*
    )$""",
    re.VERBOSE | re.IGNORECASE,
)
_DIGITS = re.compile(r"[0-9０-９]+")
_EDGE_LINES = 2  # how many lines at the top and at the bottom of a page count as header/footer


def _furniture_key(line: str) -> str:
    return _DIGITS.sub("#", " ".join(line.split()))


def remove_repeated_lines(pages: list[str]) -> list[str]:
    """Drop running headers, footers and page numbers from the pages of one PDF.

    A line among the first or last two non-empty lines of a page is furniture when, with digits
    replaced by a placeholder, it appears at the top or bottom of at least half of the pages and
    of at least 3 pages ("第 3 页 共 31 页", "某某公司内部资料"); standalone page numbers
    ("- 12 -", "第 3 页", "3 / 31", "12") at the top or bottom are dropped on any page. The same
    number of pages comes back; a page may become empty.
    """
    split_pages = [page.split("\n") for page in pages]
    counts: dict[str, int] = {}
    for lines in split_pages:
        content = [line for line in lines if line.strip()]
        edge = content[:_EDGE_LINES] + content[-_EDGE_LINES:]
        for key in {_furniture_key(line) for line in edge}:
            counts[key] = counts.get(key, 0) + 1
    threshold = max(3, (len(pages) + 1) // 2)
    repeated = {key for key, count in counts.items() if count >= threshold}

    def is_furniture(line: str) -> bool:
        stripped = line.strip()
        return bool(_PAGE_NUMBER.match(stripped)) or _furniture_key(stripped) in repeated

    result: list[str] = []
    for lines in split_pages:
        start, end = 0, len(lines)
        for _ in range(_EDGE_LINES):
            while start < end and not lines[start].strip():
                start += 1
            if start < end and is_furniture(lines[start]):
                start += 1
        for _ in range(_EDGE_LINES):
            while end > start and not lines[end - 1].strip():
                end -= 1
            if end > start and is_furniture(lines[end - 1]):
                end -= 1
        result.append("\n".join(lines[start:end]))
    return result
