"""Flat keyword names for nested settings dataclasses.

``ZipConfig.retrain.iterations`` is ``retrain_iterations``: the name the API's keyword options
(``api.zip_models(retrain_iterations=90)``) and the CLI's argparse destinations share, so a whole
``vars(args)`` can become a config without a hand-written list of options. No TensorFlow here:
the CLI builds its parser from this before anything heavy is imported.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, fields, is_dataclass
from typing import get_type_hints


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
