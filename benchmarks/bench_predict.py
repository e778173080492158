"""Scoring speed for an inspection line: predict's path end to end, per sample, at batch 1 and 8.

The path is what ``multiflow_pl.predict`` runs for each batch: decode the 5 view images from disk (resize to
the backbone input), backbone, flow, anomaly maps, image and sample scores, OK/NG decision. Samples are the
synthetic benchmark's test split (generated under ``--root`` when absent). The model comes from
``--ckpt`` (a trained checkpoint) or, without one, is built untrained from the config and ``--overrides``
(the weights do not change the speed). After the end-to-end pass, each stage is timed alone on the same
batches: decode, backbone, and the rest of the scoring model on its features (foreground masks, flow, maps,
scores), each with its process CPU time (the figure that survives a shared machine) and its wall time (where
the time goes on idle cores).

``--paths exact fast fast_bf16 fast_bf16_streams`` times predict's speed settings end to end in one run:
``exact`` (the eager backbone, predict's default ``speed=exact``), ``fast`` (``backbone_freeze=true
backbone_chunk=5``, :class:`multiflow_pl.speed.fast_backbone.FastBackbone`), ``fast_bf16`` (also
``flow_conv_dtype=bfloat16``) and ``fast_bf16_streams`` (``speed=cpu``: also ``backbone_streams`` =
``--threads``, that many chunks at once, one intra-op thread each). ``exact`` and ``fast_bf16_streams`` are
read from conf/speed/, so they follow the presets. As in predict, the flow folds its weights once for the
run (:func:`multiflow_pl.speed.folded_subnet.keep_folded_weights`) and lays them out for oneDNN; ``--weights
packed plain`` also times each path with the kept weights left in PyTorch's layout (the same scores). Every
path, weight layout and batch size runs ``--rounds`` times, rounds interleaved; the table gives the best round
and the throughput of each. ``--levers`` first
times the backbone alone under each speed lever side by side (rounds interleaved, so a shared machine's
load falls on all alike; best round kept), with its ratio to the eager backbone and the features' largest
difference relative to their largest magnitude.

    PYTHONPATH=src python benchmarks/bench_predict.py --root /tmp/bench --samples 24 --threads 2
    PYTHONPATH=src python benchmarks/bench_predict.py --threads 1 --samples 16 --levers --paths exact fast
    PYTHONPATH=src python benchmarks/bench_predict.py --ckpt CKPT --paths exact fast --weights packed plain
    PYTHONPATH=src python benchmarks/bench_predict.py --ckpt RUN/checkpoints/last.ckpt --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import shlex
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from peers import data_module
from torch.utils.data import DataLoader

from multiflow_pl.config import config_dir
from multiflow_pl.data.dataset import MultiViewImageDataset, collate_samples
from multiflow_pl.models.model import MultiFlowModel
from multiflow_pl.pipeline import build_module, load_trained_model
from multiflow_pl.speed.fast_backbone import FastBackbone
from multiflow_pl.speed.folded_subnet import conv_settings, keep_folded_weights, set_conv_dtype


class Speed(NamedTuple):
    """predict's speed settings (conf/speed/)."""

    backbone_freeze: bool | str
    backbone_chunk: int | None
    backbone_streams: int | str
    flow_conv_dtype: str | None


def preset(name: str) -> Speed:
    """The settings of predict's ``speed=<name>`` preset, read from conf/speed/<name>.yaml."""
    return Speed(**OmegaConf.to_container(OmegaConf.load(config_dir() / "speed" / f"{name}.yaml")))


PATHS = {
    "exact": preset("exact"),
    "fast": Speed(True, 5, 1, None),
    "fast_bf16": Speed(True, 5, 1, "bfloat16"),
    "fast_bf16_streams": preset("cpu"),  # speed=cpu: auto streams = --threads
}


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
    scorer: MultiFlowModel,
    dataset: MultiViewImageDataset,
    batch: int,
    device: torch.device,
    threshold,
    workers: int = 0,
) -> dict:
    """End-to-end wall and CPU time per sample, samples per second, and the CPU and wall time of each stage
    alone.

    Process CPU time is the figure that survives a shared machine: the wall time of a run that others
    slow down is not what the same work takes on idle cores (with several threads it sums their times).
    """
    loader = DataLoader(dataset, batch_size=batch, collate_fn=collate_samples, num_workers=workers)
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
    decode = timed(lambda: [item["images"] for item in loader], device)
    moved = [images.to(device) for images in batches]
    features: list[torch.Tensor] = []
    backbone = timed(lambda: features.extend(scorer.extract(images) for images in moved), device)

    def rest() -> None:  # foreground masks, flow, maps and scores on the features
        for images, feature in zip(moved, features, strict=True):
            scorer.score(feature, scorer.make_foreground(images))

    flow_maps = timed(rest, device)
    n = len(dataset)
    stages = {"decode": decode, "backbone": backbone, "flow_maps": flow_maps}
    return {
        "batch": batch,
        "ms_per_sample": 1000 * total / n,
        "samples_per_s": n / total,
        "cpu_ms_per_sample": 1000 * total_cpu / n,
        **{f"{name}_ms": 1000 * cpu / n for name, (_, cpu) in stages.items()},
        **{f"{name}_wall_ms": 1000 * wall / n for name, (wall, _) in stages.items()},
    }


