"""Alert rules keep their false-alarm promise, catch slow drift, and reach a webhook through failures."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from scipy.stats import norm

from core import alerts
from core.alerts import BATCH_RULE, SEQUENTIAL_RULE, evaluate, holm, post_json
from core.errors import ParameterError

KINDS = ("duplicates", "novelty", "rating_mismatch", "text_form", alerts.SHIFT)
LEVEL = 0.01


def _sequence(p_values: np.ndarray) -> list[tuple[str, dict[str, float], str]]:
    return [(f"b{t:03d}", dict(zip(KINDS, map(float, row), strict=True)), "1") for t, row in enumerate(p_values)]


def _first(decisions: list[alerts.AlertDecision], rule: str, n: int) -> int:
    times = [int(d.batch[1:]) for d in decisions if d.rule == rule]
    return min(times) if times else n


def test_holm_adjusts_step_down_and_stays_monotone() -> None:
    adjusted = holm({"a": 0.001, "b": 0.02, "c": 0.04, "d": 0.5})
    assert adjusted == pytest.approx({"a": 0.004, "b": 0.06, "c": 0.08, "d": 0.5})


def test_no_change_false_alarm_rate_per_batch_is_at_most_the_level() -> None:
    rng = np.random.default_rng(7)
    sequences, length = 300, 100
    with_alert = by_batch_rule = by_sequential = 0
    for _ in range(sequences):
        decisions = evaluate(_sequence(rng.uniform(size=(length, len(KINDS)))), LEVEL)
        with_alert += len({d.batch for d in decisions})
        by_batch_rule += len({d.batch for d in decisions if d.rule == BATCH_RULE})
        by_sequential += len({d.batch for d in decisions if d.rule == SEQUENTIAL_RULE})
    n = sequences * length
    rate = with_alert / n
    noise = 3 * np.sqrt(LEVEL * (1 - LEVEL) / n)
    print(f"no change, {n} batches: alert rate {rate:.4f} (batch rule {by_batch_rule / n:.4f}, "
          f"sequential {by_sequential / n:.4f}) at level {LEVEL}")
    assert rate <= LEVEL + noise
    assert by_batch_rule / n <= LEVEL / 2 + 3 * np.sqrt(LEVEL / 2 / n)
    assert by_batch_rule > 0  # the rule is not vacuous: it spends its share


def test_slow_drift_is_caught_earlier_by_the_sequential_rule() -> None:
    # From batch 0 on, one kind's test statistic is shifted by one standard deviation: each batch's p-value is
    # only mildly small (a median of 0.16), rarely below the per-batch line.
    rng = np.random.default_rng(11)
    sequences, length = 200, 150
    first_batch, first_sequential = [], []
    for _ in range(sequences):
        p = rng.uniform(size=(length, len(KINDS)))
        p[:, 2] = norm.sf(rng.normal(size=length) + 1.0)
        decisions = evaluate(_sequence(p), LEVEL)
        first_batch.append(_first(decisions, BATCH_RULE, length))
        first_sequential.append(_first(decisions, SEQUENTIAL_RULE, length))
    median_batch, median_sequential = np.median(first_batch), np.median(first_sequential)
    print(f"slow drift: median batches to first alert: per-batch rule {median_batch}, sequential {median_sequential}")
    assert median_sequential < 0.7 * median_batch
    assert np.mean(np.array(first_sequential) < np.array(first_batch)) > 0.5


def test_sequential_rule_fires_where_no_single_batch_would() -> None:
    # p = 0.05 every week for one kind: Holm at 0.005 over five members never fires; the e-CUSUM
    # (e = 0.5 / sqrt(0.05) = 2.24 a batch) crosses 1 / (0.005 / 5) = 1000 at the ninth batch.
    p = np.ones((20, len(KINDS)))
    p[:, 1] = 0.05
    decisions = evaluate(_sequence(p), LEVEL)
    assert [d.rule for d in decisions] == [SEQUENTIAL_RULE, SEQUENTIAL_RULE]
    assert [d.batch for d in decisions] == ["b008", "b017"]  # restarted after the first alert
    assert decisions[0].kind == "novelty" and decisions[0].level == pytest.approx(LEVEL / 2 / len(KINDS))
    assert decisions[0].p_value <= decisions[0].level


def test_a_strong_batch_fires_the_batch_rule_for_the_right_kind() -> None:
    p = np.full((3, len(KINDS)), 0.5)
    p[1, 0] = 1e-6
    decisions = evaluate(_sequence(p), LEVEL, sequential=False)
    assert [(d.batch, d.kind, d.rule) for d in decisions] == [("b001", "duplicates", BATCH_RULE)]
    assert decisions[0].p_value == pytest.approx(5e-6) and decisions[0].level == LEVEL


def test_level_outside_zero_one_is_refused() -> None:
    with pytest.raises(ParameterError, match="got 1.5"):
        evaluate([], 1.5)


# -- webhook ------------------------------------------------------------------------------------------------
class Receiver:
    """A local HTTP endpoint answering `codes` in turn (the last one from then on); keeps the bodies."""

    def __init__(self, codes: list[int]) -> None:
        self.codes = list(codes)
        self.bodies: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.bodies.append(json.loads(body))
                code = outer.codes.pop(0) if len(outer.codes) > 1 else outer.codes[0]
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhook_gets_the_json_body_on_the_first_try() -> None:
    with Receiver([200]) as receiver:
        outcome = post_json(receiver.url, {"alert": {"batch": "w1"}}, backoff=0.01)
    assert (outcome.delivered, outcome.attempts, outcome.last_error) == (True, 1, None)
    assert receiver.bodies == [{"alert": {"batch": "w1"}}]


def test_webhook_failing_then_succeeding_is_retried_with_exponential_backoff() -> None:
    waited: list[float] = []
    with Receiver([500, 503, 200]) as receiver:
        outcome = post_json(receiver.url, {"n": 1}, retries=3, backoff=0.01, sleep=waited.append)
    assert (outcome.delivered, outcome.attempts) == (True, 3)
    assert waited == [0.01, 0.02]
    assert len(receiver.bodies) == 3


def test_webhook_that_keeps_failing_is_reported_not_raised() -> None:
    with Receiver([503]) as receiver:
        outcome = post_json(receiver.url, {"n": 1}, retries=2, backoff=0.0)
    assert (outcome.delivered, outcome.attempts, outcome.last_error) == (False, 3, "HTTP 503")
    from tests.servers import free_port

    outcome = post_json(f"http://127.0.0.1:{free_port()}/hook", {"n": 1}, retries=1, backoff=0.0, timeout=1)
    assert not outcome.delivered and outcome.attempts == 2 and outcome.last_error
