"""Scoring speed for an inspection line: predict's path end to end, per sample, at batch 1 and 8.

The path is what ``multiflow_pl.predict`` runs for each batch: decode the 5 view images from disk (resize to
the backbone input), backbone, flow, anomaly maps, image and sample scores, OK/NG decision. Samples are the
synthetic benchmark's test split (generated under ``--root`` when absent). The model comes from
``--ckpt`` (a trained checkpoint) or, without one, is built untrained from the config and ``--overrides``
(the weights do not change the speed). After the end-to-end pass, each stage is timed alone on the same
batches: decode, backbone, and the rest of the scoring model (flow, maps, scores).

    PYTHONPATH=src python benchmarks/bench_predict.py --root /tmp/bench --samples 24 --threads 2
    PYTHONPATH=src python benchmarks/bench_predict.py --ckpt RUN/checkpoints/last.ckpt --device cuda
"""

from __future__ import annotations

import argparse
import shlex
import time
from collections.abc import Callable
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from peers import data_module
from torch.utils.data import DataLoader

from multiflow_pl.config import config_dir
from multiflow_pl.data.dataset import MultiViewImageDataset, collate_samples
from multiflow_pl.models.model import MultiFlowModel
from multiflow_pl.pipeline import build_module, load_trained_model


def untrained_model(overrides: list[str]) -> tuple[MultiFlowModel, DictConfig]:
    """The configured model for 5 views with its initial weights (same architecture, same speed)."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["paths.root_dir=.", "paths.output_dir=.", *overrides])
    return build_module(cfg, instantiate(cfg.backbone), 5).model.eval(), cfg


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """Wall-clock and process CPU seconds taken by ``fn()`` (CUDA work waited for)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def run(
    scorer: MultiFlowModel, dataset: MultiViewImageDataset, batch: int, device: torch.device, threshold
) -> dict:
    """End-to-end wall and CPU time per sample, samples per second, and the CPU time of each stage alone.

    Process CPU time is the figure that survives a shared machine: the wall time of a run that others
    slow down is not what the same work takes on idle cores (with several threads it sums their times).
    """
    loader = DataLoader(dataset, batch_size=batch, collate_fn=collate_samples)
    limit = torch.tensor(float("inf") if threshold is None else threshold.value)

    def score(images: torch.Tensor) -> torch.Tensor:
        _, sample_max, _, _ = scorer(images.to(device))
        return torch.isfinite(sample_max.cpu()) & (sample_max.cpu() > limit)  # the OK/NG decision

    score(next(iter(loader))["images"])  # warm-up
    batches: list[torch.Tensor] = []

    def end_to_end() -> None:
        for item in loader:
            batches.append(item["images"])
            score(item["images"])

    total, total_cpu = timed(end_to_end, device)
    decode = timed(lambda: [item["images"] for item in loader], device)[1]
    moved = [images.to(device) for images in batches]
    backbone = timed(lambda: [scorer.backbone(images.flatten(0, 1)) for images in moved], device)[1]
    model = timed(lambda: [scorer(images) for images in moved], device)[1]
    n = len(dataset)
    return {
        "batch": batch,
        "ms_per_sample": 1000 * total / n,
        "samples_per_s": n / total,
        "cpu_ms_per_sample": 1000 * total_cpu / n,
        "decode_ms": 1000 * decode / n,
        "backbone_ms": 1000 * backbone / n,
        "flow_maps_ms": 1000 * (model - backbone) / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("logs/bench_predict"), help="benchmark data folder")
    parser.add_argument(
        "--ckpt", type=Path, default=None, help="trained checkpoint (default: untrained model)"
    )
    parser.add_argument("--overrides", default="", help="config of the untrained model (default: the demo's)")
    parser.add_argument("--samples", type=int, default=24, help="test samples scored per batch size")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    overrides = shlex.split(args.overrides)
    if args.ckpt is not None:
        trained = load_trained_model(args.ckpt)
        scorer, cfg, threshold = trained.model, trained.config, trained.threshold
    else:
        (scorer, cfg), threshold = untrained_model(overrides), None
    samples = data_module(args.root.resolve(), cfg.data.category, overrides).split_samples("test")[
        : args.samples
    ]
    scorer = scorer.to(device)
    dataset = MultiViewImageDataset(samples, scorer.input_size, 0, scorer.feature_size)
    print(
        f"{cfg.backbone.name} {list(cfg.backbone.layers)} at {scorer.input_size} px, flow "
        f"{cfg.model.flow.n_blocks} blocks hidden {cfg.model.flow.hidden}, foreground {cfg.data.foreground}; "
        f"{len(samples)} samples x {len(samples[0].views)} views; device {device}, "
        f"{torch.get_num_threads()} threads"
    )
    columns = (
        "ms_per_sample",
        "samples_per_s",
        "cpu_ms_per_sample",
        "decode_ms",
        "backbone_ms",
        "flow_maps_ms",
    )
    print(
        "| batch | wall ms / sample | samples / s | CPU ms / sample | CPU: decode | backbone | flow + maps |"
    )
    print("|---:|" + "---:|" * len(columns))
    with torch.no_grad():
        for batch in args.batches:
            r = run(scorer, dataset, batch, device, threshold)
            print(f"| {batch} | " + " | ".join(f"{r[c]:.1f}" for c in columns) + " |", flush=True)


if __name__ == "__main__":
    main()
