"""Search the embedded demo's settings: train + test the real pipeline for each setting, print a table.

Every setting is a list of Hydra overrides on top of the default config (``conf/train.yaml``); runs share one
data and feature-cache folder, so each backbone setting extracts its features once. Plots, the prediction
pickle and W&B are off to keep the runs short; the metrics are the ones ``make demo`` reports.

    PYTHONPATH=src python benchmarks/demo_search.py --root /tmp/search \\
        --set "model.noise_std=0.15" --set "model.noise_std=0.05 trainer.max_epochs=40"

Each ``--set`` is one setting (space-separated overrides); ``--common`` is added to all of them.
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from multiflow_pl.config import config_dir
from multiflow_pl.train import train

QUIET = ["logger=csv", "callbacks.plots=null", "callbacks.predictions=null", "callbacks.progress_bar=null"]
COLUMNS = ("sample_auroc", "image_auroc", "pixel_auroc", "pixel_aupro")


def run_setting(root: Path, name: str, overrides: list[str]) -> dict:
    """Train and test one setting under ``root/runs/name``; returns metrics.json's record and wall time."""
    run_dir = root / "runs" / name
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"paths.root_dir={root}", f"hydra.run.dir={run_dir}", *QUIET, *overrides],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
        cfg.trainer.enable_progress_bar = False
        del cfg.hydra
    start = time.perf_counter()
    record = train(cfg)
    return {**record, "wall_s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="data, cache and run folder")
    parser.add_argument("--set", action="append", required=True, help="one setting: overrides")
    parser.add_argument("--common", default="", help="overrides added to every setting")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prefix", default="s", help="run folders are root/runs/<prefix><index>")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for i, setting in enumerate(args.set):
        overrides = [*shlex.split(args.common), *shlex.split(setting)]
        record = run_setting(args.root, f"{args.prefix}{i}", overrides)
        per_class = {
            k[13:]: v for k, v in record.items() if k.startswith("sample_auroc_") and k[13:].isupper()
        }
        rows.append((setting, record, per_class))
        print(f"done {setting}: {record.get('sample_auroc'):.3f} in {record['wall_s']:.0f} s", flush=True)
    classes = sorted({c for _, _, per_class in rows for c in per_class})
    print(f"\ncommon: {args.common or '-'}")
    print("| setting | " + " | ".join((*COLUMNS, *classes, "wall s")) + " |")
    print("|---|" + "---:|" * (len(COLUMNS) + len(classes) + 1))
    for setting, record, per_class in rows:
        values = [f"{record.get(k, float('nan')):.3f}" for k in COLUMNS]
        values += [f"{per_class.get(c, float('nan')):.3f}" for c in classes]
        print(f"| `{setting}` | " + " | ".join(values) + f" | {record['wall_s']:.0f} |")


if __name__ == "__main__":
    main()
