"""Multi-Flow against anomalib's single-view detectors (PatchCore, FastFlow, CS-Flow) on the same views.

For each category of the synthetic benchmark (data settings of ``conf/data/synthetic.yaml``): Multi-Flow
(``top_ring``, the default config) and its ``graph=none`` ablation are trained and tested by the project's
own pipeline; each peer is trained on the view images of the same training samples (the validation
hold-out excluded, as for Multi-Flow) and scores every test view; a sample's score is the max over its
views. All metrics come from ``multiflow_pl.evaluation.metrics``. Scoring throughput is timed on random
images of 5 views at batch 1 and 8 samples (preprocessed tensors: backbone, model, maps, scores; Multi-Flow
as ``multiflow_pl.predict`` scores by default, see ``bench_predict.py`` for its faster settings). Needs the
``peers`` extra (``pip install '.[peers]'``).

    PYTHONPATH=src python benchmarks/peers.py --root /tmp/peers --categories can --epochs 2

Writes ``peers.md`` (tables), ``peers.json`` (all numbers) and ``peers.png`` (sample AUROC per defect
type) into ``--root``; ``--plot`` copies the plot elsewhere as well, ``--results`` writes the tables into a
markdown file between the markers ``<!-- bench-peers:begin -->`` and ``<!-- bench-peers:end -->`` (``make
bench-peers``: docs/results.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # anomalib's coreset selection draws a progress bar per step

import matplotlib
import numpy as np
import torch
from demo_search import run_setting
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from peer_detectors import PEERS, ViewImageDataset, build_peer, evaluate_views
from torch.utils.data import DataLoader

from multiflow_pl.config import config_dir
from multiflow_pl.pipeline import load_trained_model
from multiflow_pl.speed.folded_subnet import keep_folded_weights
from multiflow_pl.utils.machine import cpu_model

matplotlib.use("Agg")
import matplotlib.pyplot as plt

N_VIEWS = 5
METRICS = ("sample_auroc", "image_auroc", "pixel_auroc", "pixel_aupro")
HEADERS = ("sample AUROC", "image AUROC", "pixel AUROC", "AUPRO")
LABELS = {"patchcore": "PatchCore", "fastflow": "FastFlow", "csflow": "CS-Flow"}
BEGIN, END = "<!-- bench-peers:begin -->", "<!-- bench-peers:end -->"
TIMER = "+callbacks.timer._target_=lightning.pytorch.callbacks.Timer"


def data_module(root: Path, category: str, overrides: list[str]):
    """The configured synthetic data module for ``category`` (benchmark generated when absent)."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.root_dir={root}", f"data.category={category}", *overrides])
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    return datamodule


@torch.inference_mode()
def samples_per_second(score: Callable[[torch.Tensor], object], size: int, batch: int, repeats: int) -> float:
    """Samples scored per second on random images [batch,5,3,size,size] (after one warm-up call)."""
    images = torch.rand(batch, N_VIEWS, 3, size, size)
    score(images)
    start = time.perf_counter()
    for _ in range(repeats):
        score(images)
    return batch * repeats / (time.perf_counter() - start)


def throughput(score: Callable[[torch.Tensor], object], size: int, repeats: int) -> dict[str, float]:
    """Samples per second at batch 1 and batch 8."""
    return {f"samples_s_b{b}": samples_per_second(score, size, b, repeats) for b in (1, 8)}


def run_multiflow(root: Path, category: str, graph: str, overrides: list[str], repeats: int) -> dict:
    """Train + test Multi-Flow with the project's pipeline; time the trained model's scoring."""
    name = f"{category}-multiflow-{graph}"
    settings = [f"data.category={category}", f"model.flow.graph={graph}", TIMER, *overrides]
    record = run_setting(root, name, settings)
    checkpoint = root / "runs" / name / "checkpoints" / "last.ckpt"
    record["train_s"] = fit_seconds(checkpoint)
    scorer = load_trained_model(checkpoint).model
    with keep_folded_weights(scorer):  # as predict scores (its default, exact path)
        speed = throughput(scorer, scorer.input_size, repeats)
    return {**record, **speed, "method": f"Multi-Flow {graph}"}


