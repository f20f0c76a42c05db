"""Fitted parameters of one face: the data every stage after detection reads and writes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

# Model space (ICT: y up, z towards the viewer) to OpenCV camera axes (y down, z forward) for a
# head looking straight into the camera.
MODEL_TO_CAMERA = np.diag([1.0, -1.0, -1.0])


def rotation_matrix(axis_angle: np.ndarray) -> np.ndarray:
    """Rodrigues: axis-angle (3,) to a 3x3 rotation matrix."""
    theta = float(np.linalg.norm(axis_angle))
    if theta < 1e-12:
        return np.eye(3)
    k = np.asarray(axis_angle, float) / theta
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * K + (1 - np.cos(theta)) * (K @ K)


@dataclass
class Camera:
    """Pinhole camera, OpenCV axes, pixel units (see docs/ARCHITECTURE.md)."""

    focal: float
    cx: float
    cy: float
    width: int
    height: int

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        z = points_cam[:, 2:3]
        return self.focal * points_cam[:, :2] / z + np.array([self.cx, self.cy])

    @staticmethod
    def default_for(width: int, height: int, fov_deg: float = 20.0) -> Camera:
        """A portrait-lens guess: ``fov_deg`` across the longer side, centred principal point."""
        focal = 0.5 * max(width, height) / np.tan(np.radians(fov_deg) / 2)
        return Camera(float(focal), width / 2, height / 2, width, height)


@dataclass
class FaceParams:
    """Morphable-model parameters. ``rotation`` is axis-angle applied after MODEL_TO_CAMERA."""

    identity: np.ndarray  # (100,) coefficients in standard deviations
    expression: np.ndarray  # (53,) ARKit weights in [0, 1], ICT expression order
    rotation: np.ndarray  # (3,) axis-angle, head rotation in camera axes
    translation: np.ndarray  # (3,) metres, camera axes
    camera: Camera
    sh: np.ndarray = field(default_factory=lambda: np.zeros((9, 3)))  # SH lighting, RGB

    def rotation_matrix(self) -> np.ndarray:
        """Model space -> camera axes."""
        return rotation_matrix(self.rotation) @ MODEL_TO_CAMERA

    def to_camera(self, vertices: np.ndarray) -> np.ndarray:
        return vertices @ self.rotation_matrix().T + self.translation

    def project(self, vertices: np.ndarray) -> np.ndarray:
        return self.camera.project(self.to_camera(vertices))

    def euler_degrees(self) -> tuple[float, float, float]:
        """(yaw, pitch, roll) of the head in degrees; yaw > 0 turns to the image's left."""
        r = rotation_matrix(self.rotation)
        yaw = np.degrees(np.arcsin(np.clip(-r[2, 0], -1, 1)))
        pitch = np.degrees(np.arctan2(r[2, 1], r[2, 2]))
        roll = np.degrees(np.arctan2(r[1, 0], r[0, 0]))
        return float(yaw), float(pitch), float(roll)

    def copy(self) -> FaceParams:
        return replace(
            self,
            identity=self.identity.copy(),
            expression=self.expression.copy(),
            rotation=self.rotation.copy(),
            translation=self.translation.copy(),
            camera=replace(self.camera),
            sh=self.sh.copy(),
        )


# One counter-clockwise quarter turn of the image (np.rot90) undone, in camera axes: X = -Y', Y = X'.
_QUARTER = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def unturn_params(params: FaceParams, turns: int) -> FaceParams:
    """``params`` fitted on ``np.rot90(image, turns)``, expressed for ``image`` itself: turning an
    image by quarter turns is a rotation of the camera about its optical axis."""
    import cv2

    out = params.copy()
    for _ in range(turns % 4):
        cam = out.camera
        out.rotation = cv2.Rodrigues(_QUARTER @ rotation_matrix(out.rotation))[0].ravel()
        out.translation = _QUARTER @ np.asarray(out.translation, float)
        # pixel (x', y') of the turned image is (height' - y', x') in the image itself
        out.camera = Camera(cam.focal, cam.height - cam.cy, cam.cx, cam.height, cam.width)
    return out


def unturn_points(points: np.ndarray, turns: int, turned_size: tuple[int, int]) -> np.ndarray:
    """(N, 2) pixels of ``np.rot90(image, turns)``, whose size is ``turned_size`` (width, height),
    in the pixels of ``image`` itself (continuous coordinates, docs/ARCHITECTURE.md)."""
    width, height = turned_size
    out = np.asarray(points, float)
    for _ in range(turns % 4):
        out = np.stack([height - out[:, 1], out[:, 0]], axis=1)
        width, height = height, width
    return out
