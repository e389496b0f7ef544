"""Turn one file into cleaned LangChain Documents, whatever its format or encoding.

The ingest pipeline calls :func:`load_file` per file and reports a :class:`DocumentError` per file,
so every failure here (unsupported, empty, binary, corrupt, encrypted, unreadable) becomes a
DocumentError whose message names the file, the reason and what to do. Parsers for PDF, Office,
EPUB and HTML are imported inside the loader that uses them: importing this module stays cheap.

Text that arrives as bytes (txt, md, csv, json, html, eml) is decoded by :func:`decode_text`, which
detects the encoding instead of assuming UTF-8: GBK/GB18030 and Big5 files are the most common
reason Chinese documents fail to load elsewhere.
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.documents import Document

from chinese_mixtral_rag.documents.cleaning import (
    clean_text,
    is_cjk,
    join_broken_lines,
    remove_repeated_lines,
)
from chinese_mixtral_rag.errors import DocumentError

if TYPE_CHECKING:
    from bs4 import BeautifulSoup, Tag

__all__ = ["SUPPORTED_EXTENSIONS", "decode_text", "load_file"]

logger = logging.getLogger(__name__)
_CURRENT_FILE: ContextVar[str] = ContextVar("_CURRENT_FILE", default="(bytes)")

# ===============================================================================================
# Encoding detection
# ===============================================================================================

_BOMS: tuple[tuple[bytes, str, str], ...] = (
    # UTF-32 first: its little-endian BOM starts with the UTF-16 one.
    (b"\xff\xfe\x00\x00", "utf-32", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32", "utf-32"),
    (b"\xef\xbb\xbf", "utf-8-sig", "utf-8-sig"),
    (b"\xff\xfe", "utf-16", "utf-16"),
    (b"\xfe\xff", "utf-16", "utf-16"),
)

# Candidate legacy encodings, grouped by family, in order of preference when two decode equally
# well (mainland Chinese first). Within a family the first codec that decodes strictly wins;
# GBK/GB2312 are always decoded as GB18030, their superset.
_FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("gb18030", ("gb18030",)),
    ("big5", ("big5", "cp950", "big5hkscs")),
    ("utf-16-le", ("utf-16-le",)),
    ("utf-16-be", ("utf-16-be",)),
    ("shift_jis", ("shift_jis", "cp932")),
    ("euc-kr", ("euc_kr", "cp949")),
    ("western", ("cp1252", "latin-1")),
)
_FAMILY_CODECS = dict(_FAMILIES)
# Charsets declared by mail headers or <meta charset>, mapped onto a family.
_DECLARED_FAMILY = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cp936": "gb18030",
    "euc-cn": "gb18030",
    "gb18030": "gb18030",
    "big5": "big5",
    "big5-hkscs": "big5",
    "cp950": "big5",
    "shift_jis": "shift_jis",
    "shift-jis": "shift_jis",
    "euc-kr": "euc-kr",
    "ks_c_5601-1987": "euc-kr",
    "windows-1252": "western",
    "iso-8859-1": "western",
    "us-ascii": "western",
}
# Bytes that do not occur in text: NUL and the C0 controls other than \t \n \v \f \r and ESC.
_CONTROL_BYTES = bytes([*range(0x00, 0x09), *range(0x0E, 0x1B), *range(0x1C, 0x20), 0x7F])
_MIN_SCORE = 0.6  # below this no candidate looks like text
_LOSSY_MAX = 0.001  # accept at most 0.1 % undecodable bytes, with a warning
_SCORE_SAMPLE = 1 << 18  # characters scored per candidate; decoding is always full and strict


def _double_byte_chars(codec: str, leads: range, trails: Iterable[int], stop: int) -> set[str]:
    chars: set[str] = set()
    for lead in leads:
        for trail in trails:
            if (lead << 8) | trail > stop:
                break
            try:
                chars.add(bytes((lead, trail)).decode(codec))
            except UnicodeDecodeError:
                continue
    return {ch for ch in chars if is_cjk(ch)}


@functools.cache
def _han_tiers() -> tuple[frozenset[str], frozenset[str]]:
    """(frequent, less frequent) Han characters as the national standards rank them.

    Frequent: GB2312 level 1 (simplified) and Big5 常用字 (traditional); less frequent: GB2312
    level 2 and Big5 次常用字. Mis-decoded Chinese (Big5 read as GBK or the reverse) still gives
    valid characters, but many fall in the lower tiers or outside both: that is what tells the
    encodings apart, even in a 10-character sentence.
    """
    gb_trails = range(0xA1, 0xFF)
    big5_trails = [*range(0x40, 0x7F), *range(0xA1, 0xFF)]
    frequent = _double_byte_chars("gb2312", range(0xB0, 0xD8), gb_trails, 0xD7F9)
    frequent |= _double_byte_chars("big5", range(0xA4, 0xC7), big5_trails, 0xC67E)
    known = _double_byte_chars("gb2312", range(0xD8, 0xF8), gb_trails, 0xF7FE)
    known |= _double_byte_chars("big5", range(0xC9, 0xFA), big5_trails, 0xF9D5)
    return frozenset(frequent), frozenset(known - frequent)


def _is_hangul(code: int) -> bool:
    return 0xAC00 <= code <= 0xD7A3 or 0x1100 <= code <= 0x11FF or 0x3130 <= code <= 0x318F


def _char_weight(ch: str, family: str, hangul_ok: bool) -> float:
    """How plausible one non-ASCII character is in text of the given encoding family."""
    code = ord(ch)
    if is_cjk(ch):
        frequent, known = _han_tiers()
        return 1.0 if ch in frequent else 0.6 if ch in known else 0.2
    if (
        0x3000 <= code <= 0x303F  # CJK punctuation
        or 0xFF01 <= code <= 0xFF5E  # full-width forms
        or 0x2010 <= code <= 0x2027  # dashes, quotes, ellipsis
        or 0x2030 <= code <= 0x205E
        or ch in "\u00b7\u00d7\u00f7\u00b0\u00a7\f\v\x1b"
    ):
        return 1.0
    if code < 0x20 or 0x7F <= code < 0xA0 or 0xE000 <= code <= 0xF8FF or code == 0xFFFD:
        return 0.0  # control characters, private use, replacement character
    if _is_hangul(code):
        return 0.9 if family == "euc-kr" and hangul_ok else 0.1
    if 0x3040 <= code <= 0x30FF:
        return 0.9 if family == "shift_jis" else 0.1
    if 0xFF61 <= code <= 0xFF9F:
        return 0.3 if family == "shift_jis" else 0.1
    if 0xA0 <= code <= 0x24F:
        return 0.8 if family == "western" else 0.5  # pinyin with tone marks: zhōng guó
    return 0.3  # Greek, Cyrillic, bopomofo, box drawing, symbols: possible, rarely the bulk


# ASCII letters or symbols squeezed between non-ASCII characters ("瀏a僑"): the trace of UTF-16
# or binary data read as a legacy encoding. Digits are exempt ("2021年1月1日").
_SPACED_HAN = re.compile(r"(?<=[\u4e00-\u9fff]) (?=[\u4e00-\u9fff])")
_SANDWICHED_ASCII = re.compile(r"(?<=[^\x00-\x7f])[!-/:-~]{1,2}(?=[^\x00-\x7f])")


def _score(text: str, family: str) -> float:
    """Share of plausible characters among the non-ASCII ones (1.0 for plain ASCII)."""
    sample = text[:_SCORE_SAMPLE]
    counts = Counter(sample)
    hangul_ok = True
    prior = 1.0
    if family == "euc-kr":
        # Korean is written in Hangul with little Hanja; Chinese read as EUC-KR mixes both, or
        # comes out as Hanja only.
        hangul = sum(count for ch, count in counts.items() if _is_hangul(ord(ch)))
        han = sum(count for ch, count in counts.items() if is_cjk(ch))
        hangul_ok = hangul > 0 and han * 5 <= hangul + han
        prior = 1.0 if hangul_ok else 0.5
    elif family == "shift_jis" and not any(0x3040 <= ord(ch) <= 0x30FF for ch in counts):
        prior = 0.5  # Japanese without a single kana is Chinese read as Shift_JIS
    elif family in ("gb18030", "big5"):
        # Chinese has no spaces between words; Korean (read as GB18030) has one every few.
        han = sum(count for ch, count in counts.items() if is_cjk(ch))
        prior = 0.7 if len(_SPACED_HAN.findall(sample)) * 10 > han else 1.0
    total = weighted = 0.0
    for ch, count in counts.items():
        if " " <= ch <= "~" or ch in "\n\r\t":
            continue
        total += count
        weighted += count * _char_weight(ch, family, hangul_ok)
    total += len(_SANDWICHED_ASCII.findall(sample))
    if total == 0:
        return 1.0
    score = prior * weighted / total
    if family == "western":
        # Western text has accented letters between ASCII ones; runs of them are mojibake.
        non_ascii = len(sample) - len(sample.encode("ascii", "ignore"))
        in_runs = sum(len(run) for run in re.findall(r"[^\x00-\x7f]{3,}", sample))
        score *= 1.0 - in_runs / max(non_ascii, 1)
    return score


def _encoding_name(codec: str) -> str:
    """Python's canonical codec name ("utf-8", "gb18030", "big5", "utf-16-le"): stable, and
    accepted by open(encoding=...)."""
    return codecs.lookup(codec).name


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _sample(data: bytes) -> bytes:
    if len(data) <= 1 << 17:
        return data
    middle = len(data) // 2
    return data[: 1 << 16] + data[middle : middle + (1 << 16)]


def _candidates(data: bytes, families: Iterable[str]) -> list[tuple[float, int, str, str]]:
    """Strictly decode with each family; (score, preference, name, text) for those that work."""
    found: list[tuple[float, int, str, str]] = []
    for preference, family in enumerate(families):
        codecs = _FAMILY_CODECS[family]
        if family.startswith("utf-16") and len(data) % 2:
            continue
        for codec in codecs:
            try:
                text = data.decode(codec)
            except UnicodeDecodeError:
                continue
            found.append((_score(text, family), preference, _encoding_name(codec), text))
            break
    return found


def _best(found: list[tuple[float, int, str, str]]) -> tuple[float, int, str, str] | None:
    if not found:
        return None
    top = max(score for score, *_ in found)
    # Near-ties go to the preferred family: a 4-character GBK text can decode to common
    # characters as Big5 too, and mainland text is the likelier.
    return min((item for item in found if item[0] >= top - 0.02), key=lambda item: item[1])


def _decode(data: bytes, declared: str | None = None) -> tuple[str, str]:
    """decode_text with an optional charset declared by the container (mail part, <meta>).

    The declaration only wins ties among candidates that decode; it is never trusted blindly,
    because mislabelled Chinese pages (GBK declared as ISO-8859-1) are common.
    """
    if not data:
        return "", "utf-8"
    for bom, codec, name in _BOMS:
        if data.startswith(bom):
            try:
                return _lf(data.decode(codec)), name
            except UnicodeDecodeError:
                break  # a coincidental BOM: detect as usual
    sample = _sample(data)
    controls = len(sample) - len(sample.translate(None, _CONTROL_BYTES))
    if controls > len(sample) // 100:
        # NUL and control bytes: UTF-16 without a BOM, or binary.
        best = _best(_candidates(data, ("utf-16-le", "utf-16-be")))
        if best is not None and best[0] >= _MIN_SCORE:
            return _lf(best[3]), best[2]
        raise DocumentError(f"not a text file ({controls * 100 // len(sample)}% control bytes)")
    try:
        return _lf(data.decode("utf-8")), "utf-8"
    except UnicodeDecodeError:
        pass
    order = [family for family, _ in _FAMILIES]
    family = _DECLARED_FAMILY.get((declared or "").strip().lower())
    if family is not None:
        order.remove(family)
        order.insert(0, family)
    best = _best(_candidates(data, order))
    if best is not None and best[0] >= _MIN_SCORE:
        return _lf(best[3]), best[2]
    return _decode_lossy(data, order)


def _decode_lossy(data: bytes, order: list[str]) -> tuple[str, str]:
    """A text with a handful of damaged bytes still loads, with a warning naming the encoding."""
    for family in ("utf-8", *order):
        codec = "utf-8" if family == "utf-8" else _FAMILY_CODECS[family][0]
        if family == "western" or (family.startswith("utf-16") and len(data) % 2):
            continue
        text = data.decode(codec, errors="replace")
        bad = text.count("\ufffd")
        if bad <= max(1, len(text) * _LOSSY_MAX) and (
            family == "utf-8" or _score(text, family) >= 0.8
        ):
            name = _encoding_name(codec)
            logger.warning(
                "%s: %d undecodable byte(s) replaced with U+FFFD (decoded as %s)",
                _CURRENT_FILE.get(),
                bad,
                name,
            )
            return _lf(text), name
    return _decode_other(data)


def _decode_other(data: bytes) -> tuple[str, str]:
    """Last resort for text in none of the candidate encodings (Cyrillic cp1251, Thai ...):
    charset-normalizer over all encodings, accepted only below its default mess threshold."""
    from charset_normalizer import from_bytes

    match = from_bytes(data).best()
    if match is None:
        raise DocumentError("not a text file (no text encoding decodes it cleanly)")
    return _lf(str(match)), _encoding_name(match.encoding)


def decode_text(data: bytes) -> tuple[str, str]:
    """Decode file bytes to text by detecting the encoding; returns (text, encoding name).

    Order: byte-order marks (utf-8-sig, utf-16, utf-32); UTF-16 without BOM when NUL/control
    bytes say so; strict UTF-8; then every candidate legacy encoding (gb18030, big5, utf-16,
    shift_jis, euc-kr, cp1252/latin-1) that decodes strictly is scored by how plausible its
    characters are (common Han characters versus rare ones, kana, Hangul, mojibake), which keeps
    short GB18030 and Big5 texts apart where byte-statistics detectors (charset-normalizer
    included) fail. A handful of damaged bytes in otherwise clean UTF-8/GB18030/Big5 are replaced
    with a warning; other encodings go to charset-normalizer. Line ends become LF. Raises
    DocumentError("not a text file ...") for binary data.
    """
    return _decode(data)


# ===============================================================================================
# Shared pieces
# ===============================================================================================


@dataclass
class _Extracted:
    """What a format loader found: text parts with their metadata, before cleaning."""

    parts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    title: str | None = None
    encoding: str | None = None
    empty_reason: str = "no text"


class _Sections:
    """Collects lines into sections keyed by heading path ("第一章 总则 > 第一节 一般规定")."""

    def __init__(self) -> None:
        self._stack: list[tuple[int, str]] = []
        self._sections: list[tuple[str | None, list[str]]] = [(None, [])]

    def heading(self, level: int, text: str) -> None:
        text = " ".join(clean_text(text).split())
        if not text:
            return
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, text))
        self._sections.append((" > ".join(t for _, t in self._stack), [text]))

    def line(self, text: str) -> None:
        self._sections[-1][1].append(text)

    def parts(self) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        for index, (heading, lines) in enumerate(self._sections):
            nxt = self._sections[index + 1][0] if index + 1 < len(self._sections) else None
            only_heading = heading is not None and not any(line.strip() for line in lines[1:])
            if only_heading and nxt is not None and nxt.startswith(f"{heading} > "):
                continue  # "第一章" directly followed by "第一节": its path lives on below
            out.append(("\n".join(lines), {"heading": heading} if heading else {}))
        return out


_JUNK_TITLES = frozenset(
    {"untitled", "无标题", "無標題", "powerpoint presentation", "presentation"}
)
_OFFICE_PREFIX = re.compile(r"^(?:microsoft (?:word|powerpoint|excel) - )", re.IGNORECASE)
_OFFICE_SUFFIX = re.compile(r"\.(?:docx?|pptx?|xlsx?|wps|rtf|txt)$", re.IGNORECASE)


def _title(value: object) -> str | None:
    """A usable one-line title, or None for empty, placeholder and generated ones."""
    if not isinstance(value, str):
        return None
    text = " ".join(clean_text(value).split())
    text = _OFFICE_SUFFIX.sub("", _OFFICE_PREFIX.sub("", text)).strip()
    if not text or text.lower() in _JUNK_TITLES or len(text) > 300:
        return None
    return text


def _short(exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    if len(message) > 160:
        message = message[:157] + "..."
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


# ===============================================================================================
# Plain text, Markdown, CSV, JSON
# ===============================================================================================


def _text_or_error(data: bytes, declared: str | None = None) -> tuple[str, str]:
    try:
        return _decode(data, declared)
    except DocumentError as exc:
        raise DocumentError(
            f"{exc}; it may be a binary file with a text extension: check what it is "
            "(e.g. the `file` command) and give it its proper extension"
        ) from None


def _load_txt(data: bytes) -> _Extracted:
    text, encoding = _text_or_error(data)
    return _Extracted(parts=[(text, {})], encoding=encoding)


_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+|(?=[^\x00-\x7f]))(.*?)(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_FRONT_MATTER_TITLE = re.compile(r"^title:\s*[\"']?(.*?)[\"']?\s*$", re.MULTILINE)


def _load_markdown(data: bytes) -> _Extracted:
    text, encoding = _text_or_error(data)
    title: str | None = None
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        if end != -1:
            match = _FRONT_MATTER_TITLE.search(text[4:end])
            title = _title(match.group(1)) if match else None
            text = text[end + 4 :].lstrip("-").lstrip("\n")
    sections = _Sections()
    lines = text.split("\n")
    fence: str | None = None
    skip = False
    for index, line in enumerate(lines):
        if skip:
            skip = False
            continue
        fence_match = _FENCE.match(line)
        if fence is not None:
            if fence_match and fence_match.group(1)[0] == fence[0]:
                fence = None
            sections.line(line)
            continue
        if fence_match:
            fence = fence_match.group(1)
            sections.line(line)
            continue
        atx = _ATX.match(line)
        nxt = lines[index + 1] if index + 1 < len(lines) else ""
        setext = _SETEXT.match(nxt)
        previous_blank = index == 0 or not lines[index - 1].strip()
        if atx:
            level, heading = len(atx.group(1)), atx.group(2)
        elif (
            setext
            and line.strip()
            and previous_blank
            and not line.lstrip().startswith(("-", "*", ">", "|"))
        ):
            level, heading = (1 if setext.group(1)[0] == "=" else 2), line
            skip = True
        else:
            sections.line(line)
            continue
        sections.heading(level, heading)
        if level == 1 and title is None:
            title = _title(heading)
    return _Extracted(parts=sections.parts(), title=title, encoding=encoding)


def _load_csv(data: bytes) -> _Extracted:
    text, encoding = _text_or_error(data)
    sample = text[:20_000]
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",\t;|")
    except csv.Error:
        dialect = csv.excel
    try:
        rows = [
            [" ".join(cell.split()) for cell in row]
            for row in csv.reader(io.StringIO(text), dialect)
        ]
    except csv.Error as exc:
        raise DocumentError(f"malformed CSV ({_short(exc)}); check the quoting") from None
    rows = [row for row in rows if any(row)]
    if len(rows) == 1:
        return _Extracted(
            parts=[("; ".join(cell for cell in rows[0] if cell), {})], encoding=encoding
        )
    header = rows[0] if rows else []
    lines = []
    for row in rows[1:]:
        pairs = [
            f"{header[i] if i < len(header) and header[i] else f'列{i + 1}'}: {value}"
            for i, value in enumerate(row)
            if value
        ]
        lines.append("; ".join(pairs))
    return _Extracted(parts=[("\n".join(lines), {})], encoding=encoding)


def _json_scalar(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    text = " ".join(str(value).split()) if not isinstance(value, str) else value.strip()
    return text or None


def _json_leaves(value: object, path: str) -> Iterator[tuple[str, str]]:
    """(dotted key path, text) for every scalar; lists of scalars become one comma-joined leaf."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _json_leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        if all(not isinstance(item, (dict, list)) for item in value):
            texts = [text for item in value if (text := _json_scalar(item))]
            if texts:
                yield path, ", ".join(texts)
        else:
            for item in value:
                yield from _json_leaves(item, path)
    elif (text := _json_scalar(value)) is not None:
        yield path, text


