"""Peak memory of training and testing on cached features at 4x a Real-IAD category.

A Real-IAD category averages about 250 training and 760 test samples of 5 views; this simulates 1,000
training and 3,000 test samples x 5 views of 304 x 24 x 24 random features, written as float16 ``.npy``
files (the feature cache's format) to a temporary folder and opened memory-mapped, never loaded whole.
A fresh process then trains a small flow for one epoch on the training cache (``CachedFeatureDataset`` +
``DataLoader``, noise conditioning, foreground-weighted loss, AdamW) and scores the whole test cache
(NLL maps -> background masking -> upsampled anomaly maps -> image scores) into the streaming
``AnomalyMetrics(mode="binned")`` with synthetic ground-truth masks. The flow is small on purpose (default
1 block, hidden 4): the point is the data path's memory, not the model's quality.

Memory is read from /proc/self/status after every batch: VmHWM (peak resident set, the headline number),
and the peaks of RssAnon (the process's own memory) and RssFile (pages of memory-mapped files currently
mapped; the kernel can drop them at any time, they are page cache).

    PYTHONPATH=src python benchmarks/bench_memory.py
    PYTHONPATH=src python benchmarks/bench_memory.py --train-samples 250 --test-samples 760 --blocks 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path

import numpy as np

VIEWS, CHANNELS, SIDE = 5, 304, 24
MIB = 2**20


def write_cache(folder: Path, name: str, n_samples: int, seed: int) -> None:
    """``<name>.features.npy`` [N, V, C, h, w] float16 and ``<name>.foreground.npy`` [N, V, h, w] uint8.

    Random features, written through a memory map in chunks; a pool of 16 random samples is reused so
    that generating 7 GB stays quick (the content does not matter for memory).
    """
    rng = np.random.default_rng(seed)
    pool = rng.standard_normal((16, VIEWS, CHANNELS, SIDE, SIDE), dtype=np.float32).astype(np.float16)
    features = np.lib.format.open_memmap(
        folder / f"{name}.features.npy",
        mode="w+",
        dtype=np.float16,
        shape=(n_samples, VIEWS, CHANNELS, SIDE, SIDE),
    )
    for start in range(0, n_samples, len(pool)):
        stop = min(start + len(pool), n_samples)
        features[start:stop] = pool[: stop - start]
    features.flush()
    del features
    foreground = np.lib.format.open_memmap(
        folder / f"{name}.foreground.npy", mode="w+", dtype=np.uint8, shape=(n_samples, VIEWS, SIDE, SIDE)
    )
    foreground[:] = 1
    foreground[:, :, :2] = 0  # a background strip, so that masking does something
    foreground.flush()


def _status_kib() -> dict[str, int]:
    """Memory fields of /proc/self/status in KiB (Linux)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0])
    return fields


def _samples(prefix: str, n_samples: int, anomalous_every: int) -> list:
    from multiflow_pl.data.sample import MultiViewSample, ViewRecord

    samples = []
    for i in range(n_samples):
        label = int(anomalous_every > 0 and i % anomalous_every == 0)
        views = tuple(
            ViewRecord(f"C{v + 1}", Path(f"/sim/{prefix}{i}_C{v + 1}.jpg"), None, label * (v % 2), "OK")
            for v in range(VIEWS)
        )
        samples.append(MultiViewSample(f"{prefix}_{i:04d}", "sim", label, views))
    return samples


