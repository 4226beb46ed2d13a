"""Benchmark of the monitoring alerts on simulated weekly batches of real reviews: false alarms and detection delay.

A model is fitted (the product's defaults: real embedder, every detector, `ModelBundle.fit`) on a reference of
1,000 reviews of one category, and refitted on a fresh random split of that category's reviews into reference and
held-out pool every ``--refit-every`` sequences: the alert level is a promise over references as well as batches
(the exceedance counts' beta-binomial null is the law of a count when the reference is a random draw too), and
one reference alone gives one draw of the share of fresh reviews beyond its quantiles (between 0.4 % and 2.9 %
beyond the 99 % quantile over seven splits measured). The review pools are embedded once through the cache under
``WORKBENCH_HOME``.
Then sequences of 12 weekly batches are drawn from ``../shared/data`` and every batch is scored by the bundle
(`ModelBundle.score`, the call `Workspace.score` makes), which gives each kind of anomaly its excess p-value
(`ScoreResult.group_evidence`). Each scored batch becomes its history row (`core.monitor.score_record`) and the
alert rules run over the sequence exactly as `MonitorStore.evaluate` runs them
(`core.monitor.timeline` -> `core.monitor.evidence_sequence` -> `core.alerts.evaluate`); for the first sequences
the rows also go through a real SQLite `MonitorStore`, one batch at a time as the product records them, and
its alerts must be the same.

Scenarios (weeks 1-12, batches of ``--rows`` reviews):

a. no change: every batch drawn afresh from the held-out reviews of the reference category;
b. a new category enters at 10 % in week 8 and stays;
c. slow drift: the new category's share is 2 % in week 4 and rises 2 % a week (10 % in week 8, 18 % in week 12);
d. a burst of duplicated spam in week 8: 10 % of the batch are copies of a few machine-generated reviews
   (fake_reviews_salminen_dev), 5 copies of each.

The new category cycles through the four other 2018 categories (or those named with ``--new-categories``), one
per sequence. Weeks before the onset (and (d)'s weeks after the burst) are (a)'s batches of the same sequence, so
each scenario's sequence has the right distribution and the scenarios are paired; only the changed batches are
scored again. The shift check (a separate permutation test the DAG runs) is not run: its member of the alert
family stays at p = 1, as for a batch that was only scored.

    WORKBENCH_HOME=/work/bench-home nice -n 19 .venv/bin/python bench/monitor.py              # 200 sequences
    WORKBENCH_HOME=/work/bench-home .venv/bin/python bench/monitor.py --sequences 4 --quick   # smoke run

Prints a markdown table and writes JSON (machine, command, settings, every number) to ``--out``. With
``--budget-minutes`` the run stops drawing new sequences when the time is spent and reports how many it ran.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core import alerts as rules  # noqa: E402
from core.bundle import ModelBundle  # noqa: E402
from core.defaults import DEFAULT_DETECTORS, DEFAULT_EMBED_FIELDS  # noqa: E402
from core.io.load import load_path  # noqa: E402
from core.monitor import MonitorStore, RunRecord, evidence_sequence, score_record, timeline  # noqa: E402
from core.settings import get_settings  # noqa: E402
from core.text.embed import embedding_text, make_embedder  # noqa: E402

DATA = REPO.parent / "shared" / "data"
CATEGORIES = {
    "Magazine_Subscriptions": "amazon2018_5core/Magazine_Subscriptions_5.json.gz",
    "AMAZON_FASHION": "amazon2018_5core/AMAZON_FASHION_5.json.gz",
    "All_Beauty": "amazon2018_5core/All_Beauty_5.json.gz",
    "Appliances": "amazon2018_5core/Appliances_5.json.gz",
    "Gift_Cards": "amazon2018_5core/Gift_Cards_5.json.gz",
}
BASE = "Magazine_Subscriptions"  # the reference category; the others take turns as the new one
SPAM_FILE = "fake_reviews_salminen_dev/fake_reviews_dev.csv.gz"  # label computer_generated: the spam texts
WEEKS = 12
ONSET = {"b": 8, "c": 4, "d": 8}
SCENARIOS = {
    "a": "no change",
    "b": "new category at 10 % from week 8",
    "c": "new category +2 % a week from week 4",
    "d": "duplicated spam burst (10 %) in week 8",
}
T0 = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday: week w covers T0 + (w - 1) weeks .. + 6 days
MODEL_VERSION = "1"


@dataclass
class Pools:
    """Distinct reviews per source (canonical frames), already embedded once through the cache."""

    reference: pd.DataFrame
    base: pd.DataFrame  # held-out reviews of the reference category: the weekly batches' normal reviews
    new: dict[str, pd.DataFrame]
    spam: pd.DataFrame
    category: pd.DataFrame  # every distinct review of the reference category: reference and held-out together


def _distinct(frame: pd.DataFrame) -> pd.DataFrame:
    # The 5-core files repeat reviews verbatim across product variants; a review drawn into the reference and a
    # batch alike, or twice into one batch, would be a duplicate the scenario did not plant.
    keep = ~pd.Series(embedding_text(frame, DEFAULT_EMBED_FIELDS)).duplicated().to_numpy()
    return frame.loc[keep].reset_index(drop=True)


def load_pools(data: Path, n_reference: int, seed: int, embedder: object, log: Callable[[str], None],
               newcomers: list[str] | None = None) -> Pools:
    chosen = {BASE, *(newcomers or CATEGORIES)}
    frames = {name: _distinct(load_path(data / path).frame) for name, path in CATEGORIES.items() if name in chosen}
    spam = load_path(data / SPAM_FILE).frame
    spam = _distinct(spam[spam["label"] == "computer_generated"].reset_index(drop=True))
    base = frames.pop(BASE)
    if len(base) < n_reference + 200:
        raise SystemExit(f"{BASE} has {len(base)} distinct reviews: too few for a reference of {n_reference}")
    pools = split_reference(Pools(reference=base.iloc[:0], base=base, new=frames, spam=spam, category=base),
                            n_reference, seed)
    t0 = time.perf_counter()
    everything = [base, *pools.new.values(), pools.spam]
    for frame in everything:  # once: afterwards every batch's embeddings come from the cache
        embedder.encode(embedding_text(frame, DEFAULT_EMBED_FIELDS))  # type: ignore[attr-defined]
    log(f"pools: reference {len(pools.reference)}, held-out {BASE} {len(pools.base)}, "
        + ", ".join(f"{k} {len(v)}" for k, v in pools.new.items())
        + f", spam texts {len(pools.spam)}; embedded in {time.perf_counter() - t0:.0f} s")
    return pools


def split_reference(pools: Pools, n_reference: int, seed: int) -> Pools:
    """The reference category's reviews split afresh at random into the model's reference and the held-out pool."""
    shuffled = pools.category.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return Pools(reference=shuffled.iloc[:n_reference].reset_index(drop=True),
                 base=shuffled.iloc[n_reference:].reset_index(drop=True), new=pools.new, spam=pools.spam,
                 category=pools.category)


def _mix(rng: np.random.Generator, pools: Pools, rows: int, extra: pd.DataFrame | None) -> pd.DataFrame:
    k = 0 if extra is None else len(extra)
    normal = pools.base.iloc[rng.choice(len(pools.base), size=rows - k, replace=False)]
    parts = [normal] if extra is None else [normal, extra]
    batch = pd.concat(parts, ignore_index=True).sample(frac=1.0, random_state=rng).reset_index(drop=True)
    batch["is_duplicate"] = batch.duplicated(subset=["text", "title", "rating", "user_id", "product_id"]).to_numpy()
    return batch


def new_reviews(rng: np.random.Generator, pool: pd.DataFrame, share: float, rows: int) -> pd.DataFrame:
    k = int(round(share * rows))
    return pool.iloc[rng.choice(len(pool), size=k, replace=False)]


def spam_burst(rng: np.random.Generator, pools: Pools, share: float, rows: int, copies: int) -> pd.DataFrame:
    """``share * rows`` spam rows: a few machine-generated texts, `copies` copies of each, posted by different
    accounts (new review ids) with five stars and no title, as a burst of paid reviews would come in."""
    k = int(round(share * rows))
    texts = pools.spam.iloc[rng.choice(len(pools.spam), size=int(np.ceil(k / copies)), replace=False)]
    spam = pd.concat([texts] * copies, ignore_index=True).iloc[:k].copy()
    spam["review_id"] = [f"spam-{rng.integers(1 << 62):x}" for _ in range(k)]
    spam["user_id"] = [f"spammer-{rng.integers(1 << 62):x}" for _ in range(k)]
    spam["rating"] = 5.0
    return spam


def week_time(week: int) -> tuple[datetime, datetime, str]:
    start = T0 + timedelta(weeks=week - 1)
    return start, start + timedelta(days=6, hours=23), "reviews"


@dataclass
class Sequence:
    """The history rows of one sequence per scenario (12 each, week order) and the new category used."""

    new_category: str
    records: dict[str, list[RunRecord]]


def draw_sequence(s: int, pools: Pools, bundle: ModelBundle, embedder: object, rows: int, share: float,
                  step: float, spam_share: float, copies: int, timings: list[float]) -> Sequence:
    rng = np.random.default_rng([20261202, s])
    names = list(pools.new)
    category = names[s % len(names)]
    newcomers = pools.new[category]

    def scored(week: int, frame: pd.DataFrame) -> RunRecord:
        t = time.perf_counter()
        scores = bundle.score(frame, embedder)  # type: ignore[arg-type]
        timings.append(time.perf_counter() - t)
        return score_record(f"w{week:02d}", scores, MODEL_VERSION, week_time(week))

    weeks = range(1, WEEKS + 1)
    normal = {w: scored(w, _mix(rng, pools, rows, None)) for w in weeks}
    b = {w: scored(w, _mix(rng, pools, rows, new_reviews(rng, newcomers, share, rows)))
         for w in weeks if w >= ONSET["b"]}
    c = {w: scored(w, _mix(rng, pools, rows, new_reviews(rng, newcomers, step * (w - ONSET["c"] + 1), rows)))
         for w in weeks if w >= ONSET["c"]}
    d = {ONSET["d"]: scored(ONSET["d"], _mix(rng, pools, rows, spam_burst(rng, pools, spam_share, rows, copies)))}
    records = {"a": [normal[w] for w in weeks]}
    for key, changed in (("b", b), ("c", c), ("d", d)):
        records[key] = [changed.get(w, normal[w]) for w in weeks]
    return Sequence(new_category=category, records=records)


def member_calibration(bundle: ModelBundle, pools: Pools, embedder: object, rows: int, batches: int,
                       seed: int = 1) -> dict[str, dict[str, float]]:
    """Where (a)'s false alarms come from: the share of fresh reviews of the reference category whose score
    per member and per group exceeds the reference's own held-out score quantiles (exchangeable scores give
    the quantile's complement: 0.05, 0.01, 0.005). Scored in batches of `rows`, as the batch signals need."""
    model = bundle.outlier
    rng = np.random.default_rng(seed)
    collected: dict[str, list[np.ndarray]] = {}
    for _ in range(batches):
        frame = pools.base.iloc[rng.choice(len(pools.base), size=rows, replace=False)].reset_index(drop=True)
        batch = model._canonical(frame, "the batch")
        _, surprise, _ = model._raw_scores(batch, model._embed(batch, embedder, None))
        for member, values in surprise.items():
            collected.setdefault(member, []).append(np.asarray(values, dtype=np.float64))
    reference = {m: model.reference_surprises_[m].to_numpy(dtype=np.float64) for m in model.reference_surprises_}
    fresh = {m: np.concatenate(v) for m, v in collected.items()}
    for group, members in model.groups_.items():
        if all(m in fresh for m in members):
            reference[f"group {group}"] = np.mean(np.vstack([reference[m] for m in members]), axis=0)
            fresh[f"group {group}"] = np.mean(np.vstack([fresh[m] for m in members]), axis=0)
    out = {}
    for name, values in fresh.items():
        ref, new = reference[name][np.isfinite(reference[name])], values[np.isfinite(values)]
        out[name] = {f"above_reference_q{q:g}": float(np.mean(new > np.quantile(ref, q))) for q in (0.95, 0.99, 0.995)}
    return out


