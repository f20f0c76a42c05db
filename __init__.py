"""Likeness: one face photo -> a fitted, textured, animatable ICT-FaceKit head in Blender.

This folder is the Blender extension (see blender_manifest.toml); Blender imports it as
``bl_ext.<repo>.likeness`` and calls ``register()``. Its subpackages import ``core`` relatively,
so the same ``core`` also works as a top-level package for plain Python (``python -m core``).
Nothing is imported here until ``register()``, so importing this package outside Blender is
harmless.
"""


def register() -> None:
    from . import blender_addon, operators

    blender_addon.register()
    operators.register()


def unregister() -> None:
    from . import blender_addon, operators

    operators.unregister()
    blender_addon.unregister()
