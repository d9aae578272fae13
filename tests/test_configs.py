"""Every step composes through Hydra's compose API; bad input fails at start-up naming the key."""
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from ablate.config import compose_config, net_config, step_overrides
from ablate.paper import paper_table, roadmap_steps
from stages import NetConfig, NetConfigError

from helpers import CHANGE_FLAGS, R50_STEPS, identity_table


@pytest.mark.parametrize("regime", ["r50", "r200"])
def test_every_step_composes_with_its_metadata(regime):
    for row in paper_table(regime).itertuples():
        cfg = compose_config(step_overrides(row.step, regime))
        assert (cfg.step.name, cfg.step.index, cfg.step.adopted) == (row.step, row.index, row.adopted)
        net_config(cfg)  # typed and validated
        assert cfg.recipe.name == ("classic" if row.step == "baseline" else "modern")


def _changed(a: NetConfig, b: NetConfig) -> dict:
    da, db = a.to_dict(), b.to_dict()
    return {k: db[k] for k in da if da[k] != db[k]}


def test_each_step_changes_only_its_own_flags():
    """The chain is cumulative: every adopted step keeps all earlier changes and adds its own."""
    nets = {s: net_config(compose_config(step_overrides(s))) for s in R50_STEPS}
    adopted = roadmap_steps("r50", adopted_only=True)
    for prev, step in zip(adopted, adopted[1:]):
        assert set(_changed(nets[prev], nets[step])) == CHANGE_FLAGS[step], step
    for branch, k in (("kernel_5", 5), ("kernel_9", 9), ("kernel_11", 11)):
        assert _changed(nets["move_up_dwconv"], nets[branch]) == {"kernel_size": k}


def test_r200_regime_reuses_the_same_steps():
    stage_ratio = net_config(compose_config(step_overrides("stage_ratio", "r200")))
    assert stage_ratio.depths == (3, 3, 27, 3) and stage_ratio.width == 84
    assert net_config(compose_config(step_overrides("width", "r200"))).width == 128


def test_any_flag_overrides_a_step():
    cfg = net_config(compose_config(step_overrides("separate_downsampling", extra=["net.kernel_size=5"])))
    assert cfg.kernel_size == 5 and cfg.norm == "layer"
    alone = net_config(compose_config(["net.block=inverted_bottleneck"]))  # one flag on ResNet-50
    assert alone.block == "inverted_bottleneck" and alone.stem == "resnet"


def test_unknown_step_lists_the_steps():
    with pytest.raises(MissingConfigException) as err:
        compose_config(["+step=inverted_bottlenek"])
    assert "inverted_bottlenek" in str(err.value) and "inverted_bottleneck" in str(err.value)


def test_unknown_flag_names_the_key():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(["net.kernal_size=7"])
    assert "kernal_size" in str(err.value.__cause__ or err.value)


@pytest.mark.parametrize("override,fragment", [
    ("net.act=swish", "net.act='swish' is not allowed; choose one of: relu, gelu"),
    ("net.norm=group", "choose one of: batch, layer"),
    ("net.kernel_size=4", "net.kernel_size=4 is not allowed; expected an odd"),
    ("net.depths=[3,0,9,3]", "net.depths"),
    ("net.drop_path_rate=1.5", "net.drop_path_rate"),
    ("net.width_multiplier=0", "net.width_multiplier"),
])
def test_bad_flag_values_fail_naming_key_and_allowed(override, fragment):
    cfg = compose_config(step_overrides("kernel", extra=[override]))
    with pytest.raises(NetConfigError) as err:
        net_config(cfg)
    assert fragment in str(err.value)


def test_input_size_the_net_cannot_tile():
    convnext = net_config(compose_config(step_overrides("separate_downsampling")))
    convnext.check_input_size(32)
    with pytest.raises(NetConfigError, match="image_size=48 .* multiple of 32"):
        convnext.check_input_size(48)
    with pytest.raises(NetConfigError, match="at least 32"):
        NetConfig().check_input_size(16)


def test_unknown_key_in_plain_data():
    with pytest.raises(NetConfigError, match="unknown key.*net.kernal_size.*allowed keys"):
        NetConfig.from_dict({"kernal_size": 7})


@pytest.mark.slow
def test_every_checkpoint_keeps_its_run_identity():
    """tests/golden/identity.csv (written before the restructurings, checked equal at the revision that trained the
    Imagenette curves): a change that moves any checkpoint's identity would orphan the runs of every sweep started
    before it. Regenerate it (tests/golden/regenerate.py identity) only for a change meant to start runs afresh."""
    import pandas as pd
    golden = pd.read_csv(Path(__file__).parent / "golden" / "identity.csv", keep_default_na=False)
    now = pd.DataFrame(identity_table())
    assert now[["regime", "experiment", "group", "name"]].equals(golden[["regime", "experiment", "group", "name"]])
    moved = now[now.identity_hash != golden.identity_hash]
    assert moved.empty, moved.to_string()
