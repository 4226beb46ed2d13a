"""bench/campaigns.py runs end to end in its smallest configuration (the numbers are the bench's business)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_campaigns_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "campaigns.json"
    result = subprocess.run([sys.executable, str(REPO / "bench" / "campaigns.py"), "--smoke", "--out", str(out)],
                            capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert {"yelp", "planted", "null", "cost"} <= set(data)
    assert 0.5 <= data["yelp"]["unsupervised"]["campaign kind"]["auroc"] <= 1.0
    assert data["cost"]["features_present"] == data["cost"]["batch_reviews"]
