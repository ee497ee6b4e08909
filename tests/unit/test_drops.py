"""The drop detector's statistics, lifecycle and attribution, on numbers made here."""

from __future__ import annotations

import math
import random

import pytest

from pipeline.alerting import alert_row, render_alerts, segment_counts
from pipeline.clickhouse import ALERT_COLUMNS
from pipeline.drops import (
    CONVERSION,
    METRIC_BY_NAME,
    Comparison,
    Detector,
    DetectorConfig,
    Episode,
    History,
    Point,
    SegmentCounts,
    SeriesKey,
    Sums,
    attribute,
    benjamini_hochberg,
    compare,
    enough_volume,
    series_points,
    student_t_sf,
)

T0 = 1_700_000_000 - 1_700_000_000 % 3600
KEY: SeriesKey = ("conversion", "web", "consideration")
CSAT: SeriesKey = ("csat", "support", "service")


def binary_minutes(
    rng: random.Random,
    key: SeriesKey,
    minutes: int,
    share: float,
    units: int = 40,
    drop: tuple[int, int, float] | None = None,
) -> dict[int, dict[SeriesKey, Point]]:
    """A 0/1 series, one point a minute; `drop` = (from minute, to minute, new share)."""
    out: dict[int, dict[SeriesKey, Point]] = {}
    for i in range(minutes):
        p = drop[2] if drop and drop[0] <= i < drop[1] else share
        successes = sum(rng.random() < p for _ in range(units))
        out[T0 + 60 * i] = {key: Point(units, successes, successes)}
    return out


def history(minutes: dict[int, dict[SeriesKey, Point]], length: int) -> History:
    return History(T0, T0 + 60 * length, minutes, T0)


def run(detector: Detector, hist: History, length: int) -> list[tuple[str, str, int, int]]:
    """Every transition of evaluating all period ends: (status, alert id, at, peak end)."""
    out = []
    for at in range(detector.first_period_end(T0), T0 + 60 * length + 1, 60):
        for t in detector.evaluate(at, hist).transitions:
            out.append((t.status, t.episode.alert_id, at, t.episode.peak_at))
    return out


# --- distributions -------------------------------------------------------------


@pytest.mark.parametrize(
    ("t", "freedom", "expected"),
    [
        (2.0, 10.0, 0.0366940),
        (1.0, 1.0, 0.25),  # Cauchy
        (0.5, 2.0, 1 / 3),
        (-1.0, 5.0, 0.8183913),
        (3.0, math.inf, 0.0013499),
        (5.2, 29.0, 7.2743e-6),
    ],
)
def test_student_t_tail_matches_known_values(t: float, freedom: float, expected: float) -> None:
    assert student_t_sf(t, freedom) == pytest.approx(expected, rel=1e-4)


def test_student_t_approaches_the_normal_with_many_degrees_of_freedom() -> None:
    assert student_t_sf(3.0, 1e6) == pytest.approx(student_t_sf(3.0, math.inf), rel=1e-3)


# --- variance and the test --------------------------------------------------------


def test_unit_variance_of_shares_is_exact_when_minutes_scatter_as_binomials() -> None:
    sums = Sums()
    for _ in range(60):
        sums = sums.add(Point(100, 30, 30))  # no scatter at all: p(1-p) wins
    variance, freedom = sums.unit_variance()
    assert variance == pytest.approx(0.3 * 0.7)
    assert freedom == math.inf


def test_unit_variance_of_open_values_is_estimated_from_the_scatter_of_minutes() -> None:
    rng = random.Random(5)
    estimates = []
    for _ in range(300):
        sums = Sums(squares=None)
        for _ in range(30):
            n = rng.randint(1, 6)
            sums = sums.add(Point(n, sum(rng.gauss(10.0, 2.0) for _ in range(n)), None))
        variance, freedom = sums.unit_variance()
        assert freedom == 29
        estimates.append(variance)
    assert sum(estimates) / len(estimates) == pytest.approx(4.0, rel=0.05)


def test_over_dispersed_shares_widen_the_variance() -> None:
    sums = Sums()
    for i in range(20):
        share = 0.1 if i % 2 else 0.5  # the mix swings minute to minute
        sums = sums.add(Point(100, 100 * share, 100 * share))
    variance, _ = sums.unit_variance()
    assert variance > 0.3 * 0.7 * 3


