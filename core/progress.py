"""Progress reporting and cancellation shared by every pipeline stage.

One ``Progress`` object travels through a run. Stages announce themselves with ``stage()``,
report work with ``advance()`` and call ``check()`` at safe points so that a cancel request
(from the CLI's Ctrl-C, a Blender Cancel button or another thread) stops the run promptly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

from .errors import Cancelled

# callback(stage_name, done, total); total 0 means "indeterminate"
ProgressCallback = Callable[[str, int, int], None]


@dataclass
class Progress:
    callback: Optional[ProgressCallback] = None
    cancel_event: threading.Event = field(default_factory=threading.Event)
    stage_name: str = ""
    done: int = 0
    total: int = 0

    def stage(self, name: str, total: int = 0) -> None:
        self.check()
        self.stage_name, self.done, self.total = name, 0, total
        self._emit()

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._emit()
        self.check()

    def cancel(self) -> None:
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def check(self) -> None:
        if self.cancel_event.is_set():
            raise Cancelled("Cancelled by the user")

    def _emit(self) -> None:
        if self.callback is not None:
            self.callback(self.stage_name, self.done, self.total)