def alerts_of(records: list[RunRecord], level: float, sequential: bool) -> list[rules.AlertDecision]:
    """The alerts the product raises on this history: `MonitorStore.evaluate` without the database."""
    return rules.evaluate(evidence_sequence(timeline(records)), level, sequential=sequential)


def alerts_through_store(records: list[RunRecord], level: float, sequential: bool, folder: Path) -> set[tuple]:
    """The same history recorded batch by batch in a real SQLite run history, evaluated after each record."""
    store = MonitorStore(f"sqlite:///{folder / 'labels.db'}")
    for run in records:
        store.record(run)
        store.evaluate(level, sequential=sequential)
    return {(a.batch, a.kind, a.rule) for a in store.alerts()}


def week_of(batch: str) -> int:
    return int(batch[1:])


def summarise(outcomes: list[dict], level: float) -> dict:
    """Rates and delays with 95 % intervals (Wilson over sequences; the per-batch false-alarm rate also with a
    bootstrap over sequences, since one sequence's batches share the sequential rule's state)."""

    def wilson(hits: int, n: int, z: float = 1.959964) -> list[float]:
        if not n:
            return [float("nan"), float("nan")]
        p = hits / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]

    n = len(outcomes)
    out: dict = {"sequences": n}
    # (a) per-batch false alarms
    flags = np.array([[w in o["a"]["alert_weeks"] for w in range(1, WEEKS + 1)] for o in outcomes], dtype=bool)
    by_rule = {rule: np.array([[w in o["a"]["weeks_by_rule"].get(rule, []) for w in range(1, WEEKS + 1)]
                               for o in outcomes], dtype=bool) for rule in (rules.BATCH_RULE, rules.SEQUENTIAL_RULE)}
    boot = np.random.default_rng(0).integers(0, n, size=(2000, n)) if n else np.zeros((0, 0), dtype=int)
    rates = flags.mean(axis=1)[boot].mean(axis=1) if n else np.zeros(0)
    any_seq = flags.any(axis=1)
    kinds: dict[str, int] = {}
    for o in outcomes:
        for kind in o["a"]["kinds"]:
            kinds[kind] = kinds.get(kind, 0) + 1
    out["a"] = {
        "batches": int(flags.size), "batches_alerted": int(flags.sum()),
        "false_alarm_rate_per_batch": float(flags.mean()) if n else None,
        "ci95_wilson_batches": wilson(int(flags.sum()), int(flags.size)),
        "ci95_bootstrap_sequences": [float(np.quantile(rates, 0.025)), float(np.quantile(rates, 0.975))] if n else None,
        "per_rule": {rule: float(m.mean()) if n else None for rule, m in by_rule.items()},
        "sequences_with_any_false_alarm": float(any_seq.mean()) if n else None,
        "sequences_with_any_false_alarm_ci95": wilson(int(any_seq.sum()), n),
        "promised_at_most_per_batch": level,
        "promised_sequences_with_any_at_most": 1 - (1 - level) ** WEEKS,
        "alerted_kinds": kinds,
        "evidence_share_at_or_below": {
            kind: {str(t): float(np.mean([p <= t for o in outcomes for p in o["a"]["p_values"][kind]]))
                   for t in (0.001, 0.005, 0.01, 0.05, 0.1)}
            for kind in (outcomes[0]["a"]["p_values"] if n else {})},
        "target": [0.005, 0.02],
    }
    splits = sorted({o.get("split", 0) for o in outcomes})
    per_split = [float(np.mean([w in o["a"]["alert_weeks"] for o in outcomes if o.get("split", 0) == k
                                for w in range(1, WEEKS + 1)])) for k in splits]
    out["a"]["false_alarm_rate_by_split"] = {
        "splits": len(splits), "min": min(per_split) if per_split else None,
        "median": float(np.median(per_split)) if per_split else None, "max": max(per_split) if per_split else None}
    out["a"]["pass"] = bool(n) and 0.005 <= out["a"]["false_alarm_rate_per_batch"] <= 0.02
    for key in ("b", "c", "d"):
        onset = ONSET[key]
        delays = [o[key]["delay"] for o in outcomes]
        detected = [d for d in delays if d is not None]
        at_onset = sum(d == 0 for d in detected)
        by_8 = sum(d is not None and onset + d <= 8 for d in delays)
        before = sum(o[key]["before_onset"] for o in outcomes)
        block = {
            "onset_week": onset, "alerted_at_onset": at_onset / n if n else None,
            "alerted_at_onset_ci95": wilson(at_onset, n),
            "alerted_by_week_8": by_8 / n if n else None, "alerted_by_week_8_ci95": wilson(by_8, n),
            "never_alerted": (n - len(detected)) / n if n else None,
            "median_delay_weeks": float(np.median(detected)) if detected else None,
            "mean_delay_weeks_detected": float(np.mean(detected)) if detected else None,
            "delay_histogram": {str(d): sum(x == d for x in detected) for d in sorted(set(detected))},
            "false_alarm_before_onset": before / n if n else None,
            "first_alert_kind_rule": {},
            "by_new_category": {},
        }
        for o in outcomes:
            first = o[key]["first"]
            if first:
                name = f"{first[0]} ({first[1]})"
                block["first_alert_kind_rule"][name] = block["first_alert_kind_rule"].get(name, 0) + 1
        if key != "d":
            for category in sorted({o["new_category"] for o in outcomes}):
                mine = [o for o in outcomes if o["new_category"] == category]
                hit = sum(o[key]["delay"] == 0 if key == "b" else
                          (o[key]["delay"] is not None and onset + o[key]["delay"] <= 8) for o in mine)
                block["by_new_category"][category] = {"sequences": len(mine), "rate": hit / len(mine)}
        if key == "b":
            block["target"], block["pass"] = ">= 0.90 alerted in week 8", bool(n) and at_onset / n >= 0.90
        elif key == "c":
            block["target"], block["pass"] = ">= 0.80 alerted by week 8", bool(n) and by_8 / n >= 0.80
        else:
            block["target"], block["pass"] = ">= 0.95 alerted in the burst week", bool(n) and at_onset / n >= 0.95
        out[key] = block
    return out


