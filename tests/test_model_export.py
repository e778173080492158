"""TorchScript export: the exported model scores exactly like the Python model, for any batch size."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import compose_config
from torch.utils.data import DataLoader

from multiflow_pl.data.dataset import MultiViewImageDataset, collate_samples
from multiflow_pl.data.realiad import load_samples
from multiflow_pl.export import export
from multiflow_pl.models.export import OUTPUT_NAMES, ScoringModel, export_torchscript, load_torchscript
from multiflow_pl.pipeline import load_trained_module


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """(export.json contents, path of the TorchScript file) for the tiny run's checkpoint."""
    root = tmp_path_factory.mktemp("export")
    metadata = export(compose_config("export", root, [f"ckpt_path={tiny_run.checkpoint}"]))
    return metadata, root / "run" / metadata["file"]


def test_exported_model_gives_the_python_models_scores_on_test_images(tiny_run, exported):
    metadata, path = exported
    module, run_cfg, _ = load_trained_module(tiny_run.checkpoint)
    python_model = ScoringModel(module, run_cfg.data.foreground, round_features=True)
    samples = load_samples(tiny_run.data_root, "can", "test", resolution="64")
    dataset = MultiViewImageDataset(samples, 64, 0, python_model.feature_size, foreground="auto")
    images = next(iter(DataLoader(dataset, batch_size=3, collate_fn=collate_samples)))["images"]
    scripted = load_torchscript(path)
    for batch in (images, images[:1]):  # traced with 2 samples; other batch sizes work too
        expected, found = python_model(batch), scripted(batch)
        assert len(found) == len(OUTPUT_NAMES)
        for name, a, b in zip(OUTPUT_NAMES, expected, found, strict=True):
            assert a.shape == b.shape, name
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
    assert metadata["max_abs_difference_from_python"] < 1e-5
    assert (
        metadata["views"] == ["C1", "C2", "C3", "C4", "C5"] and metadata["threshold"]["method"] == "quantile"
    )
    assert json.loads((path.parent / "export.json").read_text()) == metadata


def test_exported_model_rejects_images_of_another_shape(exported):
    scripted = load_torchscript(exported[1])
    for wrong in (torch.rand(1, 4, 3, 64, 64), torch.rand(1, 5, 1, 64, 64), torch.rand(1, 5, 3, 32, 32)):
        with pytest.raises(Exception, match=r"Expected images \[B, 5, 3, 64, 64\]"):
            scripted(wrong)


def test_unsupported_format_and_foreground_are_refused(tmp_path, tiny_run):
    with pytest.raises(ValueError, match="supported: torchscript"):
        export(compose_config("export", tmp_path, [f"ckpt_path={tiny_run.checkpoint}", "format=onnx"]))
    module, _, _ = load_trained_module(tiny_run.checkpoint)
    with pytest.raises(ValueError, match="foreground='folder'"):
        export_torchscript(ScoringModel(module, "folder"), tmp_path / "model.pt")
    assert not list(tmp_path.glob("*.pt"))
