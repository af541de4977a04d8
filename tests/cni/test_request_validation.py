"""The CNI environment as ``cni.request`` checks it, before anything else looks at it.

Unit tests of ``parse_request``, ``validate_ifname`` and ``parse_cni_args``: each refusal
is asserted where numanet makes it (not where host-local or the kernel would repeat it),
every limit one below, at and one above, and the liberal CNI_ARGS rules (a repeated key
takes its last value, unknown keys pass with IgnoreUnknown) pinned as they are.
"""

from __future__ import annotations

import pytest

from cni import errors
from cni.errors import CniError
from cni.request import (
    CniArgs,
    CniRequest,
    parse_cni_args,
    parse_request,
    validate_container_id,
    validate_ifname,
)

POD = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-a"


def env(**changes: str | None) -> dict[str, str]:
    """A valid ADD environment, with ``changes`` applied (None removes a variable)."""
    base = {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "c1",
        "CNI_NETNS": "/var/run/netns/pod",
        "CNI_IFNAME": "net1",
        "CNI_ARGS": POD,
        "CNI_PATH": "/opt/cni/bin",
    }
    for key, value in changes.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return base


def refused(call, *args, code: int = errors.INVALID_ENVIRONMENT) -> CniError:
    with pytest.raises(CniError) as err:
        call(*args)
    assert err.value.code == code
    return err.value


# --- interface names ------------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    "e" * 14, "e" * 15,  # 14 and 15 bytes: the kernel's IFNAMSIZ is 16 with the NUL
    "é" * 7 + "e",  # 15 bytes in 8 characters
    "net1", "eth0.100", "a-b_c", ".x", "..x", "x.", "a..b", "0",
])
def test_interface_names_numanet_accepts(name: str) -> None:
    assert validate_ifname(name) == name
    assert parse_request(env(CNI_IFNAME=name), b"").ifname == name


@pytest.mark.parametrize(("name", "why"), [
    ("e" * 16, "16 bytes"),
    ("é" * 8, "8 characters but 16 bytes"),
    ("e" * 40, "far too long"),
    ("", "empty"),
    (".", "dot"),
    ("..", "dot dot"),
    ("net/1", "slash"),
    ("/", "slash alone"),
    ("net:1", "colon"),
    (":", "colon alone"),
    ("net 1", "space"),
    ("net\t1", "tab"),
    ("net1\n", "newline"),
    (" ", "whitespace only"),
    ("net\u00a01", "non-breaking space"),
])
def test_interface_names_numanet_refuses(name: str, why: str) -> None:
    error = refused(validate_ifname, name)
    assert "not a valid interface name" in error.msg, why
    assert "CNI_IFNAME" in error.msg
    assert "1 to 15" in error.details


def test_each_interface_name_rule_alone_refuses() -> None:
    """Names that break exactly one rule: with the rules joined by 'and' none is refused."""
    for name in ("e" * 16, "a/b", "a:b", "a b", ".", ".."):
        refused(validate_ifname, name)
        refused(parse_request, env(CNI_IFNAME=name), b"")


def test_the_interface_name_source_is_named() -> None:
    assert "CNI_ARGS X" in refused(validate_ifname, "a/b", "CNI_ARGS X").msg


def test_an_empty_interface_name_is_missing_for_add_and_absent_for_status() -> None:
    assert "CNI_IFNAME" in refused(parse_request, env(CNI_IFNAME=""), b"").msg
    request = parse_request({"CNI_COMMAND": "STATUS"}, b"")
    assert request.ifname == ""


# --- container IDs, netns, CNI_PATH ---------------------------------------------------------

@pytest.mark.parametrize("value", ["c", "a" * 256, "A1_.-x", "0abc"])
def test_container_ids_accepted(value: str) -> None:
    assert validate_container_id(value) == value


@pytest.mark.parametrize("value", ["a" * 257, "", "-a", ".a", "_a", "a/b", "a b", "c1\n"])
def test_container_ids_refused(value: str) -> None:
    assert "not a valid container ID" in refused(validate_container_id, value).msg


def test_netns_must_be_an_absolute_path_of_at_most_4096_characters() -> None:
    at_limit = "/" + "n" * 4095
    assert parse_request(env(CNI_NETNS=at_limit), b"").netns == at_limit
    assert "absolute" in refused(parse_request, env(CNI_NETNS=at_limit + "n"), b"").msg
    assert "absolute" in refused(parse_request, env(CNI_NETNS="netns/x"), b"").msg


def test_cni_path_entries_must_be_absolute_and_empty_ones_are_skipped() -> None:
    request = parse_request(env(CNI_PATH="/opt/cni/bin::/usr/lib/cni:"), b"")
    assert request.path == ("/opt/cni/bin", "/usr/lib/cni")
    error = refused(parse_request, env(CNI_PATH="/opt/cni/bin:usr/lib/cni"), b"")
    assert "'usr/lib/cni'" in error.msg


