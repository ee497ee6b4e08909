"""One internal partition's state and how a batch of events changes it.

Pure logic: given a batch (as the bulk stage wrote it) it returns the rows for
ClickHouse and the *delta*, the state change of the whole batch as one value.
The worker writes the delta to the changelog as a single message, so after a
crash the restored state holds a batch entirely or not at all, and remembers
the source offsets it applied: a replayed event changes nothing (exactly-once
results over at-least-once delivery).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline import journey as jr
from pipeline.batches import (
    E_ID,
    E_OCCURRED,
    E_OFFSET,
    E_PARTITION,
    E_RECEIVED,
    R_DETAIL,
    R_OFFSET,
    R_PARTITION,
    R_REASON,
    R_RECEIVED,
    R_TRUNCATED,
    read_batch,
)
from pipeline.clickhouse import Rows
from pipeline.windows import VITAL_GOOD, Aggregate, Watermark, WindowKey, X, window_start


@dataclass(slots=True)
class Outcome:
    """What one batch produced: rows to store, dead letters, and the state delta."""

    rows: Rows
    delta: bytes
    dead_letters: list[tuple[bytes, bytes]] = field(default_factory=list)
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    skipped: int = 0


@dataclass
class PartitionState:
    """Everything one internal partition remembers, restorable from snapshot + deltas."""

    partition: int
    lateness_s: int
    session_gap_s: int
    applied: dict[int, int] = field(default_factory=dict)
    watermark: Watermark = field(init=False)
    journeys: dict[str, jr.Journey] = field(default_factory=dict)
    windows: dict[WindowKey, Aggregate] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    seen_by_window: dict[int, list[str]] = field(default_factory=dict)
    linked: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.watermark = Watermark(self.lateness_s)

    def apply(self, value: bytes, version: int) -> Outcome:
        """Apply an encoded batch; `version` (its own offset) orders the partial rows."""
        batch = read_batch(value)
        rows = Rows()
        out = Outcome(rows=rows, delta=b"")
        topic = batch.topic
        start = dict(self.applied)
        touched_journeys: set[str] = set()
        touched_windows: dict[WindowKey, list[str]] = {}
        new_seen: dict[int, list[str]] = {}
        new_links: list[str] = []
        gap_ms = self.session_gap_s * 1000

        for rec, raw in batch.rejected:
            if rec[R_OFFSET] <= start.get(rec[R_PARTITION], -1):
                out.skipped += 1
                continue
            self._note_offset(rec[R_PARTITION], rec[R_OFFSET])
            self._reject(
                out,
                topic,
                rec[R_PARTITION],
                rec[R_OFFSET],
                rec[R_RECEIVED],
                rec[R_REASON],
                rec[R_DETAIL],
                raw,
                bool(rec[R_TRUNCATED]),
            )

        for ev, raw in batch.events:
            sp, offset = ev[E_PARTITION], ev[E_OFFSET]
            if offset <= start.get(sp, -1):
                out.skipped += 1
                continue
            self._note_offset(sp, offset)
            event_id: str = ev[E_ID]
            occurred: int = ev[E_OCCURRED]
            received: int = ev[E_RECEIVED]
            if event_id in self.seen:
                out.duplicates += 1
                rows.duplicates.append((received, event_id, topic, sp, offset))
                continue
            window = window_start(occurred)
            if self.watermark.closed(window):
                self._reject(
                    out,
                    topic,
                    sp,
                    offset,
                    received,
                    "too_late",
                    f"window {window} closed by watermark {self.watermark.max_ms}",
                    raw,
                    False,
                )
                continue
            out.accepted += 1
            self.watermark.advance(occurred)
            self.seen[event_id] = window
            new_seen.setdefault(window, []).append(event_id)

            # Checked by the bulk stage already; null counts as absent (docs/semantics.md).
            doc = orjson.loads(raw)
            customer, anonymous = doc.get("customer_id"), doc.get("anonymous_id")
            identity: str = customer if customer is not None else anonymous
            if customer is not None and anonymous is not None and anonymous not in self.linked:
                self.linked.add(anonymous)
                new_links.append(anonymous)
                rows.identity_links.append((anonymous, customer, occurred))
            journey = self.journeys.get(identity)
            if journey is None:
                journey = self.journeys[identity] = jr.Journey()
            touched_journeys.add(identity)
            etype: str = doc["type"]
            source: str = doc["source"]
            props: dict[str, Any] = doc.get("properties") or {}
            session = doc.get("session_id")
            step = jr.advance(journey, identity, etype, occurred, session, props, gap_ms)
            stage = jr.STAGES[step.stage]

            key = (window, source, stage)
            agg = self.windows.get(key)
            if agg is None:
                agg = self.windows[key] = Aggregate()
            added = touched_windows.get(key)
            if added is None:
                added = touched_windows[key] = []
            agg.events += 1
            if identity not in agg.customers:
                agg.customers.add(identity)
                added.append(identity)
            if step.entry:
                agg.entries += 1
                agg.conversions += step.conversion
                rows.stage_entries.append(
                    (
                        identity,
                        stage,
                        source,
                        occurred,
                        int(step.conversion),
                        step.seconds_to_convert,
                    )
                )
            x = agg.experience
            if step.session_start:
                x[X["sessions"]] += 1
            _count_experience(x, journey, etype, props, occurred)

            rows.events.append(
                (
                    event_id,
                    source,
                    etype,
                    occurred,
                    received,
                    identity,
                    customer,
                    anonymous,
                    step.session_id,
                    stage,
                    orjson.dumps(props).decode(),
                    doc.get("context") or {},
                    topic,
                    sp,
                    offset,
                )
            )

        for key in touched_windows:
            agg = self.windows[key]
            rows.stage_partials.append(
                (
                    *key,
                    agg.events,
                    len(agg.customers),
                    agg.entries,
                    agg.conversions,
                    self.partition,
                    version,
                )
            )
            if agg.has_experience:
                rows.experience_partials.append((*key, *agg.experience, self.partition, version))

        # Encoded now: the state keeps changing while this batch waits for its flush.
        out.delta = orjson.dumps(
            self._close_windows(touched_journeys, touched_windows, new_seen, new_links),
            option=orjson.OPT_NON_STR_KEYS,
        )
        return out

    def _note_offset(self, source_partition: int, offset: int) -> None:
        if offset > self.applied.get(source_partition, -1):
            self.applied[source_partition] = offset

    def _reject(
        self,
        out: Outcome,
        topic: str,
        sp: int,
        offset: int,
        received: int,
        reason: str,
        detail: str,
        raw: bytes,
        truncated: bool,
    ) -> None:
        out.rejected += 1
        out.rows.rejected.append((received, reason, detail, raw, int(truncated), topic, sp, offset))
        letter = orjson.dumps(
            {
                "reason": reason,
                "detail": detail,
                "topic": topic,
                "partition": sp,
                "offset": offset,
                "received_at_ms": received,
                "truncated": truncated,
                "raw": raw.decode("utf-8", "replace"),
            }
        )
        out.dead_letters.append((f"{topic}:{sp}:{offset}".encode(), letter))

    def _close_windows(
        self,
        journeys: set[str],
        windows: dict[WindowKey, list[str]],
        new_seen: dict[int, list[str]],
        new_links: list[str],
    ) -> dict[str, Any]:
        """Drop windows the watermark closed and describe the batch's change as one delta."""
        closed = [key for key in self.windows if self.watermark.closed(key[0])]
        for key in closed:
            del self.windows[key]
            windows.pop(key, None)
        for window, ids in new_seen.items():
            self.seen_by_window.setdefault(window, []).extend(ids)
        dropped_seen = [w for w in self.seen_by_window if self.watermark.closed(w)]
        for window in dropped_seen:
            for event_id in self.seen_by_window.pop(window):
                self.seen.pop(event_id, None)
        return {
            "a": self.applied,
            "w": self.watermark.max_ms,
            "j": {identity: self.journeys[identity].to_list() for identity in journeys},
            "g": [[*key, self.windows[key].to_list(added)] for key, added in windows.items()],
            "gd": [list(key) for key in closed],
            "s": [[w, ids] for w, ids in new_seen.items()],
            "sd": dropped_seen,
            "l": new_links,
        }

    def apply_delta(self, delta: dict[str, Any]) -> None:
        """Replay a stored delta while restoring (the inverse of `_close_windows`)."""
        self.applied = {int(k): v for k, v in delta["a"].items()}
        if delta["w"] is not None:
            self.watermark.advance(delta["w"])
        for identity, data in delta["j"].items():
            self.journeys[identity] = jr.Journey.from_list(data)
        for window, channel, stage, data in delta["g"]:
            agg = self.windows.get((window, channel, stage))
            if agg is None:
                agg = self.windows[(window, channel, stage)] = Aggregate()
            agg.restore(data)
        for window, channel, stage in delta["gd"]:
            self.windows.pop((window, channel, stage), None)
        for window, ids in delta["s"]:
            self.seen_by_window.setdefault(window, []).extend(ids)
            for event_id in ids:
                self.seen[event_id] = window
        for window in delta["sd"]:
            for event_id in self.seen_by_window.pop(window, []):
                self.seen.pop(event_id, None)
        self.linked.update(delta["l"])

    def snapshot(self) -> dict[str, Any]:
        """The whole state as one delta: restoring it alone rebuilds this state."""
        return {
            "a": self.applied,
            "w": self.watermark.max_ms,
            "j": {identity: j.to_list() for identity, j in self.journeys.items()},
            "g": [[*key, agg.to_list(sorted(agg.customers))] for key, agg in self.windows.items()],
            "gd": [],
            "s": list(self.seen_by_window.items()),
            "sd": [],
            "l": sorted(self.linked),
        }


