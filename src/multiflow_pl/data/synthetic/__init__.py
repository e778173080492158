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

Modules: :mod:`.geometry` (ray-primitive intersection), :mod:`.catalogue` (categories, defect types,
colour variants), :mod:`.imaging` (cameras, ray casting, shading, noise), :mod:`.render` (one sample's
views, defects and masks), :mod:`.writer` (the benchmark on disk), :mod:`.cli` (the command line).

Usage: ``generate(root)`` or ``python -m multiflow_pl.data.synthetic --root data/synthetic``.
"""

from multiflow_pl.data.synthetic.catalogue import CATEGORIES, DEFECT_TYPES, VARIANT_COLOURS
from multiflow_pl.data.synthetic.cli import main
from multiflow_pl.data.synthetic.imaging import VIEW_NAMES
from multiflow_pl.data.synthetic.render import RenderedView, render_sample
from multiflow_pl.data.synthetic.writer import META_FILE, generate

__all__ = [
    "CATEGORIES",
    "DEFECT_TYPES",
    "META_FILE",
    "VARIANT_COLOURS",
    "VIEW_NAMES",
    "RenderedView",
    "generate",
    "main",
    "render_sample",
]
