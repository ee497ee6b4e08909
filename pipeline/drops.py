"""Experience drops: which series got worse, whether to believe it, and who is to blame.

Pure logic, no I/O (`pipeline/alerting.py` feeds it minutes from ClickHouse and
writes what it decides). Everything here works on per-minute numerators and
denominators, the only thing the views store, so that any period is an exact
sum of minutes and a backfill is judged exactly as live traffic was.

Every metric is a mean of per-unit values over a period: a share is the mean
of 0/1 outcomes, NPS the mean of +1/0/-1, CES the mean score, a support time
the mean duration. One test then fits all of them: the recent period's mean
against a baseline mean, with the per-unit variance taken as the larger of

- the variance the values must have when they are 0/1 or -1/0/+1 (known
  exactly from the counts), and
- the scatter of the baseline's minute means around their common mean,
  weighted by volume (the between-groups mean square of a one-way ANOVA,
  which estimates the per-unit variance when nothing changes).

The second term is what makes the test honest on real traffic: it needs no
sum of squares (CES and durations store only sums), and it absorbs
over-dispersion, such as a funnel step that is a ratio of two counts rather
than a binomial share, or traffic whose mix shifts from minute to minute.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Any, Literal

from pipeline.journey import STAGES

#: The stage of series that are not split by stage (crash rate: sessions start
#: in one stage and crash in another, so a per-stage ratio means nothing).
ALL_STAGES = "all"
_JOURNEY = STAGES[1:]

Counters = Mapping[str, int]
#: (channel, stage) -> the minute's counters: stage_minute and experience_minute columns.
MinuteRows = Mapping[tuple[str, str], Counters]
SeriesKey = tuple[str, str, str]
"""(metric, channel, stage)."""


@dataclass(frozen=True, slots=True)
class Metric:
    """How to read one experience metric from a minute's counters.

    `values` says what the per-unit values can be: "binary" (0/1, a share),
    "signed" (+1/0/-1, NPS) or "open" (a score or duration, whose variance
    only the minutes' scatter can tell). `worse` is the direction of a drop.
    `min_effect` is the smallest change worth waking someone for, relative to
    the baseline unless `absolute` (NPS moves in points around zero).
    `warmup_s` overrides the detector's warm-up for metrics whose units take
    long to complete: a dataset's first hour of resolutions holds only the
    tickets that were quick, because the slow ones opened before it began.
    """

    name: str
    numerator: tuple[str, ...]
    denominator: str
    values: Literal["binary", "signed", "open"]
    worse: Literal[-1, 1]
    scale: float
    unit: str
    negative: tuple[str, ...] = ()
    per_stage: bool = True
    min_effect: float = 0.1
    critical_effect: float = 0.3
    absolute: bool = False
    warmup_s: int | None = None


#: Every watched metric but stage conversion (which reads two stages, see `series_points`).
METRICS: tuple[Metric, ...] = (
    Metric("csat", ("csat_satisfied",), "csat_responses", "binary", -1, 100.0, "%"),
    Metric(
        "nps",
        ("nps_promoters",),
        "nps_responses",
        "signed",
        -1,
        100.0,
        "points",
        negative=("nps_detractors",),
        min_effect=5.0,
        critical_effect=15.0,
        absolute=True,
    ),
    Metric("ces", ("ces_sum",), "ces_responses", "open", -1, 1.0, "score"),
    Metric("error_rate", ("errors", "crashes"), "events", "binary", 1, 1000.0, "per 1,000 events"),
    Metric(
        "crash_rate",
        ("crash_sessions",),
        "sessions",
        "binary",
        1,
        100.0,
        "% of sessions",
        per_stage=False,
    ),
    *(
        Metric(f"{vital}_good", (f"{vital}_good",), f"{vital}_count", "binary", -1, 100.0, "%")
        for vital in ("lcp", "inp", "cls", "fcp", "ttfb")
    ),
    Metric(
        "first_response_time",
        ("first_response_ms_sum",),
        "first_responses",
        "open",
        1,
        0.001,
        "s",
        min_effect=0.2,
    ),
    Metric(
        "resolution_time",
        ("resolution_ms_sum",),
        "resolutions",
        "open",
        1,
        0.001,
        "s",
        min_effect=0.2,
        warmup_s=3600,
    ),
)
#: Stage conversion: entries of a stage over entries of the stage before it.
CONVERSION = Metric("conversion", ("entries",), "entries", "binary", -1, 100.0, "%")
METRIC_BY_NAME: dict[str, Metric] = {m.name: m for m in (CONVERSION, *METRICS)}


@dataclass(frozen=True, slots=True)
class Point:
    """One series in one minute: units, the sum of their values and of their squares.

    `squares` is None for open values, whose squares nobody stored.
    """

    units: int
    total: float
    squares: float | None


def series_points(rows: MinuteRows) -> dict[SeriesKey, Point]:
    """Every series' point in one minute, from that minute's view rows."""
    points: dict[SeriesKey, Point] = {}
    channels = sorted({channel for channel, _ in rows})
    for channel in channels:
        for previous, stage in pairwise(_JOURNEY):
            before = rows.get((channel, previous), {}).get("entries", 0)
            after = rows.get((channel, stage), {}).get("entries", 0)
            if before or after:
                points[(CONVERSION.name, channel, stage)] = Point(before, after, after)
    for (channel, stage), counters in rows.items():
        for metric in METRICS:
            if metric.per_stage:
                _add(points, metric, (metric.name, channel, stage), counters)
    for metric in METRICS:
        if not metric.per_stage:
            for channel in channels:
                for (c, _), counters in rows.items():
                    if c == channel:
                        _add(points, metric, (metric.name, channel, ALL_STAGES), counters)
    return points


def _add(points: dict[SeriesKey, Point], metric: Metric, key: SeriesKey, c: Counters) -> None:
    units = c.get(metric.denominator, 0)
    if not units:
        return
    plus = sum(c.get(name, 0) for name in metric.numerator)
    minus = sum(c.get(name, 0) for name in metric.negative)
    total: float = plus - minus
    squares: float | None = None if metric.values == "open" else plus + minus
    old = points.get(key)
    if old is not None:
        units += old.units
        total += old.total
        squares = None if squares is None or old.squares is None else squares + old.squares
    points[key] = Point(units, total, squares)


@dataclass(frozen=True, slots=True)
class Sums:
    """A series over a period: what the test needs, summed over its parts.

    The parts are minutes, or batches of minutes (`History.batched`).
    `scatter` is the sum over parts with units of total²/units, from which
    the spread of their means follows without keeping them.
    """

    units: int = 0
    total: float = 0.0
    squares: float | None = 0.0
    parts: int = 0
    scatter: float = 0.0

    @property
    def mean(self) -> float:
        return self.total / self.units if self.units else 0.0

    def add(self, point: Point) -> Sums:
        """These sums with one more minute (or batch); one without units only adds its total
        (a funnel step whose previous stage had no entries that minute)."""
        if not point.units:
            return replace(self, total=self.total + point.total)
        squares = (
            None if self.squares is None or point.squares is None else self.squares + point.squares
        )
        return Sums(
            self.units + point.units,
            self.total + point.total,
            squares,
            self.parts + 1,
            self.scatter + point.total * point.total / point.units,
        )

    def unit_variance(self) -> tuple[float, float]:
        """The per-unit variance and the degrees of freedom to judge it with.

        Shares and NPS: the larger of what their values allow (exact) and what
        the batches show, judged as known. The batches' scatter only ever
        widens the exact floor, and for funnel steps it overstates what a
        quarter hour sees (entries spill over the edges of five-minute
        batches), so it is conservative as it stands. Open values have no
        floor: their variance is all estimate, with k - 1 degrees of freedom
        for k batches, and Student's t widens the test's tails to match. A
        floor of a hundredth of the mean keeps a perfectly flat history (every
        CES a 5) from turning any change into infinite evidence.
        """
        mean = self.mean
        between = 0.0
        if self.parts > 1:
            between = max(0.0, self.scatter - self.total * mean) / (self.parts - 1)
        floor = max((0.01 * mean) ** 2, 1e-12)
        if self.squares is None:
            return max(between, floor), float(max(1, self.parts - 1))
        within = max(0.0, self.squares / self.units - mean * mean)
        return max(between, within, floor), math.inf

    def to_json(self) -> dict[str, Any]:
        return {
            "units": self.units,
            "total": self.total,
            "squares": self.squares,
            "parts": self.parts,
            "scatter": self.scatter,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Sums:
        return cls(
            int(data["units"]),
            float(data["total"]),
            None if data["squares"] is None else float(data["squares"]),
            int(data["parts"]),
            float(data["scatter"]),
        )


@dataclass(frozen=True)
class DetectorConfig:
    """The detector's knobs, all in event-time seconds.

    `false_alarm_rate` is the Benjamini-Hochberg level of one evaluation: with
    no real drop anywhere, the chance that it raises any alert at all. The
    first `warmup_s` of a dataset is never a baseline: tickets, sessions and
    journeys that began before the data did are missing from it, so support
    times look short and funnels odd until they have had time to fill in.
    """

    period_s: int = 900
    baseline_s: int = 7200
    warmup_s: int = 1800
    min_history_s: int = 1800
    week_s: int = 7 * 86400
    week_span_s: int = 3600
    false_alarm_rate: float = 0.001
    min_recent_units: int = 30
    min_baseline_units: int = 100
    min_baseline_batches: int = 5
    min_expected: float = 5.0
    resolve_z: float = 1.0
    batch_s: int = 300


class History:
    """Per-minute points of every series over a contiguous range, summed on demand.

    Prefix sums make each period an O(1) lookup, so a backfill that evaluates
    hundreds of minutes in one go costs no more than it takes to read them.
    """

    def __init__(
        self,
        start: int,
        end: int,
        minutes: Mapping[int, Mapping[SeriesKey, Point]],
        first_data: int,
    ) -> None:
        self.start = start
        self.end = end
        #: The first minute of the whole dataset, which may lie before `start`.
        self.first_data = first_data
        size = (end - start) // 60
        self._prefix: dict[SeriesKey, list[Sums]] = {}
        for key in sorted({k for points in minutes.values() for k in points}):
            running = _nothing(key)
            prefix = [running]
            for i in range(size):
                point = minutes.get(start + 60 * i, {}).get(key)
                if point is not None:
                    running = running.add(point)
                prefix.append(running)
            self._prefix[key] = prefix

    @property
    def keys(self) -> list[SeriesKey]:
        return list(self._prefix)

    def covers(self, lo: int, hi: int) -> bool:
        return self.start <= lo and hi <= self.end

    def batched(self, key: SeriesKey, lo: int, hi: int, batch_s: int) -> Sums:
        """The series over [lo, hi) with its scatter taken between batches of `batch_s`.

        One person's events spread over several minutes, so neighbouring
        minutes move together and their scatter understates how much a whole
        period can move; batches longer than most visits are nearly
        independent (the batch means method).
        """
        result = self.sums(key, lo, lo)
        edge = hi
        while edge > lo:
            start = max(lo, edge - batch_s)
            part = self.sums(key, start, edge)
            result = result.add(Point(part.units, part.total, part.squares))
            edge = start
        return result

    def sums(self, key: SeriesKey, lo: int, hi: int) -> Sums:
        """The series summed over minutes [lo, hi), which must lie within the history."""
        prefix = self._prefix.get(key)
        if prefix is None:
            return _nothing(key)
        a, b = prefix[(lo - self.start) // 60], prefix[(hi - self.start) // 60]
        squares = None if a.squares is None or b.squares is None else b.squares - a.squares
        return Sums(
            b.units - a.units,
            b.total - a.total,
            squares,
            b.parts - a.parts,
            b.scatter - a.scatter,
        )


def _nothing(key: SeriesKey) -> Sums:
    """A series' sums before any minute: squares are unknown from the start for open values."""
    return Sums(squares=None if METRIC_BY_NAME[key[0]].values == "open" else 0.0)


@dataclass(frozen=True, slots=True)
class Comparison:
    """A recent period against one baseline: values in the metric's unit and the evidence."""

    observed: float
    baseline: float
    change: float
    effect: float
    z: float
    p_value: float

    def to_json(self) -> dict[str, Any]:
        return {
            "observed": self.observed,
            "baseline": self.baseline,
            "change": self.change,
            "effect": self.effect,
            "z": self.z,
            "p_value": self.p_value,
        }


def enough_volume(metric: Metric, recent: Sums, baseline: Sums, config: DetectorConfig) -> bool:
    """Whether a period and its baseline carry enough units for a test to mean anything.

    For a share, the recent period must also expect a few of each outcome: a
    normal approximation of three expected crashes is no evidence at all.
    """
    if recent.units < config.min_recent_units or baseline.units < config.min_baseline_units:
        return False
    if baseline.parts < config.min_baseline_batches:
        return False
    if metric.values == "binary":
        share = baseline.mean
        expected = recent.units * min(share, 1.0 - share)
        return expected >= config.min_expected
    return True


def compare(metric: Metric, recent: Sums, baseline: Sums) -> Comparison:
    """One-sided test that the recent mean moved the bad way from the baseline's.

    Shares are compared by the likelihood ratio of two binomials, scaled by
    the baseline's over-dispersion (quasi-likelihood): unlike a z on the
    difference, its tails stay honest for rare outcomes such as crashes,
    where twice the usual count in a quarter hour is far likelier than a
    normal curve says. Scores and durations get a Welch test, see `_welch`.
    """
    observed, expected = recent.mean, baseline.mean
    variance, freedom = baseline.unit_variance()
    z = _binomial_z(metric, recent, baseline, variance)
    if z is None:
        z, freedom = _welch(metric, recent, baseline, variance, freedom)
    scale = metric.scale
    change = (observed - expected) / abs(expected) if expected else 0.0
    return Comparison(
        observed=observed * scale,
        baseline=expected * scale,
        change=change,
        effect=metric.worse * (observed - expected) * scale,
        z=z,
        p_value=student_t_sf(z, freedom),
    )


def _binomial_z(metric: Metric, recent: Sums, baseline: Sums, variance: float) -> float | None:
    """The signed root of the two-binomial likelihood ratio over the dispersion, for
    shares only (None otherwise, or when a funnel step is no share: more entries
    than the stage before had)."""
    if metric.values != "binary":
        return None
    periods = ((recent.total, recent.units), (baseline.total, baseline.units))
    if any(not 0 <= x <= n for x, n in periods):
        return None
    pooled = (recent.total + baseline.total) / (recent.units + baseline.units)
    expected = baseline.mean
    if not 0 < pooled < 1 or not 0 < expected < 1:
        return None
    deviance = 0.0
    for x, n in periods:
        for hits, share in ((x, pooled), (n - x, 1 - pooled)):
            if hits > 0:
                deviance += 2 * hits * math.log(hits / (n * share))
    dispersion = max(1.0, variance / (expected * (1 - expected)))
    sign = 1.0 if metric.worse * (recent.mean - expected) > 0 else -1.0
    return sign * math.sqrt(max(0.0, deviance) / dispersion)


def _welch(
    metric: Metric, recent: Sums, baseline: Sums, variance: float, freedom: float
) -> tuple[float, float]:
    """Welch's z and degrees of freedom for means.

    NPS has no outliers, and the baseline's variance holds for both periods.
    Open values can: there the recent period's own variance counts where it
    is larger than the baseline's, never smaller, so that a quarter hour
    whose mean rests on a single three-hour ticket carries that ticket's
    scatter too, and one outlier is not a drop.
    """
    own, own_freedom = variance, freedom
    if metric.values == "open":
        larger, larger_freedom = recent.unit_variance()
        if larger > variance:
            own, own_freedom = larger, larger_freedom
    a, b = own / recent.units, variance / baseline.units
    spread = a * a / own_freedom + b * b / freedom
    z = metric.worse * (recent.mean - baseline.mean) / math.sqrt(a + b)
    return z, (a + b) ** 2 / spread if spread else math.inf


def student_t_sf(t: float, freedom: float) -> float:
    """P(T > t) for Student's t with `freedom` degrees of freedom; normal when infinite."""
    if math.isinf(freedom):
        return 0.5 * math.erfc(t / math.sqrt(2.0))
    tail = 0.5 * _incomplete_beta(freedom / 2, 0.5, freedom / (freedom + t * t))
    return tail if t > 0 else 1.0 - tail


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), by its continued fraction."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    """Lentz's evaluation of the incomplete beta continued fraction (converges for
    x < (a + 1) / (a + b + 2), which the caller ensures by symmetry)."""
    tiny = 1e-300

    def nonzero(v: float) -> float:
        return v if abs(v) > tiny else tiny

    c, d = 1.0, 1.0 / nonzero(1.0 - (a + b) * x / (a + 1))
    result = d
    for m in range(1, 500):
        even = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d = 1.0 / nonzero(1.0 + even * d)
        c = nonzero(1.0 + even / c)
        result *= d * c
        odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 / nonzero(1.0 + odd * d)
        c = nonzero(1.0 + odd / c)
        result *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return result


def practical(metric: Metric, comparison: Comparison) -> bool:
    """Whether the change is large enough to matter, whatever its significance."""
    if metric.absolute:
        return comparison.effect >= metric.min_effect
    return comparison.effect >= metric.min_effect * abs(comparison.baseline)


def severity(metric: Metric, comparison: Comparison) -> str:
    size = comparison.effect if metric.absolute else comparison.effect / abs(comparison.baseline)
    return "critical" if size >= metric.critical_effect else "warning"


def benjamini_hochberg(p_values: Mapping[SeriesKey, float], level: float) -> set[SeriesKey]:
    """The series whose drops survive false-discovery control at `level`.

    With no real drop anywhere this is also the chance of any alert at all,
    and when an incident hits many series at once it loses less power than
    Bonferroni would.
    """
    ranked = sorted(p_values.items(), key=lambda item: (item[1], item[0]))
    m = len(ranked)
    cutoff = 0
    for rank, (_, p) in enumerate(ranked, start=1):
        if p <= rank * level / m:
            cutoff = rank
    return {key for key, _ in ranked[:cutoff]}


def alert_id(key: SeriesKey, started: int) -> str:
    """Deterministic: the same episode of the same series always has the same id,
    so evaluating a period again (a restart, a backfill) rewrites, never adds."""
    text = "|".join((*key, str(started)))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass
class Episode:
    """A series in a drop, from the evaluation that fired until the one that resolves it.

    The baseline is frozen when it fires: otherwise the trailing window would
    slowly fill with the drop itself and "resolve" it by getting used to it.
    `peak` is the worst period so far: an alert fires as soon as the evidence
    is enough, often with the drop only minutes old, and what it reports (the
    period, the values, the segment to blame) sharpens while the drop deepens.
    """

    key: SeriesKey
    alert_id: str
    started: int
    baseline: Sums
    baseline_start: int
    baseline_end: int
    peak: Comparison
    peak_at: int
    severity: str
    week_ago: Comparison | None = None
    segment: str = ""
    candidates: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """What a restarted worker needs to carry the episode on (see `from_json`)."""
        return {
            "started": self.started,
            "baseline_start": self.baseline_start,
            "baseline_end": self.baseline_end,
            "baseline_sums": self.baseline.to_json(),
            "peak": self.peak.to_json(),
            "peak_at": self.peak_at,
        }

    @classmethod
    def from_json(
        cls, key: SeriesKey, alert: str, severity: str, segment: str, data: Mapping[str, Any]
    ) -> Episode:
        return cls(
            key,
            alert,
            int(data["started"]),
            Sums.from_json(data["baseline_sums"]),
            int(data["baseline_start"]),
            int(data["baseline_end"]),
            Comparison(**data["peak"]),
            int(data["peak_at"]),
            severity,
            segment=segment,
        )


@dataclass(frozen=True)
class Transition:
    """An alert record to write at `at` (event time): an episode that fired, that got
    worse (its firing record is rewritten), or that resolved."""

    status: Literal["firing", "resolved"]
    episode: Episode
    at: int
    comparison: Comparison


@dataclass
class Evaluation:
    """What one evaluation found: transitions, and every tested series' comparison."""

    transitions: list[Transition] = field(default_factory=list)
    series: dict[SeriesKey, tuple[Comparison, int]] = field(default_factory=dict)


