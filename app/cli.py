"""numanet-app: this container's numanet interfaces, and what an app needs to use them.

  numanet-app interfaces [--json]
  numanet-app dpdk-args [--lcores N] [--file-prefix P] [--memory MIB] [--huge-dir DIR]
  numanet-app vpp-config [--cli] [--exec FILE]

Exit status 2 means the pod's setup does not fit (the message says what to change).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence

from app import eal, show, vpp
from app.errors import AppError
from app.roots import DEFAULTS, Roots
from app.sysfs import parse_cpulist
from app.view import PodView, read_view

PROG = "numanet-app"
_UNSAFE = re.compile(r"[\s*?[]")  # what an unquoted $(...) splits or globs


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        code = int(args.run(args))
        sys.stdout.flush()  # here, so that a reader gone away is caught below
        return code
    except BrokenPipeError:
        # `numanet-app interfaces | head -1`: the reader has what it wanted; keep Python
        # from complaining about stdout again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except AppError as exc:
        print(f"{PROG}: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"{PROG}: to fix: {exc.hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        print(f"{PROG}: internal error: {type(exc).__name__}: {exc} (please report it)",
              file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    where = argparse.ArgumentParser(add_help=False)
    group = where.add_argument_group("where the pod's facts are (tests, host-side callers)")
    group.add_argument("--root", help="read every path below this directory "
                       "(NUMANET_APP_ROOT)")
    for name, path in DEFAULTS.items():
        group.add_argument(f"--{name}", metavar="PATH",
                           help=f"instead of {path} (NUMANET_APP_{name.upper()})")
    group.add_argument("--cpus", metavar="LIST", help="CPUs to use instead of this process's "
                       "affinity, e.g. 2-3 (NUMANET_APP_CPUS)")

    show_cmd = sub.add_parser("interfaces", parents=[where],
                              help="list this container's numanet interfaces")
    show_cmd.add_argument("--json", action="store_true", help="as JSON")
    show_cmd.set_defaults(run=_interfaces)

    dpdk = sub.add_parser("dpdk-args", parents=[where],
                          help="DPDK EAL arguments: dpdk-testpmd $(numanet-app dpdk-args) -- ...")
    _placement_options(dpdk)
    dpdk.add_argument("--file-prefix", help="DPDK --file-prefix (default: numanet-<first "
                      "device ID>, unique on the node)")
    dpdk.add_argument("--memory", type=int, metavar="MIB", help="MiB of memory (default: the "
                      "container's hugepages, else 512)")
    dpdk.add_argument("--huge-dir", metavar="DIR", help="hugetlbfs mount to use (default: "
                      "found in /proc/mounts)")
    dpdk.add_argument("--testpmd", action="store_true", help="end with -- and the testpmd "
                      "options the interfaces need (--rxq/--txq); add testpmd's own after")
    dpdk.add_argument("--json", action="store_true", help="a JSON list instead of words")
    dpdk.set_defaults(run=_dpdk_args)

    vpp_cmd = sub.add_parser("vpp-config", parents=[where],
                             help="startup.conf fragment (or CLI lines) for a VPP in the pod")
    _placement_options(vpp_cmd)
    vpp_cmd.add_argument("--cli", action="store_true", help="print the CLI lines that create "
                         "and address the interfaces instead")
    vpp_cmd.add_argument("--exec", metavar="FILE", dest="exec_file", help="name FILE (the CLI "
                         "lines) in the fragment's unix { exec FILE }")
    vpp_cmd.set_defaults(run=_vpp_config)
    return parser


def _placement_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lcores", type=int, metavar="N", help="how many CPUs (default: all "
                        "of the container's on the interfaces' NUMA node)")
    parser.add_argument("--cross-numa", action="store_true", help="go on when interfaces and "
                        "CPUs are not on one NUMA node (slower)")


def _view(args: argparse.Namespace) -> tuple[PodView, Roots]:
    flags = {name: getattr(args, name, None) for name in ("root", *DEFAULTS)}
    roots = Roots.resolve(flags)
    cpus_text = args.cpus or os.environ.get("NUMANET_APP_CPUS")
    cpus = parse_cpulist(cpus_text, "--cpus") if cpus_text else None
    view = read_view(roots, cpus=cpus)
    _warn(view.warnings)
    return view, roots


def _interfaces(args: argparse.Namespace) -> int:
    view, roots = _view(args)
    sys.stdout.write(show.as_json(view) + "\n" if args.json else show.as_text(view, roots))
    return 0


def _dpdk_args(args: argparse.Namespace) -> int:
    view, _ = _view(args)
    options = eal.EalOptions(lcores=args.lcores, file_prefix=args.file_prefix,
                             memory_mib=args.memory, huge_dir=args.huge_dir,
                             cross_numa=args.cross_numa, testpmd=args.testpmd)
    result = eal.plan(view, options)
    _warn(result.warnings)
    words = list(result.args) + (["--", *result.testpmd_args] if args.testpmd else [])
    if args.json:
        print(json.dumps(words))
        return 0
    unsafe = [w for w in words if _UNSAFE.search(w)]
    if unsafe:
        raise AppError(f"{unsafe[0]!r} would not survive the shell's word splitting",
                       "use --json and pass the list as it is")
    print(" ".join(words))
    return 0


def _vpp_config(args: argparse.Namespace) -> int:
    view, _ = _view(args)
    config = vpp.vpp_config(view, args.lcores, args.cross_numa, args.exec_file)
    _warn(config.warnings)
    sys.stdout.write("\n".join(config.cli) + "\n" if args.cli else config.startup)
    return 0


def _warn(lines: Sequence[str]) -> None:
    for line in lines:
        print(f"{PROG}: note: {line}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
