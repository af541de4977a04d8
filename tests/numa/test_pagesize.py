"""Hugepage sizes as Kubernetes, the kernel and sysfs spell them."""

from __future__ import annotations

import pytest

from numa import format_page_size, page_size_kb


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2Mi", 2048),
        ("1Gi", 1048576),
        ("2048kB", 2048),
        ("1048576kB", 1048576),
        ("hugepages-2048kB", 2048),
        ("hugepages-1Gi", 1048576),
        ("2M", 2048),
        ("1G", 1048576),
        ("64Ki", 64),
        (" 2Mi ", 2048),
        ("2097152", 2048),  # bytes, as a bare k8s quantity
        (2097152, 2048),
        ("16Gi", 16 * 1048576),
    ],
)
def test_page_size_kb(text: str | int, expected: int) -> None:
    assert page_size_kb(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "is not a size"),
        ("Mi", "is not a size"),
        ("2.5Mi", "is not a size"),
        ("-2Mi", "is not a size"),
        ("2Xi", "unknown unit 'Xi'"),
        ("3Mi", "not a power of two"),
        ("2k", "at least 4 KiB"),
        ("1000", "whole number of KiB"),
        (None, "is not a size"),
        (True, "is not a size"),
    ],
)
def test_page_size_kb_rejects(text: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        page_size_kb(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(("size", "text"), [(2048, "2Mi"), (1048576, "1Gi"), (64, "64Ki")])
def test_format_page_size_round_trips(size: int, text: str) -> None:
    assert format_page_size(size) == text
    assert page_size_kb(text) == size
