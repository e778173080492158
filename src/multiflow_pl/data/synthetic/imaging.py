"""Image formation: the five cameras, one ray per pixel cast at a posed object, shading and sensor noise."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from multiflow_pl.data.synthetic.catalogue import Category
from multiflow_pl.data.synthetic.geometry import Hits, Part

VIEW_NAMES: tuple[str, ...] = ("C1", "C2", "C3", "C4", "C5")
"""The cameras: ``C1`` from the top, ``C2``..``C5`` from the four sides."""

BACKGROUND = np.array([0.09, 0.10, 0.12], dtype=np.float32)
CAMERA_DISTANCE = 5.0
TAN_HALF_FOV = 0.14
SIDE_ELEVATION_DEG = 22.0
SIDE_AZIMUTHS_DEG = (-90.0, 0.0, 90.0, 180.0)  # C2 front (-y), C3 right (+x), C4 back (+y), C5 left (-x)
AMBIENT = 0.4
SPECULAR = 0.12
SHININESS_DOUBLINGS = 5  # highlight exponent 2**5 = 32, by repeated squaring (np.power is slow)
NOISE_MARGIN = 7


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: position and unit right/up/forward axes, all [3] in world coordinates."""

    position: np.ndarray
    right: np.ndarray
    up: np.ndarray
    forward: np.ndarray


@dataclass(frozen=True)
class Pose:
    """Placement of the object on the table: rotation about the vertical axis and an offset (x, y)."""

    yaw: float
    offset: tuple[float, float]

    def to_object(self, vector: np.ndarray, is_point: bool) -> np.ndarray:
        """World -> object coordinates of a [3] point or direction."""
        if is_point:
            vector = vector - np.array([*self.offset, 0.0])
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        rotation = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])
        return (rotation @ vector).astype(np.float32)


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def make_camera(view_index: int, target: np.ndarray, rng: np.random.Generator) -> Camera:
    """Camera ``VIEW_NAMES[view_index]`` aimed at ``target`` [3], with a small random jitter."""
    target = target + rng.normal(0.0, 0.012, 3)
    if view_index == 0:
        towards_camera, up_hint = np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0])
    else:
        azimuth = np.radians(SIDE_AZIMUTHS_DEG[view_index - 1])
        elevation = np.radians(SIDE_ELEVATION_DEG)
        towards_camera = np.array(
            [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)]
        )
        up_hint = np.array([0.0, 0.0, 1.0])
    distance = CAMERA_DISTANCE * (1.0 + rng.uniform(-0.01, 0.01))
    forward = -towards_camera
    right = _unit(np.cross(forward, up_hint))
    up = np.cross(right, forward)
    roll = rng.normal(0.0, np.radians(0.6))
    right, up = np.cos(roll) * right + np.sin(roll) * up, np.cos(roll) * up - np.sin(roll) * right
    return Camera(target + distance * towards_camera, right, up, forward)


