"""Tiny open_clip architectures for tests: random weights, built in milliseconds, no network.

``register_tiny_configs(folder)`` writes their JSON configs into ``folder`` and registers them with
open_clip under the names of ``TINY_CONFIGS`` (use from a module-scoped fixture).
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip

TEXT_CFG = {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}
TINY_CONFIGS = {
    "likeness-tiny-vit": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 32, "head_width": 16, "layers": 4},
        "text_cfg": TEXT_CFG,
    },
    # ViT-B-32's depth, for pipeline Settings (they use ClipSettings' default layers, up to 11)
    "likeness-tiny-vit12": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 32, "head_width": 16, "layers": 12},
        "text_cfg": TEXT_CFG,
    },
    "likeness-tiny-rn": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "patch_size": None},
        "text_cfg": TEXT_CFG,
    },
}


def register_tiny_configs(folder: Path) -> None:
    for name, cfg in TINY_CONFIGS.items():
        (Path(folder) / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)
