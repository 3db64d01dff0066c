"""The experiment report's statistics against published values, and the report itself."""

from __future__ import annotations

from typing import Any

import pytest

from infra.experiments.report import build_report, render
from infra.experiments.stats import mann_whitney, percentile, two_proportions, wilson
from streams.generation import NOTHING_FOUND


def test_wilson_interval_known_values() -> None:
    # Newcombe (1998), Statistics in Medicine 17:857, table I: 81/263 → 0.2553–0.3662
    lo, hi = wilson(81, 263) or (0, 0)
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)
    # 15/148 → 0.0624–0.1605; 0/20 → 0–0.1611 (the Wald interval would be 0–0)
    lo, hi = wilson(15, 148) or (0, 0)
    assert (round(lo, 4), round(hi, 4)) == (0.0624, 0.1605)
    lo, hi = wilson(0, 20) or (1, 1)
    assert lo == 0.0 and round(hi, 4) == 0.1611
    assert wilson(0, 0) is None
    with pytest.raises(ValueError):
        wilson(5, 4)


def test_two_proportion_z_test_known_values() -> None:
    # 45/100 vs 60/100: pooled p = 0.525, z = 0.15 / sqrt(0.525*0.475*0.02) = 2.12398
    test = two_proportions(45, 100, 60, 100)
    assert test is not None
    assert round(test.statistic, 4) == 2.124
    assert round(test.p_value, 4) == 0.0337 and test.significant
    same = two_proportions(50, 100, 52, 100)
    assert same is not None and not same.significant
    assert two_proportions(0, 10, 0, 10) is None and two_proportions(1, 0, 1, 1) is None


def test_mann_whitney_known_values() -> None:
    # no ties: a = 1..5, b = 6..10 → U_b = 25, z = (25 - 12.5) / sqrt(5*5*11/12) = 2.6112
    test = mann_whitney([1, 2, 3, 4, 5], [6, 7, 8, 9, 10])
    assert test is not None
    assert round(test.statistic, 4) == 2.6112 and round(test.p_value, 4) == 0.009
    # ties: a = [1, 2, 2, 3], b = [2, 3, 3, 4]; average ranks 1, 3, 3, 3, 6, 6, 6, 8 give
    # b the rank sum 23, U_b = 23 - 10 = 13 (mean 8); ties 3 twos, 3 threes:
    # variance 4*4/12 * (9 - 2*(3^3-3)/(8*7)) = 10.8571 → z = 5/3.2950 = 1.5174
    tied = mann_whitney([1, 2, 2, 3], [2, 3, 3, 4])
    assert tied is not None and round(tied.statistic, 4) == 1.5174
    reverse = mann_whitney([6, 7, 8, 9, 10], [1, 2, 3, 4, 5])
    assert reverse is not None and reverse.statistic == -test.statistic
    assert mann_whitney([], [1.0]) is None and mann_whitney([2, 2], [2, 2]) is None


def test_percentile_interpolates_like_numpy() -> None:
    values = [15, 20, 35, 40, 50]
    assert percentile(values, 50) == 35
    assert percentile(values, 95) == pytest.approx(48.0)
    assert percentile(values, 0) == 15 and percentile(values, 100) == 50
    assert percentile([7.0], 95) == 7.0 and percentile([], 50) is None


def summary(variant: str, *, outcome: str = "done", first: float = 100.0, rating: int | None = None,
            answer: str = "an answer [1]", sources: bool = True) -> dict[str, Any]:
    a: dict[str, Any] = {"variant": variant, "outcome": outcome, "answer": answer,
                         "timings_ms": {"first_token": first},
                         "sources": [{"doc_id": "d"}] if sources else []}
    if rating is not None:
        a["feedback"] = {"rating": rating}
    return {"aichat": a}


def test_the_report_counts_each_variant_and_compares_with_the_control() -> None:
    rows = (
        [summary("default", first=100 + i, rating=1 if i < 30 else -1) for i in range(60)]
        + [summary("default", sources=False) for _ in range(20)]
        + [summary("default", outcome="deadline_exceeded") for _ in range(20)]
        + [summary("alpha=0.3", first=200 + i, rating=1 if i < 54 else -1) for i in range(60)]
        + [summary("alpha=0.3", answer=NOTHING_FOUND) for _ in range(40)]
    )
    report = build_report("exp", rows)
    assert report["control"] == "default"
    arms = {v["variant"]: v for v in report["variants"]}
    d, a = arms["default"], arms["alpha=0.3"]
    assert (d["questions"], d["answered"], a["questions"], a["answered"]) == (100, 80, 100, 100)
    assert d["no_answer"]["k"] == 40 and a["no_answer"]["k"] == 40
    assert (d["feedback"]["k"], d["feedback"]["n"]) == (60, 80)
    assert (d["positive"]["k"], d["positive"]["n"]) == (30, 60)
    assert (a["positive"]["k"], a["positive"]["n"]) == (54, 60)
    # answered: 100..159 and twenty more at 100 → sorted, positions 39 and 40 are 119 and 120
    assert d["first_token_ms"]["p50"] == pytest.approx(119.5)
    (c,) = report["comparisons"]
    assert c["variant"] == "alpha=0.3" and c["against"] == "default"
    assert c["positive"]["significant"] and c["first_token_ms"]["significant"]
    assert not c["no_answer"]["significant"]
    text = render(report)
    assert "alpha=0.3 vs default: positive: p = " in text and "SIGNIFICANT" in text
    assert "90.0% [79.9–95.3] (54/60)" in text  # Wilson 54/60


def test_the_control_can_be_chosen_and_must_exist() -> None:
    rows = [summary("a"), summary("b")]
    assert build_report("exp", rows)["control"] == "a"  # no 'default': the first by name
    assert build_report("exp", rows, control="b")["comparisons"][0]["variant"] == "a"
    with pytest.raises(ValueError, match="no questions"):
        build_report("exp", rows, control="c")
