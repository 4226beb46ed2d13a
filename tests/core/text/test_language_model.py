from __future__ import annotations

import numpy as np
import pytest

from core.errors import NotFittedError, ParameterError
from core.text.language_model import BigramLanguageModel, tokenize

TEXTS = [
    "Great product, works as described.",
    "The strap broke after two weeks; not worth 20 dollars.",
    "Great gift! My son loves it.",
    "Arrived late and the box was damaged.",
    "Works great, my son loves it",
    "",
]


def test_tokens_are_words_numbers_and_punctuation_in_any_script() -> None:
    assert tokenize("Don't buy: 20 Euro, très cher!") == ["don't", "buy", ":", "20", "euro", ",", "très", "cher", "!"]
    assert tokenize(None) == [] and tokenize(float("nan")) == []


def test_probabilities_of_every_context_sum_to_one() -> None:
    model = BigramLanguageModel().fit(TEXTS)
    words = [*model.unigrams_, "neverseen"]  # one unseen word stands for the whole unseen class

    def log_p(word: str, context: str | None) -> float:
        if context is None:  # the first word of a text
            return float(model.mean_log_prob([word])[0][0])
        # mean over two tokens: (log p(context | start) + log p(word | context)) / 2
        return 2 * float(model.mean_log_prob([f"{context} {word}"])[0][0]) - log_p(context, None)

    for context in (None, "great", "my", "unseen"):
        assert sum(np.exp(log_p(w, context)) for w in words) == pytest.approx(1.0)


def test_leave_one_out_equals_refitting_without_the_text() -> None:
    model = BigramLanguageModel().fit(TEXTS)
    loo, counts = model.mean_log_prob(TEXTS, leave_one_out=True)
    assert list(counts) == [7, 12, 8, 8, 7, 0]
    for i, text in enumerate(TEXTS):
        refit = BigramLanguageModel().fit(TEXTS[:i] + TEXTS[i + 1 :]).mean_log_prob([text])[0][0]
        if not text:
            assert np.isnan(loo[i]) and np.isnan(refit)
        else:
            assert loo[i] == pytest.approx(refit, rel=1e-12)


def test_familiar_wording_is_more_probable_than_unusual_wording() -> None:
    model = BigramLanguageModel().fit(TEXTS * 3)
    (familiar, unusual), _ = model.mean_log_prob(["My son loves it. Works great!", "Quantum zebra orchestra violin"])
    assert familiar > unusual


def test_misuse_is_a_clear_error() -> None:
    with pytest.raises(NotFittedError):
        BigramLanguageModel().mean_log_prob(["x"])
    with pytest.raises(ParameterError, match="must be > 0"):
        BigramLanguageModel(prior_strength=0).fit(TEXTS)
    with pytest.raises(ParameterError, match="fitted on"):
        BigramLanguageModel().fit(TEXTS).mean_log_prob(["a text it never saw"], leave_one_out=True)
