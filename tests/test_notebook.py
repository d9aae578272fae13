"""The roadmap notebook runs headless on the committed results and draws its figures."""
import pytest
import nbformat
from nbclient import NotebookClient

from helpers import ROOT


@pytest.mark.slow
def test_roadmap_notebook_executes_and_draws_the_figures():
    nb = nbformat.read(ROOT / "notebooks" / "roadmap.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "42 runs, 0 problem(s)" in text  # the committed proxy: 14 steps x 3 seeds, all finished
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3  # roadmap, trajectory, corruption heat map
