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

Command line: ``python -m multiflow_pl.inference EXPORT_DIR INPUT`` prints one CSV row per sample. As in
``multiflow_pl.predict``, a sample with a view whose image is missing, empty, not an image or damaged gets a
row with decision INVALID, empty scores and the reason in ``input_flags`` (:mod:`multiflow_pl.invalid`); a
line on stderr names such samples and the exit status is then 3 (2: an error stopped the run). ``--strict``
stops at the first instead. Only torch, torchvision (JPEG decoding), numpy and Pillow are needed (and
onnxruntime for ``.onnx`` files), no Lightning or Hydra.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from multiflow_pl.data.dataset import MultiViewImageDataset, readable_batches
from multiflow_pl.data.images import read_views
from multiflow_pl.data.inputs import find_samples
from multiflow_pl.data.sample import MultiViewSample
from multiflow_pl.data.view_profile import format_flags
from multiflow_pl.invalid import EXIT_INVALID_SAMPLES, INVALID, invalid_message
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

    @property
    def columns(self) -> list[str]:
        """The keys of :meth:`score_path`'s rows."""
        return ["key", "score", "score_mean", "decision", *(f"score_{v}" for v in self.views), "input_flags"]

    def score_path(
        self, path: str | Path, batch_size: int = 8, split: str = "test", strict: bool = False
    ) -> Iterator[dict]:
        """Score the samples at ``path`` (any input of ``multiflow_pl.predict``: a sample folder, a folder
        of sample folders, a dataset root or meta JSON); yields one row per sample, in input order: ``key``,
        ``score`` (max over views), ``score_mean``, ``decision`` (OK/NG with a threshold; INVALID for a
        sample whose images cannot be read), ``score_<view>`` and ``input_flags`` (why it cannot be read).

        With ``strict`` a sample lacking a view or an image that cannot be read stops with a
        :class:`~multiflow_pl.data.errors.DatasetError` naming it.
        """
        found = find_samples(
            path,
            self.views,
            category=self.metadata.get("category", "unknown"),
            split=split,
            json_dir=self.metadata.get("json_dir", "realiad_jsons"),
            resolution=str(self.metadata.get("resolution", "256")),
            allow_missing_views=not strict,
        )
        dataset = MultiViewImageDataset(
            found.samples,
            self.input_size,
            mask_size=0,
            feature_size=None,
            flip_views=self.flip_views,
            unreadable="raise" if strict else "flag",
        )
        for batch in readable_batches(DataLoader(dataset, batch_size=None), batch_size):
            rows = {}  # input index -> row
            for item in batch["unreadable"]:
                row = dict.fromkeys(self.columns, "")
                row.update(key=item["key"], decision=INVALID, input_flags=format_flags(item["unreadable"]))
                rows[int(item["index"])] = row
            scores = self(batch["images"]) if "images" in batch else {}
            for i, key in enumerate(batch.get("key", [])):
                score = float(scores["sample_max"][i])
                row = {
                    "key": key,
                    "score": score,
                    "score_mean": float(scores["sample_mean"][i]),
                    "decision": "",
                }
                if not math.isfinite(score):
                    row["decision"] = INVALID
                elif self.threshold is not None:
                    row["decision"] = "NG" if score > self.threshold.value else "OK"
                row.update({f"score_{v}": float(scores["image"][i, j]) for j, v in enumerate(self.views)})
                rows[int(batch["index"][i])] = {**row, "input_flags": ""}
            yield from (rows[index] for index in sorted(rows))


def main(argv: list[str] | None = None) -> None:
    """``python -m multiflow_pl.inference EXPORT_DIR INPUT [--batch-size N] [--device D] [--strict]``: CSV
    to stdout; exit status 3 when some samples were INVALID, 2 when an error stopped the run."""
    from multiflow_pl.errors import user_errors  # not needed by the scorer itself

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", help="folder holding export.json (python -m multiflow_pl.export)")
    parser.add_argument("input", help="a sample folder, a folder of sample folders, a dataset root or JSON")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--strict", action="store_true", help="stop at the first image that cannot be read")
    args = parser.parse_args(argv)
    invalid, total = {}, 0
    with user_errors():
        scorer = ExportedScorer(args.export_dir, args.device)
        writer = csv.DictWriter(sys.stdout, fieldnames=scorer.columns)
        writer.writeheader()
        for row in scorer.score_path(args.input, args.batch_size, strict=args.strict):
            writer.writerow(row)
            total += 1
            if row["decision"] == INVALID:
                invalid[row["key"]] = row["input_flags"] or "non-finite score"
    if invalid:
        print(f"warning: {invalid_message(invalid, total)}", file=sys.stderr)
        raise SystemExit(EXIT_INVALID_SAMPLES)


if __name__ == "__main__":
    main()
