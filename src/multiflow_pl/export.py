"""Export a checkpoint for deployment: ``python -m multiflow_pl.export ckpt_path=CKPT [format=onnx]``.

Writes into the run directory the model (``multiflow.pt2``, a ``torch.export`` ExportedProgram, or
``multiflow.onnx``: backbone + flow + scoring for the checkpoint's view count and input size; any batch
size) and ``export.json`` (its inputs, outputs, preprocessing, threshold, and the largest difference
from the Python model on a random check batch). :mod:`multiflow_pl.inference` loads both and scores
image files with the training preprocessing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from multiflow_pl.cli import entry_point
from multiflow_pl.config import config_dir
from multiflow_pl.data.datamodule import flips_for
from multiflow_pl.models.model import OUTPUT_NAMES
from multiflow_pl.models.model_export import FORMATS, export_model, load_exported
from multiflow_pl.models.threshold import NORMALISATION
from multiflow_pl.pipeline import load_trained_model
from multiflow_pl.utils.atomic import write_atomic

log = logging.getLogger(__name__)


def export(cfg: DictConfig) -> dict:
    """Export ``cfg.ckpt_path`` into ``cfg.paths.output_dir``; returns the metadata written to export.json."""
    if cfg.format not in FORMATS:
        raise ValueError(f"format={cfg.format!r}; supported: {', '.join(FORMATS)}.")
    trained = load_trained_model(cfg.ckpt_path)
    model, run_cfg, threshold = trained.model, trained.config, trained.threshold
    out_dir, size = Path(cfg.paths.output_dir), model.input_size
    path = export_model(model, out_dir / FORMATS[cfg.format], cfg.format, cfg.example_batch)

    generator = torch.Generator().manual_seed(0)
    images = torch.rand(
        cfg.example_batch, model.n_views, 3, model.input_size, model.input_size, generator=generator
    )
    with torch.no_grad():
        expected, exported = model(images), load_exported(path)(images)
    difference = max(float((a - b).abs().max()) for a, b in zip(expected, exported, strict=True))
    metadata = {
        "format": cfg.format,
        "file": path.name,
        "checkpoint": str(Path(cfg.ckpt_path).resolve()),
        "views": list(run_cfg.get("view_names") or []) or model.n_views,
        "input_size": size,
        "input": f"images [B, {model.n_views}, 3, {size}, {size}] float RGB in [0, 1], resized from the "
        "camera images as `resize` says (float: bilinear, antialiased; pil: PIL's bilinear on 8-bit pixels), "
        "views in the order above, flip_views flipped horizontally; multiflow_pl.inference prepares image "
        "files exactly so",
        "resize": run_cfg.data.get("resize", "float"),
        "outputs": {
            "image": "[B, V] view scores",
            "sample_max": "[B] sample scores (max over views; compare with the threshold)",
            "sample_mean": "[B] mean over views",
            "maps": f"[B, V, {model.eval_size}, {model.eval_size}] anomaly maps",
        },
        "output_order": list(OUTPUT_NAMES),
        "category": run_cfg.data.category,
        "json_dir": run_cfg.data.json_dir,
        "resolution": str(run_cfg.data.resolution),
        "foreground": model.foreground,
        "flip_views": flips_for(run_cfg.data.get("flip_views"), run_cfg.data.category),
        "features_rounded_to_float16": model.round_features,
        "threshold": None if threshold is None else threshold.to_dict(),
        "normalisation": None if threshold is None else NORMALISATION,
        "max_abs_difference_from_python": difference,
    }
    write_atomic(out_dir / "export.json", json.dumps(metadata, indent=2) + "\n")
    log.info("Exported %s (largest difference from the Python model: %.3g)", path, difference)
    return metadata


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="export")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    with entry_point(cfg.paths.output_dir):
        export(cfg)


if __name__ == "__main__":
    main()
