"""The versioned formats under ``schemas/``: loaded once, validated on write and on open.

``run_spec.v1.json`` and ``group_attrs.v1.json`` are JSON Schema (draft 2020-12);
``manifest.v1.json`` is the manifest's Arrow schema written as JSON (one entry per
column: name, Arrow type, nullable, unit, description), turned into a
``pyarrow.Schema`` with the unit and description in each field's metadata.
"""
from __future__ import annotations

import functools
import json

import jsonschema
import pyarrow as pa
import referencing

from factory.errors import FactoryError
from factory.paths import SCHEMAS_DIR

SCHEMA_VERSION = 1  # one version for the store layout, run spec, group attrs and manifest


@functools.cache
def load(name: str) -> dict:
    """The parsed JSON of ``schemas/<name>``."""
    return json.loads((SCHEMAS_DIR / name).read_text())


@functools.cache
def _registry() -> referencing.Registry:
    """Every JSON Schema under ``schemas/`` by its ``$id``, so that ``$ref`` between them resolves."""
    docs = [json.loads(p.read_text()) for p in sorted(SCHEMAS_DIR.glob("*.json"))]
    return referencing.Registry().with_resources(
        (d["$id"], referencing.Resource.from_contents(d)) for d in docs if "$schema" in d and "$id" in d)


def validate(instance: dict, name: str, what: str) -> None:
    """Raise one FactoryError sentence when ``instance`` does not match JSON Schema ``name``."""
    validator = jsonschema.Draft202012Validator(load(name), registry=_registry())
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "top level"
        raise FactoryError(f"{what} does not match {name} at {where}: {error.message}.")


def _arrow_type(name: str) -> pa.DataType:
    if name == "timestamp[us, UTC]":
        return pa.timestamp("us", tz="UTC")
    return pa.type_for_alias(name)


@functools.cache
def manifest_schema() -> pa.Schema:
    """The manifest's Arrow schema; field metadata carries ``unit`` and ``description``."""
    doc = load(f"manifest.v{SCHEMA_VERSION}.json")
    fields = [pa.field(f["name"], _arrow_type(f["type"]), nullable=f.get("nullable", False),
                       metadata={"unit": f["unit"], "description": f["description"]})
              for f in doc["fields"]]
    return pa.schema(fields, metadata={"factory.schema": "manifest",
                                       "factory.schema_version": str(doc["version"])})


def check_manifest_schema(schema: pa.Schema, what: str) -> None:
    """Raise a FactoryError naming the first column that differs from the manifest schema."""
    expected = manifest_schema()
    if schema.equals(expected, check_metadata=False):
        return
    have = {f.name: f.type for f in schema}
    for field in expected:
        if field.name not in have:
            raise FactoryError(f"{what} lacks manifest column '{field.name}'.")
        if have[field.name] != field.type:
            raise FactoryError(f"{what} column '{field.name}' is {have[field.name]}, the manifest schema says {field.type}.")
    extra = [n for n in have if n not in expected.names]
    if extra:
        raise FactoryError(f"{what} has columns not in the manifest schema: {', '.join(extra)}.")
    raise FactoryError(f"{what} has the manifest columns in a different order or nullability.")
