"""Likeness core: one photo -> fitted, textured, animatable ICT-FaceKit head. Never imports bpy.

Public API::

    from core import reconstruct
    rec = reconstruct("photo.jpg", preset="balanced", device="auto")
    rec.save("out/")
"""

from .errors import (
    AssetError,
    Cancelled,
    DependencyError,
    FaceSelectionError,
    ImageError,
    LikenessError,
    NoFaceError,
)
from .progress import Progress
from .reconstruction import DetailMaps, Reconstruction


def reconstruct(*args, **kwargs):
    """See core.pipeline.reconstruct (imported lazily: torch and MediaPipe load only when used)."""
    from .pipeline import reconstruct as _reconstruct

    return _reconstruct(*args, **kwargs)


__all__ = ["reconstruct", "Reconstruction", "DetailMaps", "Progress", "LikenessError", "ImageError",
           "NoFaceError", "FaceSelectionError", "AssetError", "DependencyError", "Cancelled"]
