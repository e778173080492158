"""The synthetic five-view benchmark: ray-cast 3D objects with surface defects, in Real-IAD layout.

Each sample is one object (a ``can``, a ``box`` or a ``knob``) on a plain dark table, seen by five cameras:
``C1`` from the top and ``C2``..``C5`` from the four sides (90 degrees apart, slightly elevated). Shared by
all views of a sample: the pose (yaw, small offset), the colour variant and the lighting; per view: a
small camera jitter and pixel noise. Defects live on the object's surface (object coordinates), so a
defect shows in every view that sees it and its mask is the defect region's projection into that view.

Defect types (:data:`DEFECT_TYPES`): ``HS`` scratch, ``ZW`` contamination, ``QS`` missing part, and
``XV``, a cross-view inconsistency: one side view shows another colour variant than the rest of the sample.
Each ``XV`` view alone is a normal image, so only multi-view reasoning can find it.

The renderer is plain numpy (perspective cameras, analytic ray casting against upright cylinders and
boxes, Lambert + Blinn-Phong shading). Output is deterministic per seed, byte for byte.

Usage: ``generate(root)`` or ``python -m multiflow_pl.data.synthetic --root data/synthetic``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from multiflow_pl.data.errors import DatasetError, require_choice
from multiflow_pl.utils.progress import progress as progress_iter

DEFECT_TYPES: dict[str, str] = {
    "HS": "scratch: a thin dark curve on the surface",
    "ZW": "contamination: a blob of foreign colour on the surface",
    "QS": "missing part: the can's pull tab, the box's label or the knob's grip is absent",
    "XV": "cross-view inconsistency: one side view shows another colour variant than the other views",
}
"""Defect code -> description."""

VIEW_NAMES: tuple[str, ...] = ("C1", "C2", "C3", "C4", "C5")
VARIANT_COLOURS = np.array(
    [[0.80, 0.16, 0.12], [0.16, 0.36, 0.84], [0.18, 0.62, 0.26], [0.92, 0.74, 0.12]], dtype=np.float32
)
"""[4,3] RGB body colours of the variants (red, blue, green, yellow), visible from every camera."""

GENERATOR = "multiflow_pl.data.synthetic"
GENERATOR_VERSION = 2
META_FILE = "synthetic_meta.json"
JSON_DIR = "realiad_jsons"
JPEG_QUALITY = 92
MIN_JOBS_PER_WORKER = 16  # samples; below twice this, generation stays in the calling process

# Scene, cameras and appearance.
BACKGROUND = np.array([0.09, 0.10, 0.12], dtype=np.float32)
PAPER = np.array([0.93, 0.92, 0.88], dtype=np.float32)
INK = np.array([0.10, 0.10, 0.12], dtype=np.float32)
METAL = np.array([0.70, 0.71, 0.74], dtype=np.float32)
KNOB_GREY = np.array([0.52, 0.52, 0.56], dtype=np.float32)
TAPE = np.array([0.80, 0.72, 0.52], dtype=np.float32)
CONTAMINANTS = np.array([[0.62, 0.30, 0.05], [0.06, 0.06, 0.06], [0.85, 0.15, 0.55]], dtype=np.float32)
CAMERA_DISTANCE = 5.0
LIGHT_AZIMUTH = np.radians(-60.0)  # between the front (C2) and the right (C3) camera
SCRATCH_METAL = np.array([0.85, 0.85, 0.82], dtype=np.float32)
TAN_HALF_FOV = 0.14
SIDE_ELEVATION_DEG = 22.0
SIDE_AZIMUTHS_DEG = (-90.0, 0.0, 90.0, 180.0)  # C2 front (-y), C3 right (+x), C4 back (+y), C5 left (-x)
AMBIENT = 0.4
SPECULAR = 0.12
SHININESS_DOUBLINGS = 5  # highlight exponent 2**5 = 32, by repeated squaring (np.power is slow)
NOISE_MARGIN = 7

# Faces: an upright cylinder has a side and a top (its bottom stands on the table); a cuboid has six.
SIDE, TOP = 0, 1
PX, NX, PY, NY, PZ, NZ = range(6)


def fast_atan2(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Elementwise ``arctan2(y, x)`` to within 1e-5 rad; numpy's is slow for float32 on many builds."""
    ax, ay = np.abs(x), np.abs(y)
    ratio = np.minimum(ax, ay) / np.maximum(np.maximum(ax, ay), np.float32(1e-30))
    s = ratio * ratio
    angle = ratio * (
        0.99997726
        + s * (-0.33262347 + s * (0.19354346 + s * (-0.11643287 + s * (0.05265332 - 0.01172120 * s))))
    )
    angle = np.where(ay > ax, np.float32(np.pi / 2) - angle, angle)
    angle = np.where(x < 0, np.float32(np.pi) - angle, angle)
    return np.copysign(angle, y)


