"""The internal batch: many checked touchpoints in one Kafka message.

A small JSON header says, per record, where it came from (source partition and
offset, so a batch written twice changes nothing the second time) and what
the bulk stage already worked out (receive time, corrected event time,
canonical id, or the rejection reason). The raw events follow the header as
they arrived, unescaped: re-encoding them inside JSON cost more than anything
else on the way from the bulk stage to the state.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import orjson

_LENGTH = struct.Struct(">I")

#: Positions in an event's header record.
E_PARTITION, E_OFFSET, E_RECEIVED, E_OCCURRED, E_ID, E_SIZE = range(6)
#: Positions in a rejected message's header record.
R_PARTITION, R_OFFSET, R_RECEIVED, R_REASON, R_DETAIL, R_TRUNCATED, R_SIZE = range(7)

# A header record besides its one text (event id or detail): up to six integers
# of 20 characters, a reason name, brackets, quotes and commas. JSON takes at
# most 6 bytes per character of text (`\u001f`), and the header's frame at most
# 6 per character of the topic plus a few bytes of its own.
_RECORD_BOUND = 192
_FRAME_BOUND = 64


def record_bound(raw: bytes, text: str) -> int:
    """At most how many bytes one record adds to an encoded batch: raw bytes and header."""
    return len(raw) + _RECORD_BOUND + 6 * len(text)


@dataclass(slots=True)
class BatchWriter:
    """Collects the records bound for one internal partition."""

    topic: str
    events: list[list[Any]] = field(default_factory=list)
    rejected: list[list[Any]] = field(default_factory=list)
    raws: list[bytes] = field(default_factory=list)
    rejected_raws: list[bytes] = field(default_factory=list)
    #: What the records added so far take at most once encoded (see `size_bound`).
    records_bound: int = 0

    @property
    def size_bound(self) -> int:
        """At least `len(self.encode())`, known without encoding: batches must fit a message."""
        return self.records_bound + _FRAME_BOUND + 6 * len(self.topic)

    def add_event(
        self, sp: int, offset: int, received_ms: int, occurred_ms: int, event_id: str, raw: bytes
    ) -> None:
        self.events.append([sp, offset, received_ms, occurred_ms, event_id, len(raw)])
        self.raws.append(raw)
        self.records_bound += record_bound(raw, event_id)

    def add_rejected(
        self,
        sp: int,
        offset: int,
        received_ms: int,
        reason: str,
        detail: str,
        raw: bytes,
        truncated: bool,
    ) -> None:
        self.rejected.append([sp, offset, received_ms, reason, detail, int(truncated), len(raw)])
        self.rejected_raws.append(raw)
        self.records_bound += record_bound(raw, detail)

    def encode(self) -> bytes:
        header = orjson.dumps({"t": self.topic, "e": self.events, "r": self.rejected})
        return b"".join([_LENGTH.pack(len(header)), header, *self.raws, *self.rejected_raws])


@dataclass(slots=True)
class Batch:
    """A decoded batch: header records paired with their raw bytes, in order."""

    topic: str
    events: list[tuple[list[Any], bytes]]
    rejected: list[tuple[list[Any], bytes]]


def read_batch(value: bytes) -> Batch:
    (size,) = _LENGTH.unpack_from(value)
    start = _LENGTH.size
    header = orjson.loads(value[start : start + size])
    pos = start + size
    events = []
    for record in header["e"]:
        end = pos + record[E_SIZE]
        events.append((record, value[pos:end]))
        pos = end
    rejected = []
    for record in header["r"]:
        end = pos + record[R_SIZE]
        rejected.append((record, value[pos:end]))
        pos = end
    return Batch(header["t"], events, rejected)