def test_no_drop_gives_calibrated_p_values() -> None:
    rng = random.Random(11)
    metric = METRIC_BY_NAME["csat"]
    p_values = []
    for _ in range(1500):
        minutes = binary_minutes(rng, CSAT, 75, 0.7, units=8)
        hist = history(minutes, 75)
        recent = hist.sums(CSAT, T0 + 3600, T0 + 4500)
        baseline = hist.batched(CSAT, T0, T0 + 3600, 300)
        p_values.append(compare(metric, recent, baseline).p_value)
    for level in (0.05, 0.01):
        share = sum(p < level for p in p_values) / len(p_values)
        assert share < 1.6 * level, (level, share)


def test_a_clear_drop_gives_overwhelming_evidence_and_sizes() -> None:
    recent = Sums().add(Point(600, 240, 240))
    baseline = Sums()
    for _ in range(24):
        baseline = baseline.add(Point(100, 55, 55))
    comparison = compare(CONVERSION, recent, baseline)
    assert comparison.p_value < 1e-9
    assert comparison.observed == pytest.approx(40.0)
    assert comparison.baseline == pytest.approx(55.0)
    assert comparison.change == pytest.approx(-15 / 55)
    assert comparison.effect == pytest.approx(15.0)


def test_one_outlier_ticket_is_not_a_rise_in_support_times() -> None:
    metric = METRIC_BY_NAME["resolution_time"]
    baseline = Sums(squares=None)
    for _ in range(24):
        baseline = baseline.add(Point(5, 5 * 600_000, None))
    recent = Sums(squares=None)
    for i in range(15):
        total = 5 * 600_000 + (30_000_000 if i == 7 else 0)  # one eight-hour ticket
        recent = recent.add(Point(5, total, None))
    assert compare(metric, recent, baseline).p_value > 0.01


def test_volume_guard_wants_units_minutes_and_expected_outcomes() -> None:
    config = DetectorConfig()
    metric = METRIC_BY_NAME["crash_rate"]
    baseline = Sums()
    for _ in range(24):
        baseline = baseline.add(Point(100, 1, 1))  # a 1% crash rate
    assert not enough_volume(metric, Sums().add(Point(100, 2, 2)), baseline, config)
    assert enough_volume(metric, Sums().add(Point(600, 9, 9)), baseline, config)
    assert not enough_volume(metric, Sums().add(Point(20, 9, 9)), baseline, config)


def test_benjamini_hochberg_steps_up() -> None:
    keys = [("m", "c", str(i)) for i in range(8)]
    p = [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205]
    assert benjamini_hochberg(dict(zip(keys, p, strict=True)), 0.05) == set(keys[:2])
    # Step-up: the larger p-value carries the smaller one past its own threshold.
    both = {keys[0]: 0.04, keys[1]: 0.04}
    assert benjamini_hochberg(both, 0.05) == set(both)
    assert benjamini_hochberg({}, 0.05) == set()


# --- series and history --------------------------------------------------------


def test_series_points_read_funnel_steps_scores_and_channel_wide_crash_rates() -> None:
    rows = {
        ("web", "awareness"): {"entries": 50, "events": 200, "errors": 2},
        ("web", "consideration"): {"entries": 20, "events": 60},
        ("app", "awareness"): {"entries": 10, "events": 40, "sessions": 12, "crash_sessions": 1},
        ("app", "consideration"): {"entries": 0, "events": 30, "sessions": 3, "crash_sessions": 2},
        ("support", "service"): {"nps_responses": 10, "nps_promoters": 6, "nps_detractors": 1},
    }
    points = series_points(rows)
    assert points[("conversion", "web", "consideration")] == Point(50, 20, 20)
    assert points[("error_rate", "web", "awareness")] == Point(200, 2, 2)
    assert points[("crash_rate", "app", "all")] == Point(15, 3, 3)
    assert points[("nps", "support", "service")] == Point(10, 5, 7)
    assert ("crash_rate", "app", "awareness") not in points
    assert points[("conversion", "web", "conversion")] == Point(20, 0, 0)
    assert ("conversion", "support", "consideration") not in points


def test_history_sums_any_period_and_batches_its_scatter() -> None:
    rng = random.Random(3)
    minutes = binary_minutes(rng, KEY, 40, 0.5)
    hist = history(minutes, 40)
    lo, hi = T0 + 600, T0 + 1800
    total = sum(minutes[t][KEY].total for t in range(lo, hi, 60))
    assert hist.sums(KEY, lo, hi).total == total
    batched = hist.batched(KEY, lo, hi, 300)
    assert (batched.units, batched.total, batched.parts) == (40 * 20, total, 4)
    blocks = [sum(minutes[t][KEY].total for t in range(b, b + 300, 60)) for b in range(lo, hi, 300)]
    assert batched.scatter == pytest.approx(sum(x * x / 200 for x in blocks))