def _count_experience(
    x: list[int], journey: jr.Journey, etype: str, props: dict[str, Any], occurred: int
) -> None:
    """Experience counters of one event; numerators and denominators only."""
    if etype == "csat_submitted":
        x[X["csat_responses"]] += 1
        x[X["csat_satisfied"]] += props["score"] >= 4
    elif etype == "nps_submitted":
        score = props["score"]
        x[X["nps_responses"]] += 1
        x[X["nps_promoters"]] += score >= 9
        x[X["nps_detractors"]] += score <= 6
    elif etype == "ces_submitted":
        x[X["ces_responses"]] += 1
        x[X["ces_sum"]] += props["score"]
    elif etype == "error":
        x[X["errors"]] += 1
    elif etype == "crash":
        x[X["crashes"]] += 1
        x[X["crash_sessions"]] += jr.first_crash_of_session(journey)
    elif etype == "ticket_opened":
        jr.ticket_opened(journey, props["ticket_id"], occurred)
    elif etype == "agent_reply":
        if props.get("is_bot") is not True:
            ms = jr.first_response_ms(journey, props["ticket_id"], occurred)
            if ms is not None:
                x[X["first_responses"]] += 1
                x[X["first_response_ms_sum"]] += ms
    elif etype == "ticket_resolved":
        ms = jr.resolution_ms(journey, props["ticket_id"], occurred)
        if ms is not None:
            x[X["resolutions"]] += 1
            x[X["resolution_ms_sum"]] += ms
    elif etype == "ticket_reopened":
        x[X["reopens"]] += 1
    elif etype == "web_vital":
        name: str = props["name"]
        value = props["value"]
        prefix = name.lower()
        x[X[f"{prefix}_count"]] += 1
        x[X[f"{prefix}_good"]] += value <= VITAL_GOOD[name]
