"""The text-quality signal: text descriptors far in the reference's tails, and the stylometric descriptors."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from core.detect.signals.base import Signal, SignalInputs, SignalScores, plain_texts
from core.errors import ParameterError
from core.text.descriptors import DESCRIPTORS, text_descriptors

_SENTENCE = re.compile(r"[.!?]+(?:\s+|$)")
_GLUED = re.compile(r"[a-z][.!?][A-Z]")
_WORDS = re.compile(r"[a-z']+")
_FUNCTION_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "of",
        "to",
        "in",
        "on",
        "at",
        "for",
        "with",
        "from",
        "by",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "i",
        "me",
        "my",
        "we",
        "our",
        "you",
        "your",
        "he",
        "she",
        "they",
        "them",
        "his",
        "her",
        "their",
        "not",
        "no",
        "so",
        "very",
        "just",
        "too",
        "than",
        "then",
    ]
)

#: Extra stylometric descriptors computed here, next to `core.text.descriptors.DESCRIPTORS`.
STYLE_DESCRIPTORS: tuple[str, ...] = (
    "repeated_trigram_share",
    "function_word_share",
    "glued_sentences",
    "mean_sentence_words",
)

#: Which tail of each descriptor is unusual: very long and very short texts both are; many capitals only high.
DESCRIPTOR_SIDES: dict[str, str] = {
    "n_chars": "both",
    "n_words": "both",
    "share_non_letters": "upper",
    "share_upper": "upper",
    "max_char_run": "upper",
    "type_token_ratio": "lower",
    "mean_word_length": "both",
    "n_exclamations": "upper",
    "repeated_trigram_share": "upper",
    "function_word_share": "both",
    "glued_sentences": "upper",
    "mean_sentence_words": "both",
}

_DESCRIPTOR_LABELS: dict[str, tuple[str, str]] = {
    # name -> (label when high, label when low)
    "n_chars": ("very long", "very short"),
    "n_words": ("many words", "very few words"),
    "share_non_letters": ("mostly non-letters", "few non-letters"),
    "share_upper": ("many capitals", "few capitals"),
    "max_char_run": ("repeated characters", "no repeated characters"),
    "type_token_ratio": ("varied words", "repetitive wording"),
    "mean_word_length": ("long words", "short words"),
    "n_exclamations": ("many exclamation marks", "no exclamation marks"),
    "repeated_trigram_share": ("repeated phrases", "no repeated phrases"),
    "function_word_share": ("many function words", "few function words"),
    "glued_sentences": ("sentences glued without spaces", "no glued sentences"),
    "mean_sentence_words": ("long sentences", "short sentences"),
}


def style_descriptors(texts: pd.Series) -> pd.DataFrame:
    """Stylometric descriptors: repeated phrases, function-word share, sentences glued together, sentence length."""
    return pd.DataFrame(_style_values(plain_texts(texts)), columns=list(STYLE_DESCRIPTORS), index=texts.index)


def _style_values(texts: list[str]) -> np.ndarray:
    rows = []
    for text in texts:
        words = _WORDS.findall(text.lower())
        trigrams = list(zip(words, words[1:], words[2:], strict=False))
        repeated = 1 - len(set(trigrams)) / len(trigrams) if trigrams else 0.0
        function = sum(w in _FUNCTION_WORDS for w in words) / len(words) if words else 0.0
        sentences = [s for s in _SENTENCE.split(text) if s.strip()]
        rows.append(
            (repeated, function, float(len(_GLUED.findall(text))), len(words) / max(len(sentences), 1))
        )
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(STYLE_DESCRIPTORS))


_ALL_DESCRIPTORS = (*DESCRIPTORS, *STYLE_DESCRIPTORS)


def all_descriptors(texts: pd.Series) -> pd.DataFrame:
    """`core.text.descriptors.text_descriptors` plus `style_descriptors`."""
    return pd.concat([text_descriptors(texts), style_descriptors(texts)], axis=1)


class TextQualitySignal(Signal):
    """How far a review's text descriptors lie in the reference's tails (ECOD-style, per descriptor).

    Each descriptor gets a tail p-value against the reference's empirical distribution, on its unusual
    side(s) (`DESCRIPTOR_SIDES`); the raw score sums, over descriptors in their `tail` (p < tail), how far
    they are into it, ``sum(max(0, -log p - log(1/tail)))``. Ordinary texts score 0 and add no noise to the
    ensemble. The reference's own held-out scores use leave-one-out tail counts.
    """

    name = "text_quality"

    def __init__(
        self, descriptors: tuple[str, ...] = (*DESCRIPTORS, *STYLE_DESCRIPTORS), tail: float = 0.01
    ) -> None:
        self.descriptors = descriptors
        self.tail = tail

    def _raw(self, tails: np.ndarray) -> np.ndarray:
        return np.clip(tails - np.log(1.0 / self.tail), 0.0, None).sum(axis=1)

    def _values(self, texts: pd.Series) -> np.ndarray:
        """The descriptors of `texts`, one column per entry of `self.descriptors` (numpy: this runs per request)."""
        table = np.hstack([text_descriptors(texts).to_numpy(), _style_values(plain_texts(texts))])
        return table[:, [_ALL_DESCRIPTORS.index(d) for d in self.descriptors]]

    def fit(self, reference: SignalInputs) -> TextQualitySignal:
        if not 0 < self.tail < 0.5:
            raise ParameterError(f"tail must be in (0, 0.5), got {self.tail!r}")
        unknown = [d for d in self.descriptors if d not in DESCRIPTOR_SIDES]
        if unknown:
            raise ParameterError(
                f"unknown descriptor(s) {unknown}; expected some of {list(DESCRIPTOR_SIDES)}"
            )
        values = self._values(reference.frame["text"])
        self.reference_values_ = {d: np.sort(values[:, j]) for j, d in enumerate(self.descriptors)}
        self._reference_table = values
        self.available_ = True
        return self

    def _tails(self, values: np.ndarray, leave_one_out: bool = False) -> np.ndarray:
        out = np.empty(values.shape, dtype=np.float64)
        for j, d in enumerate(self.descriptors):
            ref = self.reference_values_[d]
            x = values[:, j]
            n = ref.size - int(leave_one_out)
            ge = ref.size - np.searchsorted(ref, x, side="left") - int(leave_one_out)
            le = np.searchsorted(ref, x, side="right") - int(leave_one_out)
            upper = (1.0 + ge) / (n + 1.0)
            lower = (1.0 + le) / (n + 1.0)
            side = DESCRIPTOR_SIDES[d]
            if side == "upper":
                p = upper
            elif side == "lower":
                p = lower
            else:
                p = np.minimum(1.0, 2 * np.minimum(upper, lower))
            out[:, j] = -np.log(p)
        return out

    def _details(self, values: np.ndarray, tails: np.ndarray) -> list[str]:
        in_tail = np.log(1.0 / self.tail)
        details = []
        for i in range(len(values)):
            parts = []
            for j in np.argsort(-tails[i], kind="stable")[:2]:
                if tails[i, j] < in_tail:  # not in the tail: not worth a reason
                    break
                name, x = self.descriptors[j], float(values[i, j])
                median = float(np.median(self.reference_values_[name]))  # only for reviews in a tail
                label = _DESCRIPTOR_LABELS[name][0 if x >= median else 1]
                parts.append(f"{label} ({name}={x:.3g}, reference median {median:.3g})")
            details.append("; ".join(parts))
        return details

    def score(self, batch: SignalInputs) -> SignalScores:
        self._check_fitted()
        values = self._values(batch.frame["text"])
        tails = self._tails(values)
        return SignalScores(self._raw(tails), self._details(values, tails))

    def held_out_scores(self, reference: SignalInputs) -> np.ndarray:
        self._check_fitted()
        return self._raw(self._tails(self._reference_table, leave_one_out=True))
