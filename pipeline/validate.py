"""Stateless checks of one raw touchpoint message (docs/semantics.md section 1).

This runs on every Kafka message, so a valid event costs one orjson parse, a
few dictionary lookups and one pydantic-core validation; nothing is
serialised back. `check` never raises: a message that cannot become an event
is a `Rejected` with exactly one reason, taken in the documented order so that
an independent implementation assigns the same reason to the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import CoreConfig, SchemaValidator, core_schema

from schemas.events import EVENT_MODELS, TYPES_BY_SOURCE, Timestamp, TouchpointEvent

REASONS: tuple[str, ...] = (
    "too_large",
    "invalid_json",
    "not_an_object",
    "unknown_schema_version",
    "missing_field",
    "unknown_type",
    "invalid_field",
    "future_timestamp",
    "too_late",
)
"""Every rejection reason, in the order the checks apply; `too_late` is decided
by the stateful stage."""

DEFAULT_MAX_EVENT_BYTES = 65_536
DEFAULT_MAX_CLOCK_SKEW_MS = 300_000
MAX_PROPERTIES_DEPTH = 64
"""How deep objects and arrays may nest in `properties`, the properties object being level 1.

The stateful stage serialises properties again to store them, and orjson refuses
to serialise more than 254 levels, while it parses up to 1,024: without this
limit one accepted event would stop its partition for good. 64 leaves room for
any real payload and for every JSON library downstream."""

_REQUIRED = ("event_id", "source", "type", "occurred_at")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# ClickHouse's DateTime (window starts, alert periods) is a UInt32 of seconds.
_DATETIME_END_MS = 2**32 * 1000
_DETAIL_CHARS = 300
_TIMESTAMP = TypeAdapter(Timestamp)
_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


def _as_dicts(schema: Any, config: CoreConfig | None = None) -> Any:
    """A copy of a core schema in which models validate to dicts; `config` is the model's."""
    if isinstance(schema, list):
        return [_as_dicts(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    kind = schema.get("type")
    if kind == "model":
        converted = _as_dicts(schema["schema"], schema.get("config"))
        if "ref" in schema:
            converted["ref"] = schema["ref"]
        return converted
    if kind == "model-fields":
        return core_schema.typed_dict_schema(
            {
                name: core_schema.typed_dict_field(
                    _as_dicts(spec["schema"]),
                    required=spec["schema"]["type"] != "default",
                    validation_alias=spec.get("validation_alias"),
                )
                for name, spec in schema["fields"].items()
            },
            config=config,
        )
    if kind in ("function-after", "function-wrap", "function-plain") and (
        # A plain validator of a field has no inner schema.
        schema.get("schema", {}).get("type") in ("model", "model-fields")
    ):
        raise TypeError(f"a {kind} model validator needs an instance: validate its input instead")
    if kind == "function-before" and config is not None:
        # A model's before-validator: the model's own fields follow it.
        return {**schema, "schema": _as_dicts(schema["schema"], config)}
    return {key: _as_dicts(value) for key, value in schema.items()}


def dict_validator(model: type[BaseModel]) -> SchemaValidator:
    """Validates exactly as `model` does, and returns a dict instead of an instance.

    Every event is validated here and only a few of its fields are read back:
    building the instances (the event's and its properties') took half the
    time of validating. Derived from the model's own core schema, so the
    contract stays written once, in schemas/events.py. The one difference is
    a message: a non-object where an object belongs is "Input should be a
    valid dictionary", without the model's Python class name.
    """
    return SchemaValidator(_as_dicts(model.__pydantic_core_schema__))


_ENVELOPE = dict_validator(TouchpointEvent)
_VALIDATORS = {key: dict_validator(model) for key, model in EVENT_MODELS.items()}


@dataclass(slots=True)
class Accepted:
    """An event that passed the stateless checks, with its times in epoch ms."""

    event_id: str
    source: str
    type: str
    occurred_at_ms: int
    received_at_ms: int
    customer_id: str | None
    anonymous_id: str | None
    session_id: str | None
    properties: dict[str, Any]
    context: dict[str, str]

    @property
    def identity(self) -> str:
        """The customer once known, so that a logged-in journey is one journey."""
        if self.customer_id is not None:
            return self.customer_id
        assert self.anonymous_id is not None  # check() requires one of the two
        return self.anonymous_id


@dataclass(slots=True)
class Rejected:
    """A message kept with its reason, so that nothing entering the pipeline is lost."""

    reason: str
    detail: str
    raw: bytes
    truncated: bool


def _epoch_ms(moment: datetime) -> int:
    # Integer arithmetic: float timestamps lose the microseconds of present-day
    # times and would round some milliseconds the wrong way. A timedelta keeps
    # seconds and microseconds non-negative, so `//` floors before 1970 too.
    since = moment - _EPOCH
    return since.days * 86_400_000 + since.seconds * 1_000 + since.microseconds // 1_000


def _short(text: str, limit: int = _DETAIL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return _JSON_KINDS.get(type(value), "object")


def _described(value: object) -> str:
    # Never repr() arbitrary JSON: nested 1,000 deep it exceeds the recursion limit.
    return _short(repr(value), 100) if type(value) is str else _kind(value)


def _missing(event: dict[str, Any]) -> str:
    missing = [name for name in _REQUIRED if event.get(name) is None]
    if event.get("customer_id") is None and event.get("anonymous_id") is None:
        missing.append("customer_id or anonymous_id")
    return "missing " + ", ".join(missing)


def _invalid(error: ValidationError) -> str:
    first = error.errors(include_url=False, include_context=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    return _short(f"{where}: {first['msg']}" if where else first["msg"])


def _too_deep(raw: bytes, properties: dict[str, Any]) -> bool:
    # Every level is an opening bracket somewhere in the message, and the
    # envelope is one more: counting them (in C) settles ordinary events
    # without walking their properties.
    if raw.count(b"{") + raw.count(b"[") <= MAX_PROPERTIES_DEPTH + 1:
        return False
    # Iterative: the nesting this guards against is deeper than Python's recursion limit.
    stack: list[tuple[Iterable[Any], int]] = [(properties.values(), 1)]
    while stack:
        children, depth = stack.pop()
        for child in children:
            if type(child) is dict or type(child) is list:
                if depth == MAX_PROPERTIES_DEPTH:
                    return True
                stack.append((child.values() if type(child) is dict else child, depth + 1))
    return False


def timestamp_ms(value: object) -> int | None:
    """Epoch ms of an RFC 3339 timestamp read exactly as `check` reads event times.

    For times found outside the event contract, such as the `received_at` a
    backfill line carries, so that they are parsed and truncated the same way;
    None when `value` is not such a timestamp.
    """
    try:
        return _epoch_ms(_TIMESTAMP.validate_python(value))
    except ValidationError:
        return None


def check(
    raw: bytes,
    received_at_ms: int,
    *,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    max_clock_skew_ms: int = DEFAULT_MAX_CLOCK_SKEW_MS,
) -> Accepted | Rejected:
    """Validate one raw message received at `received_at_ms` (its Kafka timestamp)."""
    if len(raw) > max_event_bytes:
        return Rejected(
            "too_large",
            f"{len(raw)} bytes, more than {max_event_bytes}",
            raw[:max_event_bytes],
            True,
        )
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Rejected("invalid_json", _short(str(exc)), raw, False)
    if type(event) is not dict:
        return Rejected("not_an_object", f"JSON {_kind(event)}, not an object", raw, False)

    version = event.get("schema_version")
    if type(version) is int and version != 1:
        return Rejected("unknown_schema_version", f"schema_version {version}", raw, False)

    get = event.get
    if (
        get("event_id") is None
        or get("source") is None
        or get("type") is None
        or get("occurred_at") is None
        or (get("customer_id") is None and get("anonymous_id") is None)
    ):
        return Rejected("missing_field", _missing(event), raw, False)

    source = event["source"]
    type_ = event["type"]
    validator = _ENVELOPE
    types = TYPES_BY_SOURCE.get(source) if type(source) is str else None
    if types is not None:
        if type(type_) is not str or type_ not in types:
            return Rejected(
                "unknown_type",
                f"type {_described(type_)} is not a type of source {source!r}",
                raw,
                False,
            )
        validator = _VALIDATORS[source, type_]

    try:
        valid = validator.validate_python(event)
    except ValidationError as exc:
        return Rejected("invalid_field", _invalid(exc), raw, False)
    properties = event.get("properties")
    if properties is not None and _too_deep(raw, properties):
        return Rejected(
            "invalid_field",
            f"properties nest deeper than {MAX_PROPERTIES_DEPTH} levels",
            raw,
            False,
        )

    occurred_at_ms = _epoch_ms(valid["occurred_at"])
    sent_at = valid["sent_at"]
    if sent_at is not None:
        occurred_at_ms += received_at_ms - _epoch_ms(sent_at)
    if occurred_at_ms < 0:
        # ClickHouse's DateTime starts at 1970; storing earlier minutes would fail forever.
        return Rejected(
            "invalid_field", f"event time {occurred_at_ms} ms is before 1970", raw, False
        )
    if occurred_at_ms - received_at_ms > max_clock_skew_ms:
        return Rejected(
            "future_timestamp",
            f"event time {occurred_at_ms - received_at_ms} ms after received_at "
            f"(allowed {max_clock_skew_ms} ms)",
            raw,
            False,
        )
    if occurred_at_ms >= _DATETIME_END_MS:
        # Reached only when received_at itself is that late (a forged record
        # timestamp or backfill line): the minute rows could never be stored.
        return Rejected(
            "invalid_field", f"event time {occurred_at_ms} ms is after 2106-02-07", raw, False
        )

    context = event.get("context")
    return Accepted(
        event_id=valid["event_id"],
        source=source,
        type=type_,
        occurred_at_ms=occurred_at_ms,
        received_at_ms=received_at_ms,
        customer_id=valid["customer_id"],
        anonymous_id=valid["anonymous_id"],
        session_id=valid["session_id"],
        properties=properties if properties is not None else {},
        context=context if context is not None else {},
    )