def _json_record(value: object) -> str:
    """One record on one line: "key: value; key: value" (keys carry the meaning of values)."""
    pairs = [f"{key}: {text}" if key else text for key, text in _json_leaves(value, "")]
    return " ".join("; ".join(pairs).split())


def _json_error(exc: json.JSONDecodeError, where: str = "") -> DocumentError:
    return DocumentError(
        f"not valid JSON{where}: {exc.msg} at line {exc.lineno} column {exc.colno}; "
        "fix the file or save it as .txt"
    )


def _load_json(data: bytes) -> _Extracted:
    text, encoding = _text_or_error(data)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _json_error(exc) from None
    if isinstance(value, list):
        lines = [_json_record(item) for item in value]
    else:
        lines = [f"{key}: {leaf}" if key else leaf for key, leaf in _json_leaves(value, "")]
    return _Extracted(parts=[("\n".join(line for line in lines if line), {})], encoding=encoding)


def _load_jsonl(data: bytes) -> _Extracted:
    text, encoding = _text_or_error(data)
    lines = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _json_error(exc, f" on line {number}") from None
        lines.append(_json_record(record))
    return _Extracted(parts=[("\n".join(line for line in lines if line), {})], encoding=encoding)


# ===============================================================================================
# HTML and EPUB
# ===============================================================================================

