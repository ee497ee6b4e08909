"""The touchpoint event contract, wire format v1, as pydantic models.

These models are the single source of truth: the pipeline validates with them
and `schemas/export.py` derives the JSON Schema files that producers in other
languages validate against. The models describe the JSON on the wire, so
timestamps and ids are accepted as strings only, exactly as JSON carries them,
and validation is strict: a JSON Schema validator and the pipeline must agree
on every event, which rules out pydantic's lax coercions ("5" for 5, "yes" for
true, a number of seconds for a timestamp).

A `null` for an optional field means the same as leaving it out: producers
serialise unset fields either way, and treating them differently would reject
events for a formatting choice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetPydanticSchema,
    StringConstraints,
    WithJsonSchema,
    create_model,
    model_validator,
)
from pydantic_core import core_schema

SCHEMA_VERSION = 1

# RFC 3339 `date-time` (section 5.6), fractions of any length (Go emits nine
# digits), offset mandatory. `[0-9]` rather than `\d` because the Rust regex
# engine and ECMA-262 would otherwise disagree on non-ASCII digits.
RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
# 32 hex digits in 8-4-4-4-12 groups, the hyphens between groups optional:
# some SDKs and databases print UUIDs without them.
UUID_PATTERN = r"^[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}$"


def _hyphenated(uuid: str) -> str:
    if len(uuid) == 36:
        return uuid
    digits = uuid.replace("-", "")
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


# Built as core schemas so that the pattern check and the datetime parsing
# both run in pydantic-core: these fields are validated on every event.
_TIMESTAMP_SCHEMA = core_schema.custom_error_schema(
    core_schema.chain_schema(
        [
            core_schema.str_schema(pattern=RFC3339_PATTERN, strict=True),
            core_schema.datetime_schema(strict=False, tz_constraint="aware"),
        ]
    ),
    custom_error_type="rfc3339_timestamp",
    custom_error_message="Input should be an RFC 3339 timestamp with an offset",
)
_EVENT_ID_SCHEMA = core_schema.no_info_after_validator_function(
    _hyphenated,
    core_schema.custom_error_schema(
        core_schema.str_schema(pattern=UUID_PATTERN, strict=True, to_lower=True),
        custom_error_type="uuid_string",
        custom_error_message="Input should be a UUID string",
    ),
)

Timestamp = Annotated[
    datetime,
    GetPydanticSchema(lambda _source, _handler: _TIMESTAMP_SCHEMA),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": RFC3339_PATTERN}),
]
"""An RFC 3339 timestamp string with an offset; validates to an aware datetime."""

EventId = Annotated[
    str,
    GetPydanticSchema(lambda _source, _handler: _EVENT_ID_SCHEMA),
    WithJsonSchema({"type": "string", "format": "uuid", "pattern": UUID_PATTERN}),
]
"""A UUID string; validates to its canonical lowercase hyphenated form."""

SchemaVersion = Annotated[
    int, Field(ge=SCHEMA_VERSION, le=SCHEMA_VERSION), WithJsonSchema({"const": SCHEMA_VERSION})
]
"""Strictly the integer 1: `true` and `1.0` are not a version."""

Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Source = Literal["web", "app", "support"]
WebVitalName = Literal["LCP", "INP", "CLS", "FCP", "TTFB"]


class Properties(BaseModel):
    """Properties of a type that declares none; any keys are kept for breakdowns."""

    model_config = ConfigDict(extra="allow", strict=True)


class PageViewProperties(Properties):
    path: str
    referrer: str | None = None


class ClickProperties(Properties):
    target: str | None = None


class SearchProperties(Properties):
    query: str | None = None


class AddToCartProperties(Properties):
    sku: str | None = None
    value: Finite | None = None


class PurchaseProperties(Properties):
    order_id: str
    revenue: NonNegative
    currency: str


class WebVitalProperties(Properties):
    name: WebVitalName
    value: NonNegative


class ErrorProperties(Properties):
    message: str | None = None
    fatal: bool | None = None


class ScreenViewProperties(Properties):
    screen: str


class CrashProperties(Properties):
    message: str | None = None


class TicketProperties(Properties):
    ticket_id: str


class AgentReplyProperties(TicketProperties):
    is_bot: bool | None = None


class CsatProperties(Properties):
    score: Annotated[int, Field(ge=1, le=5)]


class NpsProperties(Properties):
    score: Annotated[int, Field(ge=0, le=10)]


class CesProperties(Properties):
    score: Annotated[int, Field(ge=1, le=7)]


# A type means the same on every source that has it, so `purchase` or `error`
# from the app is validated exactly like the web's.
_SHARED: dict[str, type[Properties]] = {
    "signup": Properties,
    "add_to_cart": AddToCartProperties,
    "checkout_started": Properties,
    "purchase": PurchaseProperties,
    "error": ErrorProperties,
}
_PROPERTIES_BY_SOURCE: dict[str, dict[str, type[Properties]]] = {
    "web": {
        "page_view": PageViewProperties,
        "click": ClickProperties,
        "search": SearchProperties,
        **_SHARED,
        "web_vital": WebVitalProperties,
    },
    "app": {
        "app_install": Properties,
        "app_open": Properties,
        "screen_view": ScreenViewProperties,
        "tap": Properties,
        **_SHARED,
        "crash": CrashProperties,
    },
    "support": {
        "ticket_opened": TicketProperties,
        "agent_reply": AgentReplyProperties,
        "ticket_resolved": TicketProperties,
        "ticket_reopened": TicketProperties,
        "chat_started": Properties,
        "csat_submitted": CsatProperties,
        "nps_submitted": NpsProperties,
        "ces_submitted": CesProperties,
    },
}

PROPERTIES_MODELS: dict[tuple[str, str], type[Properties]] = {
    (source, type_): model
    for source, models in _PROPERTIES_BY_SOURCE.items()
    for type_, model in models.items()
}
"""The properties model of each (source, type)."""

TYPES_BY_SOURCE: dict[str, frozenset[str]] = {
    source: frozenset(models) for source, models in _PROPERTIES_BY_SOURCE.items()
}
"""The closed set of types of each source."""


class TouchpointEvent(BaseModel):
    """A touchpoint event: the envelope shared by every source and type.

    `properties` is any object here; the model of a given (source, type) in
    `EVENT_MODELS` validates it against that type's properties model.
    Unknown top-level keys are ignored so that producers can add fields
    before the contract names them.
    """

    model_config = ConfigDict(extra="ignore", strict=True)

    event_id: EventId = Field(
        description="The idempotency key: the same id twice is one event. "
        "Compared in lowercase hyphenated form."
    )
    schema_version: SchemaVersion | None = Field(
        SCHEMA_VERSION, description="The contract's major version; only 1 is accepted."
    )
    source: Source = Field(description="The channel the event comes from.")
    type: str = Field(description="What happened; one of the types of the source.")
    occurred_at: Timestamp = Field(description="When it happened, on the client's clock.")
    sent_at: Timestamp | None = Field(
        None,
        description="The client's clock when the event was sent; the pipeline shifts "
        "occurred_at by (received_at - sent_at) to correct client clock skew.",
    )
    customer_id: Identifier | None = Field(None, description="The known customer.")
    anonymous_id: Identifier | None = Field(
        None, description="Device or cookie id before login; this or customer_id is required."
    )
    session_id: str | None = Field(
        None, description="The pipeline sessionizes (30 min inactivity) when absent."
    )
    properties: dict[str, Any] | None = Field(
        None, description="Type-specific; unknown keys are kept."
    )
    context: dict[str, str] | None = Field(
        None,
        description="Segment dimensions for breakdowns (platform, app_version, country, "
        "locale, browser, device, ...).",
    )

    @model_validator(mode="before")
    @classmethod
    def _identified(cls, data: Any) -> Any:
        # On the input, not the instance, so that the dict validators the
        # pipeline derives from these models (pipeline/validate.py) keep it.
        if isinstance(data, dict) and (
            data.get("customer_id") is None and data.get("anonymous_id") is None
        ):
            raise ValueError("customer_id or anonymous_id is required")
        return data


def _none_as_empty(value: object) -> object:
    return {} if value is None else value


def _event_model(source: str, type_: str, properties: type[Properties]) -> type[TouchpointEvent]:
    name = "".join(part.title() for part in (source, *type_.split("_"))) + "Event"
    # Typed as Any: the Literal values are only known at run time.
    fields: dict[str, Any] = {
        "source": (Literal[source], ...),
        "type": (Literal[type_], ...),
        # Absent or null properties are validated as {}, so a type whose
        # properties have required keys rejects them instead of storing a
        # purchase without a revenue.
        "properties": (
            Annotated[properties, BeforeValidator(_none_as_empty)],
            Field(default_factory=dict, validate_default=True),
        ),
    }
    return create_model(name, __base__=TouchpointEvent, __module__=__name__, **fields)


EVENT_MODELS: dict[tuple[str, str], type[TouchpointEvent]] = {
    key: _event_model(*key, model) for key, model in PROPERTIES_MODELS.items()
}
"""The full event model of each (source, type), properties included."""
