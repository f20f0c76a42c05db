"""Likeness core: one photo (or several of one person) -> fitted, textured, animatable ICT-FaceKit
head. Never imports bpy.

Public API::

    from core import reconstruct
    rec = reconstruct("photo.jpg", preset="balanced", device="auto")
    rec.save("out/")
    rec = reconstruct(["front.jpg", "left.jpg", "profile.jpg"])   # one head; rec.photos, rec.dropped
"""

from .errors import (
    AssetError,
    Cancelled,
    DependencyError,
    FaceSelectionError,
    ImageError,
    LikenessError,
    NoFaceError,
    PhotoSetError,
)
from .progress import Progress
from .reconstruction import DetailMaps, DroppedPhoto, PhotoFit, Reconstruction


def reconstruct(*args, **kwargs):
    """See core.pipeline.reconstruct (imported lazily: torch and MediaPipe load only when used)."""
    from .pipeline import reconstruct as _reconstruct

    return _reconstruct(*args, **kwargs)


__all__ = ["reconstruct", "Reconstruction", "PhotoFit", "DroppedPhoto", "DetailMaps", "Progress",
           "LikenessError", "ImageError", "NoFaceError", "FaceSelectionError", "PhotoSetError", "AssetError",
           "DependencyError", "Cancelled"]
