"""Rendering: coverage, barycentrics, gradients, depth order, the real ICT mesh, PyTorch3D parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from core.errors import SettingsError
from core.geometry.face_model import FACE_POLYGONS
from core.geometry.params import MODEL_TO_CAMERA, Camera
from core.geometry.rendering import (
    ambient_sh,
    interpolate,
    interpolate_corners,
    project,
    rasterize,
    rasterize_uv,
    render,
    sample_texture,
    select_device,
    sh_basis,
    shade,
    vertex_normals,
    visible_faces,
)


def pixel_centres(height: int, width: int) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([cols + 0.5, rows + 0.5], axis=-1)


def inside_triangle(points: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Half-plane test, written independently of the rasteriser (either winding)."""
    signs = []
    for k in range(3):
        a, b = tri[k], tri[(k + 1) % 3]
        signs.append((b[0] - a[0]) * (points[..., 1] - a[1]) - (b[1] - a[1]) * (points[..., 0] - a[0]))
    signs = np.stack(signs)
    return (signs >= 0).all(0) | (signs <= 0).all(0)


@pytest.fixture(scope="module")
def face(face_model):
    """The ICT face mesh, frontal, 0.9 m from a 20 degree camera."""
    faces, uv_ids = face_model.triangles(FACE_POLYGONS)
    verts_cam = torch.tensor(face_model.neutral @ MODEL_TO_CAMERA.T + [0.0, 0.0, 0.9], dtype=torch.float32)
    uv_corners = torch.tensor(face_model.uvs[uv_ids], dtype=torch.float32)
    return verts_cam, torch.tensor(faces, dtype=torch.long), uv_corners


# --------------------------------------------------------------------------------------------
# Single triangles


def test_single_triangle_coverage_and_barycentrics():
    tri = np.array([[2.2, 1.7, 2.0], [13.3, 3.1, 2.0], [4.6, 12.8, 2.0]])
    frags = rasterize(torch.tensor(tri, dtype=torch.float32), torch.tensor([[0, 1, 2]]), 16, 18)
    centres = pixel_centres(16, 18)
    expected = inside_triangle(centres, tri[:, :2])
    assert expected.sum() > 40
    np.testing.assert_array_equal(frags.mask.numpy(), expected)
    np.testing.assert_array_equal(frags.face_id.numpy(), np.where(expected, 0, -1))

    bary = frags.bary.numpy()
    assert np.all(bary[expected] >= -1e-6)
    np.testing.assert_allclose(bary[expected].sum(-1), 1.0, atol=1e-5)
    # Constant depth: barycentrics are affine, so they reproduce the pixel centre.
    np.testing.assert_allclose(bary[expected] @ tri[:, :2], centres[expected], atol=1e-4)
    np.testing.assert_allclose(frags.depth.numpy()[expected], 2.0, rtol=1e-6)
    assert np.all(bary[~expected] == 0) and np.all(frags.depth.numpy()[~expected] == 0)


def test_perspective_correct_barycentrics_hit_the_pixel_ray():
    # A slanted triangle: the bary-weighted 3D point must project onto the pixel centre.
    verts_cam = torch.tensor([[-0.3, -0.2, 1.0], [0.4, -0.1, 2.5], [0.0, 0.35, 1.6]], dtype=torch.float64)
    camera = Camera(focal=40.0, cx=16.0, cy=16.0, width=32, height=32)
    frags = rasterize(project(verts_cam, camera), torch.tensor([[0, 1, 2]]), 32, 32)
    mask = frags.mask.numpy()
    points = frags.bary.numpy()[mask] @ verts_cam.numpy()
    uv = camera.project(points)
    np.testing.assert_allclose(uv, pixel_centres(32, 32)[mask], atol=1e-9)
    np.testing.assert_allclose(frags.depth.numpy()[mask], points[:, 2], rtol=1e-12)