# --- the lifecycle -----------------------------------------------------------------


def config() -> DetectorConfig:
    return DetectorConfig(warmup_s=600, min_history_s=1800, baseline_s=3600)


def test_steady_traffic_raises_nothing() -> None:
    hist = history(binary_minutes(random.Random(21), KEY, 240, 0.55), 240)
    assert run(Detector(config()), hist, 240) == []


def test_a_drop_fires_once_updates_its_alert_and_resolves_when_it_recovers() -> None:
    minutes = binary_minutes(random.Random(8), KEY, 240, 0.55, drop=(120, 150, 0.25))
    transitions = run(Detector(config()), history(minutes, 240), 240)
    ids = {alert for _, alert, _, _ in transitions}
    assert len(ids) == 1
    statuses = [status for status, _, _, _ in transitions]
    assert statuses[0] == "firing" and statuses[-1] == "resolved"
    assert statuses.count("resolved") == 1
    fired_at = transitions[0][2]
    assert fired_at - (T0 + 120 * 60) <= 10 * 60, "detected within ten minutes"
    peaks = [peak for status, _, _, peak in transitions if status == "firing"]
    assert peaks == sorted(peaks), "updates only ever move to a worse period"
    assert transitions[-1][2] > T0 + 150 * 60


def test_evaluating_again_rewrites_the_same_alerts() -> None:
    minutes = binary_minutes(random.Random(8), KEY, 240, 0.55, drop=(120, 150, 0.25))
    first = run(Detector(config()), history(minutes, 240), 240)
    again = run(Detector(config()), history(minutes, 240), 240)
    assert first == again


def test_a_restored_episode_carries_on_without_firing_again() -> None:
    minutes = binary_minutes(random.Random(8), KEY, 240, 0.55, drop=(120, 200, 0.25))
    hist = history(minutes, 240)
    detector = Detector(config())
    for at in range(detector.first_period_end(T0), T0 + 140 * 60, 60):
        detector.evaluate(at, hist)
    (episode,) = detector.active.values()
    saved = episode.to_json()
    restored = Episode.from_json(KEY, episode.alert_id, episode.severity, "", saved)
    fresh = Detector(config(), [restored])
    later = [
        t.status
        for at in range(T0 + 140 * 60, T0 + 240 * 60 + 1, 60)
        for t in fresh.evaluate(at, hist).transitions
        if t.episode.alert_id != episode.alert_id or t.status == "resolved"
    ]
    assert later == ["resolved"]


def test_a_long_drop_is_not_resolved_by_getting_used_to_it() -> None:
    minutes = binary_minutes(random.Random(9), KEY, 400, 0.55, drop=(120, 400, 0.25))
    transitions = run(Detector(config()), history(minutes, 400), 400)
    assert [s for s, *_ in transitions if s == "resolved"] == []


def test_a_significant_but_tiny_change_is_not_worth_an_alert() -> None:
    minutes = binary_minutes(random.Random(4), KEY, 200, 0.60, units=4000, drop=(120, 200, 0.57))
    assert run(Detector(config()), history(minutes, 200), 200) == []


def test_a_drop_that_happened_a_week_ago_too_is_the_weekly_rhythm() -> None:
    week = 7 * 86400
    rng = random.Random(12)
    now = binary_minutes(rng, KEY, 200, 0.55, drop=(120, 200, 0.3))
    before = binary_minutes(rng, KEY, 200, 0.55, drop=(120, 200, 0.3))
    minutes = {t - week: points for t, points in before.items()}
    c = config()
    week_history = History(T0 - week - c.week_span_s, T0 + 60 * 200 - week, minutes, T0 - week)
    detector = Detector(c)
    hist = History(T0, T0 + 60 * 200, now, T0 - week)
    fired = [
        t
        for at in range(T0 + 100 * 60, T0 + 200 * 60 + 1, 60)
        for t in detector.evaluate(at, hist, week_history).transitions
    ]
    assert fired == []
    assert run(Detector(c), history(now, 200), 200), "without last week it is a drop"


# --- attribution -------------------------------------------------------------------


def segments(rows: list[tuple[str, str, float, float, float, float]]) -> list[SegmentCounts]:
    return [SegmentCounts(*row) for row in rows]


