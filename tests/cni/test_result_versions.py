"""CNI results as ``cni.result`` reads them (IPAM output, prevResult) and writes them in
the caller's version: what each version carries, what is normalised, what is refused."""

from __future__ import annotations

from typing import Any

import pytest

from cni import errors
from cni.errors import CniError
from cni.result import (
    Dns,
    Interface,
    IpamResult,
    IpConfig,
    Route,
    parse_dns,
    parse_result,
    render_result,
)

FULL = {
    "cniVersion": "1.1.0",
    "interfaces": [{"name": "net1", "mac": "02:00:00:00:00:01", "sandbox": "/var/run/netns/p",
                    "socketPath": "/run/numanet/p/d/sock", "pciID": "0000:3b:02.0",
                    "mtu": 9000}],
    "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 0},
            {"address": "FD00::5/64"}],
    "routes": [{"dst": "10.2.0.5/16", "gw": "10.1.0.1", "table": 7, "mtu": 1400,
                "advmss": 1360, "priority": 9, "scope": 0, "other": 1},
               {"dst": "0.0.0.0/0"}],
    "dns": {"nameservers": ["10.0.0.2"], "domain": "example.org", "search": ["a.example"],
            "options": ["ndots:2"]},
}


def test_a_full_result_is_read_normalised() -> None:
    interfaces, ipam = parse_result(FULL, "IPAM plugin host-local")
    assert interfaces == (Interface("net1", "02:00:00:00:00:01", "/var/run/netns/p",
                                    "/run/numanet/p/d/sock", "0000:3b:02.0", 9000),)
    assert ipam.ips == (IpConfig("10.1.0.5/24", "10.1.0.1"), IpConfig("fd00::5/64"))
    # A route's destination is its network; the 1.1.0 attributes are kept in spec order.
    assert ipam.routes == (
        Route("10.2.0.0/16", "10.1.0.1", (("mtu", 1400), ("advmss", 1360), ("priority", 9),
                                          ("table", 7), ("scope", 0))),
        Route("0.0.0.0/0"))
    assert ipam.dns == Dns(("10.0.0.2",), "example.org", ("a.example",), ("ndots:2",))


def test_an_empty_result_is_empty() -> None:
    assert parse_result({}, "prevResult") == ((), IpamResult())
    assert parse_result({"ips": None, "routes": None, "interfaces": None, "dns": None},
                        "prevResult") == ((), IpamResult())


@pytest.mark.parametrize(("doc", "what"), [
    ([], "result is not a JSON object"),
    ({"ips": [{"gateway": "10.0.0.1"}]}, "has no address"),
    ({"ips": ["10.0.0.1/24"]}, "has no address"),
    ({"ips": [{"address": 5}]}, "has no address"),
    ({"ips": [{"address": "10.0.0.300/24"}]}, "ips entry"),
    ({"ips": [{"address": "10.0.0.1/24", "gateway": "x"}]}, "ips entry"),
    ({"routes": [{"gw": "10.0.0.1"}]}, "has no dst"),
    ({"routes": ["0.0.0.0/0"]}, "has no dst"),
    ({"routes": [{"dst": "nowhere"}]}, "routes entry"),
    ({"routes": [{"dst": "0.0.0.0/0", "gw": "x"}]}, "routes entry"),
    ({"interfaces": [{"mac": "02:00:00:00:00:01"}]}, "has no name"),
    ({"interfaces": ["net1"]}, "has no name"),
    ({"dns": []}, "dns is not an object"),
    ({"dns": {"domain": 1}}, "dns.domain is not a string"),
    ({"dns": {"nameservers": "10.0.0.2"}}, "dns.nameservers is not a list of strings"),
    ({"dns": {"search": [1]}}, "dns.search is not a list of strings"),
    ({"dns": {"options": [None]}}, "dns.options is not a list of strings"),
])
def test_malformed_results_are_refused(doc: Any, what: str) -> None:
    with pytest.raises(CniError) as err:
        parse_result(doc, "prevResult")
    assert err.value.code == errors.DECODE_FAILURE
    assert err.value.msg.startswith("prevResult: ")
    assert what in err.value.msg
    assert err.value.details == "the result must follow the CNI spec's Result shape"
    # The same from an IPAM plugin is an IPAM failure.
    with pytest.raises(CniError) as err:
        parse_result(doc, "IPAM plugin host-local")
    assert err.value.code == errors.IPAM_FAILURE


def test_a_missing_gateway_or_domain_is_none() -> None:
    _, ipam = parse_result({"ips": [{"address": "10.0.0.1/24", "gateway": ""}],
                            "routes": [{"dst": "0.0.0.0/0", "gw": ""}]}, "prevResult")
    assert ipam.ips == (IpConfig("10.0.0.1/24"),)
    assert ipam.routes == (Route("0.0.0.0/0"),)
    assert parse_dns({"domain": ""}, "prevResult") == Dns()
    assert parse_dns(None, "prevResult") == Dns()


