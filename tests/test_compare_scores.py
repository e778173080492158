"""benchmarks/compare_scores.py: two predict runs' score difference and sample AUROCs, as a user runs it."""

import csv
import sys
from pathlib import Path

import pytest
from helpers.runs import run_cli

pytestmark = pytest.mark.e2e  # trains, or runs a command line, end to end

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_scores.py"
ROWS = [  # key, label, class, C1 score, C2 score
    ("s1", 0, "OK", 1.0, 2.0),
    ("s2", 0, "OK", 1.5, 1.0),
    ("s3", 1, "HS", 3.0, 1.0),
    ("s4", 1, "XV", 1.2, 1.8),
]


def write_run(folder: Path, shift: float) -> Path:
    folder.mkdir()
    with open(folder / "scores.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "score", "score_mean", "score_C1", "score_C2", "label", "anomaly_class"])
        for key, label, name, c1, c2 in ROWS:
            c1 += shift if key == "s4" else 0.0
            writer.writerow([key, max(c1, c2), (c1 + c2) / 2, c1, c2, label, name])
    return folder


def test_compare_scores_prints_the_difference_and_each_runs_aurocs(tmp_path):
    a, b = write_run(tmp_path / "a", 0.0), write_run(tmp_path / "b", 1.0)  # s4: C1 1.2 -> 2.2, max 2.2
    result = run_cli(None, tmp_path, command=[sys.executable, str(SCRIPT), str(a), str(b)])
    assert result.returncode == 0, result.stderr
    assert "4 samples x 2 views" in result.stdout
    assert "largest view-score difference: 1 absolute, 0.333 relative" in result.stdout  # 1 / 3.0 (a)
    # a: s3 (3.0) and s4 (1.8) against s1 (2.0) and s2 (1.5): 3 of 4 pairs; b: s4 at 2.2 wins all.
    assert "| all | 75.00 | 100.00 |" in result.stdout
    assert "| HS | 100.00 | 100.00 |" in result.stdout and "| XV | 50.00 | 100.00 |" in result.stdout
    other = tmp_path / "c"
    other.mkdir()
    (other / "scores.csv").write_text((a / "scores.csv").read_text().replace("s4", "s5"))
    refused = run_cli(None, tmp_path, command=[sys.executable, str(SCRIPT), str(a), str(other)])
    assert refused.returncode == 1 and "different samples" in refused.stderr
