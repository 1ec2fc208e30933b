"""Counting SSE frames in a decoded body without parsing it: the load generator's hot path.

Contract: ``FrameCounter.feed(payload)`` takes the de-chunked body in pieces of any size and
updates ``frames`` (frames ended by a blank line), ``comments`` (frames whose first line is a
comment, i.e. heartbeats), ``events`` (``frames - comments``) and ``error_frames`` (in-band
errors: an OpenAI ``data: {"error"`` line or an Anthropic ``event: error`` line). ``feed``
returns ``(events, comments)`` completed by this piece, so the caller can time them.
``ends_with(marker)`` says whether the stream's last bytes hold its terminal frame
(``data: [DONE]``, ``message_stop``).

How it stays cheap: a stream whose lines end in LF (nearly all) costs one regex ``findall``
per piece, at C speed: every pattern it counts starts at a line end, so one pattern finds them
all (a separator, a separator and a comment or an error line, an error line after one LF), and
two ``list.count`` calls tell them apart when there is no error. A piece is scanned up to the
start of its last run of LFs when fewer than 14 bytes follow it, so that no pattern is cut by
the end of a piece; that tail is scanned again with the next piece, and the separators in it
are counted at once (a frame is counted in the piece that ends it), then not again. Per event
this costs a list slot. Streams with CRLF or CR line ends take three scans per piece
(separators, comment starts, the word ``error``) and look at the seam with the previous piece
through a 15-byte carry, so a pattern split across two pieces is counted exactly once.

Where it is approximate (use ``rawsse bench --check`` for an exact, parsed count):
1. The frame separator is decided once, from the first line end: ``\\n\\n``, ``\\r\\n\\r\\n`` or
   ``\\r\\r``. A stream that mixes line ends is miscounted.
2. A frame that sets only ``retry:`` or ``id:`` counts as an event, though it dispatches none.
3. Blank lines beyond the one ending a frame are not frames (as the parser's dispatch of an
   empty data buffer is no event), but a run of four LF would count as two.
"""

from __future__ import annotations

import re
from itertools import repeat

__all__ = ["FrameCounter"]


_NEVER = re.compile(b"(?!)")  # matches nothing
# LF streams: a separator, optionally followed by a comment or an error line; or an error line
# after a single LF. Every alternative starts with LF, so the scan skips to LFs at C speed.
_LF_SCAN = re.compile(
    rb'\n(?:\n(?::|data: ?\{"error"|event: ?error)?|data: ?\{"error"|event: ?error)'
)
_LF_LOOKAHEAD = 14  # bytes a pattern may span after its LFs (``data: {"error"``)
_SEPARATORS = {
    sep: (re.compile(re.escape(sep)), re.compile(re.escape(sep + b":")))
    for sep in (b"\n\n", b"\r\n\r\n", b"\r\r")
}
# How a one-line frame starts when it is a comment or an in-band error (as ``_LF_SCAN`` sees it).
_SPECIAL_STARTS = (b":", b'data: {"error"', b'data:{"error"', b"event: error", b"event:error")
_SPECIAL_BYTES = max(map(len, _SPECIAL_STARTS))
_ERROR_WORD = re.compile(b"error").search
_ERROR_PATTERNS = (b'data: {"error"', b'data:{"error"', b"event: error", b"event:error")
_CARRY_BYTES = 15  # longest pattern (14 bytes) - 1, with room for "\r\n\r\n:" (5)
_TAIL_BYTES = 64  # enough to hold "data: [DONE]" / "event: message_stop" and a separator


