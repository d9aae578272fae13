"""FLOPs and params of every step: the golden table (pycls style) and the paper's Tables 10 and 11."""
from pathlib import Path

import pandas as pd
import pytest

from ablate.complexity import complexity_table, main
from ablate.paper import paper_table


@pytest.fixture(scope="module")
def golden():
    return pd.read_csv(Path(__file__).parent / "golden" / "complexity.csv")


@pytest.fixture(scope="module", params=["r50", pytest.param("r200", marks=pytest.mark.slow)])
def measured(request):
    return request.param, complexity_table(request.param)


def test_golden_params_and_flops(measured, golden):
    regime, table = measured
    expected = golden[golden.regime == regime].reset_index(drop=True)
    assert list(table.step) == list(expected.step)
    assert list(table.params) == list(expected.params)
    assert list(table.macs) == list(expected.macs)


def test_flops_match_the_paper_to_two_decimals(measured):
    regime, table = measured
    paper = paper_table(regime)
    assert len(table) == len(paper) == 17
    for ours, theirs in zip(table.itertuples(), paper.itertuples()):
        assert round(ours.gflops, 2) == pytest.approx(theirs.expected_gflops), ours.step
        if not theirs.gflops_anomaly:
            assert round(ours.gflops, 2) == pytest.approx(theirs.gflops), ours.step
    # the two explained Table 10 anomalies are the only cells that differ from print
    assert set(paper[paper.gflops_anomaly].step) <= {"layer_norm", "separate_downsampling"}


def test_endpoint_counts_are_the_published_ones(measured):
    regime, table = measured
    if regime == "r50":
        rows = table.set_index("step")
        assert rows.loc["baseline", "params"] == 25_557_032  # torchvision ResNet-50
        assert rows.loc["baseline", "macs"] == 4_089_184_256
        assert rows.loc["separate_downsampling", "params"] == 28_589_128  # official ConvNeXt-T
        assert rows.loc["separate_downsampling", "macs"] == 4_455_531_264


@pytest.mark.slow
def test_cli_writes_csv(tmp_path, capsys):
    out = tmp_path / "c.csv"
    main(["regime=r50", f"out={out}", "net.width_multiplier=0.25"])
    assert out.read_text().startswith("# command: python -m ablate.complexity regime=r50")
    table = pd.read_csv(out, comment="#")
    assert len(table) == 17 and (table.gflops < 0.5).all()  # the multiplier reached every step
    assert "separate_downsampling" in capsys.readouterr().out
