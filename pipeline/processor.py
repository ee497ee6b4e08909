"""One internal partition's state and how a batch of events changes it.

Pure logic: given a batch (as the bulk stage wrote it) it returns the rows for
ClickHouse and the *delta*, the state change of the whole batch as one value.
The worker writes the delta to the changelog as a single message, so after a
crash the restored state holds a batch entirely or not at all, and remembers
the source offsets it applied: a replayed event changes nothing (exactly-once
results over at-least-once delivery).

The state is bounded: seen event ids and windows go when the watermark closes
their window, journeys, tickets and identity links when they are older than
`journey_ttl_s` in event time (docs/semantics.md §4, "Expiry").
"""

from __future__ import annotations

import base64
import heapq
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline import journey as jr
from pipeline.batches import (
    E_CONTEXT,
    E_ID,
    E_OCCURRED,
    E_OFFSET,
    E_PARTITION,
    E_RECEIVED,
    E_SOURCE,
    R_DETAIL,
    R_OFFSET,
    R_PARTITION,
    R_REASON,
    R_RECEIVED,
    R_TRUNCATED,
    read_batch,
)
from pipeline.clickhouse import Rows
from pipeline.config import DEFAULT_JOURNEY_TTL_S
from pipeline.windows import (
    VITAL_GOOD,
    WINDOW_S,
    Aggregate,
    Watermark,
    WindowKey,
    X,
    window_start,
)

#: The expiry cutoff before any event: nothing is older.
_NEVER = -(2**63)


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

    @property
    def changed(self) -> bool:
        """False for a replayed batch whose every event was applied before: it has no delta."""
        return bool(self.accepted or self.duplicates or self.rejected)