class FrameCounter:
    """Counts frames, comments and in-band errors of one stream (see the module contract)."""

    __slots__ = (
        "_carry",
        "_comment",
        "_comment_re",
        "_held",
        "_held_frames",
        "_pending",
        "_sep",
        "_sep_re",
        "_tail",
        "comments",
        "error_frames",
        "frames",
    )

    def __init__(self) -> None:
        self.frames = 0
        self.comments = 0
        self.error_frames = 0
        self._sep = b""  # decided from the first line end
        self._comment = b""  # separator + ":" : a frame that starts with a comment
        self._sep_re = _NEVER  # compiled once the separator is known
        self._comment_re = _NEVER
        self._pending = b""  # body bytes seen before the separator was decided
        self._carry = b""
        self._tail = b""
        # LF streams: the tail held back to be scanned with the next piece (it starts with
        # LFs), and the separators in it already counted. The stream starts as if after a
        # separator counted already, so that its first frame is classified like any other.
        self._held = b"\n\n"
        self._held_frames = 1

    @property
    def events(self) -> int:
        """Frames that are not comments."""
        return self.frames - self.comments

    def feed(self, payload: bytes) -> tuple[int, int]:
        """Count ``payload``; return the (events, comments) it completed.

        Totals are exact (within the module's rules); a piece's own figures can be off by one
        when a comment frame starts in one piece and ends in the next.
        """
        first = not self._sep
        if first:
            payload = self._pending + payload
            if not self._decide_separator(payload):
                self._pending = payload
                return 0, 0
            self._pending = b""
        sep = self._sep
        if sep == b"\n\n":
            return self._feed_lf(payload)
        # The first frame follows no separator: seen through a virtual one, a leading
        # comment is counted like any other.
        comments = (sep + payload[:1]).count(self._comment) if first else 0
        carry = self._carry
        comment = self._comment
        # Regex scans, not bytes.count: re's literal search is about twice as fast here (JSON
        # is full of the ":" that bytes.count's skip table keys on), and allocation-cheap.
        frames = len(self._sep_re.findall(payload))
        comments += len(self._comment_re.findall(payload))
        if carry:
            frames += _seam_count(carry, payload, sep)
            comments += _seam_count(carry, payload, comment)
        if _ERROR_WORD(payload) or (carry and b"error" in carry + payload[:8]):
            for pattern in _ERROR_PATTERNS:
                self.error_frames += payload.count(pattern) + _seam_count(carry, payload, pattern)
        if len(payload) >= _TAIL_BYTES:
            self._carry = payload[-_CARRY_BYTES:]
            self._tail = payload[-_TAIL_BYTES:]
        else:
            self._carry = (carry + payload)[-_CARRY_BYTES:]
            self._tail = (self._tail + payload)[-_TAIL_BYTES:]
        self.frames += frames
        self.comments += comments
        return frames - comments, comments

    @property
    def at_frame_start(self) -> bool:
        """Whether the stream so far is whole LF-separated frames (or nothing yet)."""
        if self._sep == b"\n\n" or (not self._sep and not self._pending):
            return self._held == b"\n\n" and self._held_frames == 1
        return False

    def add_frames(self, lines: list[bytes]) -> tuple[int, int]:
        """Count whole frames of one line each, given as that line (no CR or LF in it, no
        ``\n\n`` after it), at a frame start (``at_frame_start``); return (events, comments).

        The same counts ``feed`` makes of ``b"".join(line + b"\\n\\n" for line in lines)``,
        with no scan of the bytes: one frame per line, comments and errors by how lines start.
        """
        self._sep = b"\n\n"  # what ``feed`` decides from such a body's first line end
        last = lines[-1]
        # Every line sorts between the least and the greatest: when both start with the same
        # 14 bytes, so do all, and whether those start a comment or an error says it for all
        # (two C passes of comparisons, not a prefix test per line per pattern). The last line
        # is left out and tested alone: a ``data: [DONE]`` there would sort apart.
        body = lines[:-1]
        prefix = min(body)[:_SPECIAL_BYTES] if body else b""
        if (
            len(prefix) < _SPECIAL_BYTES
            or not max(body).startswith(prefix)
            or prefix.startswith(_SPECIAL_STARTS)
        ):
            special = sum(map(bytes.startswith, lines, repeat(_SPECIAL_STARTS)))
            comments = sum(map(bytes.startswith, lines, repeat(b":"))) if special else 0
        else:  # only the last line may be special
            special = 1 if last.startswith(_SPECIAL_STARTS) else 0
            comments = 1 if special and last.startswith(b":") else 0
        self.error_frames += special - comments
        frames = len(lines)
        if len(last) >= _TAIL_BYTES - 2:  # the tail is within the last line
            self._tail = last[2 - _TAIL_BYTES :] + b"\n\n"
        else:
            self._tail = (self._tail + last + b"\n\n")[-_TAIL_BYTES:]
        self.frames += frames
        self.comments += comments
        return frames - comments, comments

    def _feed_lf(self, payload: bytes) -> tuple[int, int]:
        self._tail = (
            payload[-_TAIL_BYTES:]
            if len(payload) >= _TAIL_BYTES
            else (self._tail + payload)[-_TAIL_BYTES:]
        )
        found: list[bytes] = []
        start = 0
        if self._held:
            # The held tail is scanned with the head of this piece, up to its first run of LFs
            # after a non-LF (no pattern crosses that point); the rest in place (no copy).
            cut = payload.find(b"\n", 1)
            while cut > 0 and payload[cut - 1] == 0x0A:
                cut = payload.find(b"\n", cut + 1)
            if cut > 0:
                found = _LF_SCAN.findall(self._held + payload[:cut])
                start = cut
            else:
                payload = self._held + payload
        n = len(payload)
        end = n
        held_frames = 0
        last = payload.rfind(b"\n")
        if last >= start and n - last - 1 < _LF_LOOKAHEAD:
            # A pattern may start in the last run of LFs and end in the next piece: hold the
            # run back, counting the separators it holds now.
            end = last
            while end > start and payload[end - 1] == 0x0A:
                end -= 1
            held_frames = (last + 1 - end) // 2
        found += _LF_SCAN.findall(payload, start, end)
        separators = found.count(b"\n\n")
        comments = found.count(b"\n\n:")
        frames = separators + comments
        if frames != len(found):  # error lines: rare, sorted one by one
            self.error_frames += len(found) - frames
            frames += sum(
                match.startswith(b"\n\ne") or match.startswith(b"\n\nd") for match in found
            )
        frames += held_frames - self._held_frames
        self._held = payload[end:]
        self._held_frames = held_frames
        self.frames += frames
        self.comments += comments
        return frames - comments, comments

    def ends_with(self, marker: bytes) -> bool:
        """Whether ``marker`` is in the stream's last frame (as far as the last 64 bytes go)."""
        body = self._tail.rstrip(b"\r\n")
        start = body.rfind(self._sep) if self._sep else -1
        return marker in (body[start + len(self._sep) :] if start >= 0 else body)

    def _decide_separator(self, payload: bytes) -> bool:
        lf = payload.find(b"\n")
        cr = payload.find(b"\r")
        if cr >= 0 and (lf < 0 or cr < lf):
            if cr + 1 >= len(payload):
                return False  # a CR at the end: CRLF or CR, not known yet
            self._sep = b"\r\n\r\n" if payload[cr + 1] == 0x0A else b"\r\r"
        elif lf >= 0:
            self._sep = b"\n\n"
        else:
            return False
        self._comment = self._sep + b":"
        self._sep_re, self._comment_re = _SEPARATORS[self._sep]
        return True


def _seam_count(carry: bytes, payload: bytes, pattern: bytes) -> int:
    """Occurrences of ``pattern`` that start in ``carry`` and end in ``payload``."""
    k = len(pattern) - 1
    return (carry[-k:] + payload[:k]).count(pattern)
