"""Progress of long loops: a redrawn bar on a terminal, periodic plain lines everywhere else.

A ``\\r``-redrawn bar is unreadable in a CI log or a file (thousands of overwritten frames end up
in one line), so when the stream is not a TTY the same information is written as one ordinary
line every ``log_every_s`` seconds and once at the end. No tqdm dependency.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress", "format_duration"]

_PERCENT_KEYS = frozenset({"acc", "top1", "top5"})  # fractions shown as percentages
_BAR_WIDTH = 20


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


def _clock(seconds: float) -> str:
    """tqdm's ``MM:SS`` (``H:MM:SS`` past an hour) for the bar."""
    if not math.isfinite(seconds):
        return "?"
    text = format_duration(seconds)
    return text.rjust(5, "0") if len(text) < 5 else text


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


class Progress:
    """A progress bar on a terminal (stderr is a TTY); plain, periodic log lines otherwise (CI, files).

    ``update(n, **postfix)`` advances by ``n`` and merges ``postfix`` (e.g. ``loss=0.52, acc=0.81,
    img_s=190.3``) into the values shown. The bar is redrawn at most every ``min_interval_s``;
    plain lines are written at most every ``log_every_s`` seconds and once on :meth:`close`.
    The ETA is the remaining count over the average rate so far. ``time_fn`` is for tests.
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
        self._log_every_s, self._min_interval_s, self._time = log_every_s, min_interval_s, time_fn
        self._start = self._last_out = time_fn()
        self._closed = False
        self._drawn_len = 0
        self._drawn: tuple[int, dict] | None = None
        self.tty = self._is_tty(self.stream)
        if self.enabled and self.tty:
            self._draw()

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
        now = self._time()
        if self.tty:
            done = self.total is not None and self.n >= self.total
            if done or now - self._last_out >= self._min_interval_s:
                self._draw()
        elif now - self._last_out >= self._log_every_s:
            self._log_line()

    def write(self, line: str) -> None:
        """Print ``line`` on its own line without breaking the bar (which is redrawn below it)."""
        if self.tty and self.enabled and not self._closed:
            self.stream.write("\r" + " " * self._drawn_len + "\r" + line + "\n")
            self._draw()
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._closed:
            return
        if self.enabled:
            if self.tty:
                if self._drawn != (self.n, self.postfix):
                    self._draw()
                self.stream.write("\n")
                self.stream.flush()
            else:
                self._log_line()
        self._closed = True

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- rendering ---------------------------------------------------------------------------

    def _eta(self, elapsed: float) -> float:
        if self.total is None or self.n <= 0 or elapsed <= 0:
            return math.inf
        return max(self.total - self.n, 0) * elapsed / self.n

    def bar_line(self) -> str:
        """The TTY line: ``desc  45% |█████     | 176/391 [01:02<01:31, 2.8it/s] loss=0.52``."""
        elapsed = self.elapsed
        rate = _rate_text(self.n, elapsed, self.unit)
        head = f"{self.desc}  " if self.desc else ""
        if self.total is None:
            line = f"{head}{self.n}{self.unit} [{_clock(elapsed)}, {rate}]"
        else:
            frac = min(self.n / self.total, 1.0) if self.total else 1.0
            filled = int(frac * _BAR_WIDTH)
            bar = "█" * filled + " " * (_BAR_WIDTH - filled)
            line = (f"{head}{int(frac * 100):3d}% |{bar}| {self.n}/{self.total} "
                    f"[{_clock(elapsed)}<{_clock(self._eta(elapsed))}, {rate}]")
        post = _format_postfix(self.postfix)
        return f"{line} {post}" if post else line

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

    def _draw(self) -> None:
        columns = shutil.get_terminal_size((100, 20)).columns
        line = self.bar_line()[: max(columns - 1, 20)]  # a wrapped line cannot be redrawn with \r
        pad = " " * max(self._drawn_len - len(line), 0)
        self.stream.write("\r" + line + pad)
        self.stream.flush()
        self._drawn_len = len(line)
        self._drawn = (self.n, dict(self.postfix))
        self._last_out = self._time()

    def _log_line(self) -> None:
        self.stream.write(self.log_line() + "\n")
        self.stream.flush()
        self._last_out = self._time()
