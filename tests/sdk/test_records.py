"""The spool's record format, read back whole, cut anywhere, or with any byte changed.

`scan` reads segments that a dead process left, so it takes outside input: whatever the
damage, it must count exactly the whole records before it and never one after it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.sdk._records import HEADER_BYTES, header, parse, scan

bodies = st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=20)


def records(items: list[bytes]) -> bytes:
    return b"".join(header(body) + body for body in items)


@contextmanager
def segment(data: bytes) -> Iterator[int]:
    """A file holding `data`, open for reading."""
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "segment")
        with open(path, "wb") as file:
            file.write(data)
        fd = os.open(path, os.O_RDONLY)
        try:
            yield fd
        finally:
            os.close(fd)


def ends(items: list[bytes]) -> list[int]:
    """The offset just after each record."""
    offsets, at = [], 0
    for body in items:
        at += HEADER_BYTES + len(body)
        offsets.append(at)
    return offsets


@settings(max_examples=150, deadline=None)
@given(items=bodies, padding=st.integers(min_value=0, max_value=5000))
def test_whole_records_and_zero_padding_read_back_exactly(items: list[bytes], padding: int) -> None:
    data = records(items)

    with segment(data + bytes(padding)) as fd:
        found = scan(fd, 0)

    assert found == (len(items), len(data), 0)
    parsed = parse(data, max_records=len(items), max_body_bytes=len(data))
    assert (parsed.bodies, parsed.end, parsed.body_bytes) == (
        items,
        len(data),
        sum(map(len, items)),
    )


@settings(max_examples=150, deadline=None)
@given(items=bodies, cut=st.integers(min_value=0))
def test_a_segment_cut_anywhere_keeps_exactly_the_records_before_the_cut(
    items: list[bytes], cut: int
) -> None:
    data = records(items)
    cut %= len(data) + 1
    whole = [end for end in ends(items) if end <= cut]

    with segment(data[:cut]) as fd:
        found = scan(fd, 0)

    assert (found.records, found.end) == (len(whole), whole[-1] if whole else 0)
    # The parser of this process's own records leaves a cut record for its next read.
    parsed = parse(data[:cut], max_records=len(items), max_body_bytes=len(data))
    assert parsed.bodies == items[: len(whole)]


@settings(max_examples=150, deadline=None)
@given(items=bodies, where=st.integers(min_value=0), change=st.integers(min_value=1, max_value=255))
def test_a_changed_byte_stops_the_scan_at_the_record_it_is_in(
    items: list[bytes], where: int, change: int
) -> None:
    data = bytearray(records(items))
    where %= len(data)
    data[where] ^= change
    damaged = next(i for i, end in enumerate(ends(items)) if where < end)

    with segment(bytes(data)) as fd:
        found = scan(fd, 0)

    assert found.records == damaged
    assert found.end == ([0, *ends(items)])[damaged]
    assert found.damaged > 0  # reported, not mistaken for padding


@settings(max_examples=100, deadline=None)
@given(items=bodies, limit=st.integers(min_value=1, max_value=10), budget=st.integers(0, 2000))
def test_parse_keeps_to_its_limits_and_takes_an_oversized_first_record(
    items: list[bytes], limit: int, budget: int
) -> None:
    parsed = parse(records(items), max_records=limit, max_body_bytes=budget)

    taken = parsed.bodies
    assert taken == items[: len(taken)]
    assert 1 <= len(taken) <= limit  # the first is taken even when over the budget
    assert len(taken) == 1 or sum(map(len, taken)) <= budget
    if len(taken) < min(limit, len(items)):  # stopped by the budget: the next did not fit
        assert sum(map(len, items[: len(taken) + 1])) > budget
