"""Every line the CNI logs about one attachment names it fully: device_id=, pod=ns/name,
container= and ifname= in the message itself, so one grep finds an attachment's story.

The calls run through the real shim into the in-process service, so the agent's own log
records are captured: a normal ADD and DEL, a refused ADD, an ADD that takes a device
over from a dead attachment, and a DEL without CNI_ARGS (the record still knows the pod).
"""

from __future__ import annotations

import logging
import re

_KEYS = {
    "device_id": re.compile(r"\bdevice_id='?([a-z0-9][-a-z0-9]*)'?"),
    # "-" when the runtime named no pod and only the service's call line is written
    "pod": re.compile(r"\bpod='?([a-z0-9-]+/[a-z0-9.-]+|-)'?"),
    "container": re.compile(r"\bcontainer='?([A-Za-z0-9][-A-Za-z0-9_.]*)'?"),
    "ifname": re.compile(r"\bifname='?([^\s'=]+)'?"),
}
# Lines about the service or the node, not about one attachment.
_NOT_ABOUT_ONE = ("CNI service listening", "CNI service stopped", "GC network=",
                  "allocation release")


def test_attachment_log_lines_carry_device_pod_container_and_ifname(cni_bed, pod_netns, caplog):
    dev = cni_bed.slots.device_id("vhostuser-ovs", 9)
    others = cni_bed.slots.device_id("vhostuser-ovs", 10)
    cni_bed.allocate("default", "pod-a", dev)
    cni_bed.allocate("default", "pod-b", others)
    caplog.set_level(logging.DEBUG, logger="cni")

    assert cni_bed.cni("ADD", cni_bed.netconf(dev), "lg1", netns_path=pod_netns.path).rc == 0
    # The same pod's sandbox again (its first one died without a DEL): a take-over.
    assert cni_bed.cni("ADD", cni_bed.netconf(dev), "lg2", netns_path=pod_netns.path).rc == 0
    refused = cni_bed.cni("ADD", cni_bed.netconf(others), "lg3", netns_path=pod_netns.path)
    assert refused.rc == 1
    # DEL without CNI_ARGS: the attachment record names the pod.
    assert cni_bed.cni("DEL", cni_bed.netconf(dev), "lg2", pod=None).rc == 0
    cni_bed.assert_clean()

    lines = [r.getMessage() for r in caplog.records
             if r.name.startswith("cni") and not r.getMessage().startswith(_NOT_ABOUT_ONE)]
    assert len(lines) >= 5, lines  # added, taken over, removed x2, refused, DEL done
    for line in lines:
        found = {key: pattern.search(line) for key, pattern in _KEYS.items()}
        assert all(found.values()), f"missing {[k for k, v in found.items() if not v]}: {line}"
        assert found["pod"][1] in ("default/pod-a", "default/pod-b") or (
            line.startswith("CNI DEL ok") and found["pod"][1] == "-"), line
        assert found["device_id"][1] in (dev, others), line
    text = "\n".join(lines)
    assert "taking it over" in text and "previous=default/pod-a,lg1,net1" in text
    assert re.search(rf"DEL done device_id={dev} pod=default/pod-a container=lg2", text), text
