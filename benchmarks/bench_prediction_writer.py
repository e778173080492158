"""Memory of writing Real-IAD prediction pickles from the on-disk map spool, as the test set grows.

Each row runs in a fresh process: it fills a float32 ``.npy`` memmap [N, S, S] with random maps (as
``PredictionWriter`` spools them during testing), drops it from the page cache's accounting by reopening
it, then writes ``{image_path: (map, score, mask_path)}`` with ``write_realiad_predictions`` from views
into the memmap. Memory is the growth of the process's *anonymous* resident memory (Linux RssAnon,
sampled every 2 ms by a thread): mapped file pages are page cache the kernel can drop, so they are not
counted. ``maps MiB`` is what holding all maps in memory would take.

    PYTHONPATH=src python benchmarks/bench_prediction_writer.py --n-maps 200 2000 --size 256
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from multiflow_pl.evaluation.writers import write_realiad_predictions

MIB = 2**20


def _anon_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise RuntimeError("RssAnon not found in /proc/self/status (Linux only)")


def _measure(n_maps: int, size: int, folder: str) -> dict[str, float]:
    """Spool ``n_maps`` maps, then write the pickle while sampling anonymous memory; own process."""
    spool_path = Path(folder) / "spool.npy"
    spool = np.lib.format.open_memmap(spool_path, mode="w+", dtype=np.float32, shape=(n_maps, size, size))
    rng = np.random.default_rng(0)
    for start in range(0, n_maps, 40):
        spool[start : start + 40] = rng.random((min(40, n_maps - start), size, size), dtype=np.float32)
    spool.flush()
    del spool
    maps = np.load(spool_path, mmap_mode="r+")
    baseline = _anon_kib()
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _anon_kib())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    began = time.perf_counter()
    out = write_realiad_predictions(
        Path(folder) / "cat.pkl",
        [f"NG/XX/S{i:04d}/cat_{i:04d}_NG_XX_C1_.jpg" for i in range(n_maps)],
        [np.asarray(maps[i]) for i in range(n_maps)],
        [float(i) for i in range(n_maps)],
        [None] * n_maps,
    )
    seconds = time.perf_counter() - began
    done.set()
    sampler.join()
    return {
        "seconds": seconds,
        "peak_anon_mib": (peak[0] - baseline) / 1024,
        "pickle_mib": out.stat().st_size / MIB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-maps", type=int, nargs="+", default=[200, 2000], help="numbers of test images")
    parser.add_argument("--size", type=int, default=256, help="map side")
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    header = f"{'maps':>6} {'maps MiB':>9} {'pickle MiB':>11} {'write s':>8} {'peak anon MiB':>14}"
    print(f"Real-IAD prediction pickle from a memmap spool, {args.size}x{args.size} float32 maps")
    print(header)
    print("-" * len(header))
    for n_maps in args.n_maps:
        with tempfile.TemporaryDirectory() as folder, context.Pool(1) as pool:
            row = pool.apply(_measure, (n_maps, args.size, folder))
        print(
            f"{n_maps:>6} {n_maps * args.size**2 * 4 / MIB:>9.1f} {row['pickle_mib']:>11.1f}"
            f" {row['seconds']:>8.2f} {row['peak_anon_mib']:>14.1f}"
        )


if __name__ == "__main__":
    main()
