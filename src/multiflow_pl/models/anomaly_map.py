"""From per-pixel NLL maps to anomaly maps, image scores and sample scores."""

from __future__ import annotations

import torch
import torch.nn.functional as F

SCORE_REDUCTIONS = ("max", "mean", "topk_mean")


def mask_background(nll: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
    """Give background pixels the lowest foreground NLL of their view, so they never look anomalous.

    NLL values can be negative, so zeroing the background would make it look more anomalous than normal
    foreground. Views without any foreground are left unmasked.

    Args:
        nll: [B,V,h,w] per-pixel NLL; foreground: [B,V,h,w] in {0,1}.
    """
    is_fg = foreground > 0
    fg_min = torch.where(is_fg, nll, torch.full_like(nll, torch.inf)).flatten(2).amin(dim=2)
    has_fg = is_fg.flatten(2).any(dim=2)
    fill = torch.where(has_fg, fg_min, torch.zeros_like(fg_min))[..., None, None]
    return torch.where(is_fg | ~has_fg[..., None, None], nll, fill)


def anomaly_maps(nll: torch.Tensor, size: int) -> torch.Tensor:
    """Per-pixel NLL [B,V,h,w] -> anomaly maps [B,V,size,size] (bilinear upsampling)."""
    b, v, h, w = nll.shape
    maps = F.interpolate(nll.reshape(b * v, 1, h, w), size=(size, size), mode="bilinear", align_corners=False)
    return maps.view(b, v, size, size)


def image_scores(nll: torch.Tensor, reduction: str = "max", topk: float = 0.01) -> torch.Tensor:
    """Per-pixel NLL [B,V,h,w] -> one score per view image [B,V].

    Args:
        reduction: "max" (the paper), "mean", or "topk_mean" (mean of the top ``topk`` fraction of pixels).
    """
    flat = nll.flatten(2)
    if reduction == "max":
        return flat.amax(dim=2)
    if reduction == "mean":
        return flat.mean(dim=2)
    if reduction == "topk_mean":
        k = max(1, round(topk * flat.shape[2]))
        return flat.topk(k, dim=2).values.mean(dim=2)
    raise ValueError(f"score reduction {reduction!r}; expected one of {SCORE_REDUCTIONS}")


def sample_scores(view_scores: torch.Tensor) -> dict[str, torch.Tensor]:
    """Image scores [B,V] -> {"max": [B] (the official protocol), "mean": [B] (the paper's code)}."""
    return {"max": view_scores.amax(dim=1), "mean": view_scores.mean(dim=1)}
