"""``numanet``: one command, one subcommand per job.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; they are imported only when chosen, so ``numanet topology`` does
not pay for grpc and ovsdbapp imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
_SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "agent": ("agent.agent", "run the node agent (device plugin + CNI service)"),
    "topology": ("numa.report", "show the node's NUMA topology as numanet sees it"),
    "status": ("agent.status", "pools, slots and vSwitch health from the running agent"),
    "demo": ("demo", "a real node in a box: OVS-DPDK, agent, two pods, packets"),
    "webhook": ("webhook", "the mutating admission webhook for pod resources"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="numanet", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in _SUBCOMMANDS.items():
        subparsers.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    if argv[0] not in _SUBCOMMANDS:
        parser.parse_args(argv)  # names the unknown command and exits 2
        return 2
    name = argv[0]
    module_name, help_text = _SUBCOMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        print(f"numanet {name}: not built yet in this version ({module_name} is missing)",
              file=sys.stderr)
        return 2
    sub = argparse.ArgumentParser(prog=f"numanet {name}", description=help_text)
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
