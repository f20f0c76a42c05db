"""Likeness operators: reconstruct a head (modal, worker thread) and cancel the running job."""

from . import reconstruct


def register() -> None:
    reconstruct.register()


def unregister() -> None:
    reconstruct.unregister()
