"""Real-IAD's official evaluator, ADEval, run unchanged: ``python -m multiflow_pl.adeval ARGS`` is
``python -m adeval ARGS`` (same arguments, same output line).

ADEval 1.1, its newest release, calls ``numpy.trapz``, which NumPy 2.4 removed; with NumPy < 2.4
``python -m adeval`` works as it is. This restores the name (as ``numpy.trapezoid``, the same function
under its new name) and then runs ADEval's own command line. For a run of this project::

    python -m multiflow_pl.adeval <run>/predictions/<category>.pkl \\
        --add_prefix <data.root>/realiad_<resolution>/<category>/ \\
        --sample_key_pat '([a-zA-Z][a-zA-Z0-9_]*_[0-9]{4}_[A-Z][A-Z_]*[A-Z])_C[0-9]_'

``--add_prefix`` is needed because the pickle's image and mask paths are relative to the category
folder, as in Real-IAD's JSONs; add ``--evaluate_size <data.eval_size>`` when the images are larger than
the maps (ADEval otherwise upsamples the maps to the image size).
"""

from __future__ import annotations

import importlib.util
import runpy

import numpy as np


def main() -> None:
    """Run ``python -m adeval`` with this process's command-line arguments."""
    if importlib.util.find_spec("adeval") is None:
        raise SystemExit("ADEval is not installed: pip install adeval (it comes with multiflow_pl[dev]).")
    if not hasattr(np, "trapz"):
        np.trapz = np.trapezoid
    runpy.run_module("adeval", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
