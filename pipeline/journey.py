"""The journey model: which events enter which stage, and one identity's journey state.

Pure logic, no I/O: `docs/semantics.md` §4-5 is the specification and the
tests' oracle implements the same page independently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Stage names in journey order; index 0 is "before any stage".
STAGES: tuple[str, ...] = (
    "none",
    "awareness",
    "consideration",
    "conversion",
    "service",
    "advocacy",
)
STAGE_INDEX: dict[str, int] = {name: i for i, name in enumerate(STAGES)}
AWARENESS = STAGE_INDEX["awareness"]
CONVERSION = STAGE_INDEX["conversion"]
ADVOCACY = STAGE_INDEX["advocacy"]

#: The default journey: the event types that enter each stage (shared/design/metrics.md).
ENTERED_BY: dict[str, frozenset[str]] = {
    "awareness": frozenset({"page_view", "app_install", "app_open", "screen_view"}),
    "consideration": frozenset({"search", "click", "tap", "add_to_cart", "checkout_started"}),
    "conversion": frozenset({"signup", "purchase"}),
    "service": frozenset(
        {"ticket_opened", "chat_started", "agent_reply", "ticket_resolved", "ticket_reopened"}
    ),
}
_STAGE_OF_TYPE: dict[str, int] = {
    event_type: STAGE_INDEX[stage] for stage, types in ENTERED_BY.items() for event_type in types
}
NPS_ADVOCATE = 9


@dataclass(slots=True)
class Journey:
    """What the pipeline remembers about one identity.

    Kept small and serialisable as a list (`to_list`/`from_list`) because the
    whole partition's journeys are snapshotted into the changelog.
    """

    highest: int = 0
    current: int = 0
    entered: int = 0
    awareness_ms: int | None = None
    purchases: int = 0
    last_ms: int | None = None
    session: str | None = None
    session_crashed: bool = False
    #: ticket_id -> [opened_at_ms, first_response_seen]
    tickets: dict[str, list[int]] = field(default_factory=dict)

    def expired(self, cutoff_ms: int) -> bool:
        """Inactive since before `cutoff_ms`: the identity's next event starts a new journey."""
        return self.last_ms is not None and self.last_ms < cutoff_ms

    def to_list(self) -> list[Any]:
        return [
            self.highest,
            self.current,
            self.entered,
            self.awareness_ms,
            self.purchases,
            self.last_ms,
            self.session,
            self.session_crashed,
            self.tickets,
        ]

    @classmethod
    def from_list(cls, data: list[Any]) -> Journey:
        return cls(*data)


@dataclass(slots=True)
class Step:
    """What one accepted event did to its identity's journey."""

    stage: int
    entry: bool
    conversion: bool
    seconds_to_convert: float | None
    session_id: str
    session_start: bool


def entered_stage(event_type: str, properties: dict[str, Any], purchases: int) -> int:
    """The stage an event enters, or 0 for an experience signal.

    A first purchase converts; later purchases and promoter NPS scores are
    advocacy (metrics.md).
    """
    if event_type == "purchase":
        return CONVERSION if purchases == 0 else ADVOCACY
    if event_type == "nps_submitted":
        score = properties.get("score")
        return ADVOCACY if isinstance(score, int | float) and score >= NPS_ADVOCATE else 0
    return _STAGE_OF_TYPE.get(event_type, 0)


def advance(
    journey: Journey,
    identity: str,
    event_type: str,
    occurred_ms: int,
    session_id: str | None,
    properties: dict[str, Any],
    session_gap_ms: int,
) -> Step:
    """Apply one accepted event, in processing order, to its identity's journey."""
    stage = entered_stage(event_type, properties, journey.purchases)
    if event_type == "purchase":
        journey.purchases += 1
    entry = False
    conversion = False
    seconds: float | None = None
    if stage:
        bit = 1 << stage
        if not journey.entered & bit:
            entry = True
            journey.entered |= bit
            conversion = stage >= 2 and journey.highest == stage - 1
            if stage == AWARENESS:
                journey.awareness_ms = occurred_ms
            elif journey.awareness_ms is not None:
                seconds = max(0, occurred_ms - journey.awareness_ms) / 1000
        journey.highest = max(journey.highest, stage)
        journey.current = stage
        event_stage = stage
    else:
        event_stage = journey.current

    if session_id is None:
        if (
            journey.session is None
            or journey.last_ms is None
            or occurred_ms - journey.last_ms > session_gap_ms
        ):
            session_id = f"{identity}#{occurred_ms}"
        else:
            session_id = journey.session
    session_start = session_id != journey.session
    if session_start:
        journey.session = session_id
        journey.session_crashed = False
    if journey.last_ms is None or occurred_ms > journey.last_ms:
        journey.last_ms = occurred_ms
    return Step(event_stage, entry, conversion, seconds, session_id, session_start)


def first_crash_of_session(journey: Journey) -> bool:
    """True once per session, at its first crash (for crash-free sessions)."""
    if journey.session_crashed:
        return False
    journey.session_crashed = True
    return True


def _live_ticket(journey: Journey, ticket_id: str, cutoff_ms: int) -> list[int] | None:
    """The ticket unless it was never opened or opened before `cutoff_ms` (forgotten)."""
    ticket = journey.tickets.get(ticket_id)
    return None if ticket is None or ticket[0] < cutoff_ms else ticket


def ticket_opened(journey: Journey, ticket_id: str, occurred_ms: int, cutoff_ms: int) -> bool:
    """A ticket opened twice keeps its first opening: times run from there.

    An opening from before `cutoff_ms` is forgotten, so this one counts anew.
    True when this opening is the one kept (its expiry must be scheduled).
    """
    if _live_ticket(journey, ticket_id, cutoff_ms) is not None:
        return False
    journey.tickets[ticket_id] = [occurred_ms, 0]
    return True


def first_response_ms(
    journey: Journey, ticket_id: str, occurred_ms: int, cutoff_ms: int
) -> int | None:
    """Milliseconds from opening to the first human reply, once per live ticket."""
    ticket = _live_ticket(journey, ticket_id, cutoff_ms)
    if ticket is None or ticket[1]:
        return None
    ticket[1] = 1
    return occurred_ms - ticket[0]


def resolution_ms(journey: Journey, ticket_id: str, occurred_ms: int, cutoff_ms: int) -> int | None:
    ticket = _live_ticket(journey, ticket_id, cutoff_ms)
    return None if ticket is None else occurred_ms - ticket[0]
