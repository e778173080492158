"""The command line: ``python -m multiflow_pl.data.synthetic --root DIR [options]``."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from multiflow_pl.data.synthetic.catalogue import CATEGORIES
from multiflow_pl.data.synthetic.writer import generate


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m multiflow_pl.data.synthetic --root DIR [options]``."""
    parser = argparse.ArgumentParser(
        prog="python -m multiflow_pl.data.synthetic",
        description="Write the synthetic five-view anomaly-detection benchmark in Real-IAD layout.",
    )
    parser.add_argument("--root", default="data/synthetic", help="dataset root (default: %(default)s)")
    parser.add_argument("--categories", nargs="+", choices=CATEGORIES, help="categories (default: all)")
    parser.add_argument("--n-train", type=int, default=48, help="normal training samples per category")
    parser.add_argument("--n-test", type=int, default=48, help="test samples per category (half defective)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a benchmark made with other settings"
    )
    parser.add_argument("--workers", type=int, default=1, help="rendering processes (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    args = parser.parse_args(argv)
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
