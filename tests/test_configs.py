"""Every step composes through Hydra's compose API; bad input fails at start-up naming the key."""
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from ablate.config import compose_config, net_config, run_config, step_overrides
from ablate.errors import ConfigError
from ablate.paper import paper_table
from ablate.roadmap import roadmap
from stages import NetConfig, NetConfigError

from helpers import CHANGE_FLAGS, identity_table


@pytest.mark.parametrize("regime", ["r50", "r200"])
def test_every_step_composes_with_its_metadata(regime):
    road = roadmap()
    for step in road.steps.values():
        cfg = compose_config(step_overrides(step.name, regime))
        assert (cfg.step.name, cfg.step.index, cfg.step.adopted) == (step.name, step.index, step.adopted)
        net_config(cfg)  # typed and validated
        assert cfg.recipe.name == ("classic" if step.name == road.start else "modern")
    assert set(paper_table(regime).step) <= set(road.steps)  # a paper row names a declared step


def test_the_roadmap_is_read_from_the_step_declarations():
    """Order by index, each step one past the step it builds on; the adopted chain runs from the start to the
    endpoint; branches sit at their step's index."""
    road = roadmap()
    for step in road.steps.values():
        if step.builds_on is not None:
            assert step.index == road.steps[step.builds_on].index + 1, step.name
    assert road.adopted()[0] == road.start == "baseline" and road.adopted()[-1] == road.endpoint
    assert all(road.steps[s].adopted for s in road.adopted())
    assert road.study("kernel")[:5] == ["move_up_dwconv", "kernel", "kernel_5", "kernel_9", "kernel_11"]
    indices = [s.index for s in road.steps.values()]
    assert indices == sorted(indices) and list(road.steps)[:3] == ["baseline", "recipe", "stage_ratio"]


def _changed(a: NetConfig, b: NetConfig) -> dict:
    da, db = a.to_dict(), b.to_dict()
    return {k: db[k] for k in da if da[k] != db[k]}


def test_each_step_changes_only_its_own_flags():
    """The chain is cumulative: every adopted step keeps all earlier changes and changes only the net keys its
    declaration sets (each of them in one regime at least: r50's stage ratio keeps width 64, r200's makes it 84)."""
    road = roadmap()
    changed = {step: set() for step in CHANGE_FLAGS}
    for regime in ("r50", "r200"):
        nets = {s: net_config(compose_config(step_overrides(s, regime))) for s in road.steps}
        for step in CHANGE_FLAGS:
            diff = set(_changed(nets[road.steps[step].builds_on], nets[step]))
            changed[step] |= diff
            assert diff <= CHANGE_FLAGS[step], (regime, step)
    assert changed == CHANGE_FLAGS
    base = net_config(compose_config(step_overrides("move_up_dwconv")))
    for branch, k in (("kernel_5", 5), ("kernel_9", 9), ("kernel_11", 11)):
        assert _changed(base, net_config(compose_config(step_overrides(branch)))) == {"kernel_size": k}
    for k in (13, 21, 31):
        assert _changed(base, net_config(compose_config(step_overrides(f"kernel_{k}_rep")))) == {"kernel_size": k,
                                                                                                 "small_kernel": 5}


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
    ("net.small_kernel=7", "net.small_kernel=7 is not allowed; expected null (off) or an odd kernel smaller than "
                           "net.kernel_size=7"),
])
def test_bad_flag_values_fail_naming_key_and_allowed(override, fragment):
    cfg = compose_config(step_overrides("kernel", extra=[override]))
    with pytest.raises(NetConfigError) as err:
        net_config(cfg)
    assert fragment in str(err.value)


def test_a_small_kernel_needs_a_foldable_depthwise_conv():
    for step in ("baseline", "layer_norm"):  # a dense conv; a LayerNorm
        with pytest.raises(NetConfigError) as err:
            net_config(compose_config(step_overrides(step, extra=["net.small_kernel=1"])))
        assert str(err.value).startswith("net.small_kernel=1 is not allowed; expected null unless net.depthwise=true "
                                         "and net.norm=batch")