def test_nearer_triangle_wins_in_either_order():
    near = [[1.1, 1.2, 1.0], [15.3, 1.1, 1.0], [1.2, 15.3, 1.0]]
    far = [[2.1, 2.2, 3.0], [15.2, 15.3, 3.0], [2.2, 15.1, 3.0]]
    verts = torch.tensor(near + far)
    for faces in ([[0, 1, 2], [3, 4, 5]], [[3, 4, 5], [0, 1, 2]]):
        frags = rasterize(verts, torch.tensor(faces), 16, 16)
        near_id = faces.index([0, 1, 2])
        ids = frags.face_id.numpy()
        covered_by_near = inside_triangle(pixel_centres(16, 16), np.array(near)[:, :2])
        assert np.all(ids[covered_by_near] == near_id)
        assert np.any(ids == 1 - near_id)  # the far triangle still shows where uncovered
        np.testing.assert_allclose(frags.depth.numpy()[ids == near_id], 1.0, rtol=1e-6)
        np.testing.assert_allclose(frags.depth.numpy()[ids == 1 - near_id], 3.0, rtol=1e-6)


def test_triangles_behind_the_camera_are_dropped():
    verts = torch.tensor([[1.0, 1.0, -1.0], [15.0, 1.0, 1.0], [1.0, 15.0, 1.0]])
    assert not rasterize(verts, torch.tensor([[0, 1, 2]]), 16, 16).mask.any()


# --------------------------------------------------------------------------------------------
# Gradients


def test_gradcheck_barycentrics_depth_and_interpolation():
    verts = torch.tensor(
        [[1.3, 1.1, 2.0], [9.6, 2.2, 2.6], [2.4, 8.7, 1.7], [9.1, 9.4, 2.2]], dtype=torch.float64
    )
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    attributes = torch.rand(4, 2, dtype=torch.float64)
    # Keep pixel centres away from edges so that finite differences never change coverage.
    frags = rasterize(verts, faces, 11, 11)
    covered = frags.bary[frags.mask]
    assert covered.min() > 1e-3 and frags.mask.sum() > 30

    weights = torch.rand(3, 11, 11, 3, dtype=torch.float64)

    def fn(v, attr):  # random projections of every output: cheap to check, every pixel involved
        f = rasterize(v, faces, 11, 11)
        interpolated = interpolate(f, attr, faces) * weights[2, ..., :2]
        return (f.bary * weights[0]).sum(), (f.depth * weights[1, ..., 0]).sum(), interpolated.sum()

    assert torch.autograd.gradcheck(fn, (verts.requires_grad_(), attributes.requires_grad_()))


def test_gradcheck_full_render():
    verts_cam = torch.tensor(
        [[-0.11, -0.09, 1.0], [0.12, -0.1, 1.1], [-0.1, 0.13, 0.95], [0.1, 0.11, 1.05]], dtype=torch.float64
    )
    faces = torch.tensor([[0, 2, 1], [1, 2, 3]])
    camera = Camera(focal=30.0, cx=6.0, cy=6.0, width=12, height=12)
    colors = torch.rand(4, 3, dtype=torch.float64)
    sh = torch.tensor(ambient_sh(0.7)) + 0.1 * torch.rand(9, 3, dtype=torch.float64)
    out = render(verts_cam, faces, camera, vertex_colors=colors, sh=sh)
    assert out.fragments.bary[out.mask].min() > 1e-3

    weights = torch.rand(12, 12, 3, dtype=torch.float64)

    def fn(v, c, s):  # a few weighted sums of the image: cheap to check, every pixel involved
        return (render(v, faces, camera, vertex_colors=c, sh=s).image * weights).sum((0, 1))

    inputs = (verts_cam.requires_grad_(), colors.requires_grad_(), sh.requires_grad_())
    assert torch.autograd.gradcheck(fn, inputs)


# --------------------------------------------------------------------------------------------
# The real ICT face


def test_ict_face_frontal_render_is_face_shaped(face):
    verts_cam, faces, _ = face
    camera = Camera.default_for(224, 224)
    out = render(verts_cam, faces, camera, sh=torch.tensor(ambient_sh()))
    mask = out.mask.numpy()
    assert 0.25 < mask.mean() < 0.6
    rows, cols = np.nonzero(mask)
    # Taller than wide, centred horizontally, left-right symmetric.
    assert 1.1 < np.ptp(rows) / np.ptp(cols) < 2.0
    assert abs(cols.mean() - 112) < 3
    assert (mask & mask[:, ::-1]).sum() / (mask | mask[:, ::-1]).sum() > 0.97
    # Watertight apart from the two eye openings (eyeballs are separate meshes), no cracks.
    holes, count = ndimage.label(ndimage.binary_fill_holes(mask) & ~mask)
    assert count == 2
    (r0, c0), (r1, c1) = ndimage.center_of_mass(holes > 0, holes, [1, 2])
    assert abs(r0 - r1) < 2 and abs(c0 + c1 - 224) < 3 and 60 < r0 < 112
    np.testing.assert_allclose(out.image.numpy()[mask], 1.0, atol=1e-5)  # white albedo, unit light

    # Orientation: visible faces wind negatively on screen and their normals face the camera.
    culled = rasterize(out.verts_screen, faces, 224, 224, cull_backfaces=True)
    assert (culled.face_id == out.fragments.face_id).float().mean() > 0.995
    assert out.normals[out.mask][:, 2].mean() < -0.7


