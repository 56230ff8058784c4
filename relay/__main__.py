"""relay: a durable HTTP relay from log shippers to the Profound custom-log API.

Each subcommand lives in its own module exposing
`configure(parser)` and `run(args) -> int`; this file only wires them."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("relay.server.serve", "run the relay"),
    "check-config": ("relay.commands.check_config", "validate the config and print what each source does"),
    "map": ("relay.commands.map", "dry-run a mapping on sample records"),
    "mock-upstream": ("relay.tools.mock_upstream", "run a local stand-in of the upstream API"),
    "bench": ("relay.tools.bench.command", "measure end-to-end throughput"),
    "dead-letter": ("relay.commands.dead_letter", "inspect and re-send what upstream refused"),
    "rejected": ("relay.commands.rejected", "list the records the mapping rejected, and map them again after a fix"),
    "status": ("relay.commands.status", "live view of a running relay"),
    "queue": ("relay.commands.queue", "check a stopped relay's queue, or salvage what is readable"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, just that subcommand's module is imported (fast, and one
    broken or missing module never stops the others)."""
    parser = argparse.ArgumentParser(prog="relay", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text)
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # not built yet
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.configure(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    args = build_parser(chosen if chosen in COMMANDS else None).parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