@dataclass
class PartitionState:
    """Everything one internal partition remembers, restorable from snapshot + deltas.

    A journey, ticket or link older than the expiry cutoff (the watermark minus
    `journey_ttl_s`) counts as absent from that moment on, and is dropped at the
    end of the batch. The cutoff only grows, so results do not depend on where
    batches split, and the drops travel in the delta, so a restored state is the
    same as the one that wrote it.
    """

    partition: int
    lateness_s: int
    session_gap_s: int
    journey_ttl_s: int = DEFAULT_JOURNEY_TTL_S
    applied: dict[int, int] = field(default_factory=dict)
    watermark: Watermark = field(init=False)
    journeys: dict[str, jr.Journey] = field(default_factory=dict)
    windows: dict[WindowKey, Aggregate] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    seen_by_window: dict[int, list[str]] = field(default_factory=dict)
    #: Anonymous id -> event time of the link last recorded for it on this partition.
    linked: dict[str, int] = field(default_factory=dict)
    # When each journey, ticket and link may expire, as min-heaps, so that the end of a
    # batch looks only at what is due. A journey has one entry, at or before its last
    # activity; when it is due but was active since, it gets a new one. Derived from the
    # state, so restoring rebuilds them (`_scheduled`) instead of storing them.
    _journeys_due: list[tuple[int, str]] = field(default_factory=list, repr=False)
    _tickets_due: list[tuple[int, str, str]] = field(default_factory=list, repr=False)
    _links_due: list[tuple[int, str]] = field(default_factory=list, repr=False)
    _scheduled: bool = field(default=True, repr=False)

    def __post_init__(self) -> None:
        if self.journey_ttl_s < self.lateness_s + WINDOW_S:
            # An accepted event could then be older than the cutoff: expired on arrival.
            raise ValueError("journey_ttl_s must be at least lateness_s + 60")
        self.watermark = Watermark(self.lateness_s)

    def cutoff_ms(self) -> int:
        """Journeys inactive, tickets opened and links recorded before this are forgotten."""
        wm = self.watermark.max_ms
        return _NEVER if wm is None else wm - self.journey_ttl_s * 1000

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
        new_links: dict[str, int] = {}
        gap_ms = self.session_gap_s * 1000
        ttl_ms = self.journey_ttl_s * 1000
        cutoff = self.cutoff_ms()
        if not self._scheduled:
            self._schedule()

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

        # Bound once: this loop runs for every event, and each lookup saved counts.
        seen, journeys, windows = self.seen, self.journeys, self.windows
        watermark, events = self.watermark, rows.events
        for i, ev in enumerate(batch.events):
            sp, offset = ev[E_PARTITION], ev[E_OFFSET]
            if offset <= start.get(sp, -1):
                out.skipped += 1
                continue
            self._note_offset(sp, offset)
            event_id: str = ev[E_ID]
            occurred: int = ev[E_OCCURRED]
            received: int = ev[E_RECEIVED]
            # Remembered until the window closes, even within this batch (docs/semantics.md §3).
            seen_in = seen.get(event_id)
            if seen_in is not None and not watermark.closed(seen_in):
                out.duplicates += 1
                rows.duplicates.append((received, event_id, topic, sp, offset))
                continue
            window = window_start(occurred)
            if watermark.closed(window):
                self._reject(
                    out,
                    topic,
                    sp,
                    offset,
                    received,
                    "too_late",
                    f"window {window} closed by watermark {watermark.max_ms}",
                    batch.event_raw(i),
                    False,
                )
                continue
            out.accepted += 1
            watermark.advance(occurred)
            cutoff = max(cutoff, occurred - ttl_ms)
            seen[event_id] = window
            ids = new_seen.get(window)
            if ids is None:
                ids = new_seen[window] = []
            ids.append(event_id)

            # Checked by the bulk stage already; null counts as absent (docs/semantics.md).
            if len(ev) > E_CONTEXT:
                source, etype, customer, anonymous, session, props_json, context = ev[E_SOURCE:]
            else:
                fields = _fields(batch.event_raw(i))
                source, etype, customer, anonymous, session, props_json, context = fields
            identity: str = customer if customer is not None else anonymous
            if customer is not None and anonymous is not None:
                # A link recorded again after it expired is harmless: xp.identity_links keeps
                # the earliest one.
                linked_at = self.linked.get(anonymous)
                if linked_at is None or linked_at < cutoff:
                    self.linked[anonymous] = new_links[anonymous] = occurred
                    heapq.heappush(self._links_due, (occurred, anonymous))
                    rows.identity_links.append((anonymous, customer, occurred))
            journey = journeys.get(identity)
            if journey is None:
                journey = journeys[identity] = jr.Journey()
                heapq.heappush(self._journeys_due, (occurred, identity))
            elif journey.expired(cutoff):
                # A new journey, as if never seen; the old one's schedule entry comes due
                # early and is renewed then.
                journey = journeys[identity] = jr.Journey()
            touched_journeys.add(identity)
            props = orjson.loads(props_json) if etype in _READS_PROPERTIES else _NO_PROPERTIES
            step = jr.advance(journey, identity, etype, occurred, session, props, gap_ms)
            stage = jr.STAGES[step.stage]

            key = (window, source, stage)
            agg = windows.get(key)
            if agg is None:
                agg = windows[key] = Aggregate()
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
            if etype == "ticket_opened":
                ticket_id: str = props["ticket_id"]
                if jr.ticket_opened(journey, ticket_id, occurred, cutoff):
                    heapq.heappush(self._tickets_due, (occurred, identity, ticket_id))
            elif etype in _COUNTED:
                _count_experience(x, journey, etype, props, occurred, cutoff)

            events.append(
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
                    props_json,
                    context,
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
                # Readable, and exact: raw payloads need not be UTF-8.
                "raw": raw.decode("utf-8", "replace"),
                "raw_base64": base64.b64encode(raw).decode("ascii"),
            }
        )
        out.dead_letters.append((f"{topic}:{sp}:{offset}".encode(), letter))

    def _close_windows(
        self,
        journeys: set[str],
        windows: dict[WindowKey, list[str]],
        new_seen: dict[int, list[str]],
        new_links: dict[str, int],
    ) -> dict[str, Any]:
        """Drop what the watermark closed or expired; describe the batch's change as one delta."""
        closed = [key for key in self.windows if self.watermark.closed(key[0])]
        for key in closed:
            del self.windows[key]
            windows.pop(key, None)
        open_seen: dict[int, list[str]] = {}
        for window, ids in new_seen.items():
            if self.watermark.closed(window):
                self._forget_seen(window, ids)
            else:
                open_seen[window] = ids
                self.seen_by_window.setdefault(window, []).extend(ids)
        dropped_seen = [w for w in self.seen_by_window if self.watermark.closed(w)]
        for window in dropped_seen:
            self._forget_seen(window, self.seen_by_window.pop(window))
        evicted, trimmed, unlinked = self._expire()
        journeys = (journeys | trimmed).difference(evicted)
        return {
            "a": self.applied,
            "w": self.watermark.max_ms,
            "j": {identity: self.journeys[identity].to_list() for identity in journeys},
            "jd": evicted,
            "g": [[*key, self.windows[key].to_list(added)] for key, added in windows.items()],
            "gd": [list(key) for key in closed],
            # An id seen again after its window closed is in one open window at most.
            "s": [[w, ids] for w, ids in open_seen.items()],
            "sd": dropped_seen,
            "l": [[anon, at] for anon, at in new_links.items() if anon in self.linked],
            "ld": unlinked,
        }

    def _forget_seen(self, window: int, ids: list[str]) -> None:
        """Forget ids seen in `window`, unless one was accepted again in a later window."""
        for event_id in ids:
            if self.seen.get(event_id) == window:
                del self.seen[event_id]

    def _expire(self) -> tuple[list[str], set[str], list[str]]:
        """Drop the journeys, tickets and links past the cutoff.

        Returns the evicted identities, the identities that lost tickets but stay,
        and the forgotten anonymous ids.
        """
        cutoff = self.cutoff_ms()
        evicted: list[str] = []
        due = self._journeys_due
        while due and due[0][0] < cutoff:
            _, identity = heapq.heappop(due)
            journey = self.journeys.get(identity)
            if journey is None:
                continue
            last = journey.last_ms
            if last is not None and last >= cutoff:
                heapq.heappush(due, (last, identity))
            else:
                del self.journeys[identity]
                evicted.append(identity)
        trimmed: set[str] = set()
        tickets = self._tickets_due
        while tickets and tickets[0][0] < cutoff:
            _, identity, ticket_id = heapq.heappop(tickets)
            journey = self.journeys.get(identity)
            ticket = None if journey is None else journey.tickets.get(ticket_id)
            if journey is not None and ticket is not None and ticket[0] < cutoff:
                del journey.tickets[ticket_id]
                trimmed.add(identity)
        unlinked: list[str] = []
        links = self._links_due
        while links and links[0][0] < cutoff:
            _, anonymous = heapq.heappop(links)
            linked_at = self.linked.get(anonymous)
            if linked_at is not None and linked_at < cutoff:
                del self.linked[anonymous]
                unlinked.append(anonymous)
        return evicted, trimmed, unlinked

    def _schedule(self) -> None:
        """Rebuild the expiry heaps from the state, once after restoring it."""
        self._journeys_due = [
            (j.last_ms, identity) for identity, j in self.journeys.items() if j.last_ms is not None
        ]
        self._tickets_due = [
            (ticket[0], identity, ticket_id)
            for identity, j in self.journeys.items()
            for ticket_id, ticket in j.tickets.items()
        ]
        self._links_due = [(at, anonymous) for anonymous, at in self.linked.items()]
        heapq.heapify(self._journeys_due)
        heapq.heapify(self._tickets_due)
        heapq.heapify(self._links_due)
        self._scheduled = True

    def apply_delta(self, delta: dict[str, Any]) -> None:
        """Replay a stored delta while restoring (the inverse of `_close_windows`)."""
        self._scheduled = False
        self.applied = {int(k): v for k, v in delta["a"].items()}
        if delta["w"] is not None:
            self.watermark.advance(delta["w"])
        for identity, data in delta["j"].items():
            self.journeys[identity] = jr.Journey.from_list(data)
        # Snapshot chunks carry no drops, and deltas written before expiry existed neither.
        for identity in delta.get("jd", ()):
            self.journeys.pop(identity, None)
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
            self._forget_seen(window, self.seen_by_window.pop(window, []))
        for link in delta["l"]:
            # Deltas written before links expired list bare ids: dated by that delta's watermark.
            anonymous, at = (link, delta["w"]) if isinstance(link, str) else link
            self.linked[anonymous] = at
        for anonymous in delta.get("ld", ()):
            self.linked.pop(anonymous, None)

    def snapshot(self) -> dict[str, Any]:
        """The whole state as one delta: restoring it alone rebuilds this state."""
        return {
            "a": self.applied,
            "w": self.watermark.max_ms,
            "j": {identity: j.to_list() for identity, j in self.journeys.items()},
            "jd": [],
            "g": [[*key, agg.to_list(sorted(agg.customers))] for key, agg in self.windows.items()],
            "gd": [],
            "s": list(self.seen_by_window.items()),
            "sd": [],
            "l": [[anonymous, at] for anonymous, at in sorted(self.linked.items())],
            "ld": [],
        }


