"""A stop request: SIGTERM/SIGINT (as SLURM sends before a time-out or preemption) become a flag
that a training loop reads at its next log boundary, so it writes its checkpoint before exiting."""
from __future__ import annotations

import signal
from typing import Any


class StopRequest:
    """Context manager: while active, SIGTERM and SIGINT set :attr:`signum` instead of killing the
    process (in the main thread; elsewhere signals keep their handlers)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not in the main thread
                pass
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
