"""Ray intersection with the two primitive kinds, upright cylinders and boxes, in object coordinates (z up,
table at z=0), and the fast elementwise math the renderer shares."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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


def wrap(x: np.ndarray, period: float) -> np.ndarray:
    """``x`` shifted by a multiple of ``period`` into [-period/2, period/2) (faster than float ``%``)."""
    return x - np.floor(x / period + 0.5) * period


def fast_hypot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Elementwise ``hypot(x, y)`` (numpy's hypot is slow on many builds)."""
    return np.sqrt(x * x + y * y)


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