#: The event types whose properties the state reads (`jr.advance`, `jr.ticket_opened`,
#: `_count_experience`); the others' properties are only stored, as the text they came in.
_READS_PROPERTIES = frozenset(
    {
        "nps_submitted",
        "csat_submitted",
        "ces_submitted",
        "ticket_opened",
        "agent_reply",
        "ticket_resolved",
        "web_vital",
    }
)
_NO_PROPERTIES: dict[str, Any] = {}


def _fields(raw: bytes) -> tuple[str, str, str | None, str | None, str | None, str, str]:
    """An event record's fields, from the raw event: for batches of the first format."""
    doc = orjson.loads(raw)
    return (
        doc["source"],
        doc["type"],
        doc.get("customer_id"),
        doc.get("anonymous_id"),
        doc.get("session_id"),
        orjson.dumps(doc.get("properties") or {}).decode(),
        orjson.dumps(doc.get("context") or {}).decode(),
    )


#: The event types `_count_experience` counts; the others skip the call.
_COUNTED = frozenset(
    {
        "csat_submitted",
        "nps_submitted",
        "ces_submitted",
        "error",
        "crash",
        "agent_reply",
        "ticket_resolved",
        "ticket_reopened",
        "web_vital",
    }
)


def _count_experience(
    x: list[int],
    journey: jr.Journey,
    etype: str,
    props: dict[str, Any],
    occurred: int,
    cutoff: int,
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
    elif etype == "agent_reply":
        if props.get("is_bot") is not True:
            ms = jr.first_response_ms(journey, props["ticket_id"], occurred, cutoff)
            if ms is not None:
                x[X["first_responses"]] += 1
                x[X["first_response_ms_sum"]] += ms
    elif etype == "ticket_resolved":
        ms = jr.resolution_ms(journey, props["ticket_id"], occurred, cutoff)
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
