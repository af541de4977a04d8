"""``numanet demo``: a real node in a box, from pod request to packets on the wire.

Everything is real but the kubelet: a private OVS-DPDK, the numanet agent, the
``numanet-cni`` executable with host-local IPAM, and dpdk-testpmd as two pods'
applications passing traffic through OVS. All of it lives under one private directory
and is removed at the end, which the last line of the output proves.

Exit status: 0 packets flowed both ways and nothing was left; 1 a step failed or
something was left (the output says what); 2 the demo could not start (not root, a
package missing, the directory in use), with the command that fixes it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from demo.layout import DEFAULT_DIR

# The pods' interface kinds the demo can run: a vhost-user pair (the default: the
# interface OVS-DPDK users know best), a memif pair, or one of each.
PODS = ("vhost-user,vhost-user", "memif,memif", "vhost-user,memif")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=5.0, metavar="N",
                        help="how long to pass traffic (default %(default)s)")
    parser.add_argument("--json", action="store_true",
                        help="print the summary as JSON on stdout (steps go to stderr)")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                        help="private directory for everything the demo starts; removed at "
                             "the end (default %(default)s)")
    parser.add_argument("--install", action="store_true",
                        help="install missing Debian packages with apt-get first")
    parser.add_argument("--hugepages", type=int, default=None, metavar="PAGES",
                        help="2 MiB pages to reserve (default: what OVS and the pods' "
                             "testpmd need, more for memif pods); 0 runs without hugepages "
                             "(--no-huge)")
    parser.add_argument("--pods", choices=PODS, default=PODS[0], metavar="KIND,KIND",
                        help="interface kinds of pod-a and pod-b: " + " | ".join(PODS)
                             + " (default %(default)s). memif,memif passes the traffic "
                             "between two memif pods, each opening the queue pairs its "
                             "numanet.json asks for (OVS sends on one queue per PMD thread "
                             "plus one)")
    parser.add_argument("--testpmd", default="dpdk-testpmd", metavar="PATH",
                        help="the dpdk-testpmd program (default: from PATH)")
    parser.add_argument("--cni-bin-dir", type=Path, default=Path("/usr/lib/cni"), metavar="DIR",
                        help="where the host-local IPAM plugin is (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    from demo import preflight, scenario, summary
    from demo.cleanup import DemoBusy
    from demo.console import Console

    if args.seconds <= 0 or args.seconds > 3600:
        print("numanet demo: --seconds must be between 0 and 3600", file=sys.stderr)
        return 2
    first, second = args.pods.split(",")
    kinds = (first, second)
    options = scenario.Options(
        seconds=args.seconds, json=args.json, directory=args.dir.absolute(),
        install=args.install, testpmd=args.testpmd, cni_bin_dir=args.cni_bin_dir,
        hugepages=scenario.hugepages_for(kinds) if args.hugepages is None
        else max(0, args.hugepages),
        kinds=kinds)
    console = Console(json_mode=args.json)
    if not args.json:
        console.line(f"numanet demo: a node in a box under {options.directory} "
                     f"(Ctrl-C cleans up)")
    demo = scenario.Demo(options, console)
    try:
        report = demo.run()
    except (preflight.PreflightError, DemoBusy, ValueError) as exc:
        # The step line said it already (on stdout, or stderr with --json).
        if args.json:
            print(json.dumps({"ok": False, "error": str(exc)}, indent=1))
        return 2
    if args.json:
        print(json.dumps(summary.to_json(report), indent=1))
    else:
        console.line(summary.render(report))
    if report.interrupted:
        return 130
    return 0 if report.ok and not report.left else 1
