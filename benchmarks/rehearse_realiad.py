"""Rehearsal of the paper's Real-IAD setting at a Real-IAD category's size, stage by stage.

Runs ``+experiment=realiad`` on a category in Real-IAD layout (e.g. ``python -m multiflow_pl.data.synthetic
--realiad-shaped``: 240 train and 760 test samples of five 1024-px JPEGs), each stage in a process of its own,
measuring its wall time and peak resident set (``wait4``):

- ``extract``: the train and test feature caches (JPEG decode, PIL resize to 768, backbone), their bytes;
- ``train``: ``--epochs`` epochs on the cached features (the paper's flow: 6 blocks, hidden 64, batches of 8);
- ``test``: ``multiflow_pl.evaluate`` on the last checkpoint (test pass, metrics, the prediction pickle);
- ``adeval``: Real-IAD's official tool (``python -m multiflow_pl.adeval``) on that pickle.

Real B5 at 768 px takes seconds per image on a CPU, so by default the backbone is a stand-in of B5's output
shape, 304 x 24 x 24 per view (``realiad_standin``: 4 x 4 average pooling, an 8 x 8 stride-8 convolution to
304 channels, GELU, a 1 x 1 convolution; random weights), and B5's own speed comes from
``bench_b5_reference.py``. ``--backbone b5`` runs the real one (random weights).

    PYTHONPATH=src python benchmarks/rehearse_realiad.py --root data/realiad_shaped --work /tmp/rehearsal
    PYTHONPATH=src python benchmarks/rehearse_realiad.py ... --device cuda --backbone b5 --epochs 40
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import register_model
from torch import nn

STAGES = ("extract", "train", "test", "adeval")
SAMPLE_KEY = r"([a-zA-Z][a-zA-Z0-9_]*_[0-9]{4}_[A-Z][A-Z_]*[A-Z])_C[0-9]_"


class StandIn(nn.Module):
    """Images [N,3,768,768] -> features [N,304,24,24] at about 0.1 GMAC per image (B5: about 25)."""

    def __init__(self, channels: int = 304, **_: object) -> None:
        super().__init__()
        self.pretrained_cfg = {"mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD}
        self.embed = nn.Conv2d(3, channels, 8, stride=8)
        self.mix = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(F.gelu(self.embed(F.avg_pool2d(x, 4))))


@register_model
def realiad_standin(pretrained: bool = False, **kwargs: object) -> StandIn:
    """timm's name for :class:`StandIn` (random weights only)."""
    return StandIn(**kwargs)


def overrides(args: argparse.Namespace) -> list[str]:
    """The command line of every stage: the paper's setting on the rehearsal data, 0 loader workers."""
    chosen = [
        "+experiment=realiad",
        f"paths.root_dir={args.work}",
        f"data.root={args.root}",
        f"data.category={args.category}",
        f"data.resolution={args.resolution}",
        "data.num_workers=0",
        "data.cache.num_workers=0",
        "data.pin_memory=false",
        f"data.cache.device={args.device}",
        f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
        "trainer.devices=1",
        "backbone.pretrained=false",
        "logger=csv",
        "callbacks.progress_bar.kind=log",
    ]
    if args.backbone == "standin":
        chosen += [
            "backbone.name=realiad_standin",
            "backbone.layers=[mix]",
            "backbone.static_padding_size=null",
        ]
    return chosen