def measure(folder: str, args: argparse.Namespace, results: multiprocessing.Queue) -> None:
    """Train one epoch and score the test set in this fresh process; put the memory figures in ``results``."""
    import torch
    from torch.utils.data import DataLoader

    from multiflow_pl.data.dataset import CachedFeatureDataset, collate_samples
    from multiflow_pl.evaluation.metrics import AnomalyMetrics
    from multiflow_pl.models.anomaly_map import anomaly_maps, image_scores, mask_background
    from multiflow_pl.models.flow import MultiViewFlow, noise_condition

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    peaks = {"RssAnon": 0, "RssFile": 0}
    baseline = _status_kib()

    def sample_memory() -> None:
        status = _status_kib()
        for key in peaks:
            peaks[key] = max(peaks[key], status[key])

    def loader(name: str, n_samples: int, anomalous_every: int, shuffle: bool) -> DataLoader:
        features = np.load(Path(folder) / f"{name}.features.npy", mmap_mode="r")
        foreground = np.load(Path(folder) / f"{name}.foreground.npy", mmap_mode="r")
        assert isinstance(features, np.memmap)
        dataset = CachedFeatureDataset(_samples(name, n_samples, anomalous_every), features, foreground)
        return DataLoader(
            dataset, args.batch, shuffle=shuffle, num_workers=args.workers, collate_fn=collate_samples
        )

    kernel_sizes = (3, 3, 3, 3, 3, 5)[: args.blocks]
    flow = MultiViewFlow(CHANNELS, VIEWS, "top_ring", args.blocks, args.hidden, kernel_sizes)
    optimizer = torch.optim.AdamW(flow.parameters(), lr=2e-4, betas=(0.9, 0.95), weight_decay=1e-5)
    start = time.perf_counter()
    for batch in loader("train", args.train_samples, 0, shuffle=True):
        x, cond = noise_condition(batch["features"])
        loss = flow.loss(x, batch["foreground"], cond)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sample_memory()
    train_s = time.perf_counter() - start
    train_hwm = _status_kib()["VmHWM"]

    metrics = AnomalyMetrics(mode="binned")
    side = args.eval_size
    coords = torch.arange(side, dtype=torch.float32)
    blob = ((coords[:, None] - side / 2) ** 2 + (coords[None, :] - side / 3) ** 2) <= (side / 8) ** 2
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in loader("test", args.test_samples, 4, shuffle=False):
            nll = mask_background(flow.nll(batch["features"]), batch["foreground"])
            maps = anomaly_maps(nll, side).flatten(0, 1)
            labels = batch["view_labels"].flatten()
            masks = blob.expand(len(labels), side, side) & labels.bool()[:, None, None]
            keys = [key for key in batch["key"] for _ in range(VIEWS)]
            metrics.update(image_scores(nll).flatten(), labels, keys, maps, masks)
            sample_memory()
        results_dict = metrics.compute()
    test_s = time.perf_counter() - start
    final = _status_kib()
    results.put(
        {
            "baseline_rss": baseline["VmRSS"] * 1024,
            "train_hwm": train_hwm * 1024,
            "hwm": final["VmHWM"] * 1024,
            "anon": peaks["RssAnon"] * 1024,
            "file": peaks["RssFile"] * 1024,
            "train_s": train_s,
            "test_s": test_s,
            "pixel_auroc": results_dict.get("pixel_auroc", float("nan")),
            "n_parameters": flow.n_parameters,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-samples", type=int, default=1000)
    parser.add_argument("--test-samples", type=int, default=3000)
    parser.add_argument("--blocks", type=int, default=1, help="flow blocks (1-6)")
    parser.add_argument("--hidden", type=int, default=4, help="hidden channels of the flow's subnetworks")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--workers", type=int, default=0, help="DataLoader workers (their memory is not counted)"
    )
    parser.add_argument("--eval-size", type=int, default=256, help="side of the anomaly maps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dir", default=None, help="folder for the simulated cache (default: a temp folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        start = time.perf_counter()
        write_cache(Path(folder), "train", args.train_samples, seed=0)
        write_cache(Path(folder), "test", args.test_samples, seed=1)
        on_disk = sum(p.stat().st_size for p in Path(folder).iterdir())
        print(
            f"Simulated cache: {args.train_samples} train + {args.test_samples} test samples x {VIEWS} views "
            f"x {CHANNELS} x {SIDE} x {SIDE} float16 = {on_disk / 2**30:.2f} GiB on disk "
            f"(written in {time.perf_counter() - start:.0f} s)"
        )
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        process = context.Process(target=measure, args=(folder, args, results))
        process.start()
        figures = results.get()
        process.join()
    print(
        f"Flow: {args.blocks} block(s), hidden {args.hidden} ({figures['n_parameters']:,} parameters), batch "
        f"{args.batch}, {args.workers} DataLoader workers, {args.threads} threads; anomaly maps "
        f"{args.eval_size}^2, AnomalyMetrics(mode='binned'); "
        f"pixel AUROC {figures['pixel_auroc']:.3f} "
        f"(random features: about 0.5 expected)"
    )
    print(f"\n{'measure':46s} {'MiB':>8s}")
    rows = [
        ("RSS after imports (fresh process)", figures["baseline_rss"]),
        ("peak RSS (VmHWM) after training", figures["train_hwm"]),
        ("peak RSS (VmHWM) after testing", figures["hwm"]),
        ("  of which peak RssAnon (own memory)", figures["anon"]),
        ("  of which peak RssFile (mapped cache pages)", figures["file"]),
        ("cache files on disk", on_disk),
    ]
    for name, value in rows:
        print(f"{name:46s} {value / MIB:8.0f}")
    print(f"\ntrain epoch {figures['train_s']:.0f} s, test pass {figures['test_s']:.0f} s")


if __name__ == "__main__":
    main()
