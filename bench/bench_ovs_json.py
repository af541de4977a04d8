"""Decoding OVSDB JSON-RPC messages: ``vswitch.ovs.fastjson`` against python-ovs's own parser.

python-ovs as pip installs it has no C extension (``ovs._json``) unless libopenvswitch was
there at build time, so its pure-Python parser reads every update ovsdb-server sends. This
prints both per message, for the message sizes one plug brings (a port's update, a batch),
so that keeping ``fastjson`` stays a measured choice.

    .venv/bin/python bench/bench_ovs_json.py [--rounds 300]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ovs.json import Parser as OvsParser  # noqa: E402

from vswitch.ovs import fastjson  # noqa: E402


def update_message(ports: int) -> str:
    """An ``update3`` notification for ``ports`` new numanet vhost-user interfaces."""
    rows = {f"{i:036d}": {"insert": {
        "name": f"nnvhostuser-ovs-n0-{i:03d}", "type": "dpdkvhostuserclient",
        "options": ["map", [["vhost-server-path",
                              f"/run/numanet/s/vhostuser-ovs-n0-{i:03d}/sock"]]],
        "external_ids": ["map", [["numanet-owner", "numanet"],
                                 ["numanet-device-id", f"vhostuser-ovs-n0-{i:03d}"],
                                 ["attached-mac", "02:00:00:00:00:01"]]],
        "ofport": 5 + i, "link_state": "down", "mtu": 1500}} for i in range(ports)}
    return json.dumps({"id": None, "method": "update3",
                       "params": ["monitor", "0" * 36, {"Interface": rows}]})


def per_message_ms(make: Callable[[], Any], text: str, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        parser = make()
        parser.feed(text)
        parser.finish()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    try:
        __import__("ovs._json")
        print("note: python-ovs has its C extension here; fastjson is not installed then")
    except ImportError:
        pass
    print(f"OVSDB message decode, median of {args.rounds} (ms per message)")
    print(f"{'message':>22} {'bytes':>7} {'python-ovs':>11} {'fastjson':>9} {'ratio':>6}")
    for ports in (1, 4, 32):
        text = update_message(ports)
        peer = per_message_ms(OvsParser, text, args.rounds)
        ours = per_message_ms(fastjson.StreamParser, text, args.rounds)
        print(f"{f'update of {ports} port(s)':>22} {len(text):>7} {peer:>11.3f} {ours:>9.3f} "
              f"{peer / ours:>5.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