@pytest.mark.parametrize("height,width", [(96, 96), (56, 80)])
def test_numba_matches_pytorch3d_on_the_ict_face(face, height, width):
    from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
    from pytorch3d.structures import Meshes

    verts_cam, faces, _ = face
    screen = project(verts_cam, Camera.default_for(width, height))
    ours = visible_faces(screen, faces, height, width, backend="numba")
    theirs = visible_faces(screen, faces, height, width, backend="pytorch3d")
    covered = (ours >= 0) | (theirs >= 0)
    assert covered.float().mean() > 0.2
    assert (ours == theirs)[covered].float().mean() >= 0.99

    # Our torch barycentrics against PyTorch3D's own (NDC: +x left, +y up, shorter side [-1, 1]).
    scale = 2 / min(height, width)
    u, v, z = screen.unbind(1)
    ndc = torch.stack([(width / 2 - u) * scale, (height / 2 - v) * scale, z], dim=1)
    pix_to_face, _, bary, _ = rasterize_meshes(
        Meshes([ndc], [faces]), image_size=(height, width), faces_per_pixel=1, perspective_correct=True
    )
    same = (pix_to_face[0, ..., 0] == ours) & (ours >= 0)
    frags = rasterize(screen, faces, height, width)
    np.testing.assert_allclose(frags.bary[same].numpy(), bary[0, ..., 0, :][same].numpy(), atol=1e-4)


@pytest.mark.parametrize("backend", ["numba", "pytorch3d"])
def test_backends_agree_on_depth_order_and_culling(backend):
    # No pixel centre on an edge, where the backends' tie rules may differ.
    near = [[1.1, 1.2, 1.0], [23.3, 1.1, 1.0], [1.2, 15.3, 1.0]]  # clockwise on screen: a back face
    far = [[2.1, 2.2, 3.0], [2.2, 15.1, 3.0], [23.2, 15.3, 3.0]]  # anticlockwise: faces the camera
    verts = torch.tensor(near + far)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    ids = visible_faces(verts, faces, 16, 24, backend=backend).numpy()
    centres = pixel_centres(16, 24)
    near_mask = inside_triangle(centres, np.array(near)[:, :2])
    far_only = inside_triangle(centres, np.array(far)[:, :2]) & ~near_mask
    np.testing.assert_array_equal(ids[near_mask], 0)
    np.testing.assert_array_equal(ids[far_only], 1)
    culled = visible_faces(verts, faces, 16, 24, cull_backfaces=True, backend=backend).numpy()
    np.testing.assert_array_equal(culled, np.where(inside_triangle(centres, np.array(far)[:, :2]), 1, -1))


def test_rasterize_uv_covers_the_face_island(face):
    _, _, uv_corners = face
    size = 256
    frags = rasterize_uv(uv_corners, size)
    uv = uv_corners.double().numpy()
    e1, e2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    island_texels = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum() * size**2
    assert abs(frags.mask.sum().item() / island_texels - 1) < 0.03  # no overlaps, no gaps
    assert 0.5 < frags.mask.float().mean() < 0.99  # the island fills most of the square, not all

    # Barycentrics reproduce each texel centre's UV (row 0 = top = v 1).
    centres = pixel_centres(size, size)[frags.mask.numpy()] / size
    texel_uv = interpolate_corners(frags, uv_corners).numpy()[frags.mask.numpy()]
    np.testing.assert_allclose(texel_uv[:, 0], centres[:, 0], atol=1e-5)
    np.testing.assert_allclose(texel_uv[:, 1], 1 - centres[:, 1], atol=1e-5)


