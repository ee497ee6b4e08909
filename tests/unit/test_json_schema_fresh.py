"""The committed JSON Schema files are exactly what the models generate.

Producers in other languages validate against these files, so a model change
that is not regenerated would let the two contracts drift apart silently.
"""

from __future__ import annotations

import json
from pathlib import Path

import schemas
from schemas.export import json_schemas, render, write_json_schemas

SCHEMAS_DIR = Path(schemas.__file__).parent
STALE = "is out of date with schemas/events.py: run `xp schemas` and commit the result"


def test_committed_json_schemas_are_fresh() -> None:
    for name, schema in json_schemas().items():
        path = SCHEMAS_DIR / name
        assert path.is_file(), f"schemas/{name} is missing: run `xp schemas` and commit it"
        assert json.loads(path.read_text(encoding="utf-8")) == schema, f"schemas/{name} {STALE}"


def test_no_stale_schema_files_are_left_behind() -> None:
    committed = {path.name for path in SCHEMAS_DIR.glob("*.schema.json")}
    assert committed == set(json_schemas()), f"schemas/ holds files no model generates: {STALE}"


def test_write_json_schemas_writes_the_rendered_text(tmp_path: Path) -> None:
    written = write_json_schemas(tmp_path)
    assert sorted(path.name for path in written) == sorted(json_schemas())
    for path in written:
        assert path.read_text(encoding="utf-8") == render(json_schemas()[path.name])
