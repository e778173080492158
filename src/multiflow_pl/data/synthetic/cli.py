"""The command line: ``python -m multiflow_pl.data.synthetic --root DIR [options]``."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from multiflow_pl.data.synthetic.catalogue import CATEGORIES
from multiflow_pl.data.synthetic.writer import generate

REALIAD_SHAPE = {"n_train": 240, "n_test": 760, "size": 1024}
"""A Real-IAD-sized category: about Real-IAD's per-category counts (7,293 training and 22,917 test samples
over 30 categories) at the resolution of its ``realiad_1024`` release, for rehearsing the paper's setting."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line's settings; ``--realiad-shaped`` fills the counts and size not given explicitly."""
    parser = argparse.ArgumentParser(
        prog="python -m multiflow_pl.data.synthetic",
        description="Write the synthetic five-view anomaly-detection benchmark in Real-IAD layout.",
    )
    parser.add_argument("--root", default="data/synthetic", help="dataset root (default: %(default)s)")
    parser.add_argument("--categories", nargs="+", choices=CATEGORIES, help="categories (default: all)")
    parser.add_argument("--n-train", type=int, help="normal training samples per category (default: 48)")
    parser.add_argument("--n-test", type=int, help="test samples per category, half defective (default: 48)")
    parser.add_argument("--size", type=int, help="image side in pixels (default: 256)")
    parser.add_argument(
        "--realiad-shaped",
        action="store_true",
        help=f"a category the size of Real-IAD's: {REALIAD_SHAPE['n_train']} training and "
        f"{REALIAD_SHAPE['n_test']} test samples of {REALIAD_SHAPE['size']}-px JPEGs, unless given above",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a benchmark made with other settings"
    )
    parser.add_argument("--workers", type=int, default=1, help="rendering processes (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    args = parser.parse_args(argv)
    defaults = REALIAD_SHAPE if args.realiad_shaped else {"n_train": 48, "n_test": 48, "size": 256}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m multiflow_pl.data.synthetic --root DIR [options]``."""
    args = parse_args(argv)
    start = time.perf_counter()
    root = generate(
        args.root,
        args.categories,
        args.n_train,
        args.n_test,
        args.size,
        args.seed,
        overwrite=args.overwrite,
        progress=not args.quiet,
        workers=args.workers,
    )
    print(f"Synthetic benchmark ready in {root} ({time.perf_counter() - start:.1f} s)")