def levers(backbone: torch.nn.Module, images: torch.Tensor) -> dict[str, Callable[[torch.Tensor], object]]:
    """The backbone under each speed lever: images [N,3,S,S] -> features [N,C,h,w]."""
    eager = backbone.eval()
    channels_last = copy.deepcopy(backbone).eval().to(memory_format=torch.channels_last)  # deepcopy: re-eval
    frozen = FastBackbone(backbone, freeze=True, chunk=None)
    frozen_chunks = FastBackbone(backbone, freeze=True, chunk=5)
    chunks = FastBackbone(backbone, freeze=False, chunk=5)

    def under(context: Callable[[], contextlib.AbstractContextManager], model, cl: bool = False):
        def call(x: torch.Tensor) -> torch.Tensor:
            with context():
                return model(x.contiguous(memory_format=torch.channels_last) if cl else x).float()

        return call

    def bf16() -> contextlib.AbstractContextManager:
        return torch.autocast(images.device.type, dtype=torch.bfloat16)

    return {
        "eager (no_grad)": under(torch.no_grad, eager),
        "inference_mode": under(torch.inference_mode, eager),
        "channels_last": under(torch.no_grad, channels_last, cl=True),
        "bf16 autocast": under(bf16, eager),
        "bf16 + channels_last": under(bf16, channels_last, cl=True),
        "chunks of 5 images": under(torch.no_grad, chunks),
        "jit freeze + optimize_for_inference": under(torch.no_grad, frozen),
        "jit freeze + chunks of 5 (fast)": under(torch.no_grad, frozen_chunks),
    }


def compare_levers(backbone: torch.nn.Module, size: int, batches: list[int], rounds: int, device) -> None:
    """Print the backbone's CPU ms per sample (5 views) under each lever, ratio to eager, feature error."""
    print("\n| batch | backbone lever | CPU ms / sample | ratio to eager | rel. max feature diff |")
    print("|---:|---|---:|---:|---:|")
    for batch in batches:
        images = torch.rand(batch * 5, 3, size, size, device=device)
        variants = levers(backbone, images)
        with torch.no_grad():
            reference = backbone(images)
        best = {name: float("inf") for name in variants}
        error = {}
        for _ in range(rounds):
            for name, call in variants.items():
                features = call(images)  # warm-up, and the error
                error[name] = float((features - reference).abs().max() / reference.abs().max())
                best[name] = min(best[name], timed(lambda call=call, images=images: call(images), device)[1])
        for name in variants:
            ratio = best["eager (no_grad)"] / best[name]
            print(
                f"| {batch} | {name} | {1000 * best[name] / batch:.1f} | {ratio:.2f} | {error[name]:.1e} |",
                flush=True,
            )


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
    parser.add_argument("--workers", type=int, default=0, help="decoding processes (predict's num_workers)")
    parser.add_argument(
        "--paths", nargs="+", default=["exact"], choices=list(PATHS), help="backbone paths timed end to end"
    )
    parser.add_argument(
        "--weights",
        nargs="+",
        default=["packed"],
        choices=["packed", "plain"],
        help="kept flow weights laid out for oneDNN (packed, as predict runs) or in PyTorch's layout",
    )
    parser.add_argument("--levers", action="store_true", help="first compare backbone speed levers")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds of --levers and of the end-to-end runs"
    )
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
    exact_backbone, flow_conv_dtype = scorer.backbone, conv_settings(scorer.flow)["dtype"]
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
        "decode_wall_ms",
        "backbone_wall_ms",
        "flow_maps_wall_ms",
    )
    if args.levers:
        compare_levers(exact_backbone, scorer.input_size, args.batches, args.rounds, device)
    backbones = {}
    for path in args.paths:
        speed = PATHS[path]
        backbones[path] = FastBackbone.configured(
            exact_backbone, speed.backbone_freeze, speed.backbone_chunk, speed.backbone_streams
        )
    results: dict[tuple[str, str, int], list[dict]] = {}
    with torch.inference_mode():
        for _ in range(args.rounds):  # interleaved, so a busy spell of the machine falls on all alike
            for path in args.paths:
                scorer.backbone = backbones[path]
                set_conv_dtype(scorer.flow, PATHS[path].flow_conv_dtype or flow_conv_dtype)
                for weights in args.weights:
                    with keep_folded_weights(scorer, pack=weights == "packed"):
                        for batch in args.batches:
                            r = run(scorer, dataset, batch, device, threshold, args.workers)
                            results.setdefault((path, weights, batch), []).append(r)
    print(
        f"\nBest of {args.rounds} round(s) by wall time; the last column: samples/s of every round."
        "\n\n| path | flow weights | batch | wall ms / sample | samples / s | CPU ms / sample | CPU: decode "
        "| backbone | flow + maps | wall: decode | backbone | flow + maps | samples / s, all rounds |"
    )
    print("|---|---|---:|" + "---:|" * len(columns) + "---|")
    for (path, weights, batch), rounds in results.items():
        best = min(rounds, key=lambda r: r["ms_per_sample"])
        cells = " | ".join(f"{best[c]:.1f}" for c in columns)
        spread = " / ".join(f"{r['samples_per_s']:.1f}" for r in rounds)
        print(f"| {path} | {weights} | {batch} | {cells} | {spread} |", flush=True)
    if "packed" in args.weights and "plain" in args.weights:
        print("\n| path | batch | packed / plain samples/s: median of the rounds' ratios |\n|---|---:|---:|")
        for path in args.paths:
            for batch in args.batches:
                pairs = zip(results[(path, "packed", batch)], results[(path, "plain", batch)], strict=True)
                ratio = statistics.median(p["samples_per_s"] / q["samples_per_s"] for p, q in pairs)
                print(f"| {path} | {batch} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
