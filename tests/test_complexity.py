"""FLOPs and params of every step: the golden table (pycls style) and the paper's Tables 10 and 11."""
from pathlib import Path

import pandas as pd
import pytest

from ablate.complexity import complexity_table, main
from ablate.paper import paper_table
from ablate.roadmap import roadmap


@pytest.fixture(scope="module")
def golden():
    return pd.read_csv(Path(__file__).parent / "golden" / "complexity.csv")


@pytest.fixture(scope="module", params=["r50", pytest.param("r200", marks=pytest.mark.slow)])
def measured(request):
    return request.param, complexity_table(request.param)


def test_golden_params_and_flops(measured, golden):
    regime, table = measured
    assert list(table.step) == list(roadmap().steps)  # every declared step, in roadmap order
    expected = golden[golden.regime == regime].set_index("step")
    ours = table.set_index("step").loc[expected.index]
    assert list(ours.params) == list(expected.params)
    assert list(ours.macs) == list(expected.macs)


def test_flops_match_the_paper_to_two_decimals(measured):
    regime, table = measured
    paper = paper_table(regime)
    assert (paper.source == "roadmap").sum() == 17  # the 14 steps and 3 kernel branches of Tables 10 and 11
    ours_by_step = table.set_index("step")
    for theirs in paper.itertuples():
        ours = ours_by_step.loc[theirs.step]
        assert round(ours.gflops, 2) == pytest.approx(theirs.expected_gflops), theirs.step
        if not theirs.gflops_anomaly and pd.notna(theirs.gflops):
            assert round(ours.gflops, 2) == pytest.approx(theirs.gflops), theirs.step
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
    full = pd.read_csv(Path(__file__).parent / "golden" / "complexity.csv").query("regime == 'r50'").set_index("step")
    assert len(table) == len(roadmap().steps)
    # the multiplier reached every step: a quarter of the channels, under half the multiply-adds (depthwise convs
    # scale with the channels, not their square)
    assert (2 * table.set_index("step").macs < full.macs.loc[table.step]).all()
    assert "separate_downsampling" in capsys.readouterr().out


def test_grn_adds_its_parameters_and_no_counted_flops(measured):
    """GRN has a gamma and beta per hidden channel (4C) of each block; the grn step also drops layer scale (C). fvcore
    counts none of GRN's operations, and the paper convention (conv + linear) has none to count."""
    from ablate.complexity import PAPER_NET
    from ablate.config import compose_config, net_config, step_overrides
    regime, table = measured
    rows = table.set_index("step")
    cfg = net_config(compose_config(step_overrides("grn", regime, PAPER_NET)))
    per_block_c = sum(d * c for d, c in zip(cfg.depths, cfg.stage_widths))
    assert rows.loc["grn", "params"] - rows.loc["separate_downsampling", "params"] == 2 * 4 * per_block_c - per_block_c
    assert rows.loc["grn_keep_layer_scale", "params"] - rows.loc["separate_downsampling", "params"] == 8 * per_block_c
    for step in ("grn", "grn_keep_layer_scale"):
        assert rows.loc[step, "macs"] == rows.loc["separate_downsampling", "macs"]
        assert rows.loc[step, "fvcore_gflops"] == rows.loc["separate_downsampling", "fvcore_gflops"]
