"""An incremental Server-Sent-Events parser (WHATWG HTML §9.2.6, WIRE.md §1).

Owns: turning a byte stream, split anywhere, into dispatched `Event`s: line endings LF, CR and
CRLF (including a CR at the end of one chunk and its LF at the start of the next), one leading
UTF-8 BOM, `:` comments, `field: value` with exactly one optional space stripped, multi-line
`data` joined with LF, `id` (ignored when it contains NUL), integer-only `retry`. An event with no
`data` line is not dispatched; a trailing event without its blank line is discarded at `close()`.
There is no cap on line length (image events carry multi-MB base64 on one line).

Laziness: an event's `data` stays bytes. Callers scan it (`b'"usage"' in event.data`) and only
JSON-decode the few events that can matter. With `keep_raw=True` every event also carries the exact
bytes it came from, so a caller can drop one event and pass every other byte through unchanged.

Does not own: what events mean (usage/), decoding content-encodings (encoding), or writing SSE.

State machine (one line at a time; `_skip_lf` is the only cross-chunk lexer state):

    line == b""          -> dispatch buffered event if it has data, then reset buffers
    line starts b":"     -> comment, ignored
    otherwise            -> field (name, value) updates the buffers
"""

from __future__ import annotations

import attrs

__all__ = ["Event", "SSEParser", "last_event_end"]

_BOM = b"\xef\xbb\xbf"
_NAMES: dict[bytes, str] = {b"": "message"}  # decoded event names, shared by all parsers
_CR = 0x0D
_LF = 0x0A


@attrs.frozen
class Event:
    """One dispatched event. `data` is the joined data lines, never JSON-decoded here."""

    event: str = "message"
    data: bytes = b""
    id: bytes = b""  # the last-event-id in force when this event was dispatched
    retry: int | None = None  # the reconnection time in force, if a valid `retry` was seen
    raw: bytes = b""  # with keep_raw: the bytes from the previous event's end through this one's


