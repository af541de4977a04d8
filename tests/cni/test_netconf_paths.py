"""Hostile network configurations refused by ``cni.netconf`` itself, at its own layer:
``ipam.dataDir`` (``check_path``/``path_problem``: absolute, normalised, UTF-8 without NUL,
Linux's PATH_MAX 4096 and NAME_MAX 255 in bytes) and the nesting limit (64 levels of
objects and lists), each limit one below, at and one above.

tests/cni/test_hostile_input.py sends the same through a real agent."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cni import errors
from cni.errors import CniError
from cni.netconf import (
    MAX_DEPTH,
    MAX_NAME_BYTES,
    MAX_PATH_BYTES,
    NetConf,
    check_path,
    decode,
    parse_netconf,
    path_problem,
    read_document,
)

BASE = {"cniVersion": "1.1.0", "name": "net-a", "type": "numanet"}


def path_of(size: int) -> str:
    """An absolute, normalised path of exactly ``size`` bytes, no name over 250 bytes."""
    path = ""
    while len(path) < size:
        path += "/" + "a" * min(size - len(path) - 1, 250)
    assert len(path.encode()) == size
    return path


# --- path_problem: one rule broken at a time -------------------------------------------------

def test_the_limits_are_linux_path_max_and_name_max() -> None:
    assert (MAX_PATH_BYTES, MAX_NAME_BYTES) == (4096, 255)


@pytest.mark.parametrize("path", [
    "/", "/a", "/var/lib/cni/networks", "/a/b/", "/a/..b", "/a/b..", "/...", "/a/.b",
    "/a b/ü/日本", "/run/numanet/s/vh-n0-000",
])
def test_fit_paths(path: str) -> None:
    assert path_problem(path) is None
    assert check_path(path, "ipam.dataDir") == path


@pytest.mark.parametrize("size", [4095, 4096])
def test_a_path_of_up_to_4096_bytes(size: int) -> None:
    assert path_problem(path_of(size)) is None


def test_a_path_of_4097_bytes_is_too_long() -> None:
    assert "longer than 4096 bytes" in path_problem(path_of(4097))


def test_the_path_limit_counts_bytes_not_characters() -> None:
    path = ("/" + "é" * 125) * 16 + "/" + "é" * 39 + "a"  # 'é' is 2 bytes in UTF-8
    assert (len(path), len(path.encode())) == (2057, 4096)
    assert path_problem(path) is None
    longer = path + "a"
    assert "longer than 4096 bytes" in path_problem(longer)


@pytest.mark.parametrize("name", ["n" * 254, "n" * 255, "é" * 127 + "n"])
def test_names_of_up_to_255_bytes(name: str) -> None:
    assert path_problem(f"/data/{name}") is None
    assert path_problem(f"/{name}/data") is None
    assert path_problem(f"/{name}") is None


@pytest.mark.parametrize("name", ["n" * 256, "é" * 128, "n" * 1000])
def test_a_name_of_256_bytes_is_too_long(name: str) -> None:
    for path in (f"/data/{name}", f"/{name}/data", f"/{name}"):
        assert "name longer than 255 bytes" in path_problem(path)


@pytest.mark.parametrize("path", ["a", "", "a/b", "./a", "../a", "~/a", " /a", "\\a"])
def test_relative_paths(path: str) -> None:
    assert "not an absolute path" in path_problem(path)


@pytest.mark.parametrize("path", ["/a\0b", "/a/\0", "/\0", "/a\0/../b"])
def test_a_nul_byte(path: str) -> None:
    assert "NUL" in path_problem(path)


@pytest.mark.parametrize("path", ["/a/\udcff", "/\ud800/b"])
def test_text_that_is_not_utf8(path: str) -> None:
    """The shim decodes with surrogateescape: bytes that are not UTF-8 come as surrogates."""
    assert "not UTF-8" in path_problem(path)


@pytest.mark.parametrize("path", ["/..", "/a/..", "/a/../b", "/a/b/../../..", "/../a/"])
def test_climbing_out_with_dot_dot(path: str) -> None:
    assert "'..'" in path_problem(path)


@pytest.mark.parametrize(("path", "normal"), [
    ("/a/./b", "/a/b"), ("/a//b", "/a/b"), ("/.", "/"), ("/a/.", "/a"), ("//", "//"),
    ("///a", "/a"), ("/./", "/"),
])
def test_paths_that_are_not_normalised(path: str, normal: str) -> None:
    problem = path_problem(path)
    assert "not normalised" in problem and repr(normal) in problem


def test_the_first_problem_found_is_named() -> None:
    assert "not UTF-8" in path_problem("a\0\udcff")
    assert "NUL" in path_problem("a\0")
    assert "absolute" in path_problem("a/" + "n" * 5000)
    assert "4096" in path_problem("/" + "n" * 5000)
    assert "255" in path_problem("/" + "n" * 300 + "/..")
    assert "'..'" in path_problem("/a/./..")


# --- check_path: the CniError ----------------------------------------------------------------

@pytest.mark.parametrize("path", ["relative", "/a\0", "/a/../b", "/a//b", path_of(4097),
                                  "/" + "n" * 256, "/\udcff"])
def test_check_path_refuses_as_an_invalid_config_naming_the_key(path: str) -> None:
    with pytest.raises(CniError) as err:
        check_path(path, "some.key")
    assert err.value.code == errors.INVALID_NETWORK_CONFIG
    assert err.value.msg == f"some.key {path[:120]!r} {path_problem(path)}"
    assert "absolute, normalised path" in err.value.details


def test_check_path_quotes_the_first_120_characters() -> None:
    path = "x" * 200
    with pytest.raises(CniError) as err:
        check_path(path, "ipam.dataDir")
    assert err.value.msg == f"ipam.dataDir {'x' * 120!r} is not an absolute path"


# --- ipam.dataDir in parse_netconf -----------------------------------------------------------

def parse_ipam(**ipam: Any) -> NetConf:
    return parse_netconf(json.dumps({**BASE, "ipam": {"type": "host-local", **ipam}}).encode(),
                         "ADD")


@pytest.mark.parametrize("data_dir", ["/var/lib/cni/networks", "/", path_of(4096)])
def test_ipam_data_dir_accepted(data_dir: str) -> None:
    parsed = parse_ipam(dataDir=data_dir)
    assert parsed.ipam_type == "host-local"
    assert parsed.raw["ipam"]["dataDir"] == data_dir


def test_an_empty_or_absent_data_dir_is_host_locals_default() -> None:
    assert parse_ipam(dataDir="").ipam_type == "host-local"
    assert parse_ipam().ipam_type == "host-local"


@pytest.mark.parametrize("data_dir", ["networks", "/var/lib/../../etc", "/var//lib",
                                      path_of(4097), "/" + "n" * 256, "/a\0"])
def test_ipam_data_dir_refused(data_dir: str) -> None:
    with pytest.raises(CniError) as err:
        parse_ipam(dataDir=data_dir)
    assert err.value.code == errors.INVALID_NETWORK_CONFIG
    assert err.value.msg.startswith("ipam.dataDir ")


def test_ipam_data_dir_must_be_a_string() -> None:
    with pytest.raises(CniError) as err:
        parse_ipam(dataDir=["/a"])
    assert err.value.code == errors.INVALID_NETWORK_CONFIG
    assert "ipam.dataDir must be a string" in err.value.msg


def test_a_document_already_decoded_is_taken_as_it_is() -> None:
    """parse_netconf takes the dict read_document gave (stdin is decoded once a call)."""
    doc = {**BASE, "mtu": 9000}
    parsed = parse_netconf(doc, "ADD")
    assert parsed.mtu == 9000 and parsed.raw is doc


# --- nesting: at most 64 levels of objects and lists -----------------------------------------

def nested(levels: int, inner: str = "") -> bytes:
    """An object holding lists, ``levels`` containers deep in all."""
    return ('{"a":' + "[" * (levels - 1) + inner + "]" * (levels - 1) + "}").encode()


def nested_objects(levels: int) -> bytes:
    return ('{"a":' * (levels - 1) + "{}" + "}" * (levels - 1)).encode()


def too_deep(stdin: bytes) -> CniError:
    with pytest.raises(CniError) as err:
        decode(stdin)
    assert err.value.code == errors.DECODE_FAILURE
    assert "nested deeper than 64 levels" in err.value.msg
    return err.value


def test_the_depth_limit_is_64() -> None:
    assert MAX_DEPTH == 64


def test_an_empty_object_is_one_level() -> None:
    assert decode(b"{}") == {}
    assert decode(b'{"a": 1}') == {"a": 1}


@pytest.mark.parametrize("levels", [2, 3, 63, 64])
def test_up_to_64_levels(levels: int) -> None:
    assert decode(nested(levels)) == json.loads(nested(levels))
    assert decode(nested_objects(levels)) == json.loads(nested_objects(levels))
    assert isinstance(read_document(nested(levels)), dict)


@pytest.mark.parametrize("levels", [65, 66, 1000])
def test_more_than_64_levels(levels: int) -> None:
    too_deep(nested(levels))
    too_deep(nested_objects(levels))
    assert isinstance(read_document(nested(levels)), CniError)


def test_scalars_are_no_level() -> None:
    assert decode(nested(64, '1, "x", null, true')) is not None


def test_a_deep_branch_anywhere_counts() -> None:
    deep = nested(65)[len('{"a":'):-1].decode()  # 64 levels of lists
    for doc in (f'{{"deep": {deep}, "z": 1}}', f'{{"z": 1, "deep": {deep}}}',
                f'{{"z": [1, 2, {deep}, 3], "y": {{"x": 1}}}}',
                f'{{"z": [{deep}, 1, {{}}, []], "y": "s"}}'):
        too_deep(doc.encode())


def test_wide_documents_are_not_deep() -> None:
    doc = {f"k{i}": [[i, {"x": [i]}]] for i in range(2000)}
    assert decode(json.dumps(doc).encode()) == doc


def test_nesting_past_the_parser_own_limit_is_too_deep_too() -> None:
    """Beyond Python's recursion limit json raises RecursionError: the same refusal."""
    stdin = nested(200_000)
    assert len(stdin) < 1 << 20
    too_deep(stdin)
    assert isinstance(read_document(stdin), CniError)