class Detector:
    """Evaluates period after period and keeps the episodes open between them."""

    def __init__(self, config: DetectorConfig, active: Iterable[Episode] = ()) -> None:
        self.config = config
        self.active: dict[SeriesKey, Episode] = {e.key: e for e in active}

    def first_period_end(self, first_data: int) -> int:
        """The first evaluation with `min_history_s` of baseline after the warm-up."""
        c = self.config
        return first_data + c.warmup_s + c.min_history_s + c.period_s

    def history_range(self, first: int, last: int) -> tuple[int, int]:
        """Minutes [lo, hi) that evaluating period ends first..last reads (week ago aside)."""
        return first - self.config.period_s - self.config.baseline_s, last

    def week_range(self, first: int, last: int) -> tuple[int, int]:
        c = self.config
        return first - c.week_s - c.week_span_s, last - c.week_s

    def evaluate(self, at: int, history: History, week: History | None = None) -> Evaluation:
        """Judge the period [at - period, at) of every series in `history`."""
        c = self.config
        lo = at - c.period_s
        result = Evaluation()
        candidates: dict[SeriesKey, tuple[Comparison, Sums, int, Comparison | None]] = {}
        for key in history.keys:
            metric = METRIC_BY_NAME[key[0]]
            recent = history.sums(key, lo, at)
            episode = self.active.get(key)
            warmup = c.warmup_s if metric.warmup_s is None else metric.warmup_s
            base_lo = min(lo, max(lo - c.baseline_s, history.first_data + warmup))
            baseline = episode.baseline if episode else history.batched(key, base_lo, lo, c.batch_s)
            if not enough_volume(metric, recent, baseline, c):
                continue
            comparison = compare(metric, recent, baseline)
            result.series[key] = (comparison, recent.units)
            if episode is None:
                week_ago = self._week_ago(metric, key, recent, at, week)
                candidates[key] = (comparison, baseline, base_lo, week_ago)
            elif comparison.z < c.resolve_z:
                result.transitions.append(Transition("resolved", episode, at, comparison))
                del self.active[key]
            elif comparison.z > episode.peak.z:
                episode.peak, episode.peak_at = comparison, at
                episode.severity = severity(metric, comparison)
                result.transitions.append(Transition("firing", episode, at, comparison))
        p_values = {
            key: max(comparison.p_value, week_ago.p_value if week_ago else 0.0)
            for key, (comparison, _, _, week_ago) in candidates.items()
        }
        for key in sorted(benjamini_hochberg(p_values, c.false_alarm_rate)):
            comparison, baseline, base_lo, week_ago = candidates[key]
            metric = METRIC_BY_NAME[key[0]]
            if not practical(metric, comparison) or (
                week_ago is not None and not practical(metric, week_ago)
            ):
                continue
            episode = Episode(
                key,
                alert_id(key, at),
                at,
                baseline,
                base_lo,
                lo,
                comparison,
                at,
                severity(metric, comparison),
                week_ago,
            )
            self.active[key] = episode
            result.transitions.append(Transition("firing", episode, at, comparison))
        return result

    def _week_ago(
        self, metric: Metric, key: SeriesKey, recent: Sums, at: int, week: History | None
    ) -> Comparison | None:
        """The same test against the hour before the same time a week earlier, where
        there is one: a drop must also be a drop against it, so that a weekly rhythm
        (quiet Sunday nights) is not news."""
        c = self.config
        hi = at - c.week_s
        lo = hi - c.week_span_s
        if week is None or not week.covers(lo, hi):
            return None
        baseline = week.batched(key, lo, hi, c.batch_s)
        if not enough_volume(metric, recent, baseline, c):
            return None
        return compare(metric, recent, baseline)


