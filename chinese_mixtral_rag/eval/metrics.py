"""Retrieval and answer metrics: recall@k, MRR, percentiles, SQuAD-style EM and F1, LongBench's F1.

All scores are shares between 0 and 1 (LongBench papers print them times 100).
"""

from __future__ import annotations

import importlib
import logging
import math
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

#: Default cut-offs of recall@k; the largest is also the depth of MRR.
DEFAULT_KS = (1, 3, 5, 10)

#: LongBench's list of Chinese punctuation (``normalize_zh_answer`` in its ``metrics.py``).
LONGBENCH_ZH_PUNCTUATION = (
    "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣"
    "､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏."
)
_LONGBENCH_PUNCTUATION = frozenset(string.punctuation + LONGBENCH_ZH_PUNCTUATION)


def recall_at_k(ranks: Sequence[int | None], k: int) -> float:
    """Share of questions whose gold rank (1-based; None: not retrieved) is at most ``k``.

    >>> recall_at_k([1, 3, None, 2], 2)
    0.5
    """
    if not ranks:
        return 0.0
    return sum(1 for r in ranks if r is not None and r <= k) / len(ranks)


def mean_reciprocal_rank(ranks: Sequence[int | None], cutoff: int | None = None) -> float:
    """Mean of ``1 / rank`` over questions (0 for gold not retrieved or ranked after ``cutoff``).

    >>> mean_reciprocal_rank([1, 2, None, 4])
    0.4375
    """
    if not ranks:
        return 0.0
    total = sum(
        1.0 / r for r in ranks if r is not None and (cutoff is None or r <= cutoff) and r > 0
    )
    return total / len(ranks)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between the closest ranks, as
    ``numpy.percentile`` computes it by default (nan for no values).

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.5
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation for Chinese: NFKC (full-width letters and digits to ASCII),
    lowercase, and every punctuation mark (Unicode category P*, plus ASCII punctuation and
    LongBench's Chinese list) and whitespace removed.

    >>> normalize_answer("《三国演义》， Ｌｕｏ Guanzhong ")
    '三国演义luoguanzhong'
    """
    folded = unicodedata.normalize("NFKC", text).lower()
    return "".join(
        c
        for c in folded
        if not c.isspace()
        and c not in _LONGBENCH_PUNCTUATION
        and not unicodedata.category(c).startswith("P")
    )


def exact_match(prediction: str, answers: Iterable[str]) -> float:
    """1.0 when the normalised prediction equals any normalised gold answer, else 0.0."""
    predicted = normalize_answer(prediction)
    return float(any(predicted == normalize_answer(a) for a in answers))


def _token_f1(predicted: Sequence[str], gold: Sequence[str]) -> float:
    """F1 of two bags of tokens (SQuAD's ``f1_score``): 0 when nothing is shared."""
    common = Counter(predicted) & Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(predicted)
    recall = same / len(gold)
    return 2 * precision * recall / (precision + recall)


def char_f1(prediction: str, answers: Iterable[str]) -> float:
    """Character-level F1 (SQuAD's bag-of-tokens F1 with each character of the normalised text a
    token), the maximum over the gold answers; 1.0 when both normalise to empty.

    >>> round(char_f1("刘备和关羽", ["刘备"]), 4)  # precision 2/5, recall 2/2
    0.5714
    """
    predicted = list(normalize_answer(prediction))
    best = 0.0
    for answer in answers:
        gold = list(normalize_answer(answer))
        score = (
            float(predicted == gold) if not predicted or not gold else _token_f1(predicted, gold)
        )
        best = max(best, score)
    return best


def _jieba() -> Any:
    try:
        module = importlib.import_module("jieba")
    except ImportError as exc:
        from chinese_mixtral_rag.errors import MissingDependencyError

        raise MissingDependencyError("jieba", "rag", "LongBench's Chinese F1") from exc
    module.setLogLevel(logging.WARNING)  # not "Building prefix dict..." on every run
    return module


def normalize_zh_answer(text: str) -> str:
    """LongBench's ``normalize_zh_answer``: lowercase, its punctuation list removed, whitespace
    removed (no NFKC folding, to score exactly as LongBench does)."""
    return "".join(c for c in text.lower() if c not in _LONGBENCH_PUNCTUATION and not c.isspace())


def longbench_zh_f1(prediction: str, answers: Iterable[str]) -> float:
    """LongBench's ``qa_f1_zh_score`` (the metric of multifieldqa_zh), maximum over answers:
    both texts cut into words with ``jieba.lcut`` (precise mode), each word normalised with
    :func:`normalize_zh_answer`, empty words dropped, then F1 of the two bags of words."""
    jieba = _jieba()

    def words(text: str) -> list[str]:
        normalised = (normalize_zh_answer(w) for w in jieba.lcut(text, cut_all=False))
        return [w for w in normalised if w]

    predicted = words(prediction)
    return max((_token_f1(predicted, words(a)) for a in answers), default=0.0)
