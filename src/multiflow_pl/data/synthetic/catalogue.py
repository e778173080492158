"""The catalogue: defect types, colour variants and the object categories (parts, paint, defect sites)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from multiflow_pl.data.synthetic.geometry import (
    NX,
    NY,
    PX,
    PY,
    PZ,
    SIDE,
    TOP,
    Cuboid,
    Cylinder,
    Hits,
    Part,
    fast_atan2,
    fast_hypot,
    wrap,
)

DEFECT_TYPES: dict[str, str] = {
    "HS": "scratch: a thin dark curve on the surface",
    "ZW": "contamination: a blob of foreign colour on the surface",
    "QS": "missing part: the can's pull tab, the box's label or the knob's grip is absent",
    "XV": "cross-view inconsistency: one side view shows another colour variant than the other views",
}
"""Defect code -> description."""

VARIANT_COLOURS = np.array(
    [[0.80, 0.16, 0.12], [0.16, 0.36, 0.84], [0.18, 0.62, 0.26], [0.92, 0.74, 0.12]], dtype=np.float32
)
"""[4,3] RGB body colours of the variants (red, blue, green, yellow), visible from every camera."""

# Paint of labels, lids, tape and grips.
PAPER = np.array([0.93, 0.92, 0.88], dtype=np.float32)
INK = np.array([0.10, 0.10, 0.12], dtype=np.float32)
METAL = np.array([0.70, 0.71, 0.74], dtype=np.float32)
KNOB_GREY = np.array([0.52, 0.52, 0.56], dtype=np.float32)
TAPE = np.array([0.80, 0.72, 0.52], dtype=np.float32)


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
    r = fast_hypot(u, v)
    albedo[lid & (r < 0.30)] = METAL
    albedo[lid & (r > 0.27) & (r < 0.29)] = METAL * 0.6
    albedo[lid & (r < 0.03)] = METAL * 0.7
    tab = hits.on("tab")
    albedo[tab] = METAL * 1.12
    albedo[tab & (hits.face == PZ) & (fast_hypot(u - 0.20, v) < 0.03)] = METAL * 0.35
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
    r, angle = fast_hypot(u, v), fast_atan2(v, u)
    tick = np.abs(wrap(angle, np.pi / 6)) < 0.05
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
CATALOGUE: dict[str, Category] = {category.name: category for category in _CATEGORY_LIST}
"""Category name -> its description."""
CATEGORIES: tuple[str, ...] = tuple(CATALOGUE)
"""The object categories of the synthetic benchmark: ``can``, ``box``, ``knob``."""
