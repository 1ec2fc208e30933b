"""The in-memory replay store keeps event ids compactly: numbered ids as one number, any other
ids as they are; resume finds every kept frame either way."""

from __future__ import annotations

import pytest

from rawsse.replay import MemoryReplayStore, Replay

pytestmark = pytest.mark.anyio


async def replay(store: MemoryReplayStore, key: str, last_id: str | None) -> list[bytes]:
    return [frame async for frame in store.follow(key, last_id)]


async def filled(ids: list[str], **limits: int) -> MemoryReplayStore:
    store = MemoryReplayStore(**limits)
    await store.create("s", tag="t")
    for event_id in ids:
        store.append_nowait("s", event_id, f"frame {event_id}\n\n".encode())
    await store.finish("s")
    return store


async def test_numbered_ids_resume_after_each_kept_frame() -> None:
    store = await filled(["1", "2", "3", "4"])
    assert await store.plan("s", None) == Replay("1", False, "t", True)
    assert await store.plan("s", "2") == Replay("3", False, "t", True)
    assert await store.plan("s", "4") == Replay(None, False, "t", True)
    assert await replay(store, "s", "2") == [b"frame 3\n\n", b"frame 4\n\n"]
    assert await replay(store, "s", None) == [f"frame {i}\n\n".encode() for i in range(1, 5)]


@pytest.mark.parametrize("last_id", ["01", "5", "0", "-1", "2.0", "x", "", "²"])
async def test_ids_never_written_are_unknown(last_id: str) -> None:
    store = await filled(["1", "2", "3", "4"])
    # Unknown: the whole kept stream, flagged as a gap (as for a trimmed id).
    assert await store.plan("s", last_id) == Replay("1", True, "t", True)


async def test_numbering_may_start_anywhere() -> None:
    store = await filled(["0", "1", "2"])
    assert await store.plan("s", "0") == Replay("1", False, "t", True)
    store = await filled(["41", "42"])
    assert await store.plan("s", "41") == Replay("42", False, "t", True)
    assert await store.plan("s", "40") == Replay("41", True, "t", True)


async def test_trimmed_numbered_ids_are_a_gap() -> None:
    store = await filled(["1", "2", "3", "4", "5"], max_events_per_stream=3)
    assert await store.plan("s", None) == Replay("3", True, "t", True)
    assert await store.plan("s", "1") == Replay("3", True, "t", True)
    assert await store.plan("s", "3") == Replay("4", False, "t", True)
    assert await replay(store, "s", "3") == [b"frame 4\n\n", b"frame 5\n\n"]


@pytest.mark.parametrize(
    "ids",
    [
        ["a", "b", "c", "d"],  # not numbers
        ["1", "2", "7", "8"],  # numbers, then a jump
        ["1", "2", "3", "x"],  # numbers, then a word
        ["01", "02", "03", "04"],  # not as str(int) writes them
    ],
)
async def test_other_ids_are_kept_as_they_are(ids: list[str]) -> None:
    store = await filled(ids, max_events_per_stream=3)  # the first frame is trimmed
    assert await store.plan("s", None) == Replay(ids[1], True, "t", True)
    assert await store.plan("s", ids[3]) == Replay(None, False, "t", True)
    assert await replay(store, "s", ids[1]) == [
        f"frame {event_id}\n\n".encode() for event_id in ids[2:]
    ]
    assert await store.plan("s", ids[0]) == Replay(ids[1], True, "t", True)


async def test_abandon_checks_the_last_numbered_id() -> None:
    store = MemoryReplayStore()
    await store.create("s")
    store.append_nowait("s", "1", b"one\n\n")
    store.append_nowait("s", "2", b"two\n\n")
    assert not await store.abandon("s", "1", [("3", b"end\n\n")])
    assert await store.abandon("s", "2", [("3", b"end\n\n")])
    assert await replay(store, "s", "2") == [b"end\n\n"]
    assert (await store.plan("s", "3")).ended