def compose_run(name: str, run_dir: Path, chosen: list[str]):
    """A composed config as the entry point ``name`` would see it, running in ``run_dir``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from multiflow_pl.config import config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(name, overrides=[f"hydra.run.dir={run_dir}", *chosen], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
        del cfg.hydra
    return cfg


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run_extract(args: argparse.Namespace) -> dict:
    from multiflow_pl.pipeline import build_data_and_model

    cfg = compose_run("train", args.work / "runs" / "extract", overrides(args))
    datamodule, _ = build_data_and_model(cfg)
    record = {}
    for split, stage in (("train", "fit"), ("test", "test")):
        start = time.perf_counter()
        datamodule.setup(stage)
        seconds = time.perf_counter() - start
        n_images = 5 * len(datamodule.datasets[split])
        record[f"{split}_images"] = n_images
        record[f"{split}_extract_s"] = seconds
        record[f"{split}_images_per_s"] = n_images / seconds
    record["cache_bytes"] = folder_bytes(Path(cfg.paths.cache_dir))
    return record


def run_train(args: argparse.Namespace) -> dict:
    from multiflow_pl.train import train

    run_dir = args.work / "runs" / "train"
    chosen = [*overrides(args), f"trainer.max_epochs={args.epochs}", "test=false"]
    chosen += [f"trainer.limit_train_batches={args.train_batches}"] if args.train_batches else []
    cfg = compose_run("train", run_dir, chosen)
    start = time.perf_counter()
    train(cfg)
    return {"fit_s": time.perf_counter() - start, "epochs": args.epochs, "train_batches": args.train_batches}


def run_test(args: argparse.Namespace) -> dict:
    from multiflow_pl.evaluate import evaluate

    checkpoint = args.work / "runs" / "train" / "checkpoints" / "last.ckpt"
    chosen = [f"paths.root_dir={args.work}", f"ckpt_path={checkpoint}", "+data.num_workers=0", "logger=csv"]
    chosen += [f"trainer.limit_test_batches={args.test_batches}"] if args.test_batches else []
    cfg = compose_run("eval", args.work / "runs" / "test", chosen)
    start = time.perf_counter()
    metrics = evaluate(cfg)
    pickle = args.work / "runs" / "test" / "predictions" / f"{args.category}.pkl"
    seconds = time.perf_counter() - start
    return {
        "test_s": seconds,
        "test_batches": args.test_batches,
        "metrics": metrics,
        "pickle_bytes": pickle.stat().st_size,
    }


def adeval_command(args: argparse.Namespace) -> list[str]:
    pickle = args.work / "runs" / "test" / "predictions" / f"{args.category}.pkl"
    prefix = f"{args.root}/realiad_{args.resolution}/{args.category}/"
    return [sys.executable, "-m", "multiflow_pl.adeval", str(pickle), "--add_prefix", prefix,
            "--sample_key_pat", SAMPLE_KEY, "--evaluate_size", "256"]  # fmt: skip


def measured(command: list[str], log: Path) -> tuple[float, float]:
    """Run ``command`` (stdout to ``log``, stderr to ``log``.err); its wall seconds and peak RSS in MiB (that
    of its largest process)."""
    start = time.perf_counter()
    with log.open("w") as out, log.with_suffix(".err").open("w") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{command[:4]} failed ({code}); see {log} and its .err")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="dataset root in Real-IAD layout")
    parser.add_argument("--work", type=Path, required=True, help="folder for caches, runs and results")
    parser.add_argument("--category", default="can")
    parser.add_argument("--resolution", default="1024")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-batches", type=int, help="batches per epoch (default: all)")
    parser.add_argument("--test-batches", type=int, help="test batches (default: all)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--backbone", default="standin", choices=["standin", "b5"])
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--stage", choices=STAGES[:3], help=argparse.SUPPRESS)  # inside a stage's process
    args = parser.parse_args()
    args.root, args.work = args.root.resolve(), args.work.resolve()
    if args.stage:
        record = {"extract": run_extract, "train": run_train, "test": run_test}[args.stage](args)
        (args.work / f"{args.stage}.json").write_text(json.dumps(record, indent=1, default=float))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    results = {}
    for stage in args.stages:
        log = args.work / f"{stage}.log"
        if stage == "adeval":
            wall, rss = measured(adeval_command(args), log)
            fields = log.read_text().strip().splitlines()[-1].split(",")[1:]  # name,value,name,value...
            record = {name: float(value) for name, value in zip(fields[::2], fields[1::2], strict=True)}
        else:
            wall, rss = measured([sys.executable, __file__, *sys.argv[1:], "--stage", stage], log)
            record = json.loads((args.work / f"{stage}.json").read_text())
        results[stage] = {"wall_s": wall, "peak_rss_mib": rss, **record}
        print(stage, json.dumps(results[stage], default=float), flush=True)
    (args.work / "results.json").write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
