"""Progress of long loops: tqdm's bar on a terminal, periodic plain lines everywhere else.

A ``\\r``-redrawn bar is unreadable in a CI log or a file (thousands of overwritten frames end up
in one line), so when the stream is not a TTY the same information is written as one ordinary
line every ``log_every_s`` seconds and once at the end. On a TTY the bar is tqdm's, showing the
same values in the same format (``loss=0.52 acc=81.0% img/s=190``).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

__all__ = ["Progress", "format_duration"]

_PERCENT_KEYS = frozenset({"acc", "top1", "top5"})  # fractions shown as percentages


def format_duration(seconds: float) -> str:
    """``"0:05"``, ``"1:02"``, ``"1:02:03"``, ``"2d 1:02:03"``; ``"?"`` when unknown (NaN, inf)."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    if seconds < 0:
        raise ValueError(f"a duration must be >= 0 seconds, got {seconds}")
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}:{minutes:02d}:{s:02d}"
    return f"{hours}:{minutes:02d}:{s:02d}" if hours else f"{minutes}:{s:02d}"


def _format_value(key: str, value: float | str) -> str:
    if isinstance(value, (str, bool, int)):
        return str(value)
    v = float(value)  # floats, numpy scalars, 0-d tensors
    if key in _PERCENT_KEYS or key.rsplit("_", 1)[-1] in _PERCENT_KEYS:  # acc, val_acc, top5, ...
        return f"{v * 100:.1f}%"
    if not math.isfinite(v):
        return str(v)
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3g}"


def _format_postfix(postfix: dict[str, float | str]) -> str:
    """``loss=0.52 acc=81.0% img/s=190``: a trailing ``_s`` in a key reads as "per second"."""
    parts = []
    for key, value in postfix.items():
        label = key[:-2] + "/s" if key.endswith("_s") and len(key) > 2 else key
        parts.append(f"{label}={_format_value(key, value)}")
    return " ".join(parts)


def _rate_text(n: int, elapsed: float, unit: str) -> str:
    if n <= 0 or elapsed <= 0:
        return f"?{unit}/s"
    rate = n / elapsed
    return f"{rate:.3g}{unit}/s" if rate >= 1 else f"{1 / rate:.3g}s/{unit}"


class _Bar(tqdm):
    monitor_interval = 0  # no monitor thread per bar: every update comes from the loop itself


class Progress:
    """A tqdm bar on a terminal (the stream is a TTY); plain, periodic log lines otherwise (CI, files).

    ``update(n, **postfix)`` advances by ``n`` and merges ``postfix`` (e.g. ``loss=0.52, acc=0.81,
    img_s=190.3``) into the values shown. The bar is redrawn at most every ``min_interval_s`` (and
    when the total is reached); plain lines are written at most every ``log_every_s`` seconds and
    once on :meth:`close`. Rates and the ETA use the average rate so far. ``time_fn`` is for tests.
    """

    def __init__(self, total: int | None, desc: str = "", *, stream: TextIO | None = None,
                 log_every_s: float = 10.0, enabled: bool = True, unit: str = "it",
                 min_interval_s: float = 0.1, time_fn: Callable[[], float] = time.monotonic) -> None:
        if total is not None and (not isinstance(total, int) or total < 0):
            raise ValueError(f"total must be a non-negative int or None, got {total!r}")
        self.total, self.desc, self.unit = total, desc, unit
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.n = 0
        self.postfix: dict[str, float | str] = {}
        self._log_every_s, self._time = log_every_s, time_fn
        self._start = self._last_out = time_fn()
        self._closed = False
        self.tty = self._is_tty(self.stream)
        self._bar: tqdm | None = None
        if self.enabled and self.tty:
            self._bar = _Bar(total=total, desc=desc or None, file=self.stream, unit=unit, leave=True,
                             mininterval=min_interval_s, miniters=1, smoothing=0, dynamic_ncols=True,
                             unit_scale=unit == "B", unit_divisor=1024 if unit == "B" else 1000)
            self._bar._time = time_fn  # tqdm's clock is ours, so ETA and rate agree with the plain lines
            self._bar.start_t = self._bar.last_print_t = self._start

    @staticmethod
    def _is_tty(stream: object) -> bool:
        try:
            return bool(stream.isatty())  # type: ignore[attr-defined]
        except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
            return False

    @property
    def elapsed(self) -> float:
        return self._time() - self._start

    def update(self, n: int = 1, **postfix: float | str) -> None:
        if n < 0:
            raise ValueError(f"update() advances by n >= 0, got {n}")
        self.n += n
        self.postfix.update(postfix)
        if not self.enabled or self._closed:
            return
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix_str(_format_postfix(self.postfix), refresh=False)
            drawn = self._bar.update(n)
            if not drawn and self.total is not None and self.n >= self.total:
                self._bar.refresh()  # the last step always shows
        elif self._time() - self._last_out >= self._log_every_s:
            self._log_line()

    def write(self, line: str) -> None:
        """Print ``line`` on its own line without breaking the bar (which is redrawn below it)."""
        if self._bar is not None and not self._closed:
            self._bar.write(line, file=self.stream)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._closed:
            return
        if self._bar is not None:
            self._bar.close()  # draws the final state and ends the line
        elif self.enabled:
            self._log_line()
        self._closed = True

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _eta(self, elapsed: float) -> float:
        if self.total is None or self.n <= 0 or elapsed <= 0:
            return math.inf
        return max(self.total - self.n, 0) * elapsed / self.n

    def log_line(self) -> str:
        """The plain line: ``train  176/391 (45%)  elapsed 1:02  eta 1:31  2.8it/s  loss=0.52``."""
        elapsed = self.elapsed
        parts = [self.desc] if self.desc else []
        if self.total is None:
            parts.append(f"{self.n} {self.unit}")
        else:
            pct = int(min(self.n / self.total, 1.0) * 100) if self.total else 100
            parts.append(f"{self.n}/{self.total} ({pct}%)")
        parts.append(f"elapsed {format_duration(elapsed)}")
        if self.total is not None and self.n < self.total:
            parts.append(f"eta {format_duration(self._eta(elapsed))}")
        parts.append(_rate_text(self.n, elapsed, self.unit))
        post = _format_postfix(self.postfix)
        if post:
            parts.append(post)
        return "  ".join(parts)

    def _log_line(self) -> None:
        self.stream.write(self.log_line() + "\n")
        self.stream.flush()
        self._last_out = self._time()
