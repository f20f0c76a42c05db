"""Many photos in one run, each isolated: the one boundary shared by ``python -m core reconstruct``
and ``scripts/likeness_batch.py`` (docs/GUARANTEES.md).

Whatever goes wrong with one photo becomes that photo's failure with a one-line reason and the
run goes on; an unexpected error (a bug) is reported in one line too and its traceback goes to
``<output>/likeness-errors.log``. Ctrl-C or SIGTERM stop the run cleanly: the photo in progress
writes nothing, and the summary counts only the photos that were attempted.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LikenessError, OutputError, SettingsError
from .output.export import RUN_LOCK, exclusive_lock, remove_stale
from .reconstruction import file_stem

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
ERROR_LOG = "likeness-errors.log"


class Terminated(KeyboardInterrupt):
    """SIGTERM: handled as the same clean stop as Ctrl-C."""


@dataclass
class PhotoDone:
    """What a photo's work returns: where its result is, its time and its warnings."""

    folder: Path
    seconds: float
    warnings: list[str] = field(default_factory=list)
    note: str = ""  # after "ok", e.g. " from 3 photo(s)"


@dataclass
class Summary:
    total: int
    done: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)  # the photo in progress when the run was stopped
    interrupted: bool = False  # stopped between photos (while a finished photo was reported)

    @property
    def stopped(self) -> bool:
        return bool(self.cancelled) or self.interrupted

    @property
    def attempted(self) -> int:
        return len(self.done) + len(self.failed) + len(self.cancelled)

    def exit_code(self) -> int:
        if self.stopped:
            return EXIT_INTERRUPTED
        return EXIT_FAILED if self.failed else EXIT_OK


Work = Callable[[str, object, Path, str], PhotoDone]  # (name, photo, its result folder, label)


def prepare_output(output: Path) -> None:
    """Check once, before any photo, that ``output`` is a folder Likeness can write to."""
    if output.exists() and not output.is_dir():
        raise OutputError(f"The output {output} is a file: give a folder (it is created if missing).")
    probe = output / f".likeness-probe-{uuid.uuid4().hex[:8]}"
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"Cannot write into the output folder {output} ({exc.strerror or exc}). "
                          "Choose a folder you can write to.") from exc


def run_batch(photos: Sequence[tuple[str, object]], output: Path, setup: Callable[[], Work],
              unit: str = "photo(s)") -> int:
    """Check ``output`` and build the work (``setup``: device, model, weights) once, then run it on
    each (name, photo), one result folder per photo under ``output``; print one line per photo and
    a summary; return the exit status. ``output``'s run lock refuses a second run into it."""
    try:
        with _sigterm_stops(), _one_line_warnings():
            prepare_output(output)
            with exclusive_lock(output / RUN_LOCK, f"into {output}"):
                remove_stale(output)
                work = setup()
                summary = run_photos(photos, output, work, unit)
    except KeyboardInterrupt:
        print("Stopped before the first photo; nothing was written.", flush=True)
        return EXIT_INTERRUPTED
    except LikenessError as exc:  # found up front: nothing was attempted
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, (OutputError, SettingsError)) else EXIT_FAILED
    return summary.exit_code()


def run_photos(photos: Sequence[tuple[str, object]], output: Path, work: Work,
               unit: str = "photo(s)") -> Summary:
    """The per-photo isolation boundary (see the module doc); ``run_batch`` sets it up."""
    summary = Summary(total=len(photos))
    folders = result_folders([name for name, _ in photos])
    start = time.perf_counter()
    try:
        _run_each(photos, folders, output, work, summary)
    except KeyboardInterrupt:  # Ctrl-C while a finished photo was reported (its line is out already)
        summary.interrupted = True
    _print_summary(summary, output, time.perf_counter() - start, unit)
    return summary


def failure_reason(exc: Exception, log: Path, name: str) -> str:
    """One line for the user. Our own errors say what to do; anything else is a bug, whose
    traceback is appended to ``log``."""
    if isinstance(exc, LikenessError):
        return one_line(str(exc))
    if isinstance(exc, MemoryError):
        return "ran out of memory: close other programs or use a smaller photo or the fast preset."
    try:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {name}\n")
            fh.write("".join(traceback.format_exception(exc)))
        where = f"traceback in {log}"
    except OSError:
        where = "no log could be written"
    return one_line(f"unexpected error ({type(exc).__name__}: {exc}); this is a bug, please report it "
                    f"({where}).")


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def result_folders(names: Sequence[str]) -> list[str]:
    """A distinct folder name per photo: its file-name stem, numbered when repeated."""
    used: set[str] = set()
    out = []
    for name in names:
        stem = file_stem(Path(name).stem)
        candidate, n = stem, 1
        while candidate in used:
            n += 1
            candidate = f"{stem}_{n}"
        used.add(candidate)
        out.append(candidate)
    return out


def _run_each(photos: Sequence[tuple[str, object]], folders: list[str], output: Path, work: Work,
              summary: Summary) -> None:
    for i, ((name, photo), folder) in enumerate(zip(photos, folders, strict=True), 1):
        label = f"[{i}/{len(photos)}] {name}"
        try:
            done = work(name, photo, output / folder, label)
        except KeyboardInterrupt:
            print(f"{label}: cancelled; nothing written for it. Stopping.", flush=True)
            summary.cancelled.append(name)
            break
        except Exception as exc:  # noqa: BLE001 - the isolation boundary: one photo, one failure
            reason = failure_reason(exc, output / ERROR_LOG, name)
            print(f"{label}: FAILED: {reason}", flush=True)
            summary.failed.append((name, reason))
            continue
        summary.done.append(name)
        print(f"{label}: ok{done.note} in {done.seconds:.1f} s -> {done.folder}", flush=True)
        for warning in done.warnings:
            print(f"    warning: {one_line(warning)}")


def _print_summary(summary: Summary, output: Path, seconds: float, unit: str) -> None:
    done, failed = len(summary.done), len(summary.failed)
    if summary.stopped:
        left = summary.total - summary.attempted
        print(f"\nStopped: {done} of {summary.attempted} attempted {unit} done, {failed} failed, "
              f"{len(summary.cancelled)} cancelled, {left} not attempted; results in {output}")
    else:
        print(f"\n{done} of {summary.total} {unit} done in {seconds:.1f} s, {failed} failed; "
              f"results in {output}")
    for name, reason in summary.failed:
        print(f"  {name}: {reason}")


@contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Python warnings (an unwritable cache, a decoder's complaint) as one "warning:" line each."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {one_line(str(message))}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


@contextmanager
def _sigterm_stops() -> Iterator[None]:
    """While the run lasts, SIGTERM raises ``Terminated`` in the main thread like Ctrl-C does, so
    that the photo in progress cleans up after itself (a staging folder is removed)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return

    def stop(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
