"""`RateLimitedLog`: a log line that can repeat thousands of times a second (port probes, a flood
of connections over the cap, a store that stays down) is written once, then at most once per
interval with the number of like lines left out, so a hostile peer cannot fill the journal or
keep the event loop busy formatting lines."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

EVERY_S = 60.0
MAX_KEYS = 256  # distinct kinds of line remembered; the oldest is forgotten past this


@dataclass
class _Seen:
    last: float  # when a line of this kind was last written
    left_out: int = 0


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, every_s: float = EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.every_s = every_s
        self.clock = clock
        self._seen: OrderedDict[str, _Seen] = OrderedDict()

    def log(self, level: int, key: str, message: str, *args: Any, **kwargs: Any) -> None:
        """Write `message % args` unless a line of kind `key` was written less than `every_s`
        ago; the next one written says how many were left out meanwhile. `kwargs` go to
        Logger.log (exc_info=True)."""
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen.last < self.every_s:
            seen.left_out += 1
            return
        left_out = seen.left_out if seen else 0
        self._seen[key] = _Seen(now)
        self._seen.move_to_end(key)
        if len(self._seen) > MAX_KEYS:
            self._seen.popitem(last=False)
        if left_out:
            message += f" ({left_out} more like this in the last {self.every_s:g} s)"
        self.logger.log(level, message, *args, **kwargs)

    def flush(self) -> None:
        """Say how many lines of each kind were left out since it was last written (at stop)."""
        for key, seen in self._seen.items():
            if seen.left_out:
                self.logger.warning("%d more '%s' lines were left out", seen.left_out, key)
                seen.left_out = 0