def _wrap(x: np.ndarray, period: float) -> np.ndarray:
    """``x`` shifted by a multiple of ``period`` into [-period/2, period/2) (faster than float ``%``)."""
    return x - np.floor(x / period + 0.5) * period


def _radius(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Elementwise ``hypot(x, y)`` (numpy's hypot is slow on many builds)."""
    return np.sqrt(x * x + y * y)


# --------------------------------------------------------------------------------------------------------
# Geometry: ray intersection with the two primitive kinds, in object coordinates (z up, table at z=0).
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cylinder:
    """An upright cylinder with axis through ``centre`` (x, y), spanning ``z0``..``z1``."""

    name: str
    centre: tuple[float, float]
    radius: float
    z0: float
    z1: float

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        cx, cy = self.centre
        r = self.radius
        return np.array([cx - r, cy - r, self.z0]), np.array([cx + r, cy + r, self.z1])

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rays from ``origin`` [3] (above the part) along unit ``dirs`` [3,N] -> ray parameter of the first
        hit [N] (inf on a miss) and the face hit [N]."""
        ox, oy, oz = origin[0] - self.centre[0], origin[1] - self.centre[1], origin[2]
        dx, dy, dz = dirs
        a = dx * dx + dy * dy
        b = ox * dx + oy * dy
        disc = b * b - a * (ox * ox + oy * oy - self.radius**2)
        with np.errstate(invalid="ignore", divide="ignore"):
            t_side = (-b - np.sqrt(disc)) / a
            t_top = (self.z1 - oz) / dz
        z = oz + t_side * dz
        t_side[~((disc > 0) & (t_side > 0) & (z >= self.z0) & (z <= self.z1))] = np.inf
        x, y = ox + t_top * dx, oy + t_top * dy
        t_top[~((t_top > 0) & (x * x + y * y <= self.radius**2))] = np.inf
        face = (t_top < t_side).astype(np.int8)  # TOP where the cap is nearer, else SIDE
        return np.minimum(t_side, t_top), face

    def surface(self, face: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Normals [3,N] and surface coordinates u, v [N] of ``points`` [3,N] on ``face`` [N]:
        (arc length, height) on the side, (x, y) relative to the axis on the top."""
        x, y = points[0] - self.centre[0], points[1] - self.centre[1]
        side = face == SIDE
        on_side = side.astype(points.dtype)
        normal = np.stack([x * (on_side / self.radius), y * (on_side / self.radius), 1.0 - on_side])
        u = np.where(side, self.radius * fast_atan2(y, x), x)
        v = np.where(side, points[2], y)
        return normal, u, v


@dataclass(frozen=True)
class Cuboid:
    """An axis-aligned box (in object coordinates) from corner ``lo`` to corner ``hi``."""

    name: str
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array(self.lo), np.array(self.hi)

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slab test for rays from ``origin`` [3] along unit ``dirs`` [3,N] -> ray parameter of the entry
        point [N] (inf on a miss) and the entry face [N]."""
        near, far = [], []
        with np.errstate(divide="ignore", invalid="ignore"):
            for axis in range(3):
                t_lo = (self.lo[axis] - origin[axis]) / dirs[axis]
                t_hi = (self.hi[axis] - origin[axis]) / dirs[axis]
                near.append(np.minimum(t_lo, t_hi))
                far.append(np.maximum(t_lo, t_hi))
        t_enter = np.maximum(np.maximum(near[0], near[1]), near[2])
        t_exit = np.minimum(np.minimum(far[0], far[1]), far[2])
        # The entry face is on the axis whose slab is entered last, on its low side when moving up that axis.
        on_x = near[0] == t_enter
        on_y = (near[1] == t_enter) & ~on_x
        face = np.where(on_x, dirs[0] > 0, np.where(on_y, 2 + (dirs[1] > 0), 4 + (dirs[2] > 0))).astype(
            np.int8
        )
        t_enter[~((t_enter <= t_exit) & (t_enter > 0))] = np.inf
        return t_enter, face

    def surface(self, face: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Normals [3,N] and in-face coordinates u, v [N] of ``points`` [3,N] on ``face`` [N]:
        (y, z) on x faces, (x, z) on y faces, (x, y) on z faces."""
        axis = face // 2
        normal = np.zeros_like(points)
        normal[axis, np.arange(len(face))] = 1.0 - 2.0 * (face % 2)
        u = np.where(axis == 0, points[1], points[0])
        v = np.where(axis == 2, points[1], points[2])
        return normal, u, v


Part = Cylinder | Cuboid


@dataclass(frozen=True)
class Hits:
    """The visible surface points of one view (only the pixels whose ray hits the object).

    Attributes:
        pixel: [N] flat pixel indices (row * size + column).
        part: [N] index of the part hit; face: [N] face of that part.
        normal: [3,N] surface normals; view_dir: [3,N] unit vectors towards the camera (object frame).
        u, v: [N] surface coordinates on that face (see the parts' ``surface``).
    """

    part_names: tuple[str, ...]
    pixel: np.ndarray
    part: np.ndarray
    face: np.ndarray
    normal: np.ndarray
    view_dir: np.ndarray
    u: np.ndarray
    v: np.ndarray

    def on(self, part: str, face: int | None = None) -> np.ndarray:
        """[N] bool: hits on ``part`` (and on ``face`` of it when given)."""
        selected = self.part == self.part_names.index(part)
        return selected if face is None else selected & (self.face == face)


# --------------------------------------------------------------------------------------------------------
# Categories: parts, paint (albedo from surface coordinates and the variant colour), defect sites.
# --------------------------------------------------------------------------------------------------------


def _barcode(u: np.ndarray, start: float, bar: float) -> np.ndarray:
    """[N] bool: dark bars of a fixed pseudo-random barcode along ``u`` (bars ``bar`` wide)."""
    index = np.floor((u - start) / bar).astype(np.int64)
    return (index * 37) % 11 < 5


def _paint_can(hits: Hits, colour: np.ndarray) -> np.ndarray:
    """Body in the variant colour with a printed paper band; metal lid with a coloured rim; metal tab."""
    albedo = np.broadcast_to(colour, (len(hits.u), 3)).copy()
    u, v = hits.u, hits.v
    band = hits.on("body", SIDE) & (v > 0.36) & (v < 0.66)
    albedo[band] = PAPER
    code = band & (np.abs(u) < 0.25) & (v > 0.44) & (v < 0.58) & _barcode(u, -0.25, 0.022)
    text = band & (u > 0.45) & (u < 1.1) & (np.abs(v - 0.51) < 0.018) & (np.sin(u * 90.0) > -0.3)
    albedo[code | text] = INK
    albedo[band & ((np.abs(v - 0.38) < 0.008) | (np.abs(v - 0.64) < 0.008))] = colour * 0.55
    lid = hits.on("body", TOP)
    r = _radius(u, v)
    albedo[lid & (r < 0.30)] = METAL
    albedo[lid & (r > 0.27) & (r < 0.29)] = METAL * 0.6
    albedo[lid & (r < 0.03)] = METAL * 0.7
    tab = hits.on("tab")
    albedo[tab] = METAL * 1.12
    albedo[tab & (hits.face == PZ) & (_radius(u - 0.20, v) < 0.03)] = METAL * 0.35
    return albedo


def _paint_box(hits: Hits, colour: np.ndarray) -> np.ndarray:
    """Box in the variant colour with packaging tape over the top and a paper label with a barcode."""
    albedo = np.broadcast_to(colour, (len(hits.u), 3)).copy()
    u, v = hits.u, hits.v
    body = hits.on("body")
    top, x_face = hits.on("body", PZ), body & (hits.face // 2 == 0)
    albedo[top & (np.abs(v) < 0.06)] = TAPE
    albedo[x_face & (v > 0.36) & (np.abs(u) < 0.06)] = TAPE
    albedo[body & (hits.face // 2 < 2) & (np.abs(v - 0.52) < 0.006)] = colour * 0.55
    label = hits.on("label")
    albedo[label] = PAPER
    front = hits.on("label", NY)
    code = front & (u > -0.14) & (u < 0.06) & (v > 0.22) & (v < 0.33) & _barcode(u, -0.14, 0.012)
    text = front & (np.abs(u) < 0.14) & (np.abs(v - 0.38) < 0.012) & (np.sin(u * 120.0) > -0.3)
    logo = front & (u > 0.09) & (u < 0.15) & (v > 0.22) & (v < 0.28)
    albedo[code | text | logo] = INK
    return albedo


def _paint_knob(hits: Hits, colour: np.ndarray) -> np.ndarray:
    """Base in the variant colour with a white dial scale; grey ribbed knob with a pointer; socket below."""
    albedo = np.broadcast_to(colour, (len(hits.u), 3)).copy()
    u, v = hits.u, hits.v
    albedo[hits.on("base", SIDE) & (np.abs(v - 0.27) < 0.012)] = PAPER
    dial = hits.on("base", TOP)
    r, angle = _radius(u, v), fast_atan2(v, u)
    tick = np.abs(_wrap(angle, np.pi / 6)) < 0.05
    albedo[dial & (r > 0.33) & (r < 0.42) & tick] = PAPER
    albedo[dial & (r < 0.135)] = INK * 2.5
    knob_side, knob_top = hits.on("knob", SIDE), hits.on("knob", TOP)
    ribs = (np.floor(u / 0.03).astype(np.int64) % 2) == 0
    albedo[knob_side] = KNOB_GREY
    albedo[knob_side & ribs] = KNOB_GREY * 0.8
    albedo[knob_top] = KNOB_GREY * 1.15
    albedo[knob_top & (u > 0.02) & (u < 0.12) & (np.abs(v) < 0.016)] = PAPER
    return albedo


@dataclass(frozen=True)
class DefectSite:
    """Where surface defects may be centred: a face of a part and a range of its (u, v) coordinates.

    ``polar``: the ranges are (radius, angle) on a top face instead of (u, v). ``period``: u wraps around
    (the arc length of a cylinder side).
    """

    part: str
    face: int
    u_range: tuple[float, float]
    v_range: tuple[float, float]
    weight: float = 1.0
    period: float | None = None
    polar: bool = False

    def sample_centre(self, rng: np.random.Generator) -> tuple[float, float]:
        a, b = rng.uniform(*self.u_range), rng.uniform(*self.v_range)
        return (a * np.cos(b), a * np.sin(b)) if self.polar else (a, b)


@dataclass(frozen=True)
class Category:
    """One object category: its parts, how to paint them, its removable part (``QS``) and defect sites."""

    name: str
    parts: tuple[Part, ...]
    paint: Callable[[Hits, np.ndarray], np.ndarray]
    missing_part: str
    defect_sites: tuple[DefectSite, ...]

    @property
    def part_names(self) -> tuple[str, ...]:
        return tuple(part.name for part in self.parts)

    @property
    def height(self) -> float:
        return max(float(part.bounds()[1][2]) for part in self.parts)


def _side_site(part: str, radius: float, heights: tuple[float, float], weight: float) -> DefectSite:
    half = np.pi * radius
    return DefectSite(part, SIDE, (-half, half), heights, weight, period=2 * half)


_CATEGORY_LIST = (
    Category(
        "can",
        (Cylinder("body", (0.0, 0.0), 0.42, 0.0, 1.0), Cuboid("tab", (0.04, -0.06, 1.0), (0.27, 0.06, 1.03))),
        _paint_can,
        missing_part="tab",
        defect_sites=(
            _side_site("body", 0.42, (0.12, 0.88), weight=3.0),
            DefectSite("body", TOP, (0.0, 0.22), (-np.pi, np.pi), polar=True),
        ),
    ),
    Category(
        "box",
        (
            Cuboid("body", (-0.45, -0.32, 0.0), (0.45, 0.32, 0.6)),
            Cuboid("label", (-0.18, -0.321, 0.17), (0.18, -0.32, 0.43)),
        ),
        _paint_box,
        missing_part="label",
        defect_sites=(
            DefectSite("body", PX, (-0.22, 0.22), (0.1, 0.5)),
            DefectSite("body", NX, (-0.22, 0.22), (0.1, 0.5)),
            DefectSite("body", PY, (-0.35, 0.35), (0.1, 0.5), weight=1.4),
            DefectSite("body", NY, (-0.35, 0.35), (0.1, 0.5), weight=1.4),
            DefectSite("body", PZ, (-0.35, 0.35), (-0.22, 0.22), weight=1.5),
        ),
    ),
    Category(
        "knob",
        (Cylinder("base", (0.0, 0.0), 0.45, 0.0, 0.32), Cylinder("knob", (0.0, 0.0), 0.14, 0.32, 0.70)),
        _paint_knob,
        missing_part="knob",
        defect_sites=(
            _side_site("base", 0.45, (0.06, 0.24), weight=2.0),
            DefectSite("base", TOP, (0.2, 0.36), (-np.pi, np.pi), polar=True),
        ),
    ),
)
_CATEGORIES = {category.name: category for category in _CATEGORY_LIST}
CATEGORIES: tuple[str, ...] = tuple(_CATEGORIES)
"""The object categories of the synthetic benchmark: ``can``, ``box``, ``knob``."""


# --------------------------------------------------------------------------------------------------------
# Cameras, ray casting and shading.
# --------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------
# Defects and the rendering of one sample.
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SurfaceDefect:
    """A scratch (``HS``) or contamination blob (``ZW``) painted on a face of the object.

    Shapes live in a local frame on the face: centred at ``centre`` (u, v) and rotated by ``angle``. A
    scratch is a thin parabolic arc (``length``, ``width``, ``bend``); a blob is a disc of ``radius``
    with a wavy outline (``phases``) in ``colour``.
    """

    code: str
    site: DefectSite
    centre: tuple[float, float]
    angle: float
    length: float = 0.0
    width: float = 0.0
    bend: float = 0.0
    radius: float = 0.0
    phases: tuple[float, float] = (0.0, 0.0)
    colour: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def region(self, hits: Hits) -> np.ndarray:
        """[N] bool: the visible hits that lie inside the defect."""
        on_site = hits.on(self.site.part, self.site.face)
        du, dv = hits.u[on_site] - self.centre[0], hits.v[on_site] - self.centre[1]
        if self.site.period is not None:
            du = _wrap(du, self.site.period)
        along = du * np.cos(self.angle) + dv * np.sin(self.angle)
        across = dv * np.cos(self.angle) - du * np.sin(self.angle)
        if self.code == "HS":
            inside = (np.abs(along) <= self.length / 2) & (
                np.abs(across - self.bend * along**2) <= self.width / 2
            )
        else:
            polar = fast_atan2(across, along)
            wave = 1.0 + 0.25 * np.sin(3 * polar + self.phases[0]) + 0.12 * np.sin(5 * polar + self.phases[1])
            inside = _radius(along, across) <= self.radius * wave
        region = np.zeros(len(hits.u), dtype=bool)
        region[np.flatnonzero(on_site)[inside]] = True
        return region

    def apply(self, albedo: np.ndarray, region: np.ndarray) -> None:
        """Paint the defect into ``albedo`` [N,3] in place where ``region`` [N] holds."""
        if self.code == "HS":  # dark on light paint, bare bright metal on dark paint
            light = albedo[region].mean(axis=1, keepdims=True) > 0.5
            albedo[region] = np.where(light, albedo[region] * 0.2, SCRATCH_METAL)
        else:
            albedo[region] = self.colour


def _draw_surface_defect(code: str, category: Category, size: int, rng: np.random.Generator) -> SurfaceDefect:
    sites = category.defect_sites
    weights = np.array([site.weight for site in sites])
    site = sites[rng.choice(len(sites), p=weights / weights.sum())]
    centre, angle = site.sample_centre(rng), rng.uniform(0.0, np.pi)
    if code == "HS":
        pixel_width = 2.0 * TAN_HALF_FOV * CAMERA_DISTANCE / size
        width = max(rng.uniform(0.03, 0.045), 1.5 * pixel_width)
        return SurfaceDefect(code, site, centre, angle, rng.uniform(0.3, 0.5), width, rng.uniform(-1.5, 1.5))
    phases = (rng.uniform(0, 2 * np.pi), rng.uniform(0, 2 * np.pi))
    colour = tuple(CONTAMINANTS[rng.integers(len(CONTAMINANTS))].tolist())
    return SurfaceDefect(
        code, site, centre, angle, radius=rng.uniform(0.09, 0.13), phases=phases, colour=colour
    )


@dataclass(frozen=True)
class RenderedView:
    """One rendered view: image [H,W,3] uint8, mask [H,W] bool (``None`` for a normal view), class."""

    image: np.ndarray
    mask: np.ndarray | None
    anomaly_class: str


def min_visible_pixels(size: int) -> int:
    """Fewest defect pixels for a view to count as seeing the defect (smaller glimpses are not drawn)."""
    return max(4, size * size // 4000)


@dataclass(frozen=True)
class Nuisance:
    """What all views of a sample share: pose, colour variant and lighting (direction [3] in world)."""

    pose: Pose
    variant: int
    light_dir: np.ndarray
    light_intensity: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Nuisance:
        pose = Pose(rng.uniform(-np.pi / 18, np.pi / 18), tuple(rng.uniform(-0.03, 0.03, 2)))
        variant = int(rng.integers(len(VARIANT_COLOURS)))
        # an inspection cell's lamp: fixed position up to small drifts
        azimuth = LIGHT_AZIMUTH + rng.uniform(-np.pi / 12, np.pi / 12)
        elevation = rng.uniform(np.radians(55), np.radians(65))
        light_dir = np.array(
            [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)]
        )
        return cls(pose, variant, light_dir, rng.uniform(0.92, 1.0))


def _place_surface_defect(
    code: str, category: Category, hits: list[Hits], size: int, rng: np.random.Generator
) -> tuple[SurfaceDefect, list[np.ndarray]]:
    """Draw a surface defect that at least one view sees; return it and its region [N_v] in every view."""
    for _ in range(100):
        defect = _draw_surface_defect(code, category, size, rng)
        regions = [defect.region(view_hits) for view_hits in hits]
        if any(region.sum() >= min_visible_pixels(size) for region in regions):
            return defect, regions
    raise RuntimeError(f"No camera sees a {code} defect on {category.name} after 100 tries.")


def render_sample(
    category: str, anomaly_class: str = "OK", size: int = 256, rng: np.random.Generator | int = 0
) -> list[RenderedView]:
    """Render the five views (:data:`VIEW_NAMES`) of one sample.

    Args:
        category: one of :data:`CATEGORIES`.
        anomaly_class: ``"OK"`` or a code of :data:`DEFECT_TYPES`.
        size: image side in pixels.
        rng: random generator or seed; draws the pose, variant, lighting, defect, jitter and noise.

    A view sees a surface defect or missing part when at least :func:`min_visible_pixels` of it are
    visible; other views are drawn without it and labelled ``"OK"``.
    """
    require_choice("synthetic category", category, CATEGORIES)
    if anomaly_class != "OK" and anomaly_class not in DEFECT_TYPES:
        raise ValueError(
            f"Unknown anomaly class {anomaly_class!r}: use 'OK' or one of {', '.join(DEFECT_TYPES)}."
        )
    rng = np.random.default_rng(rng)
    spec, nuisance = _CATEGORIES[category], Nuisance.draw(rng)
    pose = nuisance.pose
    target = np.array([0.0, 0.0, spec.height / 2])
    cameras = [make_camera(index, target, rng) for index in range(len(VIEW_NAMES))]
    hits = [trace(spec, pose, camera, size) for camera in cameras]
    colours = [VARIANT_COLOURS[nuisance.variant]] * len(VIEW_NAMES)
    defect_pixels: list[np.ndarray | None] = [None] * len(VIEW_NAMES)  # per view: flat pixel indices
    defect, regions = None, [None] * len(VIEW_NAMES)

    if anomaly_class in ("HS", "ZW"):
        defect, regions = _place_surface_defect(anomaly_class, spec, hits, size, rng)
        for index, (view_hits, region) in enumerate(zip(hits, regions, strict=True)):
            if region.sum() >= min_visible_pixels(size):
                defect_pixels[index] = view_hits.pixel[region]
    elif anomaly_class == "QS":
        for index, camera in enumerate(cameras):
            part_pixels = hits[index].pixel[hits[index].on(spec.missing_part)]
            if len(part_pixels) >= min_visible_pixels(size):
                defect_pixels[index] = part_pixels
                hits[index] = trace(spec, pose, camera, size, exclude=spec.missing_part)
    elif anomaly_class == "XV":
        odd_view = int(rng.integers(1, len(VIEW_NAMES)))  # a side view
        other_variant = (nuisance.variant + int(rng.integers(1, len(VARIANT_COLOURS)))) % len(VARIANT_COLOURS)
        colours[odd_view] = VARIANT_COLOURS[other_variant]
        view_hits = hits[odd_view]
        changed = np.abs(spec.paint(view_hits, colours[odd_view]) - spec.paint(view_hits, colours[0]))
        defect_pixels[odd_view] = view_hits.pixel[changed.max(axis=1) > 0.02]

    light_dir = pose.to_object(nuisance.light_dir, is_point=False)
    views = []
    for view_hits, colour, region, pixels in zip(hits, colours, regions, defect_pixels, strict=True):
        albedo = spec.paint(view_hits, colour)
        if defect is not None and pixels is not None:
            defect.apply(albedo, region)
        image = compose(view_hits, shade(view_hits, albedo, light_dir, nuisance.light_intensity), size, rng)
        mask = None
        if pixels is not None:
            mask = np.zeros(size * size, dtype=bool)
            mask[pixels] = True
            mask = mask.reshape(size, size)
        views.append(RenderedView(image, mask, "OK" if mask is None else anomaly_class))
    return views


# --------------------------------------------------------------------------------------------------------
# The benchmark on disk, in Real-IAD layout.
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedSample:
    """One sample to write: split, class (``"OK"`` or a defect code) and number within its folder."""

    split: str
    anomaly_class: str
    number: int

    @property
    def folder(self) -> str:
        """Folder relative to the category folder, e.g. ``OK/S0001`` or ``NG/HS/S0001``."""
        group = "OK" if self.anomaly_class == "OK" else f"NG/{self.anomaly_class}"
        return f"{group}/S{self.number:04d}"

    @property
    def tag(self) -> str:
        """The class part of the file names: ``OK`` or ``NG_<code>``."""
        return "OK" if self.anomaly_class == "OK" else f"NG_{self.anomaly_class}"


def plan_samples(n_train: int, n_test: int) -> list[PlannedSample]:
    """The samples of one category: ``n_train`` normal training samples; ``n_test`` test samples, half of
    them (rounded down) defective and spread evenly over :data:`DEFECT_TYPES`, the rest normal.

    Numbers restart in every folder, as in Real-IAD: normal test samples continue after the training ones
    in ``OK/``, and each ``NG/<code>/`` folder starts at 1.
    """
    n_defective = n_test // 2
    plan = [PlannedSample("train", "OK", number) for number in range(1, n_train + 1)]
    plan += [PlannedSample("test", "OK", n_train + number) for number in range(1, n_test - n_defective + 1)]
    for index, code in enumerate(DEFECT_TYPES):
        count = n_defective // len(DEFECT_TYPES) + int(index < n_defective % len(DEFECT_TYPES))
        plan += [PlannedSample("test", code, number) for number in range(1, count + 1)]
    return plan


def _sample_rng(seed: int, category: str, sample: PlannedSample) -> np.random.Generator:
    """A generator of its own per sample, so a sample does not depend on which others are generated."""
    return np.random.default_rng(
        [seed, zlib.crc32(category.encode()), zlib.crc32(sample.anomaly_class.encode()), sample.number]
    )


def _timestamp(seed: int, sequence: int, view_index: int) -> str:
    """A 14-digit capture time derived from the seed and the sample's position (no clock involved)."""
    start = datetime(2024, 1, 1, 8, 0, 0) + timedelta(days=seed % 366)
    return (start + timedelta(seconds=20 * sequence + 3 * view_index)).strftime("%Y%m%d%H%M%S")


@dataclass(frozen=True)
class SampleJob:
    """Render one planned sample and write its files under ``category_dir`` (picklable for workers)."""

    category_dir: Path
    category: str
    sample: PlannedSample
    sequence: int
    size: int
    seed: int

    def run(self) -> list[dict]:
        """Write the images (and the masks of anomalous views); return the sample's JSON entries."""
        sample, category = self.sample, self.category
        views = render_sample(
            category, sample.anomaly_class, self.size, _sample_rng(self.seed, category, sample)
        )
        (self.category_dir / sample.folder).mkdir(parents=True, exist_ok=True)
        entries = []
        for index, (view_name, view) in enumerate(zip(VIEW_NAMES, views, strict=True)):
            timestamp = _timestamp(self.seed, self.sequence, index)
            stem = f"{sample.folder}/{category}_{sample.number:04d}_{sample.tag}_{view_name}_{timestamp}"
            Image.fromarray(view.image).save(
                self.category_dir / f"{stem}.jpg", format="JPEG", quality=JPEG_QUALITY, subsampling=2
            )
            mask_path = None
            if view.mask is not None:
                mask_path = f"{stem}.png"
                Image.fromarray(view.mask.astype(np.uint8) * 255).save(
                    self.category_dir / mask_path, format="PNG"
                )
            entries.append(
                {
                    "category": category,
                    "anomaly_class": view.anomaly_class,
                    "image_path": f"{stem}.jpg",
                    "mask_path": mask_path,
                }
            )
        return entries


def _run_job(job: SampleJob) -> list[dict]:
    return job.run()


def _run_jobs(jobs: list[SampleJob], workers: int, progress: bool) -> list[list[dict]]:
    """Run the jobs in order, in ``workers`` processes when there are enough jobs to be worth it."""
    description = "Rendering the synthetic benchmark"
    if workers <= 1 or len(jobs) < MIN_JOBS_PER_WORKER * 2:
        return list(progress_iter(map(_run_job, jobs), len(jobs), description, progress))
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = pool.map(_run_job, jobs, chunksize=max(1, MIN_JOBS_PER_WORKER // 4))
        return list(progress_iter(results, len(jobs), description, progress))


def _settings(categories: Sequence[str], n_train: int, n_test: int, size: int, seed: int) -> dict:
    return {
        "generator_version": GENERATOR_VERSION,
        "categories": list(categories),
        "n_train": n_train,
        "n_test": n_test,
        "size": size,
        "seed": seed,
    }


def _outputs(root: Path, settings: dict) -> list[Path]:
    """The category image folders and meta JSONs a run with ``settings`` writes (the meta file aside)."""
    return [path for c in settings["categories"] for path in _category_outputs(root, c, settings["size"])]


def _category_outputs(root: Path, category: str, size: int) -> list[Path]:
    """The image folder and meta JSON of one category."""
    return [root / f"realiad_{size}" / category, root / JSON_DIR / f"{category}.json"]


def _differ_in_categories_only(previous: dict, settings: dict) -> bool:
    """Whether two settings describe the same benchmark up to the set of categories."""
    return {k: v for k, v in previous.items() if k != "categories"} == {
        k: v for k, v in settings.items() if k != "categories"
    }


def _read_settings(root: Path) -> dict | None:
    meta_path = root / META_FILE
    if not meta_path.is_file():
        return None
    try:
        return json.loads(meta_path.read_text(encoding="utf-8"))["settings"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise DatasetError(
            f"{meta_path} is not a synthetic-benchmark meta file ({error}); remove it."
        ) from error


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _check_arguments(categories: Sequence[str], n_train: int, n_test: int, size: int) -> None:
    for category in categories:
        require_choice("synthetic category", category, CATEGORIES)
    if len(set(categories)) != len(categories) or not categories:
        raise DatasetError(f"categories={list(categories)}: give each category once, and at least one.")
    if n_train < 1 or n_test < 0 or n_train + n_test > 9999:
        raise DatasetError(
            f"n_train={n_train}, n_test={n_test}: need n_train >= 1, n_test >= 0 and at most 9999 samples."
        )
    if size < 32:
        raise DatasetError(f"size={size}: images must be at least 32 pixels wide.")


def generate(
    root: str | Path,
    categories: Sequence[str] | None = None,
    n_train: int = 48,
    n_test: int = 48,
    size: int = 256,
    seed: int = 0,
    *,
    overwrite: bool = False,
    progress: bool = True,
    workers: int = 1,
) -> Path:
    """Write the synthetic benchmark under ``root`` in Real-IAD layout and return ``root``.

    Writes ``realiad_<size>/<category>/{OK,NG/<code>}/S<nnnn>/*.jpg|png``, ``realiad_jsons/<category>.json``
    and, last, ``synthetic_meta.json`` with the settings. Everything is rendered into a temporary folder
    under ``root`` first, so an interrupted run never looks complete.

    Args:
        root: dataset root (created when missing).
        categories: subset of :data:`CATEGORIES` (default: all).
        n_train: normal training samples per category.
        n_test: test samples per category (see :func:`plan_samples`).
        size: image side in pixels.
        seed: random seed; the same arguments give the same bytes.
        overwrite: replace a benchmark written with other settings (otherwise that is an error).
        progress: show progress.
        workers: rendering processes; more pay off for large sets on idle machines (sets of fewer than
            ``2 * MIN_JOBS_PER_WORKER`` samples stay in this process). The output does not depend on it.

    A complete benchmark with the same settings is left as it is (so callers may call this lazily). A
    benchmark made with the same settings but other categories gains the missing ones (a sample's bytes do
    not depend on which others are generated).
    """
    root = Path(root).expanduser().resolve()
    categories = tuple(CATEGORIES if categories is None else categories)
    _check_arguments(categories, n_train, n_test, size)
    settings = _settings(categories, n_train, n_test, size, seed)
    previous = _read_settings(root)
    if previous is not None and _differ_in_categories_only(previous, settings):
        present = [
            c for c in previous["categories"] if all(p.exists() for p in _category_outputs(root, c, size))
        ]
        categories = tuple(c for c in categories if c not in present)
        if not categories:
            return root
        union = [c for c in CATEGORIES if c in present or c in categories]
        previous = settings = _settings(union, n_train, n_test, size, seed)
    elif previous is not None and not overwrite:
        changed = ", ".join(
            f"{k}={previous.get(k)!r} -> {v!r}" for k, v in settings.items() if previous.get(k) != v
        )
        raise DatasetError(
            f"{root} holds a synthetic benchmark made with other settings ({changed}). Pass overwrite=True "
            "(CLI: --overwrite) to replace it, or choose another root."
        )
    ours = _outputs(root, previous) if previous is not None else []
    written = [path for category in categories for path in _category_outputs(root, category, size)]
    foreign = [path for path in written if path.exists() and path not in ours]
    if foreign and not overwrite:
        raise DatasetError(
            f"{foreign[0]} already exists and was not written by this generator with known settings. "
            "Pass overwrite=True (CLI: --overwrite) to replace it, or choose another root."
        )

    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=root))
    try:
        jobs = [
            SampleJob(staging / f"realiad_{size}" / category, category, sample, sequence, size, seed)
            for category in categories
            for sequence, sample in enumerate(plan_samples(n_train, n_test))
        ]
        entries: dict[str, dict[str, list[dict]]] = {c: {"train": [], "test": []} for c in categories}
        for job, job_entries in zip(jobs, _run_jobs(jobs, workers, progress), strict=True):
            entries[job.category][job.sample.split] += job_entries
        (staging / JSON_DIR).mkdir()
        for category in categories:
            meta = {"prefix": "", "normal_class": "OK", "generator": GENERATOR, "seed": seed, "size": size}
            document = {"meta": meta, **entries[category]}
            (staging / JSON_DIR / f"{category}.json").write_text(
                json.dumps(document, indent=1), encoding="utf-8"
            )
        _publish(staging, root, settings, written, ours)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _publish(
    staging: Path, root: Path, settings: dict, targets: list[Path], previous_outputs: list[Path]
) -> None:
    """Move the staged ``targets`` into place, removing ``previous_outputs`` that ``settings`` no longer
    name; the meta file (``settings``) is written last."""
    (root / META_FILE).unlink(missing_ok=True)
    kept = set(_outputs(root, settings)) - set(targets)
    for path in {*previous_outputs, *targets} - kept:
        _remove(path)
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        (staging / target.relative_to(root)).rename(target)
    plan = plan_samples(settings["n_train"], settings["n_test"])
    meta = {
        "generator": GENERATOR,
        "settings": settings,
        "views": list(VIEW_NAMES),
        "defect_types": DEFECT_TYPES,
        "variant_colours": np.round(VARIANT_COLOURS.astype(float), 3).tolist(),
        "samples_per_category": {
            "train": sum(s.split == "train" for s in plan),
            "test": {
                code: sum(s.split == "test" and s.anomaly_class == code for s in plan)
                for code in ("OK", *DEFECT_TYPES)
            },
        },
    }
    partial = root / f"{META_FILE}.partial"
    partial.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    partial.replace(root / META_FILE)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m multiflow_pl.data.synthetic --root DIR [options]``."""
    parser = argparse.ArgumentParser(
        prog="python -m multiflow_pl.data.synthetic",
        description="Write the synthetic five-view anomaly-detection benchmark in Real-IAD layout.",
    )
    parser.add_argument("--root", default="data/synthetic", help="dataset root (default: %(default)s)")
    parser.add_argument("--categories", nargs="+", choices=CATEGORIES, help="categories (default: all)")
    parser.add_argument("--n-train", type=int, default=48, help="normal training samples per category")
    parser.add_argument("--n-test", type=int, default=48, help="test samples per category (half defective)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a benchmark made with other settings"
    )
    parser.add_argument("--workers", type=int, default=1, help="rendering processes (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    root = generate(
        args.root,
        args.categories,
        args.n_train,
        args.n_test,
        args.size,
        args.seed,
        overwrite=args.overwrite,
        progress=not args.quiet,
        workers=args.workers,
    )
    print(f"Synthetic benchmark ready in {root} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
