"""Score camera images with an exported model, prepared exactly as in training.

The exported model (``python -m multiflow_pl.export``) takes images already decoded, resized and
flipped; getting that wrong shifts every score (PIL's bilinear resize, for one, is not the model's
antialiased bilinear resize). :class:`ExportedScorer` reads the image files with the training code
(:func:`multiflow_pl.data.images.read_views`: decode to RGB, resize as ``export.json``'s ``resize`` says,
flip the views listed there) and applies the stored threshold::

    from multiflow_pl.inference import ExportedScorer

    scorer = ExportedScorer("logs/export/runs/<time>")   # the folder holding export.json
    for row in scorer.score_path("incoming/"):          # a sample folder, a folder of them, a dataset
        print(row["key"], row["score"], row["decision"])

Command line: ``python -m multiflow_pl.inference EXPORT_DIR INPUT`` prints one CSV row per sample.
Only torch, torchvision (JPEG decoding), numpy and Pillow are needed (and onnxruntime for ``.onnx``
files), no Lightning or Hydra.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from multiflow_pl.data.images import read_views
from multiflow_pl.data.inputs import find_samples
from multiflow_pl.data.sample import MultiViewSample
from multiflow_pl.models.model import OUTPUT_NAMES
from multiflow_pl.models.model_export import load_exported
from multiflow_pl.models.threshold import Threshold


class ExportedScorer:
    """An exported model with its preprocessing and threshold, from the folder holding ``export.json``.

    Args:
        export_dir: the export's run folder (or its ``export.json``).
        device: ``"cpu"`` or ``"cuda"``.
    """

    def __init__(self, export_dir: str | Path, device: str = "cpu") -> None:
        path = Path(export_dir)
        meta_path = path if path.is_file() else path / "export.json"
        self.metadata: dict = json.loads(meta_path.read_text())
        self.model = load_exported(meta_path.parent / self.metadata["file"], device)
        self.views: list[str] = list(self.metadata["views"])
        self.input_size = int(self.metadata["input_size"])
        self.flip_views = frozenset(self.metadata["flip_views"])
        self.resize = str(self.metadata.get("resize", "float"))  # exports from before the option: float
        saved = self.metadata.get("threshold")
        self.threshold = Threshold.from_dict(saved) if saved else None

    def preprocess(self, sample: MultiViewSample) -> torch.Tensor:
        """One sample's images as the model takes them: [V,3,S,S] float RGB in [0,1], training order."""
        flips = [v.view in self.flip_views for v in sample.views]
        return read_views([v.image_path for v in sample.views], self.input_size, flips, self.resize)

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Images [B,V,3,S,S] -> ``image`` [B,V], ``sample_max`` [B], ``sample_mean`` [B], ``maps``."""
        expected = (len(self.views), 3, self.input_size, self.input_size)
        if images.dim() != 5 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"Expected images [B, {', '.join(map(str, expected))}] (float RGB in [0, 1], views "
                f"{', '.join(self.views)}), got {list(images.shape)}; preprocess() prepares them."
            )
        return dict(zip(OUTPUT_NAMES, self.model(images), strict=True))

    def score_path(self, path: str | Path, batch_size: int = 8, split: str = "test") -> Iterator[dict]:
        """Score the samples at ``path`` (any input of ``multiflow_pl.predict``: a sample folder, a folder
        of sample folders, a dataset root or meta JSON); yields one row per sample: ``key``, ``score``
        (max over views), ``score_mean``, ``decision`` (OK/NG with a threshold) and ``score_<view>``."""
        found = find_samples(
            path,
            self.views,
            category=self.metadata.get("category", "unknown"),
            split=split,
            json_dir=self.metadata.get("json_dir", "realiad_jsons"),
            resolution=str(self.metadata.get("resolution", "256")),
        )
        for start in range(0, len(found.samples), batch_size):
            samples = found.samples[start : start + batch_size]
            scores = self(torch.stack([self.preprocess(sample) for sample in samples]))
            for i, sample in enumerate(samples):
                score = float(scores["sample_max"][i])
                row = {"key": sample.key, "score": score, "score_mean": float(scores["sample_mean"][i])}
                if self.threshold is not None:
                    row["decision"] = "NG" if score > self.threshold.value else "OK"
                row.update({f"score_{v}": float(scores["image"][i, j]) for j, v in enumerate(self.views)})
                yield row


def main(argv: list[str] | None = None) -> None:
    """``python -m multiflow_pl.inference EXPORT_DIR INPUT [--batch-size N] [--device D]``: CSV to stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", help="folder holding export.json (python -m multiflow_pl.export)")
    parser.add_argument("input", help="a sample folder, a folder of sample folders, a dataset root or JSON")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    writer = None
    for row in ExportedScorer(args.export_dir, args.device).score_path(args.input, args.batch_size):
        if writer is None:
            writer = csv.DictWriter(sys.stdout, fieldnames=list(row))
            writer.writeheader()
        writer.writerow(row)


if __name__ == "__main__":
    main()