@lru_cache(maxsize=8)
def _pixel_centres(size: int) -> np.ndarray:
    """[size] normalised coordinates of the pixel centres along a row, from -1 to 1."""
    return (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0


@lru_cache(maxsize=32)
def _corners(part: Part) -> np.ndarray:
    """[8,3] corners of the part's bounding box."""
    lo, hi = part.bounds()
    return np.stack(np.meshgrid(*zip(lo, hi, strict=True), indexing="ij"), axis=-1).reshape(-1, 3)


def _screen_box(part: Part, origin: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Normalised image rectangle [x_min, x_max, y_min, y_max] holding ``part`` as seen from ``origin`` [3]
    by a camera with rows right, up, forward in ``axes`` [3,3] (the part in front of the camera)."""
    right, up, depth = axes @ (_corners(part) - origin).T
    x, y = right / (depth * TAN_HALF_FOV), up / (depth * TAN_HALF_FOV)
    return np.array([x.min(), x.max(), y.min(), y.max()])


def trace(category: Category, pose: Pose, camera: Camera, size: int, exclude: str | None = None) -> Hits:
    """Cast one ray per pixel of a ``size`` x ``size`` view; ``exclude`` names a part left out of the scene.

    The ray of pixel (x, y) (normalised coordinates) is forward + tan_half_fov * (x * right + y * up).
    Only pixels inside the object's projected bounding box are traced, and each part only for the rays
    inside its own projected box.
    """
    origin = pose.to_object(camera.position, is_point=True)
    axes = np.stack(
        [pose.to_object(axis, is_point=False) for axis in (camera.right, camera.up, camera.forward)]
    )
    boxes = [_screen_box(part, origin, axes) for part in category.parts]
    (x_min, _, y_min, _), (_, x_max, _, y_max) = np.min(boxes, axis=0), np.max(boxes, axis=0)
    centres = _pixel_centres(size)
    cols = np.flatnonzero((centres >= x_min) & (centres <= x_max))
    rows = np.flatnonzero((-centres >= y_min) & (-centres <= y_max))
    x, y = centres[cols][None, :], -centres[rows][:, None]
    inverse_length = 1.0 / np.sqrt(1.0 + TAN_HALF_FOV**2 * (x * x + y * y))
    dirs = np.stack(
        [
            ((axes[2, k] + TAN_HALF_FOV * (x * axes[0, k] + y * axes[1, k])) * inverse_length).ravel()
            for k in range(3)
        ]
    )
    pixel = (rows[:, None] * size + cols[None, :]).ravel()
    x, y = np.broadcast_to(x, inverse_length.shape).ravel(), np.broadcast_to(y, inverse_length.shape).ravel()
    t = np.full(len(pixel), np.inf, dtype=np.float32)
    part = np.zeros(len(pixel), dtype=np.int8)
    face = np.zeros(len(pixel), dtype=np.int8)
    for index, (primitive, box) in enumerate(zip(category.parts, boxes, strict=True)):
        if primitive.name == exclude:
            continue
        rays = np.flatnonzero((x >= box[0]) & (x <= box[1]) & (y >= box[2]) & (y <= box[3]))
        t_part, face_part = primitive.intersect(origin, np.take(dirs, rays, axis=1))
        closer = t_part < t[rays]
        rays = rays[closer]
        t[rays], part[rays], face[rays] = t_part[closer], index, face_part[closer]
    hit = np.flatnonzero(np.isfinite(t))
    hit = hit[np.argsort(part[hit], kind="stable")]  # hits grouped by part: each part gets a slice
    pixel, dirs, t, part, face = pixel[hit], np.take(dirs, hit, axis=1), t[hit], part[hit], face[hit]
    points = origin[:, None] + t * dirs
    normal, u, v = np.empty_like(points), np.empty_like(t), np.empty_like(t)
    ends = np.searchsorted(part, np.arange(len(category.parts) + 1))
    for index, primitive in enumerate(category.parts):
        part_slice = slice(ends[index], ends[index + 1])
        normal[:, part_slice], u[part_slice], v[part_slice] = primitive.surface(
            face[part_slice], points[:, part_slice]
        )
    return Hits(category.part_names, pixel, part, face, normal, -dirs, u, v)


def shade(hits: Hits, albedo: np.ndarray, light_dir: np.ndarray, intensity: float) -> np.ndarray:
    """Ambient + Lambert + Blinn-Phong: albedo [N,3] -> colour [N,3]; light_dir [3] in the object frame."""
    diffuse = np.clip(light_dir @ hits.normal, 0.0, None)
    half = light_dir[:, None] + hits.view_dir
    highlight = np.clip((hits.normal * half).sum(axis=0) / np.sqrt((half * half).sum(axis=0)), 0.0, None)
    for _ in range(SHININESS_DOUBLINGS):
        highlight *= highlight
    return albedo * (AMBIENT + intensity * diffuse)[:, None] + (SPECULAR * intensity * highlight)[:, None]


@lru_cache(maxsize=8)
def _background(size: int) -> np.ndarray:
    """[size*size,3] uint8 image of the empty table."""
    return np.tile(np.round(BACKGROUND * 255.0).astype(np.uint8), (size * size, 1))


def pixel_noise(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Triangular noise in -7..7 grey levels (std about 3.2, i.e. 0.013), as uint8 for modular addition.

    Each value is the difference of two 3-bit integers taken from raw random bits, which is much faster
    than drawing Gaussian or bounded integers.
    """
    count = int(np.prod(shape))
    bits = rng.bit_generator.random_raw((count + 7) // 8).view(np.uint8)[:count]
    return ((bits & 7) - ((bits >> 3) & 7)).reshape(shape)


def compose(hits: Hits, colour: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Object colours [N,3] in [0,1] over the background, plus :func:`pixel_noise` -> uint8 [size,size,3].

    Colours are kept within ``NOISE_MARGIN`` of 0 and 255, so adding the noise modulo 256 never wraps.
    """
    image = _background(size).copy()
    image[hits.pixel] = np.clip(colour * 255.0 + 0.5, NOISE_MARGIN, 255 - NOISE_MARGIN).astype(np.uint8)
    image += pixel_noise(image.shape, rng)
    return image.reshape(size, size, 3)
