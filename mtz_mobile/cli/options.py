"""argparse options derived from settings dataclasses, and what every command's parser shares.

A ZipConfig / RetrainSettings field becomes ``--field-name`` (or its metadata ``flag``) with the
field's default, its type (from the default, else the annotation), metadata ``choices``,
``metavar``, ``help`` and ``parse`` ("sharing" or "floats" for comma-separated lists); the
argparse destination is the field's flat key (``retrain_iterations``), which is also the API's
keyword, so handlers pass ``vars(args)`` on without naming options. The bench's settings
(``bench.settings``) become options the same way (``add_settings_options``), stored only when given,
and handlers build the target's settings object from them (``settings_from``).
"""

from __future__ import annotations

import argparse
import difflib
import re
import types
import typing
from dataclasses import replace

from mtz_mobile.data_spec import SUMMARY as SPEC_SUMMARY, parse_spec
from mtz_mobile.errors import MTZError
from mtz_mobile.flat_options import field_default, flag_of, flat_fields, from_flat

# argparse destinations that steer the CLI itself and are no API keyword
VERBOSE_DEST = "show_logs"
_CLI_ONLY = {"command", "handler", VERBOSE_DEST}


class SuggestingParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors name the nearest option or choice to a mistyped one
    (Python 3.12's ``suggest_on_error``, which 3.11 lacks): ``--retrian-iterations`` → ``--retrain-iterations``."""

    active: "SuggestingParser | None" = None   # the (sub)parser that parsed last: it knows the command's options

    def parse_known_args(self, args=None, namespace=None):
        SuggestingParser.active = self
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        super().error(message + suggestion(message, SuggestingParser.active or self))


def suggestion(message: str, parser: argparse.ArgumentParser) -> str:
    """'; did you mean X?' for an unknown option or an invalid choice in argparse's ``message``, else ''."""
    choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if choice:
        word, candidates = choice[1], re.findall(r"'([^']*)'", choice[2])
    else:
        unknown = re.search(r"unrecognized arguments: (.*)", message)
        words = [w.split("=")[0] for w in (unknown[1].split() if unknown else []) if w.startswith("-")]
        if not words:
            return ""
        word = words[0]
        candidates = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
    near = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f"; did you mean {near[0]}?" if near else ""


class HelpFormatter(argparse.HelpFormatter):
    """Ends every option's help with its default, so --help alone says what a bare command does."""

    def _get_help_string(self, action):
        text = action.help or ""
        flag = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        if not action.option_strings or action.required or "(default" in text or (action.default is argparse.SUPPRESS and not flag):
            return text
        # argparse %-formats help afterwards: a literal % in a default must survive that
        shown = shown_default(action).replace("%", "%%")
        return f"{text} (default: {shown})" if text else f"(default: {shown})"


def shown_default(action: argparse.Action) -> str:
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return "off"  # the flag's own state, whichever way its destination points
    value = action.default
    if value is None or value == []:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def sharing_list(text: str) -> list:
    """'all' | '300' | '0.5' | '300,100' → per-layer values (int = count, float = fraction)."""
    out = []
    for token in text.split(","):
        token = token.strip()
        if token == "all":
            out.append("all")
            continue
        try:
            out.append(float(token) if "." in token else int(token))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{token!r} is not 'all', a count or a fraction") from None
    return out


def float_list(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


def int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers") from None


def name_list(text: str) -> list[str]:
    return text.split(",")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be >= 1")
    return value


PARSERS = {"sharing": sharing_list, "floats": float_list}


def _value_type(hint, default):
    if default is not None and not isinstance(default, (list, tuple)):
        return type(default)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint if hint in (int, float, str, bool) else str


def _option_kwargs(key: str, f, hint, default) -> dict:
    """argparse keywords of one settings field: destination = flat key, type and choices from the field."""
    meta = f.metadata
    kwargs = dict(dest=key, default=default, help=meta.get("help"))
    value_type = _value_type(hint, default)
    if "parse" in meta:
        kwargs["type"] = PARSERS[meta["parse"]]
    elif value_type is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    else:
        kwargs["type"] = value_type
    if "choices" in meta:
        kwargs["choices"] = meta["choices"]
    elif value_type is not bool:
        # named after the flag, as argparse would, not after the flat destination
        kwargs["metavar"] = meta.get("metavar") or flag_of(f).lstrip("-").replace("-", "_").upper()
    return kwargs


def add_dataclass_options(parser: argparse.ArgumentParser, cls) -> None:
    """One option per leaf field of ``cls`` (nested settings flattened), destination = flat key."""
    for key, f, hint in flat_fields(cls):
        parser.add_argument(flag_of(f), **_option_kwargs(key, f, hint, field_default(f)))


def add_settings_options(parser: argparse.ArgumentParser, targets: dict[str, type], defaults=None) -> None:
    """One option per field of the settings classes in ``targets`` (label → class), a field the
    classes share (a base class's) once; its help says which targets it applies to and its default
    (from ``defaults``, an instance of the one class, else the field's). Nothing is stored for an
    option not given, so ``settings_from`` leaves each target's own default in place and
    ``given_options`` can tell which were given."""
    found: dict[str, tuple] = {}
    for label, cls in targets.items():
        for key, f, hint in flat_fields(cls):
            found.setdefault(key, (f, hint, []))[2].append(label)
    for key, (f, hint, labels) in found.items():
        default = getattr(defaults, key) if defaults is not None else field_default(f)
        kwargs = dict(_option_kwargs(key, f, hint, default), default=argparse.SUPPRESS)
        text = kwargs["help"] or ""
        if len(labels) < len(targets):
            text = f"{' and '.join(labels)} only: {text}"
        if "(default" not in text:
            shown = ("on" if default else "off") if isinstance(default, bool) else \
                "none" if default is None else str(default)
            text += f" (default: {shown.replace('%', '%%')})"
        parser.add_argument(flag_of(f), **dict(kwargs, help=text))


def settings_from(args: argparse.Namespace, cls, defaults=None):
    """An instance of ``cls`` from the options given (see add_settings_options), over ``defaults``
    (an instance of ``cls``) or the fields' own defaults; its checks run here, before any work."""
    given = {key: getattr(args, key) for key, _, _ in flat_fields(cls) if hasattr(args, key)}
    return replace(defaults, **given) if defaults is not None else from_flat(cls, given)


def given_options(args: argparse.Namespace, *classes) -> dict[str, str]:
    """flat key → flag of every option of ``classes`` given on the command line (add_settings_options)."""
    return {key: flag_of(f) for cls in classes for key, f, _ in flat_fields(cls) if hasattr(args, key)}


class AppendOverDefault(argparse.Action):
    """Like action="append", but a given value replaces the default instead of joining it:
    ``--data`` once means one spec for every model, given per model it is a list."""

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest)
        items = [] if current is self.default else list(current)
        setattr(namespace, self.dest, items + [values])


def add_data_options(parser: argparse.ArgumentParser, what: str = "per model or one for all") -> None:
    parser.add_argument("--data", action=AppendOverDefault, default="fashion-mnist", metavar="SPEC", type=data_spec,
                        help=f"data spec {what} (give --data once per model, in the models' order): {SPEC_SUMMARY}")
    add_data_dir(parser)


def data_spec(text: str) -> str:
    """A spec checked against the grammar while parsing, so a misspelt one fails before anything loads."""
    try:
        parse_spec(text)
    except MTZError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="directory with Fashion-MNIST's *-idx?-ubyte.gz files "
                                           "(default: Debian's dataset-fashion-mnist, else Keras' download)")


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", dest="progress", action="store_false", help="no progress display")


def add_verbose(parser: argparse.ArgumentParser, default=False) -> None:
    parser.add_argument("--verbose", dest=VERBOSE_DEST, action="store_true", default=default,
                        help="let TensorFlow and LiteRT print their own log lines and warnings")


def command(sub, name: str, help: str, handler) -> argparse.ArgumentParser:
    """A subcommand whose parsed arguments carry their ``handler(args) -> exit code``."""
    p = sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)
    # SUPPRESS: a subcommand's own default would overwrite `mtz-mobile --verbose CMD`'s value
    add_verbose(p, default=argparse.SUPPRESS)
    p.set_defaults(handler=handler)
    return p


def api_kwargs(args: argparse.Namespace, *presentation: str) -> dict:
    """The parsed arguments as the API's keywords: all but the CLI's own and the named
    ``presentation`` ones (how to print, not what to compute)."""
    return {k: v for k, v in vars(args).items() if k not in _CLI_ONLY and k not in presentation}
