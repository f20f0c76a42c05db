"""The CUDA path against the CPU path: device choice, rasteriser, differentiable render, CLIP
features, and whole reconstructions. Marked ``cuda``; each test skips cleanly without a CUDA GPU
(CI has none), and ``benchmarks/gpu_check.sh`` runs them on a lent GPU machine."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from clip_configs import register_tiny_configs
from conftest import face_photo

from core.geometry.face_model import SKIN_POLYGONS
from core.geometry.params import MODEL_TO_CAMERA, Camera
from core.geometry.rendering import ambient_sh, project, rasterize, render, select_device, visible_faces
from core.pipeline import preset_settings

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none visible to PyTorch)"),
]
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture(scope="module")
def head(face_model):
    """The ICT skin surface 0.6 m in front of the camera, turned 20 degrees: (verts_cam, faces)."""
    faces, _ = face_model.triangles(SKIN_POLYGONS)
    yaw = np.deg2rad(20.0)
    turn = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    verts = face_model.neutral.astype(np.float64) @ (MODEL_TO_CAMERA @ turn).T + [0, 0, 0.6]
    return torch.tensor(verts, dtype=torch.float32), torch.from_numpy(faces.astype(np.int64))


def test_auto_device_is_the_gpu():
    assert select_device("auto").type == "cuda"
    assert select_device("cuda").type == "cuda"


@pytest.mark.parametrize("height,width", [(224, 224), (384, 512)])
def test_cuda_rasteriser_matches_cpu_face_ids_and_barycentrics(head, height, width):
    verts, faces = head
    screen = project(verts, Camera.default_for(width, height))
    cpu = rasterize(screen, faces, height, width)
    gpu = rasterize(screen.to(CUDA), faces.to(CUDA), height, width)
    assert gpu.face_id.device.type == "cuda"
    covered = cpu.mask | gpu.mask.cpu()
    assert covered.float().mean() > 0.15
    same = (cpu.face_id == gpu.face_id.cpu()) & cpu.mask
    assert same.sum() >= 0.99 * covered.sum()
    np.testing.assert_allclose(gpu.bary.cpu()[same].numpy(), cpu.bary[same].numpy(), atol=1e-4)
    np.testing.assert_allclose(gpu.depth.cpu()[same].numpy(), cpu.depth[same].numpy(), rtol=1e-5)
    # Culling agrees as well: the PyTorch3D pass is what "auto" picks for CUDA tensors.
    culled = visible_faces(screen.to(CUDA), faces.to(CUDA), height, width, cull_backfaces=True).cpu()
    assert (culled == visible_faces(screen, faces, height, width, cull_backfaces=True)).float().mean() > 0.99


def test_cuda_render_and_gradients_match_cpu(head):
    verts, faces = head
    sh = torch.tensor(ambient_sh(), dtype=torch.float32)
    sh[1] += 0.3  # some directional light, so normals matter
    camera = Camera.default_for(160, 160)
    colours = torch.rand(verts.shape[0], 3, generator=torch.Generator().manual_seed(0))

    def image_and_grad(device: torch.device):
        v = verts.to(device).requires_grad_(True)
        out = render(v, faces.to(device), camera, vertex_colors=colours.to(device), sh=sh.to(device))
        (out.image ** 2).sum().backward()
        return out.image.detach().cpu(), v.grad.cpu()

    img_cpu, grad_cpu = image_and_grad(CPU)
    img_gpu, grad_gpu = image_and_grad(CUDA)
    assert (img_cpu - img_gpu).abs().gt(1e-3).float().mean() < 0.01  # edge pixels may differ
    cosine = torch.nn.functional.cosine_similarity(grad_cpu.ravel(), grad_gpu.ravel(), dim=0)
    assert cosine > 0.99


def test_clip_features_on_cuda_match_cpu(tmp_path):
    from core.displacement.clip_features import ClipFeatureExtractor, ClipSettings

    register_tiny_configs(tmp_path)
    settings = ClipSettings("likeness-tiny-vit", pretrained=None, layers=(0, 2, 3))
    torch.manual_seed(0)
    cpu = ClipFeatureExtractor(settings, CPU)
    gpu = ClipFeatureExtractor(settings, CUDA)
    gpu.visual.load_state_dict(cpu.visual.state_dict())
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    for a, b in zip(cpu.features(images), gpu.features(images.to(CUDA))):
        np.testing.assert_allclose(b.cpu().numpy(), a.numpy(), atol=2e-4)


@pytest.fixture(scope="module")
def fast_pair(pipeline):
    photo = face_photo("000002.jpg")
    return [pipeline.run(photo, preset_settings("fast", device=d)) for d in ("cpu", "cuda")]


def test_fast_reconstruction_on_cuda_agrees_with_cpu(fast_pair):
    cpu, gpu = fast_pair
    size = np.ptp(cpu.landmarks68_2d, axis=0).max()
    error = np.linalg.norm(cpu.landmarks68_2d - gpu.landmarks68_2d, axis=1)
    assert np.median(error) < 0.02 * size  # same fit up to optimiser noise
    assert np.isfinite(gpu.metrics["photometric_after"]) and gpu.metrics["photometric_after"] <= (
        1.1 * cpu.metrics["photometric_after"]
    )


def test_quality_detail_runs_on_cuda(pipeline):
    """The quality preset's detail stage on the GPU: ViT-B-32 with random weights (none exist here)."""
    settings = preset_settings("quality", device="cuda", clip_pretrained=None, detail_iterations=20)
    settings = replace(settings, refinement=replace(settings.refinement, iterations=30))
    rec = pipeline.run(face_photo("000002.jpg"), settings)
    assert rec.detail is not None
    disp = rec.detail.displacement_mm
    assert np.isfinite(disp).all() and np.abs(disp).max() > 0
    assert rec.timings["detail"] > 0
