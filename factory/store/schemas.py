"""The versioned formats under ``schemas/``: loaded once, validated on write and on open.

The one loader and the one validator of the package (the optics and SMLM configs use them too).
``run_spec.v*.json``, ``group_attrs.v*.json``, ``degradation.v1.json``... are JSON Schema (draft
2020-12); ``manifest.v*.json`` and ``emitters.v*.json`` are Arrow schemas written as JSON (one entry
per column: name, Arrow type, nullable, unit, description), turned into a ``pyarrow.Schema`` with
the unit and description in each field's metadata.

Versions: ``SCHEMA_VERSION`` (2) is what this package writes; version 1 stores (LR/HR pairs only,
arrays at ``hr``/``lr``) are still read.
"""
from __future__ import annotations

import functools
import json

import jsonschema
import pyarrow as pa
import referencing

from factory.errors import FactoryError
from factory.paths import SCHEMAS_DIR

SCHEMA_VERSION = 2  # store layout, run spec, group attrs and manifest written by this package
READABLE_VERSIONS = (1, 2)


@functools.cache
def load(name: str) -> dict:
    """The parsed JSON of ``schemas/<name>``."""
    try:
        return json.loads((SCHEMAS_DIR / name).read_text())
    except FileNotFoundError:
        raise FactoryError(f"schema file {SCHEMAS_DIR / name} is missing from this installation.") from None


@functools.cache
def _registry() -> referencing.Registry:
    """Every JSON Schema under ``schemas/`` by its ``$id``, so that ``$ref`` between them resolves."""
    docs = [json.loads(p.read_text()) for p in sorted(SCHEMAS_DIR.glob("*.json"))]
    return referencing.Registry().with_resources(
        (d["$id"], referencing.Resource.from_contents(d)) for d in docs if "$schema" in d and "$id" in d)


@functools.cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(load(name), registry=_registry())


def validate(instance: dict, name: str, what: str) -> None:
    """Raise one FactoryError sentence when ``instance`` does not match JSON Schema ``name``."""
    error = jsonschema.exceptions.best_match(_validator(name).iter_errors(instance))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "top level"
        raise FactoryError(f"{what} does not match {name} at {where}: {error.message}.")


def _arrow_type(name: str) -> pa.DataType:
    if name == "timestamp[us, UTC]":
        return pa.timestamp("us", tz="UTC")
    return pa.type_for_alias(name)


def arrow_schema(fields: list[dict], metadata: dict) -> pa.Schema:
    """A pyarrow.Schema from JSON column entries (name, type, nullable, unit, description)."""
    return pa.schema([pa.field(f["name"], _arrow_type(f["type"]), nullable=f.get("nullable", False),
                               metadata={"unit": f["unit"], "description": f["description"]}) for f in fields],
                     metadata=metadata)


@functools.cache
def manifest_schema(product: str = "pairs", version: int = SCHEMA_VERSION) -> pa.Schema:
    """The manifest's Arrow schema for a product ("pairs" | "smlm") and store version."""
    doc = load(f"manifest.v{version}.json")
    if version == 1:
        if product != "pairs":
            raise FactoryError(f"store version 1 has no '{product}' product.")
        fields = doc["fields"]
    else:
        if product not in doc["products"]:
            raise FactoryError(f"unknown product '{product}'; this factory knows {', '.join(doc['products'])}.")
        fields = doc["head"] + doc["products"][product] + doc["tail"]
    return arrow_schema(fields, {"factory.schema": "manifest", "factory.schema_version": str(version),
                                 "factory.product": product})


@functools.cache
def table_schema(name: str) -> pa.Schema:
    """The Arrow schema of another table format under ``schemas/`` (e.g. ``emitters.v1.json``)."""
    doc = load(name)
    return arrow_schema(doc["fields"], {"factory.schema": doc["schema"], "factory.schema_version": str(doc["version"])})


def check_table_schema(schema: pa.Schema, expected: pa.Schema, what: str) -> None:
    """Raise a FactoryError naming the first column that differs from ``expected``."""
    if schema.equals(expected, check_metadata=False):
        return
    have = {f.name: f.type for f in schema}
    for field in expected:
        if field.name not in have:
            raise FactoryError(f"{what} lacks column '{field.name}'.")
        if have[field.name] != field.type:
            raise FactoryError(f"{what} column '{field.name}' is {have[field.name]}, the schema says {field.type}.")
    extra = [n for n in have if n not in expected.names]
    if extra:
        raise FactoryError(f"{what} has columns not in its schema: {', '.join(extra)}.")
    raise FactoryError(f"{what} has the schema's columns in a different order or nullability.")


def check_manifest_schema(schema: pa.Schema, what: str, product: str = "pairs", version: int = SCHEMA_VERSION) -> None:
    check_table_schema(schema, manifest_schema(product, version), what)


# ----------------------------------------------------------------- run-level config files (optics, SMLM)
def read_config_file(path, what: str) -> dict:
    """A .json or .toml config file as a dict; one FactoryError sentence naming the file otherwise."""
    import tomllib
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FactoryError(f"{path}: no such {what} file.")
    suffix = path.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise FactoryError(f"{path}: a {what} must be a .json or .toml file.")
    try:
        text = path.read_text()
        return json.loads(text) if suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FactoryError(f"{path}: not valid {suffix[1:].upper()} ({exc}).") from None


def check_config_dict(d, version: int, names: set[str], what: str) -> dict:
    """The mapping checks every config file shares: a mapping, the right schema_version, no unknown field.
    Returns the fields to build the config from (schema_version and nulls dropped)."""
    if not isinstance(d, dict):
        raise FactoryError(f"{what} must be a mapping, got {type(d).__name__}.")
    if d.get("schema_version") != version:
        raise FactoryError(f"{what} needs \"schema_version\": {version}, got {d.get('schema_version')!r}.")
    unknown = sorted(set(d) - names - {"schema_version"})
    if unknown:
        raise FactoryError(f"{what} has unknown field {unknown[0]!r}; known fields: {', '.join(sorted(names))}.")
    return {k: v for k, v in d.items() if k != "schema_version" and v is not None}


def validate_config(d: dict, name: str, what: str) -> None:
    """JSON Schema check of a config dict: one sentence naming the field (``what field 'x' does not match ...``)."""
    error = jsonschema.exceptions.best_match(_validator(name).iter_errors(d))
    if error is not None:
        where = ".".join(map(str, error.absolute_path)) or "config"
        raise FactoryError(f"{what} field {where!r} does not match {name}: {error.message}.")
