"""notebooks/quickstart.ipynb runs top to bottom (benchmark, two-seed sweep, heat maps, report)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.e2e  # trains, or runs a command line, end to end

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    markdown = "".join(output["data"].get("text/markdown", "") for output in outputs if "data" in output)
    assert len(images) >= 4  # contact sheet, sample sheet, ROC curves, report bar plot
    assert "## Mean over categories" in markdown and "n_seeds" in markdown
    sweep = tmp_path / "quickstart_output" / "sweep"
    assert {p.name for p in sweep.iterdir()} >= {"0", "1", "report.md", "report.png", "summary.csv"}
