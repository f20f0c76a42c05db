"""A modal operator base that runs a ``BackgroundJob`` and keeps Blender responsive.

The worker thread never touches bpy. A window-manager timer polls the job; its stage and
fraction go to ``WindowManager.likeness_job`` (runtime state, not saved with the file) for the
panel's progress bar; Esc or the Cancel button cancel it through ``Progress.cancel()``. When the
job ends, ``finish()`` runs in the main thread and may use bpy freely.

In background mode (``blender --background``, the bpy module) timers never fire, so ``invoke``
falls through to ``execute``, which runs the same work synchronously.
"""

from __future__ import annotations

import bpy

from ..core.progress import Progress
from .jobs import BackgroundJob, error_message, stage_printer

TIMER_STEP_S = 0.1


def job_state(context) -> bpy.types.PropertyGroup:
    return context.window_manager.likeness_job


def redraw_ui(context) -> None:
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type in {"VIEW_3D", "PREFERENCES"}:
                area.tag_redraw()


class JobOperator:
    """Mixin for ``bpy.types.Operator`` subclasses. Subclasses implement

    - ``prepare(context) -> fn(progress)`` (main thread: read bpy data, return the work or raise
      LikenessError to refuse with a message),
    - ``finish(context, result) -> set`` (main thread, after success).
    """

    _job: BackgroundJob | None = None
    _timer = None

    @classmethod
    def poll(cls, context):
        return not job_state(context).running

    def prepare(self, context):
        raise NotImplementedError

    def finish(self, context, result) -> set[str]:
        raise NotImplementedError

    def execute(self, context):
        work = self._prepare_or_report(context)
        if work is None:
            return {"CANCELLED"}
        try:
            result = work(Progress(callback=stage_printer(self.bl_label)))
        except Exception as exc:  # typed errors carry what to do; show them as they are
            self.report({"ERROR"}, error_message(exc))
            return {"CANCELLED"}
        return self._finish_or_report(context, result)

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        work = self._prepare_or_report(context)
        if work is None:
            return {"CANCELLED"}
        self._job = BackgroundJob(work, name=self.bl_idname).start()
        state = job_state(context)
        state.running, state.cancel_requested = True, False
        state.label, state.stage, state.fraction = self.bl_label, "starting", -1.0
        self._timer = context.window_manager.event_timer_add(TIMER_STEP_S, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        state = job_state(context)
        if event.type == "ESC" and event.value == "PRESS" or state.cancel_requested:
            self._job.cancel()
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        state.stage, state.fraction = self._job.snapshot()
        redraw_ui(context)
        if not self._job.done:
            return {"PASS_THROUGH"}
        job = self._job
        self._stop(context)
        if job.error is not None:
            self.report({"WARNING" if job.progress.cancelled else "ERROR"}, error_message(job.error))
            return {"CANCELLED"}
        return self._finish_or_report(context, job.result)

    def cancel(self, context):
        # Blender ends the operator (e.g. a file is loaded): stop the worker and forget it.
        if self._job is not None:
            self._job.cancel()
        self._stop(context)

    def _prepare_or_report(self, context):
        try:
            return self.prepare(context)
        except Exception as exc:
            self.report({"ERROR"}, error_message(exc))
            return None

    def _finish_or_report(self, context, result) -> set[str]:
        try:
            return self.finish(context, result)
        except Exception as exc:  # e.g. building the objects failed: they were removed again
            self.report({"ERROR"}, error_message(exc))
            return {"CANCELLED"}

    def _stop(self, context) -> None:
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        self._job = None
        state = job_state(context)
        state.running, state.cancel_requested = False, False
        redraw_ui(context)

