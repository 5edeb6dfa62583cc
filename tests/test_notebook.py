from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "conditional_sparse_reconstruction.ipynb"


@pytest.mark.slow
def test_notebook_runs_on_a_tiny_configuration(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert "TINY = True" in nb.cells[1].source
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "context pixels per image" in outputs
    assert "| biharmonic |" in outputs and "| ddo-x0 |" in outputs
