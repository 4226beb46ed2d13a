"""A word-bigram language model of the reference reviews, with exact leave-one-out scores.

Why a language model in an outlier tool: machine-generated reviews are *too* predictable. Text sampled from
a language model sits in the high-likelihood region of language models generally (GLTR, Gehrmann et al.
2019; DetectGPT, Mitchell et al. 2023), and a model of the reference's own wording sees it too. On
bench/detect.py's GPT-2 benchmark (d) the signal built on this model (`core.detect.signals.PredictableTextSignal`)
separates generated from genuine reviews with AUROC 0.84-0.93 over 10 seeds (mean 0.90), where every
embedding detector scores below 0.5 (the generated reviews are more typical than the genuine ones, not less). Counts and interpolated smoothing are
enough: nothing to download, milliseconds per batch.

Model: ``p(w | v) = (c(v, w) + mu * p1(w)) / (c(v, .) + mu)`` with the add-delta unigram
``p1(w) = (c(w) + delta) / (N + delta * (V + 1))`` (one extra class for every unseen word), and a start token
before each text. Leave-one-out scores subtract a text's own counts, so a reference text is scored by the
model of the other reference texts exactly as a new text is scored by the model of all of them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from core.errors import NotFittedError, ParameterError

_TOKEN = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*|\d+|[^\w\s]")
_START = "\x02"  # never produced by the tokenizer


def tokenize(text: object) -> list[str]:
    """Lower-cased words (any script, inner apostrophes kept), digit runs and single punctuation marks."""
    return _TOKEN.findall(str(text).lower()) if isinstance(text, str) else []


def _bigrams(tokens: Sequence[str]) -> list[tuple[str, str]]:
    return list(zip((_START, *tokens[:-1]), tokens, strict=True)) if tokens else []


class BigramLanguageModel:
    """Interpolated word-bigram model; see the module notes.

    Parameters
    ----------
    prior_strength
        ``mu``: how many bigram observations the unigram prior is worth in every context.
    unigram_smoothing
        ``delta``: pseudo-count of every word, seen or not.
    """

    def __init__(self, prior_strength: float = 10.0, unigram_smoothing: float = 0.1) -> None:
        self.prior_strength = prior_strength
        self.unigram_smoothing = unigram_smoothing

    def fit(self, texts: Iterable[object]) -> BigramLanguageModel:
        """Count words, bigrams and contexts of `texts`."""
        if not self.prior_strength > 0 or not self.unigram_smoothing > 0:
            raise ParameterError(
                f"prior_strength and unigram_smoothing must be > 0, got {self.prior_strength!r} and "
                f"{self.unigram_smoothing!r}"
            )
        unigrams: Counter[str] = Counter()
        bigrams: Counter[tuple[str, str]] = Counter()
        for text in texts:
            tokens = tokenize(text)
            unigrams.update(tokens)
            bigrams.update(_bigrams(tokens))
        contexts: Counter[str] = Counter()
        for (v, _), count in bigrams.items():
            contexts[v] += count
        self.unigrams_ = dict(unigrams)
        self.bigrams_ = dict(bigrams)
        self.contexts_ = dict(contexts)
        self.n_tokens_ = int(sum(unigrams.values()))
        return self

    def _check(self) -> None:
        if not hasattr(self, "unigrams_"):
            raise NotFittedError("this BigramLanguageModel is not fitted yet; call fit(texts) first")

    def _mean_log_prob(self, tokens: list[str], leave_out: bool) -> float:
        if not tokens:
            return float("nan")
        uni, big, ctx = self.unigrams_, self.bigrams_, self.contexts_
        n, vocabulary = self.n_tokens_, len(uni)
        own_uni: Counter[str] = Counter()
        own_big: Counter[tuple[str, str]] = Counter()
        own_ctx: Counter[str] = Counter()
        pairs = _bigrams(tokens)
        if leave_out:
            own_uni.update(tokens)
            own_big.update(pairs)
            own_ctx.update(v for v, _ in pairs)
            if any(uni.get(w, 0) < c for w, c in own_uni.items()):
                raise ParameterError("leave-one-out scores need texts the model was fitted on")
            n -= len(tokens)
            vocabulary -= sum(1 for w, c in own_uni.items() if uni[w] == c)
        delta, mu = self.unigram_smoothing, self.prior_strength
        unigram_norm = n + delta * (vocabulary + 1)
        total = 0.0
        for v, w in pairs:
            p1 = (uni.get(w, 0) - own_uni[w] + delta) / unigram_norm
            pair = big.get((v, w), 0) - own_big[(v, w)]
            context = ctx.get(v, 0) - own_ctx[v]
            total += np.log((pair + mu * p1) / (context + mu))
        return total / len(tokens)

    def mean_log_prob(
        self, texts: Iterable[object], leave_one_out: bool | Sequence[bool] = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean log-probability per token of each text (NaN for a text without tokens) and its token count.

        `leave_one_out` (for all texts, or one flag per text): the text is one the model was fitted on and is
        scored by the model of all the others.
        """
        self._check()
        token_lists = [tokenize(t) for t in texts]
        flags = [leave_one_out] * len(token_lists) if isinstance(leave_one_out, bool) else list(leave_one_out)
        if len(flags) != len(token_lists):
            raise ParameterError(f"leave_one_out has {len(flags)} flags for {len(token_lists)} texts")
        means = [self._mean_log_prob(t, leave_out=bool(f)) for t, f in zip(token_lists, flags, strict=True)]
        return np.array(means, dtype=np.float64), np.array([len(t) for t in token_lists], dtype=np.int64)
