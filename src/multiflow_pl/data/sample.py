"""Dataset-agnostic description of a multi-view sample (pure Python, no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ViewRecord:
    """One camera view of a sample.

    Attributes:
        view: camera name, e.g. ``"C1"``.
        image_path: absolute path of the image file.
        mask_path: absolute path of the ground-truth mask, ``None`` for a normal view.
        label: 1 if this view shows a defect, else 0 (taken from the metadata, never from the path).
        anomaly_class: defect code (``"OK"`` for a normal view).
    """

    view: str
    image_path: Path
    mask_path: Path | None
    label: int
    anomaly_class: str


@dataclass(frozen=True)
class MultiViewSample:
    """All views of one physical product.

    Attributes:
        key: sample key shared by the file names of its views, e.g. ``audiojack__0064_NG_HS``.
        category: product category.
        label: 1 if any view is anomalous, else 0.
        views: the views, sorted by camera (``C1`` .. ``C5`` or the rig's configured order).
    """

    key: str
    category: str
    label: int
    views: tuple[ViewRecord, ...]

    @property
    def view_names(self) -> tuple[str, ...]:
        return tuple(v.view for v in self.views)

    @property
    def anomaly_class(self) -> str:
        """The sample's defect code: the first non-OK view class, else ``"OK"``."""
        return next((v.anomaly_class for v in self.views if v.label), "OK")