# --- rendering ----------------------------------------------------------------------------

def _ipam() -> tuple[tuple[Interface, ...], IpamResult]:
    return parse_result(FULL, "prevResult")


def test_rendered_in_1_1_0_with_every_attribute() -> None:
    interfaces, ipam = _ipam()
    assert render_result("1.1.0", interfaces, ipam) == {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "net1", "mac": "02:00:00:00:00:01",
                        "sandbox": "/var/run/netns/p", "mtu": 9000,
                        "socketPath": "/run/numanet/p/d/sock", "pciID": "0000:3b:02.0"}],
        "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 0},
                {"address": "fd00::5/64", "interface": 0}],
        "routes": [{"dst": "10.2.0.0/16", "gw": "10.1.0.1", "mtu": 1400, "advmss": 1360,
                    "priority": 9, "table": 7, "scope": 0},
                   {"dst": "0.0.0.0/0"}],
        "dns": {"nameservers": ["10.0.0.2"], "domain": "example.org", "search": ["a.example"],
                "options": ["ndots:2"]},
    }


def test_rendered_in_1_0_0_without_the_1_1_0_attributes() -> None:
    interfaces, ipam = _ipam()
    out = render_result("1.0.0", interfaces, ipam)
    assert out["interfaces"] == [{"name": "net1", "mac": "02:00:00:00:00:01",
                                  "sandbox": "/var/run/netns/p"}]
    assert out["routes"] == [{"dst": "10.2.0.0/16", "gw": "10.1.0.1"}, {"dst": "0.0.0.0/0"}]
    assert out["ips"][0] == {"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 0}


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_rendered_before_1_0_0_ips_carry_their_ip_version(version: str) -> None:
    interfaces, ipam = _ipam()
    out = render_result(version, interfaces, ipam)
    assert out["cniVersion"] == version
    assert out["ips"] == [
        {"version": "4", "address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 0},
        {"version": "6", "address": "fd00::5/64", "interface": 0}]
    assert list(out["ips"][0]) == ["version", "address", "gateway", "interface"]


def test_rendered_without_interfaces_routes_or_dns() -> None:
    ipam = IpamResult(ips=(IpConfig("10.0.0.1/24"),))
    assert render_result("1.1.0", (), ipam) == {
        "cniVersion": "1.1.0", "ips": [{"address": "10.0.0.1/24"}], "dns": {}}
    assert render_result("1.1.0", (), IpamResult()) == {"cniVersion": "1.1.0", "ips": [],
                                                        "dns": {}}


def test_a_bare_interface_renders_its_name_only() -> None:
    assert Interface("net1").to_json("1.1.0") == {"name": "net1"}
    assert Interface("net1", mtu=0).to_json("1.1.0") == {"name": "net1"}
    assert Interface("net1", mtu=1500).to_json("1.1.0") == {"name": "net1", "mtu": 1500}
    assert Interface("net1", socket_path="/s").to_json("1.1.0") == \
        {"name": "net1", "socketPath": "/s"}
    assert Interface("net1", pci_id="0000:00:01.0").to_json("1.1.0") == \
        {"name": "net1", "pciID": "0000:00:01.0"}
    assert Interface("net1", mtu=1500, socket_path="/s", pci_id="p").to_json("1.0.0") == \
        {"name": "net1"}


def test_route_extras_only_from_1_1_0_and_by_default() -> None:
    route = Route("0.0.0.0/0", None, (("table", 7),))
    assert route.to_json() == {"dst": "0.0.0.0/0", "table": 7}
    assert route.to_json("1.1.0") == {"dst": "0.0.0.0/0", "table": 7}
    assert route.to_json("1.0.0") == {"dst": "0.0.0.0/0"}


def test_dns_renders_only_what_it_has() -> None:
    assert Dns().to_json() == {}
    assert Dns(nameservers=("a",)).to_json() == {"nameservers": ["a"]}
    assert Dns(domain="d").to_json() == {"domain": "d"}
    assert Dns(search=("s",)).to_json() == {"search": ["s"]}
    assert Dns(options=("o",)).to_json() == {"options": ["o"]}


def test_ip_family_and_json() -> None:
    assert IpConfig("10.0.0.1/24").family == "4"
    assert IpConfig("fd00::1/64").family == "6"
    assert IpConfig("10.0.0.1/24").to_json() == {"address": "10.0.0.1/24"}
    assert IpConfig("10.0.0.1/24", "10.0.0.254").to_json() == \
        {"address": "10.0.0.1/24", "gateway": "10.0.0.254"}


def test_a_rendered_result_reads_back_the_same() -> None:
    interfaces, ipam = _ipam()
    for version in ("0.3.1", "1.0.0", "1.1.0"):
        back = parse_result(render_result(version, interfaces, ipam), "prevResult")
        assert back[1].ips == ipam.ips
