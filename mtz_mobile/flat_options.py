"""Settings dataclasses declared once: ``option()`` fields, their flat keyword names, their checks.

``ZipConfig.retrain.iterations`` is ``retrain_iterations``: the name the API's keyword options
(``api.zip_models(retrain_iterations=90)``) and the CLI's argparse destinations share, so a whole
``vars(args)`` can become a config without a hand-written list of options. No TensorFlow here:
the CLI builds its parser from this before anything heavy is imported.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, field, fields, is_dataclass
from typing import get_type_hints

from mtz_mobile.errors import MTZError


def option(default, help: str, **meta):
    """A dataclass field that the CLI turns into ``--name`` (``cli.options.add_dataclass_options``).
    Metadata: ``help``; ``choices``, ``minimum`` (both checked by ``check_options``); ``parse``,
    ``flag``, ``metavar`` (how the CLI reads it)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=dict(help=help, **meta))
    return field(default=default, metadata=dict(help=help, **meta))


def flag_of(f: Field) -> str:
    """The command-line option of a field: metadata ``flag``, else ``--field-name``."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def check_options(settings) -> None:
    """The checks a field's metadata states, as one-line MTZErrors: a value among ``choices`` (each
    item of a tuple value), a number >= ``minimum`` (None passes both: the field's own default rule)."""
    for f in fields(settings):
        value, meta = getattr(settings, f.name), f.metadata
        if value is None:
            continue
        if "choices" in meta:
            bad = [v for v in (value if isinstance(value, (tuple, list)) else (value,)) if v not in meta["choices"]]
            if bad:
                raise MTZError(f"unknown {f.name} {bad[0]!r}: use one of {', '.join(meta['choices'])}")
        if "minimum" in meta:
            whole = "int" in str(f.type)   # the annotation's text (postponed annotations)
            kind = "whole number" if whole else "number"
            if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)) \
                    or value < meta["minimum"]:
                raise MTZError(f"{f.name} must be a {kind} >= {meta['minimum']}, got {value!r}: give "
                               f"{flag_of(f)} {meta['minimum']} or more")


def flat_fields(cls, prefix: str = "") -> list[tuple[str, Field, object]]:
    """(flat key, field, resolved type) for every settable leaf field of ``cls``, nested ones included."""
    hints = get_type_hints(cls)
    out = []
    for f in fields(cls):
        if not f.init:
            continue
        if is_dataclass(hints[f.name]):
            out += flat_fields(hints[f.name], f"{prefix}{f.name}_")
        else:
            out.append((prefix + f.name, f, hints[f.name]))
    return out


def field_default(f: Field):
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None


def from_flat(cls, options: dict, prefix: str = ""):
    """An instance of ``cls`` from the flat keys in ``options`` it knows; other keys are ignored
    (they belong to the caller) and absent ones keep the field's default."""
    hints = get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        key = prefix + f.name
        if not f.init:
            continue
        if is_dataclass(hints[f.name]):
            kwargs[f.name] = from_flat(hints[f.name], options, key + "_")
        elif key in options:
            kwargs[f.name] = options[key]
    return cls(**kwargs)