def fit_seconds(checkpoint: Path) -> float | None:
    """Seconds of Lightning's fit loop (training + validation epochs) saved by the Timer callback in the last
    checkpoint (the one-time feature cache before it is not included); None without a Timer."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False).get("callbacks", {})
    timer = next((v for k, v in state.items() if k.startswith("Timer")), None)
    if timer is None:
        return None
    elapsed = timer["time_elapsed"]
    return float(elapsed.get("train", 0.0) + elapsed.get("validate", 0.0))


def write_section(path: Path, text: str) -> None:
    """Put ``text`` between the :data:`BEGIN` and :data:`END` markers of the markdown file ``path`` (both
    appended at the end when absent)."""
    old = path.read_text() if path.is_file() else ""
    block = f"{BEGIN}\n{text.rstrip()}\n{END}"
    if BEGIN in old and END in old.split(BEGIN, 1)[1]:
        head, rest = old.split(BEGIN, 1)
        new = head + block + rest.split(END, 1)[1]
    else:
        new = old.rstrip() + ("\n\n" if old.strip() else "") + block + "\n"
    path.write_text(new)


def run_peer(name: str, datamodule, args: argparse.Namespace) -> dict:
    """Train one anomalib peer on the training views, test it on every test view, time its scoring."""
    torch.manual_seed(args.seed)
    peer = build_peer(name, args.image_size, csflow_hidden=args.csflow_hidden)
    train = ViewImageDataset(datamodule.split_samples("train"), args.image_size)
    test = ViewImageDataset(datamodule.split_samples("test"), args.image_size, datamodule.eval_size)
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    losses = peer.fit(
        DataLoader(train, batch_size=args.batch_size, shuffle=True, generator=generator), args.epochs
    )
    train_s = time.perf_counter() - start
    results, _ = evaluate_views(peer, DataLoader(test, batch_size=8 * N_VIEWS), datamodule.eval_size)
    test_s = time.perf_counter() - start - train_s

    def score(images: torch.Tensor) -> torch.Tensor:
        scores, _ = peer(images.flatten(0, 1))
        return scores.view(images.shape[0], -1).amax(dim=1)

    speed = throughput(score, args.image_size, args.repeats)
    print(f"{name}: losses {[round(v, 3) for v in losses]}", flush=True)
    return {**results, **speed, "wall_s": train_s + test_s, "train_s": train_s, "method": name}


def reuse_or_run(path: Path, run: Callable[[], dict]) -> dict:
    """The record saved at ``path`` by an earlier call (delete it to rerun), else ``run()``'s, saved there."""
    if path.is_file():
        return json.loads(path.read_text())
    record = run()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, default=str, indent=1))
    print(f"{record['method']}: sample AUROC {_fmt(record.get('sample_auroc'))}", flush=True)
    return record


def _fmt(value: float | None, percent: bool = True, digits: int = 1) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{100 * value:.{digits}f}" if percent else f"{value:.{digits}f}"


