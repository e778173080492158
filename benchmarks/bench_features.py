"""Feature-extraction throughput of the cache build: images/s with and without DataLoader workers.

Writes a synthetic folder of N samples x 5 views (JPEG) to a temporary directory, indexes it with
``MultiViewSample``/``ViewRecord``, and builds the feature cache (``FeatureCache.load_or_build``) from
scratch with ``num_workers`` 0 and 2. The default backbone is the demo's (conf/backbone/resnet18.yaml:
resnet18 ``act1``, random init, 64 px input, 2 x 2 average pooling); ``--layers``, ``--input-size`` and
``--pool`` pick others.
For context it also times image decoding alone and the backbone alone (contiguous vs channels-last).

    PYTHONPATH=src python benchmarks/bench_features.py
    PYTHONPATH=src python benchmarks/bench_features.py --layers layer2 --input-size 256 --pool 1
    PYTHONPATH=src python benchmarks/bench_features.py --samples 64 --reps 3 --device cuda
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from multiflow_pl.data.dataset import MultiViewImageDataset
from multiflow_pl.data.features import FeatureCache
from multiflow_pl.data.sample import MultiViewSample, ViewRecord
from multiflow_pl.models.backbone import FeatureExtractor

VIEWS = ("C1", "C2", "C3", "C4", "C5")


def write_samples(root: Path, n_samples: int, size: int) -> list[MultiViewSample]:
    """``n_samples`` x 5 smooth random RGB JPEGs (quality 90), like product photos in compressibility."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n_samples):
        records = []
        for view in VIEWS:
            coarse = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
            image = Image.fromarray(coarse).resize((size, size), Image.BICUBIC)
            path = root / f"S{i:04d}" / f"toy_{i:04d}_OK_{view}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path, quality=90)
            records.append(ViewRecord(view, path, None, 0, "OK"))
        samples.append(MultiViewSample(f"toy_{i:04d}_OK", "toy", 0, tuple(records)))
    return samples


def _median_time(fn: Callable[[], None], reps: int, device: torch.device) -> float:
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=24, help="samples (x5 views) in the folder")
    parser.add_argument("--image-size", type=int, default=256, help="side of the JPEGs on disk")
    parser.add_argument("--layers", nargs="+", default=["act1"], help="resnet18 layers to extract")
    parser.add_argument("--input-size", type=int, default=64, help="backbone input side")
    parser.add_argument("--pool", type=int, default=2, help="average pooling of the features")
    parser.add_argument("--batch", type=int, default=8, help="samples per extraction batch")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    extractor = FeatureExtractor(
        "resnet18", args.layers, pretrained=False, input_size=args.input_size, pool=args.pool
    )
    n_images = args.samples * len(VIEWS)
    print(
        f"resnet18 {'+'.join(args.layers)} (random init, pool {args.pool}) at {args.input_size} px -> "
        f"{extractor.out_channels} x "
        f"{extractor.feature_size}; {args.samples} samples x {len(VIEWS)} views of {args.image_size} px "
        f"JPEG; batch {args.batch} samples; device {device}, {torch.get_num_threads()} threads, "
        f"median of {args.reps}"
    )
    rows: list[tuple[str, float]] = []  # (stage, seconds for all images)
    with tempfile.TemporaryDirectory() as tmp:
        samples = write_samples(Path(tmp) / "images", args.samples, args.image_size)
        dataset = MultiViewImageDataset(samples, args.input_size, 0, extractor.feature_size)
        decode_all = _median_time(lambda: [dataset[i] for i in range(len(dataset))], 1, device)
        rows.append(("decode + resize only", decode_all))
        images = torch.stack([dataset[i]["images"] for i in range(args.batch)]).flatten(0, 1).to(device)
        for name, layout in (("contiguous", torch.contiguous_format), ("channels-last", torch.channels_last)):
            model = extractor.to(device, memory_format=layout)
            batch = images.contiguous(memory_format=layout)
            with torch.inference_mode():
                model(batch)  # warm-up
                seconds = _median_time(lambda m=model, b=batch: m(b), args.reps, device)
            rows.append((f"backbone only, {name}", seconds * n_images / len(batch)))
        builds = itertools.count()  # every build gets a fresh cache folder
        for workers in args.workers:

            def build(workers: int = workers) -> None:
                cache_dir = Path(tmp) / f"cache{next(builds)}"
                FeatureCache(cache_dir, args.batch, workers, args.device, False).load_or_build(
                    extractor, dataset
                )

            rows.append((f"cache build, num_workers={workers}", _median_time(build, args.reps, device)))
    print(f"\n{'stage':36s} {'seconds':>8s} {'images/s':>9s}")
    for name, seconds in rows:
        print(f"{name:36s} {seconds:8.2f} {n_images / seconds:9.1f}")
    print(f"\n({n_images} images per row; 'backbone only' is scaled from one batch of {len(images)} images.)")


if __name__ == "__main__":
    main()
