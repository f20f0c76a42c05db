"""Rendering speed: visibility + differentiable interpolation for the ICT skin mesh.

Times, per device and image size, the visibility pass (numba on CPU, PyTorch3D on CUDA),
``rasterize`` (visibility + torch barycentrics), and a full ``render`` with vertex colours and
SH lighting, forward and backward to the vertex positions (what refinement does per step).

    python benchmarks/render_speed.py [--sizes 224 512] [--repeats 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.geometry.face_model import SKIN_POLYGONS, load_face_model  # noqa: E402
from core.geometry.params import MODEL_TO_CAMERA, Camera  # noqa: E402
from core.geometry.rendering import ambient_sh, project, rasterize, render, visible_faces  # noqa: E402

ICT_DEFAULT = ROOT.parent / "shared" / "ict-facekit" / "ICT-FaceKit-master.zip"
DISTANCE_M = 1.0  # the skin mesh (~0.34 m tall) fills ~90% of a 20 degree field of view


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn()`` in milliseconds, after one warm-up call (JIT, CUDA init)."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def bench(verts_model: np.ndarray, faces_np: np.ndarray, size: int, device: torch.device, repeats: int):
    camera = Camera.default_for(size, size)
    verts_cam = torch.tensor(verts_model @ MODEL_TO_CAMERA.T + [0, 0, DISTANCE_M], dtype=torch.float32,
                             device=device)
    faces = torch.tensor(faces_np, dtype=torch.long, device=device)
    colors = torch.full_like(verts_cam, 0.6)
    sh = torch.tensor(ambient_sh(), dtype=torch.float32, device=device)
    target = torch.rand(size, size, 3, device=device)
    screen = project(verts_cam, camera)

    def forward():
        verts = verts_cam.clone().requires_grad_(True)
        out = render(verts, faces, camera, vertex_colors=colors, sh=sh)
        return (out.image - target).square().mean()

    def forward_backward():
        forward().backward()

    with torch.no_grad():
        coverage = float(rasterize(screen, faces, size, size).mask.float().mean())
    return {
        "visibility": timed(lambda: visible_faces(screen, faces, size, size), device, repeats),
        "rasterize": timed(lambda: rasterize(screen, faces, size, size), device, repeats),
        "render fwd": timed(forward, device, repeats),
        "render fwd+bwd": timed(forward_backward, device, repeats),
        "coverage": coverage,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    model = load_face_model(os.environ.get("LIKENESS_ICT_FACEKIT", ICT_DEFAULT))
    faces, _ = model.triangles(SKIN_POLYGONS)

    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"ICT skin mesh: {len(faces)} triangles, {model.num_vertices} vertices, "
          f"torch threads {torch.get_num_threads()}")
    header = f"{'device':<6} {'backend':<9} {'size':>5} {'cover':>6} {'visib ms':>9} {'raster ms':>10} " \
             f"{'fwd ms':>8} {'fwd+bwd ms':>11}"
    print(header)
    print("-" * len(header))
    for device in devices:
        backend = "pytorch3d" if device.type == "cuda" else "numba"
        for size in args.sizes:
            r = bench(model.neutral, faces, size, device, args.repeats)
            print(f"{device.type:<6} {backend:<9} {size:>5} {r['coverage']:>6.2f} {r['visibility']:>9.2f} "
                  f"{r['rasterize']:>10.2f} {r['render fwd']:>8.2f} {r['render fwd+bwd']:>11.2f}")


if __name__ == "__main__":
    main()
