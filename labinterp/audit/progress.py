"""Progress on stderr: rows read, patients done, rate and ETA. Never identifiers or values."""

from __future__ import annotations

import sys
import time
from typing import TextIO

_EVERY_S = 0.5


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """A single status line, redrawn at most twice a second; silent unless enabled."""

    def __init__(
        self, *, enabled: bool, total_rows: int | None = None, stream: TextIO | None = None
    ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.total_rows = total_rows
        self.rows = 0
        self.t0 = time.monotonic()
        self.stage = "read"
        self.buckets_total = 0
        self.buckets = 0
        self.patients = 0
        self.stage_t0 = self.t0
        self._last = 0.0
        self._drawn = False

    def rows_read(self, n: int) -> None:
        self.rows += n
        self._draw()

    def start_stage(self, stage: str, total: int) -> None:
        self.stage = stage
        self.buckets_total = total
        self.buckets = 0
        self.stage_t0 = time.monotonic()
        self._draw(force=True)

    def bucket_done(self, patients: int) -> None:
        self.buckets += 1
        self.patients += patients
        self._draw()

    def _line(self) -> str:
        elapsed = max(time.monotonic() - self.stage_t0, 1e-6)
        if self.stage == "read":
            rate = self.rows / elapsed
            text = f"read {self.rows:,} rows ({rate:,.0f} rows/s"
            if self.total_rows and rate > 0:
                left = max(self.total_rows - self.rows, 0) / rate
                text += f", ETA {_clock(left)}"
            return text + ")"
        rate = self.patients / elapsed
        text = (
            f"read {self.rows:,} rows; {self.patients:,} patients done "
            f"({self.buckets}/{self.buckets_total} parts, {rate:,.0f} patients/s"
        )
        if self.buckets and self.buckets_total:
            left = elapsed / self.buckets * (self.buckets_total - self.buckets)
            text += f", ETA {_clock(left)}"
        return text + ")"

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < _EVERY_S:
            return
        self._last = now
        self.stream.write("\r\033[K" + self._line())
        self.stream.flush()
        self._drawn = True

    def finish(self) -> None:
        if self.enabled and self._drawn:
            self._draw(force=True)
            self.stream.write(f" - done in {_clock(time.monotonic() - self.t0)}\n")
            self.stream.flush()