def test_textured_render_samples_the_texture(face):
    verts_cam, faces, uv_corners = face
    texture = torch.zeros(3, 64, 64)
    texture[0] = torch.linspace(0, 1, 64)[None, :]  # red follows u
    out = render(verts_cam, faces, Camera.default_for(64, 64), uv_corners=uv_corners, texture=texture)
    red = out.image[..., 0].numpy()
    mask = out.mask.numpy()
    assert np.all(red[~mask] == 0)
    uv = interpolate_corners(out.fragments, uv_corners).numpy()[mask]
    np.testing.assert_allclose(red[mask], np.clip(uv[:, 0] * 64 - 0.5, 0, 63) / 63, atol=1e-4)


# --------------------------------------------------------------------------------------------
# Interpolation, textures, normals, lighting


def test_interpolate_corners_matches_interpolate():
    verts = torch.tensor([[1.0, 1.0, 1.0], [12.0, 2.0, 1.5], [3.0, 11.0, 2.0], [13.0, 12.0, 1.0]])
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    frags = rasterize(verts, faces, 14, 14)
    attributes = torch.rand(4, 5)
    a = interpolate(frags, attributes, faces)
    b = interpolate_corners(frags, attributes[faces])
    assert a.shape == (14, 14, 5)
    torch.testing.assert_close(a, b)
    assert torch.all(a[~frags.mask] == 0)


def test_sample_texture_uv_convention_and_layouts():
    size = 8
    hwc = torch.rand(size, size, 3)
    centres = torch.tensor(pixel_centres(size, size), dtype=torch.float32) / size
    uv = torch.stack([centres[..., 0], 1 - centres[..., 1]], dim=-1)  # texel centres, v up
    torch.testing.assert_close(sample_texture(hwc, uv), hwc)
    torch.testing.assert_close(sample_texture(hwc.permute(2, 0, 1), uv), hwc)
    top = sample_texture(hwc, torch.tensor([[[0.5 / size, 1 - 0.5 / size]]]))
    torch.testing.assert_close(top[0, 0], hwc[0, 0])  # v near 1 is texture row 0


def test_vertex_normals_of_an_octahedron_point_outwards():
    corners = torch.cat([torch.eye(3), -torch.eye(3)])  # +x +y +z -x -y -z
    faces = []
    for sx, sy, sz in np.ndindex(2, 2, 2):  # one triangle per octant, wound outwards
        tri = [3 * sx, 1 + 3 * sy, 2 + 3 * sz]
        faces.append(tri if (sx + sy + sz) % 2 == 0 else tri[::-1])
    torch.testing.assert_close(vertex_normals(corners, torch.tensor(faces)), corners)


def test_ict_vertex_normals_face_forward(face_model):
    faces, _ = face_model.triangles(FACE_POLYGONS)
    verts = torch.tensor(face_model.neutral)
    normals = vertex_normals(verts, torch.tensor(faces, dtype=torch.long))
    used = torch.tensor(np.unique(faces))
    torch.testing.assert_close(normals[used].norm(dim=-1), torch.ones(len(used)))
    nose_tip = verts[used, 2].argmax()
    assert normals[used][nose_tip, 2] > 0.9  # model space: +z towards the viewer


def test_sh_dc_band_gives_constant_shading(face):
    normals = torch.nn.functional.normalize(torch.randn(500, 3), dim=-1)
    sh = torch.zeros(9, 3)
    sh[0] = torch.tensor([0.3, 0.5, 0.9])
    shaded = shade(normals, sh)
    torch.testing.assert_close(shaded, (sh[0] * sh_basis(normals)[:1, 0]).expand(500, 3))
    torch.testing.assert_close(shade(normals, ambient_sh(0.8)), torch.full((500, 3), 0.8))

    verts_cam, faces, _ = face
    out = render(verts_cam, faces, Camera.default_for(64, 64), sh=sh)
    colours = out.image[out.mask]
    assert torch.all(colours.std(dim=0) < 1e-6)


def test_sh_first_band_is_linear_in_the_normal():
    normals = torch.nn.functional.normalize(torch.randn(100, 3), dim=-1)
    for axis in range(3):
        sh = torch.zeros(9, 3)
        sh[1 + axis] = 1.0
        np.testing.assert_allclose(shade(normals, sh)[:, 0], 2 * np.pi / 3 * np.sqrt(3 / (4 * np.pi))
                                   * normals[:, axis], rtol=1e-5)


def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(SettingsError, match="Unknown device"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(SettingsError, match="no CUDA GPU"):
            select_device("cuda")