class SSEParser:
    """Feed bytes, get events. Deterministic: any split of the same bytes gives the same events."""

    def __init__(self, *, keep_raw: bool = False) -> None:
        self._keep_raw = keep_raw
        self._at_start = True  # no byte seen yet: a BOM may still come
        self._head = b""  # first bytes held while deciding whether they are a BOM
        self._skip_lf = False  # the previous line ended with CR: an LF right after belongs to it
        self._line: list[bytes] = []  # pieces of the current, unterminated line
        self._raw: list[bytes] = []  # with keep_raw: earlier chunks' bytes since the last dispatch
        self._raw_pos = 0  # with keep_raw: where the undispatched bytes start in the current chunk
        self._event_type = b""
        self._data: list[bytes] = []
        self._last_id = b""
        self._retry: int | None = None

    # -- public API --------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Event]:
        """Take the next bytes; return the events they complete (often none)."""
        if self._at_start:
            data = self._strip_bom(data)
        if not data:
            return []
        events: list[Event] = []
        self._raw_pos = 0
        pos = 0
        end = len(data)
        if self._skip_lf:
            self._skip_lf = False
            if data[0] == _LF:
                pos = 1
        if data.find(b"\r", pos) == -1:
            self._feed_lf_only(data, pos, events)
            return events
        next_cr = data.find(b"\r", pos)
        while pos < end:
            next_lf = data.find(b"\n", pos)
            if next_cr != -1 and next_cr < pos:
                next_cr = data.find(b"\r", pos)
            if next_lf == -1 and next_cr == -1:
                self._line.append(data[pos:])
                break
            if next_cr == -1 or (next_lf != -1 and next_lf < next_cr):
                stop, after = next_lf, next_lf + 1
            elif next_cr + 1 < end:
                stop = next_cr
                after = next_cr + 2 if data[next_cr + 1] == _LF else next_cr + 1
            else:  # CR is the last byte: its LF, if any, arrives with the next chunk
                stop, after = next_cr, end
                self._skip_lf = True
            self._line_end(data, pos, stop, events)
            pos = after
        if self._keep_raw and self._raw_pos < end:
            self._raw.append(data[self._raw_pos :] if self._raw_pos else data)
        return events

    def _feed_lf_only(self, data: bytes, pos: int, events: list[Event]) -> None:
        """The common case, every line ended by LF alone: one C-level split instead of two
        searches per line. Produces exactly what the general loop would (the fuzz properties
        compare both against a reference parser on every split)."""
        lines = data[pos:].split(b"\n") if pos else data.split(b"\n")
        rest = lines.pop()  # after the last LF: the start of an unterminated line
        stop = pos
        for line in lines:
            stop += len(line)
            if self._line:
                self._line.append(line)
                line = b"".join(self._line)
                self._line.clear()
            if line[:6] == b"data: ":  # the common line: no dispatch, no general split
                self._data.append(line[6:])
            elif line:
                self._process_line(line)
            else:
                event = self._dispatch()
                if event is not None:
                    self._emit(event, data, stop, events)
            stop += 1  # past the LF
        if rest:
            self._line.append(rest)
        if self._keep_raw and self._raw_pos < len(data):
            self._raw.append(data[self._raw_pos :] if self._raw_pos else data)

    def _emit(self, event: Event, data: bytes, stop: int, events: list[Event]) -> None:
        if self._keep_raw:
            # The raw event ends at its blank line's first terminator byte (see _line_end).
            raw_end = stop + 1
            self._raw.append(data[self._raw_pos : raw_end])
            event = attrs.evolve(event, raw=b"".join(self._raw))
            self._raw = []
            self._raw_pos = raw_end
        events.append(event)

    def close(self) -> list[Event]:
        """End of stream. A last event without its blank line is discarded (WIRE.md §1)."""
        self._line.clear()
        self._data.clear()
        self._event_type = b""
        return []

    def at_event_boundary(self) -> bool:
        """True when every byte fed so far is accounted for: no partial line, no event being
        built, no BOM or CR decision pending. A meter may then read a chunk of whole events
        with one scan instead of through the parser ("quiet chunks" in `usage/common`)."""
        return not (
            self._at_start
            or self._skip_lf
            or self._line
            or self._data
            or self._event_type
            or self._raw
            or self._head
        )

    def pending_raw(self) -> bytes:
        """With keep_raw: the bytes received after the last dispatched event (not yet an event)."""
        return b"".join(self._raw) + self._head

    # -- lexing ------------------------------------------------------------------------------

    def _strip_bom(self, data: bytes) -> bytes:
        # One leading BOM is ignored; it may itself arrive split across chunks.
        head = self._head + data
        if len(head) < len(_BOM) and _BOM.startswith(head):
            self._head = head
            return b""
        self._at_start = False
        self._head = b""
        if head.startswith(_BOM):
            if self._keep_raw:
                self._raw.append(_BOM)
            return head[len(_BOM) :]
        return head

    def _line_end(self, data: bytes, start: int, stop: int, events: list[Event]) -> None:
        if self._line:
            self._line.append(data[start:stop])
            line = b"".join(self._line)
            self._line.clear()
        else:
            line = data[start:stop]
        event = self._process_line(line)
        if event is not None:
            # With keep_raw, the raw event ends at its blank line's first terminator byte. The LF
            # of a CRLF goes to the next event's raw, whether or not it arrived in the same
            # chunk, so that which bytes belong to which event never depends on the split.
            self._emit(event, data, stop, events)

    # -- interpreting one line ---------------------------------------------------------------

    def _process_line(self, line: bytes) -> Event | None:
        if not line:
            return self._dispatch()
        if line[:5] == b"data:":  # the common line, without the general split below
            self._data.append(line[6:] if line[5:6] == b" " else line[5:])
            return None
        if line[0] == 0x3A:  # ":" comment; the keep-alive of choice (WIRE.md §1, §16.8)
            return None
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event_type = value
        elif name == b"id":
            if b"\x00" not in value:
                self._last_id = value
        elif name == b"retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> Event | None:
        event_type = self._event_type
        self._event_type = b""
        if not self._data:  # no data line: not dispatched (WHATWG), buffers reset
            return None
        data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
        self._data = []
        name = _NAMES.get(event_type)
        if name is None:
            name = event_type.decode("utf-8", "replace") if event_type else "message"
            if len(_NAMES) < 256:  # providers use a few dozen names; never grow unbounded
                _NAMES[event_type] = name
        return Event(event=name, data=data, id=self._last_id, retry=self._retry)


def last_event_end(data: bytes) -> int:
    """The offset just past the last blank line in `data` (the end of its last complete
    event), or -1 when it holds none. LF LF, CR CR, CRLF CRLF and LF CRLF each end an event."""
    end = -1
    for terminator in _EVENT_ENDS:
        at = data.rfind(terminator)
        if at != -1:
            end = max(end, at + len(terminator))
    return end


_EVENT_ENDS = (b"\n\n", b"\r\r", b"\r\n\r\n", b"\n\r\n")