_BLOCK_TAGS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "body",
        "caption",
        "dd",
        "details",
        "dialog",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "html",
        "li",
        "main",
        "ol",
        "p",
        "pre",
        "section",
        "summary",
        "table",
        "tbody",
        "tfoot",
        "thead",
        "tr",
        "ul",
    ]
)
_HEADING_LEVEL = {f"h{level}": level for level in range(1, 7)}
_DROP_TAGS = ["script", "style", "nav", "footer", "noscript", "template", "head", "svg", "iframe"]
_CJK_NEWLINE = re.compile(
    r"(?<=[\u3400-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef])\s*\n\s*"
    r"(?=[\u3400-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef])"
)
_WHITESPACE = re.compile(r"\s+")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([\w.:-]+)""", re.IGNORECASE)


def _parse_html(markup: str) -> BeautifulSoup:
    from bs4 import BeautifulSoup

    return BeautifulSoup(markup, "html.parser")


def _block_of(node: Any) -> Tag | None:
    parent = node.parent
    while parent is not None and parent.name not in _BLOCK_TAGS:
        parent = parent.parent
    return parent  # type: ignore[no-any-return]


def _html_sections(root: BeautifulSoup | Tag, sections: _Sections) -> None:
    """Feed the visible text of an HTML tree into sections: blocks become lines, h1-h6 headings."""
    from bs4 import Tag
    from bs4.element import Comment, Declaration, Doctype, NavigableString, ProcessingInstruction

    for tag in root.find_all(_DROP_TAGS):
        tag.decompose()
    state: dict[str, Any] = {"block": None}
    buffer: list[str] = []

    def flush() -> None:
        text = "".join(buffer)
        buffer.clear()
        if not text.strip():
            return  # whitespace between blocks (source indentation) is not a blank line
        block = state["block"]
        if block is not None and block.name in _HEADING_LEVEL:
            sections.heading(_HEADING_LEVEL[block.name], text)
        else:
            for line in text.split("\n"):
                sections.line(line)

    def enter(node: Any) -> None:
        block = _block_of(node)
        if block is not state["block"]:
            flush()
            state["block"] = block

    for node in root.descendants:
        if isinstance(node, Tag):
            if node.name in ("br", "hr"):
                enter(node)
                buffer.append("\n")
            elif node.name in ("td", "th") and node.find_previous_sibling(("td", "th")):
                enter(node)
                buffer.append(" | ")
            continue
        if not isinstance(node, NavigableString) or isinstance(
            node, (Comment, Declaration, Doctype, ProcessingInstruction)
        ):
            continue
        enter(node)
        text = str(node)
        if node.find_parent("pre") is None:
            text = _WHITESPACE.sub(" ", _CJK_NEWLINE.sub("", text))
        buffer.append(text)
    flush()


def _html_text_title(markup: str) -> tuple[list[tuple[str, dict[str, Any]]], str | None]:
    soup = _parse_html(markup)
    title_tag = soup.find("title")
    title = _title(title_tag.get_text()) if title_tag is not None else None
    if title is None and (h1 := soup.find("h1")) is not None:
        title = _title(h1.get_text())
    sections = _Sections()
    _html_sections(soup, sections)
    return sections.parts(), title


def _load_html(data: bytes) -> _Extracted:
    declared = _META_CHARSET.search(data[:4096])
    text, encoding = _text_or_error(data, declared.group(1).decode("ascii") if declared else None)
    parts, title = _html_text_title(text)
    return _Extracted(parts=parts, title=title, encoding=encoding)


def _load_epub(data: bytes) -> _Extracted:
    import ebooklib
    from ebooklib import epub

    try:
        book = epub.read_epub(io.BytesIO(data), options={"ignore_ncx": True})
    except Exception as exc:  # zipfile, lxml and ebooklib all raise their own types
        raise DocumentError(
            f"cannot open as an EPUB ({_short(exc)}); the file may be damaged or DRM-protected: "
            "re-export it, e.g. with Calibre"
        ) from None
    titles = book.get_metadata("DC", "title")
    title = _title(titles[0][0]) if titles else None
    parts: list[tuple[str, dict[str, Any]]] = []
    for idref, *_ in book.spine:
        item = book.get_item_with_id(idref)
        if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT:
            continue
        markup, _encoding = _decode(item.get_content(), "utf-8")
        sections = _Sections()
        _html_sections(_parse_html(markup), sections)  # headings restart in every chapter
        parts.extend(sections.parts())
    return _Extracted(parts=parts, title=title)


# ===============================================================================================
# Email
# ===============================================================================================


def _decode_declared(data: bytes, charset: str | None) -> tuple[str, str]:
    """Bytes whose charset a mail declares: trust it if it decodes (GB2312 read as GB18030)."""
    if charset:
        name = charset.strip().lower()
        codec = "gb18030" if _DECLARED_FAMILY.get(name) == "gb18030" else name
        try:
            return _lf(data.decode(codec)), _encoding_name(codec)
        except (LookupError, UnicodeDecodeError):
            pass
    return _decode(data, charset)


def _mail_header(value: object) -> str:
    from email.header import decode_header

    if value is None:
        return ""
    pieces: list[str] = []
    for chunk, charset in decode_header(value):  # type: ignore[arg-type]
        if isinstance(chunk, str):
            raw = chunk.encode("ascii", "surrogateescape") if not chunk.isascii() else None
            pieces.append(chunk if raw is None else _decode(raw)[0])
        else:
            known = charset if charset and charset != "unknown-8bit" else None
            try:
                pieces.append(_decode_declared(chunk, known)[0])
            except DocumentError:
                pieces.append(chunk.decode("latin-1"))
    return " ".join("".join(pieces).split())


def _load_eml(data: bytes) -> _Extracted:
    import email
    import email.policy

    sample = _sample(data)
    if len(sample) - len(sample.translate(None, _CONTROL_BYTES)) > len(sample) // 100:
        raise DocumentError("not a text file (binary data in an .eml file)")
    message = email.message_from_bytes(data, policy=email.policy.compat32)
    subject = _mail_header(message.get("Subject"))
    header_lines = [
        f"{name}: {text}"
        for name in ("Subject", "From", "To", "Date")
        if (text := _mail_header(message.get(name)))
    ]
    plain: list[str] = []
    html: list[str] = []
    encoding: str | None = None
    for part in message.walk():
        if part.is_multipart() or part.get_content_disposition() == "attachment":
            continue
        kind = part.get_content_type()
        if kind not in ("text/plain", "text/html"):
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes) or not payload.strip():
            continue
        text, detected = _decode_declared(payload, part.get_content_charset())
        encoding = encoding or detected
        (plain if kind == "text/plain" else html).append(text)
    body_lines: list[str] = []
    if plain:
        body_lines = "\n\n".join(plain).split("\n")
    else:
        for markup in html:
            for text, _meta in _html_text_title(markup)[0]:
                body_lines.extend(text.split("\n"))
    if not body_lines and not subject:
        return _Extracted(empty_reason="no text (no Subject and no text body)")
    text = "\n".join([*header_lines, "", *body_lines])
    return _Extracted(parts=[(text, {})], title=_title(subject), encoding=encoding or "ascii")


# ===============================================================================================
# PDF, DOCX, PPTX
# ===============================================================================================

_HEX_TITLE = re.compile(r"^<([0-9a-fA-F\s]+)>$")


def _pdf_title(raw: object) -> str | None:
    """The /Title entry; some producers store it as undecoded hex of a GBK string."""
    if isinstance(raw, str) and (match := _HEX_TITLE.match(raw.strip())):
        try:
            raw = decode_text(bytes.fromhex("".join(match.group(1).split())))[0]
        except (ValueError, DocumentError):
            return None
    return _title(raw)


def _load_pdf(data: bytes) -> _Extracted:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError

    if b"%PDF" not in data[:1024]:
        raise DocumentError("not a PDF (no %PDF header); check what the file is")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError(
                "the PDF is encrypted; remove its password (e.g. qpdf --password=PASS "
                "--decrypt in.pdf out.pdf) and ingest it again"
            )
        pages = list(reader.pages)
        try:
            title = _pdf_title(reader.metadata.title if reader.metadata else None)
        except Exception:  # broken /Info dictionaries are common and harmless
            title = None
        texts: list[str] = []
        for page in pages:
            texts.append(page.extract_text() or "")
    except DocumentError:
        raise
    except DependencyError as exc:
        raise DocumentError(
            f"the PDF is AES-encrypted and reading it needs the 'cryptography' package "
            f"({_short(exc)}); pip install cryptography, or decrypt it (qpdf --decrypt in.pdf "
            "out.pdf) and ingest it again"
        ) from None
    except FileNotDecryptedError as exc:
        raise DocumentError(
            f"the PDF is encrypted ({_short(exc)}); remove its password (e.g. qpdf "
            "--password=PASS --decrypt in.pdf out.pdf) and ingest it again"
        ) from None
    except Exception as exc:  # pypdf raises many types (PdfReadError, KeyError, zlib.error ...)
        raise DocumentError(
            f"cannot read the PDF, it may be damaged or truncated ({_short(exc)}); "
            "download or export it again, or repair it (e.g. qpdf in.pdf fixed.pdf)"
        ) from None
    texts = remove_repeated_lines([t.replace("\r\n", "\n").replace("\r", "\n") for t in texts])
    parts = [(join_broken_lines(text), {"page": number}) for number, text in enumerate(texts, 1)]
    return _Extracted(
        parts=parts,
        title=title,
        empty_reason="no extractable text; it may be a scanned PDF: run OCR first "
        "(e.g. ocrmypdf in.pdf out.pdf)",
    )


_DOCX_HEADING = re.compile(r"^(?:heading|标题)\s*(\d)$", re.IGNORECASE)
_DOCX_TITLE_STYLES = frozenset({"title", "标题"})


def _docx_heading_level(paragraph: Any) -> int | None:
    """0 for Title, n for Heading n (or a style based on it), None for body text."""
    style = paragraph.style
    for _ in range(4):  # follow "based on" a few steps: custom styles derived from Heading 1
        if style is None:
            return None
        name = (style.name or "").strip().lower()
        if name in _DOCX_TITLE_STYLES:
            return 0
        if match := _DOCX_HEADING.match(name):
            return int(match.group(1))
        style = style.base_style
    return None


def _table_rows(rows: Iterable[Iterable[str]]) -> Iterator[str]:
    """Table rows as "a | b | c"; merged cells repeat their text, so equal neighbours collapse."""
    for row in rows:
        cells: list[str] = []
        for cell in row:
            text = " ".join(cell.split())
            if text and (not cells or cells[-1] != text):
                cells.append(text)
        if cells:
            yield " | ".join(cells)


def _load_docx(data: bytes) -> _Extracted:
    import docx
    from docx.enum.text import WD_ALIGN_PARAGRAPH
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # zipfile.BadZipFile, KeyError, ValueError, lxml errors
        raise DocumentError(
            f"cannot open as a Word .docx file ({_short(exc)}); if it is an old .doc or another "
            "format renamed, save it as .docx (Word or LibreOffice) and ingest it again"
        ) from None
    sections = _Sections()
    styled_title: str | None = None
    visual_title: str | None = None
    seen_text = False
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            rows = ([cell.text for cell in row.cells] for row in block.rows)
            for line in _table_rows(rows):
                sections.line(line)
            seen_text = True
            continue
        text = block.text
        level = _docx_heading_level(block)
        if level is not None and text.strip():
            sections.heading(level, text)
            if level == 0 and styled_title is None:
                styled_title = _title(text)
        else:
            sections.line(text)
        if not seen_text and text.strip():
            # Laws and reports often put the title in a centred first paragraph, not in a style.
            alignment = block.paragraph_format.alignment
            if alignment is None and block.style is not None:
                alignment = block.style.paragraph_format.alignment
            if alignment == WD_ALIGN_PARAGRAPH.CENTER and len(text.strip()) <= 80:
                visual_title = _title(text) if "。" not in text else None
            seen_text = True
    core_title = _title(document.core_properties.title)
    return _Extracted(parts=sections.parts(), title=styled_title or visual_title or core_title)


def _pptx_shape_lines(shapes: Iterable[Any], skip_id: int | None) -> Iterator[str]:
    from pptx.enum.shapes import MSO_SHAPE_TYPE

    for shape in shapes:
        if shape.shape_id == skip_id:
            continue
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
            yield from _pptx_shape_lines(shape.shapes, skip_id)
        elif shape.has_text_frame:
            for paragraph in shape.text_frame.paragraphs:
                yield paragraph.text.replace("\v", "\n")
        elif shape.has_table:
            rows = ([cell.text for cell in row.cells] for row in shape.table.rows)
            yield from _table_rows(rows)


def _load_pptx(data: bytes) -> _Extracted:
    from pptx import Presentation

    try:
        presentation = Presentation(io.BytesIO(data))
    except Exception as exc:  # zipfile.BadZipFile, KeyError, PackageNotFoundError ...
        raise DocumentError(
            f"cannot open as a PowerPoint .pptx file ({_short(exc)}); if it is an old .ppt or "
            "another format renamed, save it as .pptx and ingest it again"
        ) from None
    parts: list[tuple[str, dict[str, Any]]] = []
    first_slide_title: str | None = None
    for number, slide in enumerate(presentation.slides, start=1):
        title_shape = slide.shapes.title
        heading = _title(title_shape.text_frame.text) if title_shape is not None else None
        lines = [heading] if heading else []
        lines.extend(_pptx_shape_lines(slide.shapes, title_shape.shape_id if title_shape else None))
        if slide.has_notes_slide and (notes := slide.notes_slide.notes_text_frame) is not None:
            lines.extend(["", notes.text])
        metadata: dict[str, Any] = {"page": number}
        if heading:
            metadata["heading"] = heading
            first_slide_title = first_slide_title or heading
        parts.append(("\n".join(lines), metadata))
    title = _title(presentation.core_properties.title) or first_slide_title
    return _Extracted(parts=parts, title=title)


# ===============================================================================================
# Entry point
# ===============================================================================================

_LOADERS: dict[str, Callable[[bytes], _Extracted]] = {
    ".txt": _load_txt,
    ".text": _load_txt,
    ".md": _load_markdown,
    ".markdown": _load_markdown,
    ".pdf": _load_pdf,
    ".docx": _load_docx,
    ".pptx": _load_pptx,
    ".html": _load_html,
    ".htm": _load_html,
    ".xhtml": _load_html,
    ".csv": _load_csv,
    ".tsv": _load_csv,
    ".json": _load_json,
    ".jsonl": _load_jsonl,
    ".epub": _load_epub,
    ".eml": _load_eml,
}
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(_LOADERS)
"""File extensions :func:`load_file` reads (lowercase, with the dot)."""

_CONVERT_HINTS = {
    ".doc": "save it as .docx (Word, or libreoffice --headless --convert-to docx)",
    ".ppt": "save it as .pptx (PowerPoint, or libreoffice --headless --convert-to pptx)",
    ".wps": "save it as .docx from WPS",
    ".rtf": "save it as .docx",
    ".mobi": "convert it to .epub (e.g. Calibre)",
    ".azw3": "convert it to .epub (e.g. Calibre)",
}


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DocumentError(
            f"{path.name}: file not found (moved or deleted since it was listed?); "
            f"check the path {path}"
        ) from None
    except PermissionError:
        raise DocumentError(
            f"{path.name}: permission denied; make it readable (e.g. chmod u+r) or run as a "
            "user who can read it"
        ) from None
    except IsADirectoryError:
        raise DocumentError(f"{path.name}: is a directory, not a file; ingest the folder") from None
    except OSError as exc:
        raise DocumentError(
            f"{path.name}: cannot read the file ({exc.strerror or _short(exc)}); check the disk "
            "or network share and try again"
        ) from None


def load_file(path: Path) -> list[Document]:
    """Load one file as cleaned, non-empty Documents in document order.

    PDFs and PPTX give one Document per page/slide (``page``, 1-based); Markdown, DOCX, HTML and
    EPUB one per section (``heading`` = heading path); other formats one per file. Every
    Document carries ``title``; text decoded from bytes carries ``encoding``. Raises
    DocumentError, and only DocumentError, when the file cannot become text.
    """
    path = Path(path)
    extension = path.suffix.lower()
    loader = _LOADERS.get(extension)
    if loader is None:
        hint = _CONVERT_HINTS.get(extension, "convert it to one of them")
        raise DocumentError(
            f"{path.name}: unsupported file type '{extension or '(no extension)'}'; "
            f"supported: {' '.join(sorted(SUPPORTED_EXTENSIONS))}; {hint}"
        )
    token = _CURRENT_FILE.set(path.name)
    try:
        return _load(path, loader)
    finally:
        _CURRENT_FILE.reset(token)


def _load(path: Path, loader: Callable[[bytes], _Extracted]) -> list[Document]:
    data = _read_bytes(path)
    if not data.strip():
        what = "the file is empty (0 bytes)" if not data else "no text (only whitespace)"
        raise DocumentError(f"{path.name}: {what}; nothing to ingest")
    try:
        extracted = loader(data)
    except DocumentError as exc:
        raise DocumentError(f"{path.name}: {exc}") from None
    except MemoryError:
        raise
    except Exception as exc:  # a parser failing in a way not foreseen above: still per file
        logger.debug("loader for %s failed", path, exc_info=True)
        raise DocumentError(
            f"{path.name}: cannot extract text ({_short(exc)}); the file may be damaged"
        ) from None
    title = extracted.title or path.stem
    documents: list[Document] = []
    for text, extra in extracted.parts:
        cleaned = clean_text(text)
        if not cleaned:
            continue
        metadata: dict[str, Any] = {"title": title, **extra}
        if extracted.encoding is not None:
            metadata["encoding"] = extracted.encoding
        documents.append(Document(page_content=cleaned, metadata=metadata))
    if not documents:
        raise DocumentError(f"{path.name}: {extracted.empty_reason}; nothing to ingest")
    return documents