RSB = {  # ResNet strikes back, Table 1 (the values): recipe keys at each of A1, A2, A3
    "epochs": (600, 300, 100), "lr": (5e-3, 5e-3, 8e-3), "weight_decay": (0.01, 0.02, 0.02),
    "mixup": (0.2, 0.1, 0.1), "auto_augment": ("rand-m7-mstd0.5-inc1", "rand-m7-mstd0.5-inc1", "rand-m6-mstd0.5-inc1"),
    "repeated_augmentation": (3, 3, 1), "drop_path_rate": (0.05, 0.05, 0.0), "label_smoothing": (0.1, 0.0, 0.0),
    "batch_size": (2048,) * 3, "cutmix": (1.0,) * 3, "bce_target_threshold": (0.2,) * 3, "optimizer": ("lamb",) * 3,
    "loss": ("binary_cross_entropy",) * 3, "schedule": ("cosine",) * 3, "warmup_epochs": (5,) * 3,
    "ema_decay": (None,) * 3,
}


@pytest.mark.parametrize("i,name", enumerate(["rsb_a1", "rsb_a2", "rsb_a3"]))
def test_resnet_strikes_back_recipes_compose_to_their_values(i, name):
    run = run_config(compose_config(["+step=baseline", f"recipe={name}"]))
    assert {k: run.raw["recipe"][k] for k in RSB} == {k: v[i] for k, v in RSB.items()}
    assert run.net.drop_path_rate == RSB["drop_path_rate"][i] and run.net.layer_scale_init is None
    at_224 = run_config(compose_config(["+step=baseline", f"recipe={name}", "data.image_size=224"]))
    assert at_224.train_image_size == (160 if name == "rsb_a3" else 224)  # A3 trains at 160, tests at 224


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
    before it. A step added later adds rows; none of the golden ones may go or move. Regenerate it
    (tests/golden/regenerate.py identity) only for a change meant to start runs afresh."""
    import pandas as pd
    key = ["regime", "experiment", "group", "name"]
    golden = pd.read_csv(Path(__file__).parent / "golden" / "identity.csv", keep_default_na=False)
    both = golden.merge(pd.DataFrame(identity_table()), on=key, how="left", suffixes=("", "_now"))
    moved = both[both.identity_hash != both.identity_hash_now]
    assert moved.empty, moved.to_string()


def test_no_file_lists_the_steps_but_their_declarations():
    """The roadmap is declared once (conf/step/, conf/change/): no config or toolkit line names three steps or more,
    as the hand-kept sweep lists, undo/only files and the paper table's order once did."""
    import re
    from ablate import CONF_DIR, REPO_ROOT
    names = set(roadmap().steps)
    files = [*CONF_DIR.rglob("*.yaml"), *(REPO_ROOT / "ablate").rglob("*.py"), *(REPO_ROOT / "stages").rglob("*.py")]
    lists = [f"{f.relative_to(REPO_ROOT)}:{i}" for f in files if f.parent.name not in ("step", "change")
             for i, line in enumerate(f.read_text().splitlines(), 1)
             if len(names & set(re.findall(r"\w+", line))) >= 3]
    assert lists == []


@pytest.mark.parametrize("overrides,message", [
    (["+undo=width", "reference=grnn"], "reference=grnn is not a step; choose one of: baseline, recipe"),
    (["reference=recipe"], "reference=recipe is the step an +undo= or +only= is built on; to train it, use +step="),
    (["+undo=gelu", "reference=kernel"], "+undo=gelu: kernel has no gelu step to undo; choose a change of its "
                                         "roadmap: recipe, stage_ratio"),
    (["+only=recipe", "reference=stage_ratio"], "+only=recipe: stage_ratio already has recipe; choose a change it "
                                                "lacks: patchify_stem"),
])
def test_a_reference_that_cannot_be_rebuilt_is_refused(overrides, message):
    from ablate.config import check_checkpoint_choice
    with pytest.raises(ConfigError) as err:
        check_checkpoint_choice(overrides)
    assert str(err.value).startswith(message)


def test_a_derived_checkpoint_rebuilds_on_another_reference():
    """+undo=kernel reference=gelu is gelu with kernel 3, named and referenced as a leave-one-out of gelu;
    +only=gelu reference=recipe is the modern-recipe ResNet-50 with GELU."""
    def net(*o):
        return net_config(compose_config(list(o))).to_dict()
    cfg = compose_config(["+undo=kernel", "reference=gelu"])
    assert dict(cfg.step) == {"index": 8, "name": "no_kernel", "adopted": False, "reference": "gelu"}
    assert net("+undo=kernel", "reference=gelu") == {**net("+step=gelu"), "kernel_size": 3}
    assert net("+only=gelu", "reference=recipe") == {**net("+step=recipe"), "act": "gelu"}
    assert compose_config(["+undo=none", "reference=gelu"]).step.name == "gelu"
