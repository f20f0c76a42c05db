"""Texture refinement by a graph-convolutional network over the mesh (after Lin et al., "Towards
High-Fidelity 3D Face Reconstruction from In-the-Wild Images Using Graph Convolutional Networks").

The coarse skin albedo of ``build_texture`` is sampled at the skin vertices; a Chebyshev graph
network on the ICT skin topology, conditioned on the photo's identity embedding, predicts a
per-vertex colour correction. Its weights are optimised for this person's photos (one or several
views, each with its own pose, camera and light), against
- a pixel loss: each view's render (vertex albedo x SH shading) against its photo on visible, trusted
  skin pixels; each view's light is fitted once to the coarse albedo on those pixels (the texture
  stage de-lit with its own light, whose scale and colour differ from refinement's), so the network
  corrects what the coarse albedo gets wrong, not the light;
- an identity loss: cosine distance between face-recognition embeddings (core.appearance.identity) of
  each view's render (the head alone, on grey: it has to carry the likeness without the photo's hair and
  background around it, but with eyes, teeth and mouth as users see them) and of its photo (the
  geometry's own identity loss, at turned views too, is refinement's likeness pass);
- a per-vertex loss keeping the colour of vertices no photo showed (or showed through untrusted
  pixels: hair, glasses, background) near the coarse one.
The pixel and identity losses are averaged over the views; the network is conditioned on the views'
mean embedding.
Geometry and light are fixed here, so the skin mesh is rasterised once and a render is a sparse
matrix product. The correction (a smooth field: the network's colour) is interpolated into the UV
atlas and added to the coarse albedo, whose high frequencies (the photo's detail where it was
trusted, the completion elsewhere) stay as they were.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..fitting.detection import FaceDetection
from ..fitting.losses import photometric_loss
from ..fitting.refinement import Crop
from ..geometry.face_model import SKIN_POLYGONS, FaceModel, triangulate
from ..geometry.params import FaceParams
from ..geometry.parts import (
    PLAIN_COLOURS,
    eyeball_vertex_colours,
    iris_colour,
    linear_to_srgb8,
    polygon_kinds,
    shown_polygons,
)
from ..geometry.rendering import cpu_threads, project, rasterize, sh_basis, vertex_normals
from ..progress import Progress
from .identity import FaceRecognitionNet, chip_transform, embed, five_points
from .skin_mask import skin_mask
from .texture import TextureResult, UVSurface, push_pull_fill, sample_bilinear

BACKGROUND = 0.5  # grey around the rendered head


@dataclass
class TextureRefinementSettings:
    iterations: int = 40  # 0 switches the stage off
    resolution: int = 224  # render crop side (pixels)
    channels: int = 32
    order: int = 6  # Chebyshev polynomial order K of each graph convolution
    layers: int = 4
    identity_channels: int = 16  # the embedding is projected to this many per-vertex inputs
    lr: float = 1e-3
    pixel_weight: float = 1.0
    identity_weight: float = 1.0
    vertex_weight: float = 10.0


@dataclass
class TextureView:
    """One photo of the person as the refinement sees it."""
    rgb: np.ndarray  # (H, W, 3) uint8
    params: FaceParams  # this photo's pose, expression, camera and light (identity shared)
    detection: FaceDetection
    trusted: np.ndarray | None = None  # (H, W) bool: pixels showing the subject's skin


@dataclass
class TextureRefinementResult:
    albedo: np.ndarray  # (S, 2S, 3) uint8 refined skin atlas
    vertex_albedo: np.ndarray  # (V_skin, 3) float32 the network's colour per skin vertex
    metrics: dict[str, float]  # the losses before/after, pixel and identity averaged over the views
    view_metrics: list[dict[str, float]]  # each view's pixel and identity losses (and the vertex one)


def sparse_matrix(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> Tensor:
    """CSR float32 tensor, duplicates summed (CSR: ~8x faster products than COO on CPU)."""
    csr = scipy.sparse.csr_matrix((values.astype(np.float32), (rows, cols)), shape=shape)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
        warnings.filterwarnings("ignore", "Sparse invariant checks are implicitly disabled")
        return torch.sparse_csr_tensor(torch.from_numpy(csr.indptr.astype(np.int64)),
                                       torch.from_numpy(csr.indices.astype(np.int64)),
                                       torch.from_numpy(csr.data), shape, check_invariants=False)


class _SymmetricProduct(torch.autograd.Function):
    """``matrix @ x`` for a constant symmetric sparse matrix: the gradient is ``matrix @ grad``
    (torch's generic sparse backward is several times slower)."""

    @staticmethod
    def forward(ctx, matrix: Tensor, x: Tensor) -> Tensor:
        ctx.matrix = matrix
        return matrix @ x

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:
        return None, ctx.matrix @ grad


class MeshGraph:
    """The skin mesh as a graph: its scaled normalised Laplacian ``L - I = -D^-1/2 A D^-1/2``
    (eigenvalues in [-1, 1], the domain of Chebyshev polynomials)."""

    def __init__(self, faces: np.ndarray, num_vertices: int):
        edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
        edges = np.unique(np.sort(edges, 1), axis=0)
        rows = np.concatenate([edges[:, 0], edges[:, 1]])
        cols = np.concatenate([edges[:, 1], edges[:, 0]])
        degree = np.bincount(rows, minlength=num_vertices).astype(np.float32)
        inv_sqrt = 1 / np.sqrt(np.maximum(degree, 1))
        values = -inv_sqrt[rows] * inv_sqrt[cols]
        self.num_vertices = num_vertices
        self.laplacian = sparse_matrix(rows, cols, values, (num_vertices, num_vertices))

    @staticmethod
    def of_skin(model: FaceModel) -> MeshGraph:
        faces, _ = model.triangles(SKIN_POLYGONS)
        return MeshGraph(faces, int(faces.max()) + 1)


class ChebConv(nn.Module):
    """Graph convolution sum_k T_k(L) X W_k (Defferrard et al. 2016)."""

    def __init__(self, inputs: int, outputs: int, order: int):
        super().__init__()
        self.order = order
        self.linear = nn.Linear(inputs * order, outputs)

    def forward(self, x: Tensor, laplacian: Tensor) -> Tensor:
        terms = [x]
        if self.order > 1:
            terms.append(_SymmetricProduct.apply(laplacian, x))
        for _ in range(2, self.order):
            terms.append(2 * _SymmetricProduct.apply(laplacian, terms[-1]) - terms[-2])
        return self.linear(torch.cat(terms, 1))


class TextureGCN(nn.Module):
    """Per-vertex colour correction from (coarse colour, neutral position, identity embedding)."""

    def __init__(self, settings: TextureRefinementSettings, embedding_size: int = 128):
        super().__init__()
        c = settings.channels
        self.identity = nn.Linear(embedding_size, settings.identity_channels)
        sizes = [6 + settings.identity_channels] + [c] * (settings.layers - 1) + [3]
        self.convs = nn.ModuleList(ChebConv(a, b, settings.order) for a, b in zip(sizes[:-1], sizes[1:]))
        nn.init.zeros_(self.convs[-1].linear.weight)  # starts as the coarse texture
        nn.init.zeros_(self.convs[-1].linear.bias)

    def forward(self, features: Tensor, embedding: Tensor, laplacian: Tensor) -> Tensor:
        code = self.identity(embedding).expand(len(features), -1)
        x = torch.cat([features, code], 1)
        for i, conv in enumerate(self.convs):
            x = conv(x, laplacian)
            if i < len(self.convs) - 1:
                x = F.elu(x)
        return x


def vertex_uvs(model: FaceModel, num_vertices: int) -> np.ndarray:
    """One atlas UV (V, 2) per skin vertex (vertices on a UV seam take one of theirs)."""
    faces, uv_faces = model.triangles(SKIN_POLYGONS)
    uvs = np.zeros((num_vertices, 2), np.float32)
    uvs[faces.reshape(-1)] = model.atlas_uvs[uv_faces.reshape(-1)]
    return uvs


def sample_atlas(atlas: np.ndarray, uvs: np.ndarray) -> np.ndarray:
    """Bilinear atlas values (N, C) at atlas UVs (N, 2); v = 0 is the bottom row."""
    height, width = atlas.shape[:2]
    pixels = np.stack([uvs[:, 0] * width, (1 - uvs[:, 1]) * height], -1)[None]
    return sample_bilinear(atlas, pixels).reshape(len(uvs), -1)


class _FixedRender:
    """The head seen by the photo's camera in a face crop, rasterised once: a render of per-vertex
    skin albedo is ``pixels @ albedo * shading`` (shading = SH basis at the pixel normals times the
    light of ``fit_light``) over a fixed layer: the eyes, teeth, gums and sockets in their own
    colours (``part_colours``, as users see them) over the grey background."""

    def __init__(self, model: FaceModel, params: FaceParams, crop: Crop, num_vertices: int,
                 part_colours: np.ndarray):
        skin_faces, _ = model.triangles(SKIN_POLYGONS)
        parts_shown = model.polygons[SKIN_POLYGONS:][shown_polygons(model)[SKIN_POLYGONS:]]
        faces = torch.from_numpy(np.concatenate([skin_faces, triangulate(parts_shown)]).astype(np.int64))
        verts = model.vertices(params.identity, params.expression).astype(np.float64)
        verts_cam = torch.from_numpy(params.to_camera(verts))
        frags = rasterize(project(verts_cam, crop.camera(params.camera)), faces, crop.size, crop.size)
        face_id = frags.face_id.reshape(-1)
        is_skin = frags.mask.reshape(-1) & (face_id < len(skin_faces))
        covered = is_skin.nonzero().squeeze(1)
        corner_ids = faces[face_id[covered]]  # (N, 3)
        bary = frags.bary.reshape(-1, 3)[covered].float()
        rows = np.repeat(np.arange(len(covered)), 3)
        self.pixels = sparse_matrix(rows, corner_ids.reshape(-1).numpy(), bary.reshape(-1).numpy(),
                                    (len(covered), num_vertices))
        vertex_normal = vertex_normals(verts_cam, faces)

        def basis_at(ids: Tensor, weights: Tensor) -> Tensor:
            normals = vertex_normal[faces[face_id[ids]]]  # (N, 3, 3)
            return sh_basis(F.normalize((weights.double()[..., None] * normals).sum(1), dim=-1)).float()

        self.basis = basis_at(covered, bary)  # (N, 9)
        self.covered = covered
        self.mask = is_skin.view(frags.mask.shape)
        parts = (frags.mask.reshape(-1) & ~is_skin).nonzero().squeeze(1)
        part_bary = frags.bary.reshape(-1, 3)[parts].float()
        self.part_pixels, self.part_basis = parts, basis_at(parts, part_bary)
        corners = torch.from_numpy(part_colours[faces[face_id[parts]].numpy()])
        self.part_colour = (part_bary[..., None] * corners).sum(1).float()
        self._shade(torch.from_numpy(np.asarray(params.sh, np.float64)).reshape(9, 3))

    def _shade(self, light: Tensor) -> None:
        self.shading = (self.basis.double() @ light).float()
        self.part_layer = (self.part_colour * (self.part_basis.double() @ light).float()).clamp(0, 1)

    def fit_light(self, vertex_albedo: Tensor, photo: Tensor, mask: Tensor) -> None:
        """Least-squares RGB SH light (9, 3) making ``vertex_albedo``'s render match ``photo`` on
        the ``mask`` (S, S) pixels; keeps the current light when too few pixels are given."""
        rows = mask.reshape(-1)[self.covered]
        if rows.sum() < 50:
            return
        albedo = (self.pixels @ vertex_albedo)[rows].double()
        basis = self.basis[rows].double()
        target = photo.reshape(-1, 3)[self.covered][rows].double()
        reg = 1e-3 * len(basis) * torch.eye(9, dtype=torch.float64)
        reg[0, 0] = 0
        self._shade(torch.stack([
            torch.linalg.solve((basis * albedo[:, c:c + 1] ** 2).T @ basis + reg,
                               (basis * albedo[:, c:c + 1]).T @ target[:, c]) for c in range(3)], 1))

    def image(self, vertex_albedo: Tensor, background: Tensor) -> Tensor:
        """(S, S, 3): the shaded render where the skin covers the crop, the parts' layer or
        ``background`` elsewhere."""
        flat = background.reshape(-1, 3).index_put((self.part_pixels,), self.part_layer)
        colour = (self.pixels @ vertex_albedo) * self.shading
        return flat.index_put((self.covered,), colour).view(background.shape)


def part_colours(model: FaceModel, albedo: np.ndarray, iris: tuple[float, float, float]) -> np.ndarray:
    """(V, 3) sRGB 0..1 per model vertex for the refinement's renders: the skin atlas ``albedo``
    (uint8) at the sockets' vertices, the eyeballs as in the preview, teeth and gums plain."""
    colours = np.zeros((model.num_vertices, 3), np.float32)
    polygons = model.polygons[SKIN_POLYGONS:]
    kinds = polygon_kinds(model)[SKIN_POLYGONS:]
    for kind in ("skin", "gums", "teeth"):
        chosen = shown_polygons(model)[SKIN_POLYGONS:] & (kinds == kind)
        corners = triangulate(polygons[chosen])
        uv_corners = triangulate(model.polygon_uvs[SKIN_POLYGONS:][chosen])
        if kind == "skin":  # mouth and eye sockets: textured by the skin atlas
            colours[corners.reshape(-1)] = sample_atlas(albedo.astype(np.float32) / 255,
                                                        model.atlas_uvs[uv_corners.reshape(-1)])
        else:
            colours[corners.reshape(-1)] = linear_to_srgb8(PLAIN_COLOURS[kind][0]) / 255
    for region, linear in eyeball_vertex_colours(model, iris).items():
        start, stop = model.regions[region]
        colours[start:stop] = linear_to_srgb8(linear) / 255
    return colours


def refine_texture(model: FaceModel, views: list[TextureView], texture: TextureResult, surface: UVSurface,
                   graph: MeshGraph, identity_net: FaceRecognitionNet | None,
                   settings: TextureRefinementSettings, progress: Progress | None = None
                   ) -> TextureRefinementResult:
    """Refine ``texture``'s albedo for the photos ``views`` (see the module docstring); a view's
    ``trusted`` defaults to the landmarks' skin region. Without ``identity_net`` the identity term
    and the conditioning are left out. Runs on CPU: one small sparse graph and a 150-pixel network
    gain nothing from a GPU round trip."""
    with cpu_threads(1, torch.device("cpu")):
        return _refine_texture(model, views, texture, surface, graph, identity_net, settings,
                               progress or Progress())


class _ViewLoss:
    """One view's fixed render, trusted-skin mask, fitted light and target embedding."""

    def __init__(self, model: FaceModel, view: TextureView, coarse: Tensor, atlas: np.ndarray,
                 num_vertices: int, identity_net: FaceRecognitionNet | None,
                 settings: TextureRefinementSettings):
        crop = Crop.around(view.detection.box, settings.resolution)
        parts = part_colours(model, atlas, iris_colour(view.rgb, view.detection.landmarks))
        self.photo = torch.from_numpy(crop.image(view.rgb).astype(np.float32) / 255)
        landmarks = crop.points(view.detection.landmarks)
        skin = skin_mask(landmarks, crop.size, crop.size, margin=0.02)
        if view.trusted is not None:
            skin &= crop.image(view.trusted.astype(np.uint8) * 255) > 127
        self.fixed = _FixedRender(model, view.params, crop, num_vertices, parts)
        self.mask = (self.fixed.mask & torch.from_numpy(skin)).float()[None, None]
        self.fixed.fit_light(coarse, self.photo, self.mask[0, 0] > 0)
        self.transform = chip_transform(five_points(landmarks))
        self.net = identity_net
        with torch.no_grad():
            self.target = embed(identity_net, self.photo, self.transform) if identity_net is not None \
                else torch.zeros(128)
        self.background = torch.full_like(self.photo, BACKGROUND)

    def losses(self, albedo: Tensor, identity: bool) -> dict[str, Tensor]:
        image = self.fixed.image(albedo, self.background)
        terms = {"pixel": photometric_loss(image.permute(2, 0, 1)[None], self.photo.permute(2, 0, 1)[None],
                                           self.mask)}
        if identity:
            terms["identity"] = 1 - embed(self.net, image, self.transform) @ self.target
        return terms


def _refine_texture(model, views, texture, surface, graph, identity_net, settings, progress
                    ) -> TextureRefinementResult:
    n = graph.num_vertices
    uvs = vertex_uvs(model, n)
    coarse = torch.from_numpy(sample_atlas(texture.albedo.astype(np.float32) / 255, uvs))
    unseen = torch.from_numpy(1 - np.clip(sample_atlas(texture.trust, uvs)[:, 0], 0, 1))
    neutral = torch.from_numpy(model.neutral[:n])
    features = torch.cat([coarse, (neutral - neutral.mean(0)) / neutral.std(0)], 1)
    seen = [_ViewLoss(model, v, coarse, texture.albedo, n, identity_net, settings) for v in views]
    condition = torch.stack([s.target for s in seen]).mean(0)
    identity_loss = identity_net is not None and settings.identity_weight > 0

    torch.manual_seed(0)  # the network's initial weights: same photos, same result
    net = TextureGCN(settings)
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr)

    def losses(identity: bool) -> tuple[Tensor, dict[str, Tensor], list[dict[str, Tensor]], Tensor]:
        albedo = (coarse + net(features, condition, graph.laplacian)).clamp(0, 1)
        per_view = [s.losses(albedo, identity) for s in seen]
        terms = {k: torch.stack([v[k] for v in per_view]).mean() for k in per_view[0]}
        terms["vertex"] = (unseen * (albedo - coarse).square().sum(1)).sum() / unseen.sum().clamp(min=1)
        total = settings.pixel_weight * terms["pixel"] + settings.vertex_weight * terms["vertex"]
        if identity_loss:
            total = total + settings.identity_weight * terms["identity"]
        return total, terms, per_view, albedo

    def evaluate() -> tuple[dict[str, float], list[dict[str, float]], Tensor]:
        with torch.no_grad():
            _, terms, per_view, albedo = losses(identity_net is not None)
        terms = {k: v.item() for k, v in terms.items()}
        # each view's own pixel and identity terms, with the shared vertex term
        return terms, [{k: v.item() for k, v in view.items()} | {"vertex": terms["vertex"]}
                       for view in per_view], albedo

    before, views_before, _ = evaluate()
    progress.stage("refine texture", settings.iterations)
    for _ in range(settings.iterations):
        opt.zero_grad()
        losses(identity_loss)[0].backward()
        opt.step()
        progress.advance()
    after, views_after, albedo = evaluate()

    def named(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {f"texture_{k}_before": v for k, v in before.items()} | \
            {f"texture_{k}_after": v for k, v in after.items()}

    return TextureRefinementResult(_apply(texture, surface, (albedo - coarse).numpy(), model.num_vertices),
                                   albedo.numpy(), named(before, after),
                                   [named(b, a) for b, a in zip(views_before, views_after)])


def _apply(texture: TextureResult, surface: UVSurface, delta: np.ndarray, num_vertices: int) -> np.ndarray:
    """Coarse atlas + the network's (smooth) correction interpolated over the UV islands and
    continued outside them so that texture filtering across island borders sees no step."""
    full = np.zeros((num_vertices, 3), np.float32)
    full[: len(delta)] = delta
    field = surface.interpolate(full)
    field = push_pull_fill(field, (surface.face_id >= 0).astype(np.float32))
    albedo = texture.albedo.astype(np.float32) / 255 + field
    return np.clip(albedo * 255 + 0.5, 0, 255).astype(np.uint8)
