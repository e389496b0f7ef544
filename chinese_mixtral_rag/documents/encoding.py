"""Detect the encoding of text files instead of assuming UTF-8.

GBK/GB18030 and Big5 files are the most common reason Chinese documents fail to load elsewhere,
and byte-statistics detectors (charset-normalizer included) confuse short GB18030 and Big5 texts;
here every candidate that decodes strictly is scored by how plausible its characters are.
"""

from __future__ import annotations

import codecs
import functools
import logging
import re
from collections import Counter
from collections.abc import Iterable
from contextvars import ContextVar

from chinese_mixtral_rag.chinese import HAN, is_han
from chinese_mixtral_rag.errors import DocumentError

logger = logging.getLogger(__name__)
#: Name of the file being decoded, for warnings (set by the loader).
CURRENT_FILE: ContextVar[str] = ContextVar("CURRENT_FILE", default="(bytes)")

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
DECLARED_FAMILY = {
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
CONTROL_BYTES = bytes([*range(0x00, 0x09), *range(0x0E, 0x1B), *range(0x1C, 0x20), 0x7F])
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
    return {ch for ch in chars if is_han(ch)}


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
    if is_han(ch):
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
_SPACED_HAN = re.compile(f"(?<=[{HAN}]) (?=[{HAN}])")
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
        han = sum(count for ch, count in counts.items() if is_han(ch))
        hangul_ok = hangul > 0 and han * 5 <= hangul + han
        prior = 1.0 if hangul_ok else 0.5
    elif family == "shift_jis" and not any(0x3040 <= ord(ch) <= 0x30FF for ch in counts):
        prior = 0.5  # Japanese without a single kana is Chinese read as Shift_JIS
    elif family in ("gb18030", "big5"):
        # Chinese has no spaces between words; Korean (read as GB18030) has one every few.
        han = sum(count for ch, count in counts.items() if is_han(ch))
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


def encoding_name(codec: str) -> str:
    """Python's canonical codec name ("utf-8", "gb18030", "big5", "utf-16-le"): stable, and
    accepted by open(encoding=...)."""
    return codecs.lookup(codec).name


def normalize_newlines(text: str) -> str:
    """CRLF and lone CR line ends become LF."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def sample_bytes(data: bytes) -> bytes:
    """At most 128 KiB of ``data`` (its start and its middle): enough to judge a large file."""
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
            found.append((_score(text, family), preference, encoding_name(codec), text))
            break
    return found


def _best(found: list[tuple[float, int, str, str]]) -> tuple[float, int, str, str] | None:
    if not found:
        return None
    top = max(score for score, *_ in found)
    # Near-ties go to the preferred family: a 4-character GBK text can decode to common
    # characters as Big5 too, and mainland text is the likelier.
    return min((item for item in found if item[0] >= top - 0.02), key=lambda item: item[1])


def decode(data: bytes, declared: str | None = None) -> tuple[str, str]:
    """decode_text with an optional charset declared by the container (mail part, <meta>).

    The declaration only wins ties among candidates that decode; it is never trusted blindly,
    because mislabelled Chinese pages (GBK declared as ISO-8859-1) are common.
    """
    if not data:
        return "", "utf-8"
    for bom, codec, name in _BOMS:
        if data.startswith(bom):
            try:
                return normalize_newlines(data.decode(codec)), name
            except UnicodeDecodeError:
                break  # a coincidental BOM: detect as usual
    sample = sample_bytes(data)
    controls = len(sample) - len(sample.translate(None, CONTROL_BYTES))
    if controls > len(sample) // 100:
        # NUL and control bytes: UTF-16 without a BOM, or binary.
        best = _best(_candidates(data, ("utf-16-le", "utf-16-be")))
        if best is not None and best[0] >= _MIN_SCORE:
            return normalize_newlines(best[3]), best[2]
        raise DocumentError(f"not a text file ({controls * 100 // len(sample)}% control bytes)")
    try:
        return normalize_newlines(data.decode("utf-8")), "utf-8"
    except UnicodeDecodeError:
        pass
    order = [family for family, _ in _FAMILIES]
    family = DECLARED_FAMILY.get((declared or "").strip().lower())
    if family is not None:
        order.remove(family)
        order.insert(0, family)
    best = _best(_candidates(data, order))
    if best is not None and best[0] >= _MIN_SCORE:
        return normalize_newlines(best[3]), best[2]
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
            name = encoding_name(codec)
            logger.warning(
                "%s: %d undecodable byte(s) replaced with U+FFFD (decoded as %s)",
                CURRENT_FILE.get(),
                bad,
                name,
            )
            return normalize_newlines(text), name
    return _decode_other(data)


def _decode_other(data: bytes) -> tuple[str, str]:
    """Last resort for text in none of the candidate encodings (Cyrillic cp1251, Thai ...):
    charset-normalizer over all encodings, accepted only below its default mess threshold."""
    from charset_normalizer import from_bytes

    match = from_bytes(data).best()
    if match is None:
        raise DocumentError("not a text file (no text encoding decodes it cleanly)")
    return normalize_newlines(str(match)), encoding_name(match.encoding)


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
    return decode(data)
