"""One sample: pose, colour variant and lighting shared by its five views, the defect drawn into the views
that see it (a surface scratch or blob, a missing part or a cross-view inconsistency), and the masks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from multiflow_pl.data.errors import require_choice
from multiflow_pl.data.synthetic.catalogue import (
    CATALOGUE,
    CATEGORIES,
    DEFECT_TYPES,
    VARIANT_COLOURS,
    Category,
    DefectSite,
)
from multiflow_pl.data.synthetic.geometry import Hits, fast_atan2, fast_hypot, wrap
from multiflow_pl.data.synthetic.imaging import (
    CAMERA_DISTANCE,
    TAN_HALF_FOV,
    VIEW_NAMES,
    Pose,
    compose,
    make_camera,
    shade,
    trace,
)

CONTAMINANTS = np.array([[0.62, 0.30, 0.05], [0.06, 0.06, 0.06], [0.85, 0.15, 0.55]], dtype=np.float32)
SCRATCH_METAL = np.array([0.85, 0.85, 0.82], dtype=np.float32)
LIGHT_AZIMUTH = np.radians(-60.0)  # between the front (C2) and the right (C3) camera


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
            du = wrap(du, self.site.period)
        along = du * np.cos(self.angle) + dv * np.sin(self.angle)
        across = dv * np.cos(self.angle) - du * np.sin(self.angle)
        if self.code == "HS":
            inside = (np.abs(along) <= self.length / 2) & (
                np.abs(across - self.bend * along**2) <= self.width / 2
            )
        else:
            polar = fast_atan2(across, along)
            wave = 1.0 + 0.25 * np.sin(3 * polar + self.phases[0]) + 0.12 * np.sin(5 * polar + self.phases[1])
            inside = fast_hypot(along, across) <= self.radius * wave
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
    spec, nuisance = CATALOGUE[category], Nuisance.draw(rng)
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
