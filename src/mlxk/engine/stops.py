"""Stop strings: where one begins in generated text, and how much text is safe to show.

Text arrives a piece at a time (one detokenized segment per token), and a stop string may
be split across pieces. Showing a piece at once could show the first half of a stop
string that the next piece completes, so the tail that could still begin a stop string is
held back until it is decided. ``mlxk run`` (engine/generate.py) and the serving engine
(engine/batch.py) both use this one matcher, so a stop string cuts the same text in both.
"""

from __future__ import annotations

from typing import Iterable


class StopMatcher:
    """The stop strings of one request.

    :meth:`find` and :meth:`safe_length` are pure (the batch engine keeps its own buffer,
    paired with logprobs); :meth:`feed` and :meth:`flush` keep the held-back tail here for
    callers that only need the text.
    """

    def __init__(self, stops: Iterable[str] = ()) -> None:
        self.stops: tuple[str, ...] = tuple(dict.fromkeys(s for s in stops if s))  # "" would match everywhere
        self._longest = max((len(s) for s in self.stops), default=0)
        self._pending = ""

    def __bool__(self) -> bool:
        return bool(self.stops)

    def find(self, text: str) -> int:
        """Index in ``text`` where the earliest stop string begins, or -1 when none is there."""
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        return min(hits, default=-1)

    def safe_length(self, text: str) -> int:
        """How many leading characters of ``text`` no stop string can begin in.

        ``text`` holds no whole stop string (call :meth:`find` first). The rest, if any, is
        a tail that is the beginning of some stop string: the next piece decides it.
        """
        for start in range(max(0, len(text) - self._longest + 1), len(text)):
            tail = text[start:]
            if any(s.startswith(tail) for s in self.stops):
                return start
        return len(text)

    def feed(self, text: str) -> tuple[str, bool]:
        """Take the next piece; return the text now safe to show and whether a stop string ended it.

        After a stop, the text from the stop string on is dropped and the matcher is empty.
        """
        if not self.stops:
            return text, False
        pending = self._pending + text
        hit = self.find(pending)
        if hit >= 0:
            self._pending = ""
            return pending[:hit], True
        cut = self.safe_length(pending)
        self._pending = pending[cut:]
        return pending[:cut], False

    def flush(self) -> str:
        """The held-back tail, at the end of generation (no stop string came)."""
        out, self._pending = self._pending, ""
        return out
