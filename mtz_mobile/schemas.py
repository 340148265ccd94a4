"""Validating our JSON documents (manifest, bench report) against their JSON Schemas."""

from __future__ import annotations

from .errors import MTZError


def validate_json(document: dict, schema: dict, what: str) -> None:
    """Raise a one-line MTZError naming the first invalid field of ``document``."""
    import jsonschema

    try:
        jsonschema.validate(document, schema)
    except jsonschema.ValidationError as exc:
        path = "/".join(map(str, exc.absolute_path)) or "(root)"
        raise MTZError(f"{what} field {path} is invalid: {exc.message}") from None