def outcome(records: list[RunRecord], key: str, level: float, sequential: bool) -> dict:
    decisions = alerts_of(records, level, sequential)
    weeks_by_rule: dict[str, list[int]] = {}
    for d in decisions:
        weeks_by_rule.setdefault(d.rule, []).append(week_of(d.batch))
    weeks = sorted({week_of(d.batch) for d in decisions})
    result: dict = {"alert_weeks": weeks, "weeks_by_rule": weeks_by_rule,
                    "kinds": sorted({f"{d.kind} ({d.rule})" for d in decisions})}
    if key == "a":  # the evidence itself, to check its calibration under no change
        result["p_values"] = {kind: [r.kinds[kind]["p_value"] for r in records] for kind in records[0].kinds}
    if key != "a":
        onset = ONSET[key]
        after = sorted((week_of(d.batch), d.rule != rules.BATCH_RULE, d.kind, d.rule) for d in decisions
                       if week_of(d.batch) >= onset)
        result["delay"] = after[0][0] - onset if after else None
        result["first"] = [after[0][2], after[0][3]] if after else None
        result["before_onset"] = any(w < onset for w in weeks)
        if key == "d":  # the burst is one week: an alert after it is about something else
            result["delay"] = 0 if onset in weeks else None
    return result


def markdown(summary: dict, level: float) -> str:
    a = summary["a"]

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f} %"

    def ci(pair: list[float] | None) -> str:
        return "" if not pair else f" ({100 * pair[0]:.1f}-{100 * pair[1]:.1f})"

    def verdict(ok: bool) -> str:
        return "pass" if ok else "FAIL"

    lines = [f"{summary['sequences']} sequences of {WEEKS} weekly batches, alert level {level:g} per batch; "
             "95 % intervals in brackets.", "",
             "| scenario | measurement | result | target |", "|---|---|---|---|",
             f"| (a) {SCENARIOS['a']} | batches with an alert | {pct(a['false_alarm_rate_per_batch'])}"
             f"{ci(a['ci95_bootstrap_sequences'])}, {a['batches_alerted']} of {a['batches']} | "
             f"0.5-2 % {verdict(a['pass'])} |",
             f"| | per reference split ({a['false_alarm_rate_by_split']['splits']} splits): min / median / max | "
             f"{pct(a['false_alarm_rate_by_split']['min'])} / {pct(a['false_alarm_rate_by_split']['median'])} / "
             f"{pct(a['false_alarm_rate_by_split']['max'])} | |",
             f"| | per rule: batch (Holm) / sequential | {pct(a['per_rule'][rules.BATCH_RULE])} / "
             f"{pct(a['per_rule'][rules.SEQUENTIAL_RULE])} | |",
             f"| | sequences with any false alarm | {pct(a['sequences_with_any_false_alarm'])}"
             f"{ci(a['sequences_with_any_false_alarm_ci95'])} | promise <= "
             f"{pct(a['promised_sequences_with_any_at_most'])} (at most {level:g} a batch) |"]
    for key, label, target in (("b", "alerted in week 8", ">= 90 %"), ("c", "alerted by week 8", ">= 80 %"),
                               ("d", "alerted in the burst week", ">= 95 %")):
        block = summary[key]
        value = block["alerted_by_week_8"] if key == "c" else block["alerted_at_onset"]
        interval = block["alerted_by_week_8_ci95"] if key == "c" else block["alerted_at_onset_ci95"]
        lines.append(f"| ({key}) {SCENARIOS[key]} | {label} | {pct(value)}{ci(interval)} | "
                     f"{target} {verdict(block['pass'])} |")
        if key != "d":
            lines.append(f"| | delay from week {block['onset_week']}: median (detected), never alerted | "
                         f"{block['median_delay_weeks']} weeks, {pct(block['never_alerted'])} | |")
        if block["by_new_category"]:
            lines.append("| | by new category | " + ", ".join(
                f"{k} {pct(v['rate'])}" for k, v in block["by_new_category"].items()) + " | |")
        first = sorted(block["first_alert_kind_rule"].items(), key=lambda kv: -kv[1])[:3]
        lines.append("| | first alert after the onset (kind, rule) | "
                     + ", ".join(f"{k} {v}" for k, v in first) + " | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sequences", type=int, default=200)
    parser.add_argument("--rows", type=int, default=150, help="reviews per weekly batch")
    parser.add_argument("--reference", type=int, default=1000, help="reviews in the model's reference")
    parser.add_argument("--level", type=float, default=None, help="alert level (default: the settings', 0.01)")
    parser.add_argument("--share", type=float, default=0.10, help="(b): the new category's share")
    parser.add_argument("--step", type=float, default=0.02, help="(c): the new category's weekly rise")
    parser.add_argument("--spam-share", type=float, default=0.10, help="(d): the spam's share of the burst week")
    parser.add_argument("--copies", type=int, default=5, help="(d): copies of each spam text")
    parser.add_argument("--store-check", type=int, default=3,
                        help="sequences whose alerts are also checked through a real SQLite MonitorStore")
    parser.add_argument("--calibration-batches", type=int, default=4,
                        help="no-change batches per split of the member calibration check (scores vs the reference's)")
    parser.add_argument("--refit-every", type=int, default=5,
                        help="sequences per random reference/held-out split (a new model fitted on each)")
    parser.add_argument("--budget-minutes", type=float, default=0.0,
                        help="stop drawing sequences after this many minutes of scoring (0 = no limit)")
    parser.add_argument("--threads", type=int, default=0, help="BLAS/OpenMP threads (0 = library default)")
    parser.add_argument("--quick", action="store_true", help="a 400-review reference (smoke run)")
    parser.add_argument("--new-categories", nargs="+", default=None, choices=[c for c in CATEGORIES if c != BASE],
                        help="the categories that take turns as the new one (all four when not given)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "monitor.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.reference = 400

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    limiter = None
    if args.threads:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(args.threads)
    settings = get_settings()
    level = args.level if args.level is not None else settings.alert_level
    sequential = settings.alert_sequential
    t0 = time.perf_counter()
    embedder = make_embedder(settings)
    pools = load_pools(args.data, args.reference, settings.random_state, embedder, log, args.new_categories)

    def refit(split: int) -> tuple[ModelBundle, Pools, float, dict[str, dict[str, float]]]:
        """A fresh random reference/held-out split, the model fitted on it, and its member calibration check."""
        drawn = split_reference(pools, args.reference, settings.random_state + split)
        t = time.perf_counter()
        fitted = ModelBundle.fit(drawn.reference, embedder, detectors=DEFAULT_DETECTORS,
                                 contamination=settings.contamination, random_state=settings.random_state,
                                 project=False, reference_batch=f"{BASE} ({args.reference}, split {split})")
        seconds = time.perf_counter() - t
        return fitted, drawn, seconds, member_calibration(fitted, drawn, embedder, args.rows,
                                                          args.calibration_batches, seed=split + 1)

    timings: list[float] = []
    fit_times: list[float] = []
    calibrations: list[dict[str, dict[str, float]]] = []
    outcomes: list[dict] = []
    mismatches: list[str] = []
    started = time.perf_counter()
    load_before = os.getloadavg()
    bundle, split_pools = None, pools
    for s in range(args.sequences):
        if args.budget_minutes and time.perf_counter() - started > 60 * args.budget_minutes:
            log(f"budget of {args.budget_minutes:g} min spent after {s} sequences")
            break
        if s % args.refit_every == 0:
            bundle, split_pools, fit_s, calibration = refit(s // args.refit_every)
            fit_times.append(fit_s)
            calibrations.append(calibration)
            if s == 0:
                log(f"model fitted on {len(split_pools.reference)} {BASE} reviews in {fit_s:.0f} s "
                    f"({', '.join(bundle.meta['detectors'])}; groups {', '.join(bundle.outlier.groups_)}); "
                    f"refitted on a new split every {args.refit_every} sequences")
            log(f"split {s // args.refit_every}: fresh reviews above the reference's held-out 99 % quantile: "
                + ", ".join(f"{k} {v['above_reference_q0.99']:.3f}" for k, v in calibration.items()
                            if k.startswith("group")))
        assert bundle is not None
        seq = draw_sequence(s, split_pools, bundle, embedder, args.rows, args.share, args.step, args.spam_share,
                            args.copies, timings)
        row = {"sequence": s, "split": s // args.refit_every, "new_category": seq.new_category}
        for key, records in seq.records.items():
            row[key] = outcome(records, key, level, sequential)
            if s < args.store_check:
                expected = {(d.batch, d.kind, d.rule) for d in alerts_of(records, level, sequential)}
                with tempfile.TemporaryDirectory() as folder:
                    stored = alerts_through_store(records, level, sequential, Path(folder))
                if stored != expected:
                    mismatches.append(f"sequence {s} ({key}): store {sorted(stored)} != {sorted(expected)}")
        outcomes.append(row)
        if s == 0 or (s + 1) % 10 == 0:
            done = time.perf_counter() - started
            log(f"{s + 1} sequences in {done:.0f} s ({np.median(timings):.2f} s median per batch scored, "
                f"load {os.getloadavg()[0]:.1f}); (a) alerted weeks so far "
                f"{sum(len(o['a']['alert_weeks']) for o in outcomes)}")
    summary = summarise(outcomes, level)
    shares = {name: [c[name]["above_reference_q0.99"] for c in calibrations] for name in calibrations[0]}
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else "bench/monitor.py "
        + " ".join(argv),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "threads": args.threads or "default",
                    "load_average_start": load_before, "load_average_end": os.getloadavg()},
        "settings": {"sequences_asked": args.sequences, "rows_per_batch": args.rows, "reference": args.reference,
                     "reference_category": BASE, "new_categories": list(pools.new), "level": level,
                     "sequential_rule": sequential, "share": args.share, "step": args.step,
                     "spam_share": args.spam_share, "spam_copies": args.copies, "onsets": ONSET, "weeks": WEEKS,
                     "detectors": bundle.meta["detectors"], "groups": list(bundle.outlier.groups_),
                     "embedding_model": bundle.meta["embedding_model"], "budget_minutes": args.budget_minutes,
                     "refit_every": args.refit_every, "splits": len(calibrations)},
        "timing": {"fit_s_median": float(np.median(fit_times)), "fits": len(fit_times), "batches_scored": len(timings),
                   "score_s_median": float(np.median(timings)) if timings else None,
                   "score_s_p90": float(np.quantile(timings, 0.9)) if timings else None,
                   "scoring_s_total": float(np.sum(timings)), "seconds_total": time.perf_counter() - t0},
        "member_calibration": {"batches_per_split": args.calibration_batches, "rows": args.rows,
                               "splits": len(calibrations),
                               "above_reference_q0.99_mean": {k: float(np.mean(v)) for k, v in shares.items()},
                               "above_reference_q0.99_min_max": {k: [min(v), max(v)] for k, v in shares.items()},
                               "per_split": calibrations},
        "store_check": {"sequences": min(args.store_check, len(outcomes)), "mismatches": mismatches},
        "summary": summary,
        "sequences": outcomes,
    }
    table = markdown(summary, level)
    result["table"] = table
    print(table)
    if mismatches:
        print("\nthe SQLite run history raised other alerts than the in-memory evaluation:\n" + "\n".join(mismatches))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float))
    log(f"wrote {args.out} ({result['timing']['seconds_total']:.0f} s in all, {len(timings)} batches scored)")
    del limiter
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
