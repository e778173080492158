"""EfficientNet-B5 as the paper's reference extracts: speed at 768 px, and how far each deviation moves it.

On the first ``--samples`` samples of a category in Real-IAD layout (e.g. one written by
``python -m multiflow_pl.data.synthetic --realiad-shaped``), with random B5 weights (seeded; no hub here):

- images/s of the whole extraction path (JPEG decode, PIL resize to 768, B5 to the 304-channel stage, as
  ``FeatureCache`` runs it) and of the backbone alone;
- the relative difference of the features (max |a - b| / max |a|, and mean |a - b| / mean |a|) from the
  reference setting (456-px padding, PIL resize, float32) of: bfloat16 autocast, timm's TF-same padding for
  768 px, the float resize, and the feature cache's float16 storage.

    PYTHONPATH=src python benchmarks/bench_b5_reference.py --root data/realiad_shaped --category can
    PYTHONPATH=src python benchmarks/bench_b5_reference.py --root ... --device cuda --samples 100
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from multiflow_pl.data.dataset import MultiViewImageDataset
from multiflow_pl.data.features import extract_as_cached
from multiflow_pl.data.realiad import load_samples
from multiflow_pl.models.backbone import FeatureExtractor

B5 = {"name": "tf_efficientnet_b5", "layers": ["blocks.5"], "input_size": 768}


def relative(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Differences of ``b`` from ``a``, relative to ``a``'s magnitude."""
    gap = (a - b).abs()
    return {"max": float(gap.max() / a.abs().max()), "mean": float(gap.mean() / a.abs().mean())}


def synced(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="dataset root in Real-IAD layout")
    parser.add_argument("--category", default="can")
    parser.add_argument("--resolution", default="1024")
    parser.add_argument("--samples", type=int, default=2, help="samples of 5 views to time")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    samples = load_samples(args.root, args.category, "train", resolution=args.resolution)[: args.samples]

    reference = FeatureExtractor(**B5, static_padding_size=456).to(device, memory_format=torch.channels_last)
    dataset = {
        resize: MultiViewImageDataset(samples, 768, 0, reference.feature_size, resize=resize)
        for resize in ("pil", "float")
    }
    start, exact, backbone_s = synced(device), [], 0.0
    for index in range(len(samples)):
        images = dataset["pil"][index]["images"].to(device)
        begin = synced(device)
        exact.append(extract_as_cached(reference, images).cpu())
        backbone_s += synced(device) - begin
    total_s = synced(device) - start
    n_images = 5 * len(samples)
    exact_features = torch.cat(exact)

    first = dataset["pil"][0]["images"].to(device)
    others = {
        "bfloat16": FeatureExtractor(**B5, static_padding_size=456, precision="bfloat16"),
        "timm_padding": FeatureExtractor(**B5),
    }
    deviations = {}
    for label, extractor in others.items():
        extractor = extractor.to(device, memory_format=torch.channels_last)
        deviations[label] = relative(exact[0], extract_as_cached(extractor, first).cpu())
    float_resized = dataset["float"][0]["images"].to(device)
    deviations["float_resize"] = relative(exact[0], extract_as_cached(reference, float_resized).cpu())
    deviations["float16_cache"] = relative(exact_features, exact_features.half().float())
    print(
        json.dumps(
            {
                "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{args.threads}",
                "images": n_images,
                "feature_shape": list(exact_features.shape[1:]),
                "images_per_s": n_images / total_s,
                "backbone_images_per_s": n_images / backbone_s,
                "relative_difference_from_reference": deviations,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
