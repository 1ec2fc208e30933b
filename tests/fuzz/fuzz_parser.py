"""Coverage-guided fuzzing of ``rawsse.parser.EventParser`` with atheris (libFuzzer).

Not collected by pytest (no ``test_`` prefix) and not run in CI: see ``README.md`` here for the
command. Each input drives one parser through a script of operations decoded from the bytes
(feed a piece, close, set ``last_event_id``), and checks:

1. Totality: nothing but ``EventTooLarge`` is raised, and only with ``buffered_bytes`` over
   the limit; after it every ``feed`` raises again.
2. Well-formed events: a non-empty type and an id without CR, LF or NUL; retry >= 0.
3. Chunking invariance: the same bytes fed whole, to a parser without a binding limit, give the
   same events, last event id and retry as the pieces did (when no limit was hit and no
   ``close`` split the stream).
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from rawsse.parser import EventParser, EventTooLarge


def _check(event: object) -> None:
    data, kind, event_id, retry = (
        event.data,  # type: ignore[attr-defined]
        event.event,  # type: ignore[attr-defined]
        event.id,  # type: ignore[attr-defined]
        event.retry,  # type: ignore[attr-defined]
    )
    assert isinstance(data, str)
    assert isinstance(kind, str) and kind and "\r" not in kind and "\n" not in kind
    assert event_id is None or not any(c in event_id for c in "\r\n\0")
    assert retry is None or retry >= 0


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    limit = fdp.ConsumeIntInRange(1, 1 << 16)
    parser = EventParser(max_event_bytes=limit)
    fed = bytearray()
    events = []
    split_by_close = False
    failure: EventTooLarge | None = None
    try:
        while fdp.remaining_bytes():
            op = fdp.ConsumeIntInRange(0, 15)
            if op == 0:
                assert isinstance(parser.close(), bool)
                split_by_close = True
            elif op == 1:
                parser.last_event_id = fdp.ConsumeUnicodeNoSurrogates(8)
                split_by_close = True
            else:
                piece = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 256))
                fed += piece
                got = parser.feed(piece)
                for event in got:
                    _check(event)
                events += got
    except EventTooLarge as exc:
        failure = exc
    if failure is not None:
        assert failure.buffered_bytes > limit, (failure.buffered_bytes, limit)
        for event in failure.events:
            _check(event)
        try:
            parser.feed(b"\n\n")
        except EventTooLarge:
            return
        raise AssertionError("a failed parser parsed again") from None
    if split_by_close:
        return
    whole = EventParser(max_event_bytes=1 << 30)
    assert whole.feed(bytes(fed)) == events
    assert (whole.last_event_id, whole.retry) == (parser.last_event_id, parser.retry)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