def test_the_segment_where_the_drop_happened_is_named() -> None:
    result = attribute(
        CONVERSION,
        segments(
            [
                ("", "", 1000, 440, 4000, 2200),
                ("country", "BR", 250, 30, 1000, 550),
                ("country", "US", 750, 410, 3000, 1650),
                ("browser", "chrome", 600, 260, 2400, 1320),
                ("browser", "safari", 400, 180, 1600, 880),
                ("platform", "web", 1000, 440, 4000, 2200),
            ]
        ),
    )
    assert result.segment == "country=BR"
    top = result.candidates[0]
    assert top.share == pytest.approx((0.25 * (30 / 250 - 0.55)) / (0.44 - 0.55))
    assert "platform=web" not in [c.segment for c in result.candidates]


def test_shares_of_one_dimension_add_up_to_the_whole_change() -> None:
    result = attribute(
        CONVERSION,
        segments(
            [
                ("", "", 1000, 400, 1000, 550),
                ("device", "phone", 600, 180, 400, 200),
                ("device", "desktop", 300, 170, 500, 300),
                ("device", "tablet", 100, 50, 100, 50),
            ]
        ),
    )
    assert sum(c.share for c in result.candidates) == pytest.approx(1.0)


def test_a_drop_spread_evenly_names_no_segment() -> None:
    result = attribute(
        CONVERSION,
        segments(
            [
                ("", "", 1000, 400, 1000, 600),
                ("country", "BR", 500, 200, 500, 300),
                ("country", "US", 500, 200, 500, 300),
            ]
        ),
    )
    assert result.segment == ""


def test_a_rise_is_attributed_for_metrics_where_higher_is_worse() -> None:
    crash = METRIC_BY_NAME["crash_rate"]
    rows = [
        ("", "", 1000, 150, 1000, 40),
        ("app_version", "5.1.3", 400, 120, 400, 16),
        ("app_version", "5.2.0", 600, 30, 600, 24),
    ]
    assert attribute(crash, segments(rows)).segment == "app_version=5.1.3"
    assert attribute(CONVERSION, segments(rows)).segment == "", "a rise is no drop"


def test_segment_rows_pivot_into_one_record_per_segment() -> None:
    rows = [(1, "", "", 10, 4.0), (0, "", "", 40, 20.0), (1, "country", "BR", 3, 0.0)]
    assert segment_counts(rows) == [
        SegmentCounts("", "", 10, 4.0, 40, 20.0),
        SegmentCounts("country", "BR", 3, 0.0, 0.0, 0.0),
    ]


# --- the alert record -------------------------------------------------------------------


def test_alert_rows_follow_from_the_data_and_render_with_their_segment() -> None:
    minutes = binary_minutes(random.Random(8), KEY, 240, 0.55, drop=(120, 150, 0.25))
    hist = history(minutes, 240)
    detector = Detector(config())
    rows = []
    for at in range(detector.first_period_end(T0), T0 + 240 * 60 + 1, 60):
        for transition in detector.evaluate(at, hist).transitions:
            transition.episode.segment = "country=BR"
            transition.episode.candidates = [
                {"segment": "country=BR", "share_of_drop": 0.9, "share_of_traffic": 0.2}
            ]
            rows.append(alert_row(transition, detector.config))
    assert all(len(row) == len(ALERT_COLUMNS) for row in rows)
    firing = [dict(zip(ALERT_COLUMNS, r, strict=True)) for r in rows if r[1] == "firing"]
    assert len({r["detected_at"] for r in firing}) == 1, "an update keeps its detection time"
    text = render_alerts(
        [
            {
                **firing[-1],
                "detected_at": "2025-01-01T10:07:00",
                "period_start": "2025-01-01T10:05:00",
                "period_end": "2025-01-01T10:20:00",
                "resolved_at": "2025-01-01T10:41:00",
                "unit": "%",
                "candidates": [
                    {"segment": "country=BR", "share_of_drop": 0.9, "share_of_traffic": 0.2}
                ],
            }
        ]
    )
    assert "conversion web/consideration" in text
    assert "segment country=BR: 90% of the change, from 20% of the traffic" in text
    assert "resolved 10:41" in text


def test_a_comparison_survives_the_trip_through_json() -> None:
    comparison = Comparison(40.0, 55.0, -0.27, 15.0, 6.1, 1e-9)
    assert Comparison(**comparison.to_json()) == comparison
