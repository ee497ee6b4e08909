"""The internal batch: many checked touchpoints in one Kafka message.

A small JSON header says, per record, where it came from (source partition and
offset, so a batch written twice changes nothing the second time) and what
the bulk stage already worked out (receive time, corrected event time,
canonical id and the fields the state needs, or the rejection reason). The
raw events follow the header as they arrived, unescaped: re-encoding them
inside JSON cost more than anything else on the way from the bulk stage to
the state.

The fields travel as text where the stateful stage stores them as text
(properties and context as JSON), so that the single-threaded stage parses
no event again: parsing each raw event there took a third of its time.
Records of the first format, without the fields, are still read (an upgrade
finds them on the topic).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from itertools import accumulate
from operator import itemgetter
from typing import Any

import orjson

from pipeline.validate import Accepted

_LENGTH = struct.Struct(">I")

#: Positions in an event's header record; the first format ends at E_SIZE.
(
    E_PARTITION,
    E_OFFSET,
    E_RECEIVED,
    E_OCCURRED,
    E_ID,
    E_SIZE,
    E_SOURCE,
    E_TYPE,
    E_CUSTOMER,
    E_ANONYMOUS,
    E_SESSION,
    E_PROPERTIES,
    E_CONTEXT,
) = range(13)
#: Positions in a rejected message's header record.
R_PARTITION, R_OFFSET, R_RECEIVED, R_REASON, R_DETAIL, R_TRUNCATED, R_SIZE = range(7)

_HEADER_START = b'{"t":'
_EVENTS_START = b',"e":['
_REJECTED_START = b'],"r":['
_HEADER_END = b"]}"


def event_record(sp: int, offset: int, received_ms: int, event: Accepted, raw: bytes) -> bytes:
    """The encoded header record of an accepted event read at `offset` of source partition `sp`.

    Encoded once, here: its length picks the batch, and the header is these bytes joined.
    """
    return orjson.dumps(
        [
            sp,
            offset,
            received_ms,
            event.occurred_at_ms,
            event.event_id,
            len(raw),
            event.source,
            event.type,
            event.customer_id,
            event.anonymous_id,
            event.session_id,
            orjson.dumps(event.properties).decode(),
            orjson.dumps(event.context).decode(),
        ]
    )


def rejected_record(
    sp: int, offset: int, received_ms: int, reason: str, detail: str, raw: bytes, truncated: bool
) -> bytes:
    """The encoded header record of a message the bulk stage rejected, with its reason."""
    return orjson.dumps([sp, offset, received_ms, reason, detail, int(truncated), len(raw)])


def record_size(record: bytes, raw: bytes) -> int:
    """How many bytes one record adds to an encoded batch: header record, comma and raw bytes."""
    return len(record) + 1 + len(raw)


@dataclass(slots=True)
class BatchWriter:
    """Collects the records bound for one internal partition."""

    topic: str
    events: list[bytes] = field(default_factory=list)
    rejected: list[bytes] = field(default_factory=list)
    raws: list[bytes] = field(default_factory=list)
    rejected_raws: list[bytes] = field(default_factory=list)
    #: What the records added so far take once encoded (`record_size` of each).
    records_size: int = 0
    _frame_size: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        frame = (_HEADER_START, orjson.dumps(self.topic), _EVENTS_START, _REJECTED_START)
        self._frame_size = _LENGTH.size + sum(map(len, frame)) + len(_HEADER_END)

    @property
    def size_bound(self) -> int:
        """At least `len(self.encode())`, known without encoding: batches must fit a message."""
        return self._frame_size + self.records_size

    def add_event(self, record: bytes, raw: bytes) -> None:
        """Add an `event_record` and the event's raw bytes."""
        self.events.append(record)
        self.raws.append(raw)
        self.records_size += record_size(record, raw)

    def add_rejected(self, record: bytes, raw: bytes) -> None:
        """Add a `rejected_record` and the message's raw bytes."""
        self.rejected.append(record)
        self.rejected_raws.append(raw)
        self.records_size += record_size(record, raw)

    def encode(self) -> bytes:
        header = b"".join(
            [
                _HEADER_START,
                orjson.dumps(self.topic),
                _EVENTS_START,
                b",".join(self.events),
                _REJECTED_START,
                b",".join(self.rejected),
                _HEADER_END,
            ]
        )
        return b"".join([_LENGTH.pack(len(header)), header, *self.raws, *self.rejected_raws])


@dataclass(slots=True)
class Batch:
    """A decoded batch: header records in order, raw bytes cut from `value` on demand.

    The stateful stage reads an accepted event's raw bytes only to reject it
    (too late), so cutting every event's out of the batch up front cost
    close to what decoding the header did.
    """

    topic: str
    events: list[list[Any]]
    rejected: list[tuple[list[Any], bytes]]
    value: bytes
    events_start: int
    _event_starts: list[int] | None = None

    def event_raw(self, i: int) -> bytes:
        """The raw bytes of event `i`, as they arrived."""
        if self._event_starts is None:
            sizes = map(_EVENT_SIZE, self.events)
            self._event_starts = list(accumulate(sizes, initial=self.events_start))
        return self.value[self._event_starts[i] : self._event_starts[i + 1]]


_EVENT_SIZE = itemgetter(E_SIZE)


def read_batch(value: bytes) -> Batch:
    (size,) = _LENGTH.unpack_from(value)
    start = _LENGTH.size
    header = orjson.loads(value[start : start + size])
    events_start = start + size
    events = header["e"]
    pos = events_start + sum(map(_EVENT_SIZE, events))
    rejected = []
    for record in header["r"]:
        end = pos + record[R_SIZE]
        rejected.append((record, value[pos:end]))
        pos = end
    return Batch(header["t"], events, rejected, value, events_start)
