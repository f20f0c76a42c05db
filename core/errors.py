"""Typed errors: every failure a user can cause or meet has its own class and a message that
says what to do. The CLI and the Blender operators show ``str(error)`` as it is."""


class LikenessError(Exception):
    """Base class of every error Likeness raises on purpose."""


class ImageError(LikenessError):
    """The input is missing, unreadable, not an image, truncated, or of an unusable size."""


class NoFaceError(LikenessError):
    """No face was found in the image."""


class FaceSelectionError(LikenessError):
    """Several faces were found and the requested one does not exist."""


class AssetError(LikenessError):
    """A required asset (ICT-FaceKit, model weights) is missing, corrupt or cannot be fetched."""


class DependencyError(LikenessError):
    """An optional Python package needed for the requested feature is not installed."""


class Cancelled(LikenessError):
    """The run was cancelled by the user; nothing was written."""


class PhotoSetError(LikenessError):
    """None of the photos given for one person could be used (each one's reason is listed)."""


class SettingsError(LikenessError):
    """A setting cannot work here (an unknown or unavailable device, an impossible value)."""


class OutputError(LikenessError):
    """The output folder cannot be written, is a file, or another process is writing it."""
