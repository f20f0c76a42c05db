"""Likeness operators: reconstruct a head (modal, worker thread), cancel the running job, and the
list of more photos of the same person."""

from . import photos, reconstruct


def register() -> None:
    photos.register()
    reconstruct.register()


def unregister() -> None:
    reconstruct.unregister()
    photos.unregister()
