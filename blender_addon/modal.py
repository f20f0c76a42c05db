"""Long jobs that keep Blender responsive: a ``Task`` run by a ``JobSession`` state machine.

A ``Task`` says what to do: ``prepare(context)`` (main thread: read bpy data, return the work
``fn(progress)`` or raise ``LikenessError`` to refuse with a message) and ``finish(context,
result, progress)`` (main thread, after success: may use bpy freely, returns the messages to
report, and must leave the file as it was when it raises, ``Cancelled`` included).

A ``JobSession`` is the interactive logic of one run, without a window, so tests drive it with
synthetic events::

    RUNNING --Esc / Cancel button--> CANCELLING --job ends--> CANCELLED (nothing built)
    RUNNING --job ends--> FINISHED (finish() built the result) | FAILED (error reported)

The worker thread never touches bpy. On each timer event the job's stage and fraction go to
``WindowManager.likeness_job`` (runtime state, not saved with the file) for the panel. A cancel
requested before the job's result is used wins, even when the job got to the end.

``JobOperator`` is the thin ``bpy.types.Operator`` mixin that runs its ``task_type`` in a session:
``invoke`` starts it
with a window timer, ``modal`` forwards the events. In background mode (``blender --background``,
the bpy module) timers never fire, so ``invoke`` falls through to ``execute``, which runs the same
work synchronously. Neither sets ``REGISTER``: Repeat Last and Adjust Last Operation would run
the work synchronously again, freezing Blender.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import bpy

from ..core.errors import Cancelled
from ..core.progress import Progress
from .jobs import BackgroundJob, error_message, progress_text, stage_printer

TIMER_STEP_S = 0.1
Report = Callable[[set, str], None]  # Operator.report
Messages = list[tuple[str, str]]  # (level, text), e.g. ("INFO", "Head reconstructed")


class Task(Protocol):
    label: str
    dependency_hint: bool  # errors about missing packages point to Install Dependencies

    def prepare(self, context) -> Callable[[Progress], Any]: ...

    def finish(self, context, result, progress: Progress) -> Messages: ...


def job_state(context) -> bpy.types.PropertyGroup:
    return context.window_manager.likeness_job


def redraw_ui(context) -> None:
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type in {"VIEW_3D", "PREFERENCES"}:
                area.tag_redraw()


class JobSession:
    """One interactive run of ``task``; ``report`` shows messages (an operator's ``report``)."""

    def __init__(self, task: Task, report: Report):
        self.task, self.report = task, report
        self.job: BackgroundJob | None = None
        self.outcome = ""  # "", then "FINISHED", "FAILED" or "CANCELLED"

    def start(self, context) -> bool:
        """Prepare in the main thread and start the worker; False (reported) when refused."""
        try:
            work = self.task.prepare(context)
        except Exception as exc:
            self._fail(exc)
            return False
        self.job = BackgroundJob(work, name=self.task.label).start()
        state = job_state(context)
        state.running, state.cancel_requested = True, False
        state.label, state.text, state.fraction = self.task.label, "Starting", -1.0
        return True

    def on_event(self, context, event_type: str, event_value: str = "NOTHING") -> set[str]:
        """Handle one window event; returns what ``Operator.modal`` returns."""
        state = job_state(context)
        if (event_type == "ESC" and event_value == "PRESS" or state.cancel_requested) \
                and not self.job.progress.cancelled:
            self.job.cancel()
            state.text = "Cancelling"
        if event_type != "TIMER":
            return {"PASS_THROUGH"}
        if not self.job.progress.cancelled:
            stage, state.fraction = self.job.snapshot()
            state.text = progress_text(stage, state.fraction)
        redraw_ui(context)
        if not self.job.done:
            return {"PASS_THROUGH"}
        self.stop(context)
        return self._conclude(context, self.job)

    def stop(self, context) -> None:
        """Blender ends the operator (a file is loaded, Blender quits) or the job is over."""
        if self.job is not None and not self.job.done:
            self.job.cancel()  # the daemon thread ends at its next check; its result is dropped
        state = job_state(context)
        state.running, state.cancel_requested = False, False
        redraw_ui(context)

    def run_here(self, context) -> set[str]:
        """The whole job in the calling thread (background mode, scripts): the same outcomes."""
        try:
            work = self.task.prepare(context)
        except Exception as exc:
            return self._fail(exc)
        job = BackgroundJob(work, name=self.task.label, callback=stage_printer(self.task.label))
        job.run_here()
        return self._conclude(context, job)

    def _conclude(self, context, job: BackgroundJob) -> set[str]:
        if job.progress.cancelled or isinstance(job.error, Cancelled):
            return self._cancelled()
        if job.error is not None:
            return self._fail(job.error)
        try:
            messages = self.task.finish(context, job.result, job.progress)
        except Cancelled:
            return self._cancelled()
        except Exception as exc:  # e.g. building the objects failed: they were removed again
            return self._fail(exc)
        self.outcome = "FINISHED"
        for level, text in messages:
            self.report({level}, text)
        return {"FINISHED"}

    def _cancelled(self) -> set[str]:
        self.outcome = "CANCELLED"
        self.report({"WARNING"}, f"{self.task.label}: cancelled; nothing was changed")
        return {"CANCELLED"}

    def _fail(self, exc: BaseException) -> set[str]:
        self.outcome = "FAILED"
        self.report({"ERROR"}, error_message(exc, dependency_hint=self.task.dependency_hint))
        return {"CANCELLED"}


class JobOperator:
    """Mixin for ``bpy.types.Operator`` subclasses: runs a fresh ``task_type()`` per call."""

    task_type: type
    _session: JobSession | None = None
    _timer = None

    @classmethod
    def poll(cls, context):
        return not job_state(context).running

    def execute(self, context):
        return JobSession(self.task_type(), self.report).run_here(context)

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        self._session = JobSession(self.task_type(), self.report)
        if not self._session.start(context):
            return {"CANCELLED"}
        self._timer = context.window_manager.event_timer_add(TIMER_STEP_S, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        result = self._session.on_event(context, event.type, event.value)
        if result != {"PASS_THROUGH"}:
            self._remove_timer(context)
        return result

    def cancel(self, context):
        self._session.stop(context)
        self._remove_timer(context)

    def _remove_timer(self, context) -> None:
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
