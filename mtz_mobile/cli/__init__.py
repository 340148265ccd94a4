"""`mtz-mobile`: the command line, a thin layer over mtz_mobile.api, converters, mtz_mobile.bench,
mtz_mobile.device and mtz_mobile.pipeline. The commands live in sibling modules; this one
assembles the parser and turns failures into exit codes.

Nothing imported at module level may import TensorFlow: main() must set its logging
environment first (see quiet.py).
"""

from __future__ import annotations

import argparse
import os
import sys

from mtz_mobile.errors import MTZError

from . import quiet


def build_parser() -> argparse.ArgumentParser:
    from mtz_mobile import __version__

    from . import android_commands, device_commands, file_commands, web_commands, zip_commands
    from .options import HelpFormatter, SuggestingParser, add_verbose

    parser = SuggestingParser(prog="mtz-mobile", formatter_class=HelpFormatter,
                                     description="Zip trained networks for correlated tasks into one multi-task "
                                                 "network (Multi-Task Zipping).")
    parser.add_argument("--version", action="version", version=f"mtz-mobile {__version__}")
    add_verbose(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (zip_commands, file_commands, device_commands, android_commands, web_commands):
        module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    quiet.configure(verbose=quiet.verbose_requested(argv))
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except MTZError as exc:
        print(f"mtz-mobile: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nmtz-mobile: interrupted; a zip continues with the same arguments and --resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`mtz-mobile inspect … | head`): what it wanted was printed
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no second error at exit's flush
        return 141


if __name__ == "__main__":
    sys.exit(main())