# --- the command and the variables it needs -------------------------------------------------

@pytest.mark.parametrize(("command", "needs"), [
    ("ADD", ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH")),
    ("CHECK", ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH")),
    ("DEL", ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH")),
    ("GC", ("CNI_PATH",)),
    ("STATUS", ()),
    ("VERSION", ()),
])
def test_each_command_needs_its_variables(command: str, needs: tuple[str, ...]) -> None:
    minimal = {"CNI_COMMAND": command, **{name: env()[name] for name in needs}}
    request = parse_request(minimal, b"{}")
    assert request.command == command
    assert request.stdin == b"{}"
    for name in needs:
        missing = dict(minimal)
        del missing[name]
        error = refused(parse_request, missing, b"")
        assert error.msg == f"{command} needs {name}, which the runtime did not set"


def test_every_missing_variable_is_named_at_once() -> None:
    error = refused(parse_request, {"CNI_COMMAND": "DEL"}, b"")
    assert error.msg == "DEL needs CNI_CONTAINERID, CNI_IFNAME, CNI_PATH, which the runtime " \
                        "did not set"


@pytest.mark.parametrize("command", [None, "", "add", "FROB"])
def test_unknown_or_missing_commands_are_refused(command: str | None) -> None:
    error = refused(parse_request, env(CNI_COMMAND=command) if command is not None
                    else env(CNI_COMMAND=None), b"")
    assert ("CNI_COMMAND is not set" if not command else repr(command)) in error.msg


@pytest.mark.parametrize("name", ["CNI_CONTAINERID", "CNI_ARGS", "CNI_PATH", "CNI_NETNS"])
def test_a_nul_byte_in_any_variable_is_refused(name: str) -> None:
    value = env()[name] + "\0x"
    assert refused(parse_request, env(**{name: value}), b"").msg == f"{name} is not a string"


def test_the_request_keeps_every_value_and_hands_it_on() -> None:
    request = parse_request(env(CNI_ARGS="IgnoreUnknown=1;" + POD + ";X=1"), b"cfg")
    assert request == CniRequest(
        command="ADD", container_id="c1", netns="/var/run/netns/pod", ifname="net1",
        args=parse_cni_args("IgnoreUnknown=1;" + POD + ";X=1"), path=("/opt/cni/bin",),
        stdin=b"cfg")
    assert request.env() == {
        "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/var/run/netns/pod",
        "CNI_IFNAME": "net1", "CNI_ARGS": "IgnoreUnknown=1;" + POD + ";X=1",
        "CNI_PATH": "/opt/cni/bin"}
    assert request.args.pod == "default/pod-a"


# --- CNI_ARGS -------------------------------------------------------------------------------

def test_cni_args_may_be_4096_characters_not_4097() -> None:
    filler = "IgnoreUnknown=1;X="
    at_limit = filler + "v" * (4096 - len(filler))
    assert len(at_limit) == 4096
    assert parse_cni_args(at_limit).raw == at_limit
    assert parse_cni_args(at_limit[:-1]).raw == at_limit[:-1]
    error = refused(parse_cni_args, at_limit + "v")
    assert error.msg == "CNI_ARGS is 4097 characters long"
    refused(parse_request, env(CNI_ARGS=at_limit + "v"), b"")


def test_cni_args_parsed() -> None:
    args = parse_cni_args("IgnoreUnknown=true;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=a.b-c;"
                          "K8S_POD_UID=0f1e-2d;K8S_POD_INFRA_CONTAINER_ID=abc123;"
                          "MAC=02:00:00:00:00:01;IP=10.1.0.5,fd00::5;Other=1")
    assert args.pod_namespace == "ns"
    assert args.pod_name == "a.b-c"
    assert args.pod_uid == "0f1e-2d"
    assert args.infra_container_id == "abc123"
    assert args.mac == "02:00:00:00:00:01"
    assert args.ips == ("10.1.0.5", "fd00::5")
    assert args.ignore_unknown is True
    assert args.unknown == ("Other",)
    assert args.pod == "ns/a.b-c"


def test_empty_cni_args_are_no_args() -> None:
    assert parse_cni_args("") == CniArgs()
    assert parse_cni_args(";;") == CniArgs(raw=";;")
    assert CniArgs().pod == "-"
    assert CniArgs(pod_namespace="ns").pod == "-"
    assert CniArgs(pod_name="a").pod == "-"


def test_a_repeated_key_takes_its_last_value() -> None:
    """Multus appends the runtime's CNI_ARGS to its own: every key comes twice."""
    args = parse_cni_args("K8S_POD_NAMESPACE=a;K8S_POD_NAME=x;K8S_POD_NAMESPACE=b;"
                          "K8S_POD_NAME=y;IP=10.0.0.1;IP=10.0.0.2")
    assert (args.pod_namespace, args.pod_name, args.ips) == ("b", "y", ("10.0.0.2",))
    # Only the last value is checked: an earlier bad one is replaced, a later one refused.
    assert parse_cni_args("K8S_POD_NAME=Bad_Name;K8S_POD_NAME=good").pod_name == "good"
    refused(parse_cni_args, "K8S_POD_NAME=good;K8S_POD_NAME=Bad_Name")


@pytest.mark.parametrize("flag", ["1", "true", "TRUE", "True"])
def test_unknown_keys_pass_with_ignore_unknown(flag: str) -> None:
    args = parse_cni_args(f"IgnoreUnknown={flag};Zeta=1;Alpha=2")
    assert args.ignore_unknown is True
    assert args.unknown == ("Alpha", "Zeta")


@pytest.mark.parametrize("flag", [None, "0", "false", "FALSE"])
def test_unknown_keys_are_refused_without_ignore_unknown(flag: str | None) -> None:
    raw = "Zeta=1;Alpha=2" if flag is None else f"IgnoreUnknown={flag};Zeta=1;Alpha=2"
    error = refused(parse_cni_args, raw)
    assert error.msg == "CNI_ARGS has unknown keys: Alpha, Zeta"
    assert "IgnoreUnknown=1" in error.details


def test_known_keys_need_no_ignore_unknown() -> None:
    args = parse_cni_args("IgnoreUnknown=0;" + POD + ";K8S_POD_UID=u;MAC=02:00:00:00:00:01;"
                          "IP=10.0.0.1;K8S_POD_INFRA_CONTAINER_ID=c")
    assert args.ignore_unknown is False
    assert args.unknown == ()


@pytest.mark.parametrize("flag", ["yes", "2", "", "on"])
def test_ignore_unknown_takes_only_1_0_true_false(flag: str) -> None:
    error = refused(parse_cni_args, f"IgnoreUnknown={flag}")
    assert error.msg == f"CNI_ARGS IgnoreUnknown={flag!r} is not valid"


@pytest.mark.parametrize("pair", ["K8S_POD_NAME", "=x", "A-B=1", "A.B=1", "a b=1", "K" * 65 + "=1"])
def test_items_that_are_not_key_value_are_refused(pair: str) -> None:
    error = refused(parse_cni_args, f"IgnoreUnknown=1;{pair}")
    assert "is not KEY=VALUE" in error.msg


def test_keys_of_64_characters_pass() -> None:
    assert parse_cni_args("IgnoreUnknown=1;" + "K" * 64 + "=1").unknown == ("K" * 64,)


@pytest.mark.parametrize("value", ["10.0.0.300", "10.0.0.1,", "10.0.0.1/24", "x",
                                   "10.0.0.1,,10.0.0.2", " 10.0.0.1"])
def test_a_malformed_ip_is_refused_not_ignored(value: str) -> None:
    error = refused(parse_cni_args, f"IP={value}")
    assert error.msg == f"CNI_ARGS IP={value!r} is not valid"
    assert "comma-separated list of IP addresses" in error.details


def test_ips_are_normalised() -> None:
    assert parse_cni_args("IP=FD00:0::1,10.0.0.1").ips == ("fd00::1", "10.0.0.1")
    assert parse_cni_args(POD).ips == ()
    # An empty value is a key not given (Multus writes its keys even when empty).
    assert parse_cni_args("IP=").ips == ()


@pytest.mark.parametrize(("key", "good", "bad"), [
    ("K8S_POD_NAMESPACE", ["a" * 63, "a", "a-b", "0"], ["a" * 64, "A", "a.b", "-a", "a-"]),
    ("K8S_POD_NAME", ["a" * 253, "a.b", "a-b.c"], ["a" * 254, "A", "a_b", "a.", ".a"]),
    ("K8S_POD_UID", ["a" * 64, "A-1"], ["a" * 65, "a_b", "a.b"]),
    ("MAC", ["02:00:00:00:00:01", "AA:bb:CC:dd:EE:ff"],
     ["02:00:00:00:00", "02-00-00-00-00-01", "02:00:00:00:00:001"]),
])
def test_kubernetes_values_held_to_their_rules(key: str, good: list[str],
                                               bad: list[str]) -> None:
    attribute = {"K8S_POD_NAMESPACE": "pod_namespace", "K8S_POD_NAME": "pod_name",
                 "K8S_POD_UID": "pod_uid", "MAC": "mac"}[key]
    for value in good:
        assert getattr(parse_cni_args(f"{key}={value}"), attribute) == value
    for value in bad:
        error = refused(parse_cni_args, f"{key}={value}")
        assert error.msg == f"CNI_ARGS {key}={value[:80]!r} is not valid"
    # Empty is a key not given, as Multus writes K8S_POD_UID= when the runtime sent none.
    assert getattr(parse_cni_args(f"{key}="), attribute) is None


def test_the_infra_container_id_is_a_container_id() -> None:
    assert parse_cni_args("K8S_POD_INFRA_CONTAINER_ID=" + "a" * 256).infra_container_id
    error = refused(parse_cni_args, "K8S_POD_INFRA_CONTAINER_ID=../x")
    assert "CNI_ARGS K8S_POD_INFRA_CONTAINER_ID" in error.msg
    refused(parse_cni_args, "K8S_POD_INFRA_CONTAINER_ID=" + "a" * 257)


def test_a_value_may_contain_equals_signs() -> None:
    """Only the first '=' separates key and value."""
    args = parse_cni_args("IgnoreUnknown=1;X=a=b;K8S_POD_UID=u")
    assert args.unknown == ("X",)
    assert args.pod_uid == "u"
    assert "K8S_POD_NAME='a=b'" in refused(parse_cni_args, "K8S_POD_NAME=a=b").msg


# --- messages quote a bad value, cut short ----------------------------------------------------

LONG = "/" * 100


@pytest.mark.parametrize(("call", "message"), [
    (lambda: validate_container_id(LONG), f"CNI_CONTAINERID {LONG[:80]!r} is not a valid "
                                          "container ID"),
    (lambda: validate_ifname(LONG), f"CNI_IFNAME {LONG[:80]!r} is not a valid interface name"),
    (lambda: parse_request(env(CNI_NETNS="n" * 100), b""),
     f"CNI_NETNS {'n' * 80!r} is not an absolute path"),
    (lambda: parse_request(env(CNI_PATH="n" * 100), b""),
     f"CNI_PATH entry {'n' * 80!r} is not an absolute directory"),
    (lambda: parse_cni_args("K" * 100), f"CNI_ARGS item {'K' * 80!r} is not KEY=VALUE"),
    (lambda: parse_cni_args("IP=" + "x" * 100), f"CNI_ARGS IP={'x' * 80!r} is not valid"),
    (lambda: parse_cni_args("K8S_POD_NAME=" + "X" * 100),
     f"CNI_ARGS K8S_POD_NAME={'X' * 80!r} is not valid"),
    (lambda: parse_request(env(CNI_COMMAND="X" * 50), b""),
     f"CNI_COMMAND {'X' * 40!r} is not a CNI command"),
])
def test_messages_quote_the_start_of_a_long_bad_value(call, message: str) -> None:
    assert refused(call).msg == message


# --- bytes that are not UTF-8 ------------------------------------------------------------------
# The shim decodes the environment with surrogateescape: such bytes arrive as lone surrogates.

@pytest.mark.parametrize("name", ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS",
                                  "CNI_PATH"])
def test_a_variable_that_is_not_utf8_is_refused(name: str) -> None:
    value = env()[name] + "\udcff"
    error = refused(parse_request, env(**{name: value}), b"")
    assert error.msg == f"{name} {value!r} is not UTF-8 text"
    assert "not UTF-8" in error.details


def test_a_netns_path_that_is_not_utf8_is_refused_though_absolute() -> None:
    """No later rule would catch this one: the UTF-8 check alone refuses it."""
    assert parse_request(env(CNI_NETNS="/var/run/netns/\u00e9"), b"").netns.endswith("\u00e9")
    refused(parse_request, env(CNI_NETNS="/var/run/netns/\udce9"), b"")
    refused(parse_request, env(CNI_COMMAND="STATUS", CNI_PATH="/opt/\udce9"), b"")


def test_a_value_that_is_not_utf8_is_quoted_cut_short() -> None:
    value = "/" + "n" * 99 + "\udcff"
    error = refused(parse_request, env(CNI_NETNS=value), b"")
    assert error.msg == f"CNI_NETNS {value[:80]!r} is not UTF-8 text"


# --- the config document ------------------------------------------------------------------------

def test_the_config_is_decoded_from_stdin_when_not_given() -> None:
    request = parse_request(env(), b'{"cniVersion": "1.1.0", "name": "n"}')
    assert request.config() == {"cniVersion": "1.1.0", "name": "n"}


def test_the_config_already_decoded_is_used_not_stdin() -> None:
    request = parse_request(env(), b"not json", document={"name": "decoded"})
    assert request.config() == {"name": "decoded"}


def test_the_decoding_error_is_raised_where_the_config_is_needed() -> None:
    request = parse_request(env(), b"not json")  # parsing the request itself does not decode
    with pytest.raises(CniError) as err:
        request.config()
    assert err.value.code == errors.DECODE_FAILURE
    given = CniError(errors.DECODE_FAILURE, "given", "details")
    with pytest.raises(CniError) as err:
        parse_request(env(), b"{}", document=given).config()
    assert err.value is given
