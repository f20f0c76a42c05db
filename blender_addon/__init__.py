"""Blender side of Likeness: preferences, sidebar panel, dependency installer, scene building.

A thin layer over ``core``: the operators gather settings in the main thread, run the core in a
worker thread, and build Blender objects from the finished ``Reconstruction``.
"""

# The extension's module name (``bl_ext.<repo>.likeness`` when installed as an extension): the
# key of its preferences and of its user folder.
ADDON_ID = __package__.rpartition(".")[0]

from . import panel, preferences, properties  # noqa: E402 - these read ADDON_ID

_MODULES = (properties, preferences, panel)


def register() -> None:
    for module in _MODULES:
        module.register()


def unregister() -> None:
    for module in reversed(_MODULES):
        module.unregister()
