"""Calibrated alerts over the run history, and their delivery to a webhook.

Two rules share the false-alarm level the analyst sets per batch (``WORKBENCH_ALERT_LEVEL``, ``alpha``):

* **per batch** (Holm): the family of one batch is every kind's group excess p-value plus the shift p-value
  (a kind not tested counts with p = 1). Holm's step-down at ``alpha / 2`` keeps the chance that a batch
  without any change raises one or more alerts at most ``alpha / 2``, whatever the dependence between kinds.
* **sequential** (e-CUSUM): each kind's p-values in time order become e-values through the calibrator
  ``e = kappa * p ** (kappa - 1)`` (``kappa = 1/2``: ``E[e] = 1`` for a uniform p), combined as the
  CUSUM ``S_t = max(S_{t-1}, 1) * e_t``. An alert fires when ``S_t >= 1 / level_k`` with
  ``level_k = alpha / 2 / m`` (``m`` kinds), and that kind's ``S`` restarts at 1. Under no change each
  kind's average run length to a false alarm is at least ``1 / level_k`` (the e-CUSUM is below the
  e-Shiryaev-Roberts procedure, whose statistic minus time is a martingale), so the long-run false alarms
  per batch stay below ``alpha / 2`` over all kinds together. It sees a slow drift that leaves each batch's
  p-values only mildly small: those add up, where a single batch never crosses the per-batch line.

Together a batch without change raises an alert with probability at most ``alpha`` (long-run average).
Both promises assume the batches' p-values are independent of each other under no change (batches drawn
afresh, scored against the same model).
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.errors import ParameterError

log = logging.getLogger(__name__)

SHIFT = "shift"  # the family member that is the batch's shift p-value
BATCH_RULE = "batch"
SEQUENTIAL_RULE = "sequential"
KAPPA = 0.5  # the calibrator's exponent; measured best of 0.3 / 0.5 / 0.7 / a mixture on slow shifts


def check_level(level: float) -> float:
    if not 0 < level < 1:
        raise ParameterError(f"alert level must be in (0, 1), got {level}")
    return float(level)


@dataclass(frozen=True)
class AlertDecision:
    """One alert a rule raised.

    Attributes
    ----------
    batch, kind, rule
        Where (batch name), what (a kind of anomaly or ``shift``) and which rule (``batch`` or ``sequential``).
    p_value
        The value compared with `level`: the Holm-adjusted p-value (per batch) or ``1 / S`` (sequential,
        ``S`` the e-CUSUM statistic).
    level
        The threshold the rule uses for this kind (its share of the analyst's level).
    statistic
        The raw p-value (per batch) or the e-CUSUM statistic ``S`` (sequential).
    model_version
        The model whose scores gave the evidence ("" for a shift-only record).
    """

    batch: str
    kind: str
    rule: str
    p_value: float
    level: float
    statistic: float
    model_version: str = ""


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm-adjusted p-values (monotone step-down); a hypothesis is rejected at `alpha` when its
    adjusted p-value is at most `alpha`."""
    items = sorted(p_values.items(), key=lambda kv: kv[1])
    m = len(items)
    adjusted: dict[str, float] = {}
    running = 0.0
    for i, (name, p) in enumerate(items):
        running = max(running, min(1.0, (m - i) * float(p)))
        adjusted[name] = running
    return adjusted


def batch_rule(
    batch: str, p_values: Mapping[str, float], level: float, model_version: str = ""
) -> list[AlertDecision]:
    """Alerts of one batch: every family member whose Holm-adjusted p-value is at most `level`.

    `p_values` holds the whole family (every kind of the model and ``shift``), untested members as 1.0.
    """
    check_level(level)
    adjusted = holm(p_values)
    return [AlertDecision(batch=batch, kind=k, rule=BATCH_RULE, p_value=adjusted[k], level=level,
                          statistic=float(p_values[k]), model_version=model_version)
            for k in sorted(adjusted, key=adjusted.__getitem__) if adjusted[k] <= level]


def e_value(p: float, kappa: float = KAPPA) -> float:
    """The calibrator ``kappa * p ** (kappa - 1)``: an e-value (mean at most 1) from a valid p-value.

    A p-value of 1 or more means "not tested" (too small a batch) and gives 1: no evidence either way.
    """
    if p is None or not np.isfinite(p) or p >= 1.0:
        return 1.0
    return float(kappa * max(float(p), 1e-300) ** (kappa - 1.0))


def sequential_rule(
    sequence: Sequence[tuple[str, Mapping[str, float], str]],
    level: float,
    kinds: Sequence[str] | None = None,
) -> list[AlertDecision]:
    """Alerts of the per-kind e-CUSUM over batches in time order.

    Parameters
    ----------
    sequence
        ``(batch, {kind: p_value}, model_version)`` in time order.
    level
        The rule's share of the false-alarm level per batch, split evenly over the kinds.
    kinds
        The family; default every kind that appears in `sequence`.
    """
    check_level(level)
    family = list(kinds) if kinds is not None else sorted({k for _, ps, _ in sequence for k in ps})
    if not family:
        return []
    per_kind = level / len(family)
    threshold = 1.0 / per_kind
    statistic = dict.fromkeys(family, 1.0)
    out = []
    for batch, p_values, version in sequence:
        for kind in family:
            s = max(statistic[kind], 1.0) * e_value(p_values.get(kind, 1.0))
            if s >= threshold:
                out.append(AlertDecision(batch=batch, kind=kind, rule=SEQUENTIAL_RULE, p_value=1.0 / s,
                                         level=per_kind, statistic=s, model_version=version))
                s = 1.0  # restart: the next alarm needs fresh evidence
            statistic[kind] = s
    return out


def evaluate(
    sequence: Sequence[tuple[str, Mapping[str, float], str]],
    level: float,
    sequential: bool = True,
    kinds: Sequence[str] | None = None,
) -> list[AlertDecision]:
    """Both rules over a history in time order; each gets half of `level` (all of it when `sequential` is off).

    `sequence` is ``(batch, {kind: p_value, "shift": p_value}, model_version)`` per batch.
    """
    check_level(level)
    share = level / 2 if sequential else level
    out = []
    for batch, p_values, version in sequence:
        out.extend(batch_rule(batch, p_values, share, version))
    if sequential:
        out.extend(sequential_rule(sequence, share, kinds))
    return out


# -- delivery ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Delivery:
    """What happened when an alert was sent: delivered or not, after how many attempts, the last error."""

    delivered: bool
    attempts: int
    last_error: str | None = None
    waits: tuple[float, ...] = field(default=(), repr=False)


def post_json(
    url: str,
    body: Mapping[str, Any],
    retries: int = 3,
    backoff: float = 0.5,
    timeout: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Delivery:
    """POST `body` as JSON to `url`; on a connection error or a non-2xx answer, retry up to `retries` more
    times, waiting ``backoff * 2 ** i`` seconds before retry ``i`` (exponential backoff). Never raises."""
    data = json.dumps(body, default=str).encode()
    last: str | None = None
    waits: list[float] = []
    for attempt in range(retries + 1):
        if attempt:
            waits.append(backoff * 2 ** (attempt - 1))
            sleep(waits[-1])
        request = urllib.request.Request(url, data=data, method="POST",
                                         headers={"Content-Type": "application/json",
                                                  "User-Agent": "review-workbench-alerts"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (configured URL)
                if 200 <= response.status < 300:
                    return Delivery(True, attempt + 1, None, tuple(waits))
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as err:
            last = f"HTTP {err.code}"
        except (urllib.error.URLError, OSError, ValueError) as err:
            last = str(getattr(err, "reason", err)) or type(err).__name__
        log.warning("alert webhook attempt %d failed: %s", attempt + 1, last)
    return Delivery(False, retries + 1, last, tuple(waits))
