"""Keep MediaPipe's native log lines (TensorFlow Lite, absl/glog) off the user's terminal.

MediaPipe's C++ side writes straight to file descriptor 2, on its own threads, before absl's
logging is initialised: neither Python's ``logging``, ``absl.logging`` nor ``GLOG_*`` /
``TF_CPP_MIN_LOG_LEVEL`` variables reach it. So around the calls that build or run a MediaPipe
graph, fd 2 is pointed at a temporary file; afterwards the lines that are MediaPipe's info and
warning chatter are dropped and everything else (errors, other threads' output) is passed on.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

# glog/absl info and warning lines ("W0000 00:00:1796016983.276471    7115 file.cc:114] ..."),
# TensorFlow Lite's "INFO: ..." lines and absl's notice that logging is not initialised.
NOISE = re.compile(rb"^(?:[IW]\d{4} [\d:.]+ +\d+ [^\]]+\] |INFO: |WARNING: All log messages before absl)")

F = TypeVar("F", bound=Callable)


class NativeStderrFilter:
    """A re-entrant filter of fd 2: nested uses share one capture, other threads wait their turn
    (fd 2 belongs to the whole process, so one object does all the redirecting)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            self._depth += 1
            try:
                if self._depth > 1:
                    yield
                else:
                    with _captured_fd2():
                        yield
            finally:
                self._depth -= 1

    def wrap(self, fn: F) -> F:
        @functools.wraps(fn)
        def quiet(*args, **kwargs):
            with self():
                return fn(*args, **kwargs)

        return quiet  # type: ignore[return-value]


@contextmanager
def _captured_fd2() -> Iterator[None]:
    try:
        _flush_stderr()
        saved = os.dup(2)
    except OSError:  # no usable fd 2 (e.g. a GUI process without a console)
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            try:
                _flush_stderr()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().splitlines(keepends=True) if not NOISE.match(line)]
            if kept:
                os.write(2, b"".join(kept))


def _flush_stderr() -> None:
    if sys.stderr is not None:  # None under pythonw
        sys.stderr.flush()


quiet_mediapipe = NativeStderrFilter()