def table(rows: list[dict], classes: list[str]) -> list[str]:
    """A markdown table: one row per method."""
    head = ["method", *HEADERS, *classes, "train s", "train+test s", "samples/s b1", "samples/s b8"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for row in rows:
        cells = [LABELS.get(row["method"], row["method"]), *(_fmt(row.get(k)) for k in METRICS)]
        cells += [_fmt(row.get(f"sample_auroc_{c}")) for c in classes]
        cells += [_fmt(row.get(k), percent=False) for k in ("train_s", "wall_s")]
        cells += [_fmt(row.get(k), percent=False, digits=2) for k in ("samples_s_b1", "samples_s_b8")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def mean_rows(by_category: dict[str, list[dict]]) -> list[dict]:
    """Per method, the mean over categories of every numeric value."""
    methods = [row["method"] for row in next(iter(by_category.values()))]
    means = []
    for method in methods:
        rows = [row for rows in by_category.values() for row in rows if row["method"] == method]
        keys = {k for row in rows for k, v in row.items() if isinstance(v, int | float)}
        means.append(
            {"method": method, **{k: float(np.mean([row.get(k, np.nan) for row in rows])) for k in keys}}
        )
    return means


def plot(rows: list[dict], classes: list[str], path: Path, title: str) -> None:
    """Grouped bars: sample AUROC overall and per defect type, one bar per method."""
    groups = ["all", *classes]
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(1.6 * len(groups) + 2, 3.6))
    for i, row in enumerate(rows):
        values = [row.get("sample_auroc" if g == "all" else f"sample_auroc_{g}", np.nan) for g in groups]
        ax.bar(
            np.arange(len(groups)) + (i - (len(rows) - 1) / 2) * width,
            values,
            width,
            label=LABELS.get(row["method"], row["method"]),
        )
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.set_ylim(0.3, 1.0)
    ax.set_ylabel("sample AUROC (max over views)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("logs/peers"), help="data, cache and run folder")
    parser.add_argument("--categories", nargs="+", default=["can", "box", "knob"])
    parser.add_argument("--peers", nargs="*", default=list(PEERS), choices=PEERS)
    parser.add_argument("--graphs", nargs="*", default=["top_ring", "none"])
    parser.add_argument("--overrides", default="", help="Hydra overrides for Multi-Flow and the data")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs of FastFlow and CS-Flow")
    parser.add_argument("--batch-size", type=int, default=8, help="view images per peer training step")
    parser.add_argument("--image-size", type=int, default=256, help="peer input side")
    parser.add_argument(
        "--csflow-hidden", type=int, default=256, help="CS-Flow hidden channels (anomalib: 1024)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per throughput figure")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=None, help="also save the plot here")
    parser.add_argument("--results", type=Path, default=None, help="write the tables into this markdown file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start, load_start = time.perf_counter(), os.getloadavg()
    records = args.root / "results"  # as given: the tables name it, and a clone's absolute path says nothing
    args.root = args.root.resolve()
    overrides = shlex.split(args.overrides)
    by_category: dict[str, list[dict]] = {}
    for category in args.categories:
        datamodule = data_module(args.root, category, overrides)
        runs = {
            f"multiflow-{g}": partial(run_multiflow, args.root, category, g, overrides, args.repeats)
            for g in args.graphs
        }
        runs |= {name: partial(run_peer, name, datamodule, args) for name in args.peers}
        by_category[category] = [
            reuse_or_run(args.root / "results" / f"{category}-{name}.json", run) for name, run in runs.items()
        ]
    (args.root / "peers.json").write_text(
        json.dumps({"args": vars(args), "results": by_category}, default=str, indent=1)
    )
    keys = {k for rows in by_category.values() for row in rows for k in row}
    classes = sorted(k[13:] for k in keys if k.startswith("sample_auroc_") and k[13:].isupper())
    means = mean_rows(by_category)
    command = " ".join(shlex.quote(a) for a in sys.argv)
    load_end = os.getloadavg()
    lines = [
        f"Written by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {cpu_model()}, "
        f"{os.cpu_count()} logical CPUs, torch threads {args.threads}; load average (1/5/15 min) "
        f"{'/'.join(f'{v:.1f}' for v in load_start)} at the start, {'/'.join(f'{v:.1f}' for v in load_end)} "
        f"at the end; this call ran {time.perf_counter() - start:.0f} s (a record reused from "
        f"{records} counts none of its time).",
        "",
    ]
    for category, rows in by_category.items():
        lines += [f"### {category}", "", *table(rows, classes), ""]
    lines += [f"### mean over {', '.join(by_category)}", "", *table(means, classes), ""]
    (args.root / "peers.md").write_text("\n".join(lines))
    print("\n".join(lines))
    if args.results:
        write_section(args.results, "\n".join(lines))
    names = ", ".join(by_category)
    title = f"synthetic benchmark, {'mean over ' if len(by_category) > 1 else ''}{names}"
    for path in filter(None, (args.root / "peers.png", args.plot)):
        plot(means, classes, path, title)


if __name__ == "__main__":
    main()