# --- attribution -------------------------------------------------------------

#: A segment that holds this share of a series' units in both periods is the
#: series itself (platform=web on the web channel) and explains nothing.
WHOLE_SERIES_SHARE = 0.9
#: Below this excess share no segment stands out: the drop is spread out.
MIN_EXCESS_SHARE = 0.2
CANDIDATES = 5


@dataclass(frozen=True, slots=True)
class SegmentCounts:
    """One segment's (or the whole series', for dimension "") units and value total per period."""

    dimension: str
    value: str
    recent_units: float
    recent_total: float
    baseline_units: float
    baseline_total: float


@dataclass(frozen=True, slots=True)
class Candidate:
    segment: str
    share: float
    traffic_share: float
    observed: float | None
    baseline: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "segment": self.segment,
            "share_of_drop": round(self.share, 4),
            "share_of_traffic": round(self.traffic_share, 4),
            "observed": self.observed,
            "baseline": self.baseline,
        }


@dataclass(frozen=True)
class Attribution:
    segment: str
    candidates: list[Candidate]


def attribute(metric: Metric, rows: Iterable[SegmentCounts]) -> Attribution:
    """The context segment that explains the largest share of a drop, and the runners-up.

    The change of the overall mean splits exactly over the values of one
    dimension: segment s contributes w1(m1 - m0) for how it performed plus
    (w1 - w0)(m0 - M0) for how much more or less of the traffic it became,
    where w are its traffic shares, m its means and M0 the overall baseline
    mean. Its share of the drop is that contribution over the whole change.
    A segment is ranked by how much more of the drop it carries than its
    size alone would (share of drop minus share of traffic), so that the
    country where checkout broke beats the browser most people use.
    """
    totals: SegmentCounts | None = None
    by_dimension: dict[str, list[SegmentCounts]] = {}
    for row in rows:
        if row.dimension == "":
            totals = row
        else:
            by_dimension.setdefault(row.dimension, []).append(row)
    if totals is None or not totals.recent_units or not totals.baseline_units:
        return Attribution("", [])
    m1 = totals.recent_total / totals.recent_units
    m0 = totals.baseline_total / totals.baseline_units
    delta = m1 - m0
    if metric.worse * delta <= 0:
        return Attribution("", [])
    ranked: list[tuple[float, Candidate]] = []
    for dimension in sorted(by_dimension):
        for seg in by_dimension[dimension]:
            w1 = seg.recent_units / totals.recent_units
            w0 = seg.baseline_units / totals.baseline_units
            if min(w1, w0) >= WHOLE_SERIES_SHARE:
                continue
            s1 = seg.recent_total / seg.recent_units if seg.recent_units else None
            s0 = seg.baseline_total / seg.baseline_units if seg.baseline_units else None
            base = m0 if s0 is None else s0
            contribution = (w1 * (s1 - base) if s1 is not None else 0.0) + (w1 - w0) * (base - m0)
            share = contribution / delta
            traffic = (w0 + w1) / 2
            candidate = Candidate(
                f"{dimension}={seg.value}",
                share,
                traffic,
                None if s1 is None else s1 * metric.scale,
                None if s0 is None else s0 * metric.scale,
            )
            ranked.append((share - traffic, candidate))
    ranked.sort(key=lambda item: (-item[0], item[1].traffic_share, item[1].segment))
    best = ranked[0][1].segment if ranked and ranked[0][0] >= MIN_EXCESS_SHARE else ""
    return Attribution(best, [candidate for _, candidate in ranked[:CANDIDATES]])
