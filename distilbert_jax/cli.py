"""`distilbert-jax COMMAND ...`: one entry point, one subcommand per capability.

A `UserError` anywhere below becomes one `error: ...` line on stderr and exit status 2;
nothing a user can get wrong shows a traceback. A multi-host run whose peer died exits 1 with a
line that names the lost process (training/distributed.py).
"""

from __future__ import annotations

import argparse
import logging
import sys

from distilbert_jax.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    from distilbert_jax.commands import COMMANDS

    parser = argparse.ArgumentParser(prog="distilbert-jax", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log more (warnings are always shown)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(p)
        p.set_defaults(run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s",
                        stream=sys.stderr)
    from distilbert_jax import compile_cache, host_settings

    host_settings.configure()  # before JAX creates its backend: malloc on CPU, XLA flags on GPU
    compile_cache.enable()
    try:
        return int(args.run(args) or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        from distilbert_jax.training import distributed

        if distributed.is_lost_peer(err):  # another host died: one line, not a traceback and a hang
            distributed.exit_lost_peer(err)
        raise


if __name__ == "__main__":
    sys.exit(main())
