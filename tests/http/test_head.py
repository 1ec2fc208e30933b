"""The response head formatter: header validation and its cache of formatted lines."""

from __future__ import annotations

import pytest

from rawsse._http import head


def test_per_response_values_do_not_keep_common_lines_out_of_the_cache() -> None:
    head._HEADER_LINES.clear()
    # Far more unique values (stream ids) than the cache holds, then a common header.
    for i in range(3 * head._HEADER_LINES_MAX):
        head.format_head(200, [(b"x-stream-id", b"s%d" % i)], http11=True, close=False)
    common = (b"content-type", b"text/event-stream")
    data, _ = head.format_head(200, [common], http11=True, close=False)
    assert b"content-type: text/event-stream\r\n" in data
    assert common in head._HEADER_LINES
    assert len(head._HEADER_LINES) <= head._HEADER_LINES_MAX


def test_a_cached_line_is_still_the_same_line() -> None:
    headers = [(b"cache-control", b"no-cache"), (b"x-a", b"1")]
    first, _ = head.format_head(200, headers, http11=True, close=False)
    second, _ = head.format_head(200, headers, http11=True, close=False)
    assert first.split(b"\r\n")[3:] == second.split(b"\r\n")[3:]


@pytest.mark.parametrize("header", [(b"bad name", b"v"), (b"x-a", b"v\r\nx-b: 1")])
def test_illegal_headers_are_refused_even_after_a_good_one_is_cached(
    header: tuple[bytes, bytes],
) -> None:
    head.format_head(200, [(b"x-a", b"ok")], http11=True, close=False)
    with pytest.raises(ValueError, match="illegal response header"):
        head.format_head(200, [header], http11=True, close=False)
