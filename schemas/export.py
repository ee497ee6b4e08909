"""JSON Schema files for producers that do not run Python, derived from the models.

pydantic cannot express "the shape of `properties` depends on `source` and
`type`" by itself, so the envelope's schema is combined here with one
`if`/`then` rule per source (its closed set of types) and per (source, type)
with declared properties (their model). A standard draft 2020-12 validator then
accepts and rejects the same events as the pipeline, except for the checks
that need a clock (`future_timestamp`) or state (duplicates, `too_late`),
impossible dates such as February 30 (caught only by validators that assert
`format`), and `5.0` where an integer is due, which JSON Schema counts as an
integer and the pipeline does not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from schemas.events import PROPERTIES_MODELS, SCHEMA_VERSION, TYPES_BY_SOURCE, Properties
from schemas.events import TouchpointEvent as Envelope

EVENT_SCHEMA_FILE = f"touchpoint-event.v{SCHEMA_VERSION}.schema.json"
_REF_TEMPLATE = "#/$defs/{model}"
_DESCRIPTION = (
    "One touchpoint event as product services send it. The shape of `properties` "
    "depends on `source` and `type` (the rules under allOf). Unknown top-level keys "
    "are ignored and unknown keys of `properties` are kept; a null optional field "
    "counts as absent. Generated from schemas/events.py by `xp schemas`: do not edit."
)


def _identity_rule() -> dict[str, Any]:
    return {
        "anyOf": [
            {"required": [name], "properties": {name: {"type": "string"}}}
            for name in ("customer_id", "anonymous_id")
        ]
    }


def _types_rule(source: str, types: frozenset[str]) -> dict[str, Any]:
    return {
        "if": {"required": ["source"], "properties": {"source": {"const": source}}},
        "then": {"properties": {"type": {"enum": sorted(types)}}},
    }


def _properties_rule(sources: list[str], type_: str, model: type[Properties]) -> dict[str, Any]:
    ref = {"$ref": _REF_TEMPLATE.format(model=model.__name__)}
    has_required = any(field.is_required() for field in model.model_fields.values())
    then: dict[str, Any] = {
        "properties": {"properties": ref if has_required else {"anyOf": [ref, {"type": "null"}]}}
    }
    if has_required:
        then["required"] = ["properties"]
    return {
        "if": {
            "required": ["source", "type"],
            "properties": {"source": {"enum": sources}, "type": {"const": type_}},
        },
        "then": then,
    }


def event_json_schema() -> dict[str, Any]:
    """The JSON Schema of a whole touchpoint event, every (source, type) included."""
    envelope = Envelope.model_json_schema(ref_template=_REF_TEMPLATE)
    declared = sorted(
        {model for model in PROPERTIES_MODELS.values() if model is not Properties},
        key=lambda model: model.__name__,
    )
    _, definitions = models_json_schema(
        [(model, "validation") for model in declared], ref_template=_REF_TEMPLATE
    )
    sources_by_type: dict[tuple[str, type[Properties]], list[str]] = {}
    for (source, type_), model in PROPERTIES_MODELS.items():
        if model is not Properties:
            sources_by_type.setdefault((type_, model), []).append(source)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"Touchpoint event v{SCHEMA_VERSION}",
        "description": _DESCRIPTION,
        "type": "object",
        "properties": envelope["properties"],
        "required": envelope["required"],
        "allOf": [
            _identity_rule(),
            *(_types_rule(source, types) for source, types in TYPES_BY_SOURCE.items()),
            *(
                _properties_rule(sources, type_, model)
                for (type_, model), sources in sources_by_type.items()
            ),
        ],
        "$defs": definitions["$defs"],
    }


def json_schemas() -> dict[str, dict[str, Any]]:
    """Every contract file, by file name, as generated from the current models."""
    return {EVENT_SCHEMA_FILE: event_json_schema()}


def render(schema: dict[str, Any]) -> str:
    """The committed text of a schema: stable, so regenerating unchanged models is a no-op."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write_json_schemas(directory: Path) -> list[Path]:
    """Write every contract file into `directory` and return their paths."""
    written = []
    for name, schema in json_schemas().items():
        path = directory / name
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written
