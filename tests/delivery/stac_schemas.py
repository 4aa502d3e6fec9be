"""Offline STAC validation against the bundled schemas in ``tests/data/stac``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

STAC_DIR = Path(__file__).parents[1] / "data" / "stac"


def stac_validator(schema_file: str):
    """A Draft 7 validator for ``tests/data/stac/<schema_file>`` whose ``$ref``s resolve to the bundled files."""
    jsonschema = pytest.importorskip("jsonschema", reason="STAC validation needs jsonschema>=4.18 (test extra)")
    referencing = pytest.importorskip("referencing", reason="STAC validation needs jsonschema>=4.18 (test extra)")
    Registry, Resource = referencing.Registry, referencing.Resource

    resources = []
    for p in STAC_DIR.glob("*.json"):
        doc = json.loads(p.read_text())
        resource = Resource.from_contents(doc)
        resources.append((doc["$id"].rstrip("#"), resource))
        if p.name in {"Feature.json", "Geometry.json"}:
            continue
        if "-v" not in p.name:  # core schemas are referenced by file name relative to item.json
            resources.append((f"https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/{p.name}", resource))
    registry = Registry().with_resources(resources)
    schema = json.loads((STAC_DIR / schema_file).read_text())
    return jsonschema.Draft7Validator(schema, registry=registry)


def stac_errors(item: dict) -> list[str]:
    """Every schema error of a STAC Item: the core Item schema and each extension it declares."""
    errors = []
    for name in ["item.json"] + [f"{url.split('/')[3]}-{url.split('/')[4]}.json" for url in
                                 item["stac_extensions"]]:
        errors += [f"{name}: {e.message} at {list(e.absolute_path)}"
                   for e in stac_validator(name).iter_errors(item)]
    return errors


def validate_item(item: dict) -> None:
    """Assert that ``item`` is a valid STAC 1.1.0 Item for the bundled schemas."""
    errors = stac_errors(item)
    assert not errors, "\n".join(errors)


