"""Descriptors of a review's text alone: length, words, share of non-letters and capitals, longest repeated run,
vocabulary richness, word length and exclamation marks.

They are tabular features of the outlier model (`core.features`), per-feature inputs of the shift tests and
inputs of the text-quality signal.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

#: Descriptors of the text alone, used as features, as shift features and by the text-quality signal.
DESCRIPTORS: tuple[str, ...] = (
    "n_chars",
    "n_words",
    "share_non_letters",
    "share_upper",
    "max_char_run",
    "type_token_ratio",
    "mean_word_length",
    "n_exclamations",
)

_RUN = re.compile(r"(.)\1{2,}", re.DOTALL)
_WORD = re.compile(r"\w+", re.UNICODE)
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)
_SPACE = re.compile(r"\s")
_UPPER = re.compile(r"[A-Z]")


def _describe(text: str) -> tuple[float, ...]:
    n_chars = len(text)
    letters = len(_LETTER.findall(text))
    non_space = n_chars - len(_SPACE.findall(text))
    upper = len(_UPPER.findall(text))
    words = _WORD.findall(text.lower())
    n_words = len(words)
    run = max((len(m.group(0)) for m in _RUN.finditer(text)), default=1)
    return (
        float(n_chars),
        float(n_words),
        1.0 - letters / non_space if non_space > 0 else 1.0,
        upper / letters if letters > 0 else 0.0,
        float(run),
        len(set(words)) / n_words if n_words else 0.0,
        sum(map(len, words)) / n_words if n_words else 0.0,
        float(text.count("!")),
    )


def word_count(text: str) -> int:
    """The ``n_words`` descriptor of one text."""
    return len(_WORD.findall(text.lower()))


def text_descriptors(texts: pd.Series) -> pd.DataFrame:
    """Per-text descriptors: length, words, share of non-letters and capitals, longest repeated run, ...

    Plain Python per text: as fast as pandas string methods on big batches and ~10x faster on one review.
    """
    values = ["" if v is None or v is pd.NA or (isinstance(v, float) and v != v) else str(v) for v in texts]
    rows = [_describe(t) for t in values]
    array = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(DESCRIPTORS))
    return pd.DataFrame(array, columns=list(DESCRIPTORS), index=texts.index)
