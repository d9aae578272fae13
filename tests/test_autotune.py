"""`auto` layer forms: the trial picks the faster form, the choice is cached and recorded, and forms are how a run
runs, not what it is (a finished run is reused when only they change)."""
import json
import time

import pytest
import torch

import ablate.autotune as autotune
from ablate.autotune import LAYOUTS, pick_forms
from ablate.config import compose_config, run_config
from ablate.train import RESULT, train
from stages import Net, build_net
from stages.forms import FORMS, forms_in_use
from stages.layers import ConvNormAct
from stages.norms import LayerNorm2d

from helpers import SMOKE

CPU = torch.device("cpu")
TUNED = ("pointwise", "layer_norm")  # the kinds timed in training (batch_norm's forms differ only in eval)
AUTO = dict.fromkeys(FORMS, "auto")


def proxy_net(step: str):
    run = run_config(compose_config([f"+step={step}", *SMOKE]))
    return build_net(run.net), (8, 3, run.data.image_size, run.data.image_size)


def slow_down(monkeypatch, cls, form: str, seconds: float = 0.003) -> None:
    """Makes `form` of every `cls` layer slower by `seconds` a call (3 ms: many times a smoke-size layer's call,
    and the trials' sleeping, most of these tests' time, stays short)."""
    forward = cls.forward

    def slowed(self, x):
        if form in self.forms.values():
            time.sleep(seconds)
        return forward(self, x)

    monkeypatch.setattr(cls, "forward", slowed)


@pytest.mark.parametrize("slow", FORMS["pointwise"])
def test_auto_picks_the_faster_pointwise_form(monkeypatch, slow):
    slow_down(monkeypatch, ConvNormAct, slow)
    net, shape = proxy_net("inverted_bottleneck")
    chosen = pick_forms(net, AUTO, shape, CPU, "fp32", training=True, cache_path=None)
    (fast,) = set(FORMS["pointwise"]) - {slow}
    trials = chosen["pointwise"]["trials"]
    assert trials and all(t["choice"] == fast and t["ms"][slow] > t["ms"][fast] for t in trials)
    assert forms_in_use(net)["pointwise"] == {fast: sum(t["layers"] for t in trials)}


def test_auto_folds_batch_norm_in_eval_when_faster(monkeypatch):
    slow_down(monkeypatch, ConvNormAct, "separate")
    net, shape = proxy_net("baseline")
    chosen = pick_forms(net, AUTO, shape, CPU, "fp32", training=False, cache_path=None)
    assert {t["choice"] for t in chosen["batch_norm"]["trials"]} == {"folded"}
    assert forms_in_use(net)["batch_norm"] == {"folded": 16 * 3 + 4}  # every block conv and projection
    assert "batch_norm" not in pick_forms(net, AUTO, shape, CPU, "fp32", training=True, cache_path=None)


@pytest.mark.parametrize("slow", FORMS["layer_norm"])
def test_auto_picks_the_faster_layer_norm_form(monkeypatch, slow):
    slow_down(monkeypatch, LayerNorm2d, slow)
    net, shape = proxy_net("separate_downsampling")
    chosen = pick_forms(net, AUTO, shape, CPU, "fp32", training=False, cache_path=None)
    (fast,) = set(FORMS["layer_norm"]) - {slow}
    assert {t["choice"] for t in chosen["layer_norm"]["trials"]} == {fast}
    assert forms_in_use(net)["layer_norm"] == {fast: len([m for m in net.modules() if isinstance(m, LayerNorm2d)])}


def test_the_whole_net_overrules_a_misleading_layer_trial(monkeypatch):
    """Layers timed alone can mislead; the whole-net trial keeps the assignment that trains fastest."""
    slow_down(monkeypatch, ConvNormAct, "linear", seconds=0.01)  # far above a busy machine's noise
    monkeypatch.setattr(autotune, "_trial", lambda layer, kind, *a: {"ms": {}, "choice": FORMS[kind][-1]})
    net, shape = proxy_net("inverted_bottleneck")
    chosen = pick_forms(net, AUTO, shape, CPU, "fp32", training=True, cache_path=None)
    assert {t["choice"] for t in chosen["pointwise"]["trials"]} == {"linear"}  # what the layers alone said
    assert chosen["net"]["candidates"] == ["per_layer", "pointwise=conv"]  # all-linear is the per-layer choice
    assert chosen["net"]["choice"] == "pointwise=conv" and forms_in_use(net)["pointwise"] == {"conv": 36}


@pytest.mark.parametrize("slow", list(LAYOUTS))
def test_auto_layout_picks_the_faster_layout_and_caches_it(tmp_path, monkeypatch, slow):
    forward = Net.forward

    def slowed(self, x):
        if self.memory_format == (torch.channels_last if LAYOUTS[slow] else torch.contiguous_format):
            time.sleep(0.01)
        return forward(self, x)

    monkeypatch.setattr(Net, "forward", slowed)
    cache = str(tmp_path / "forms.json")
    net, shape = proxy_net("separate_downsampling")
    chosen = pick_forms(net, AUTO, shape, CPU, "fp32", True, cache, layout="auto")
    (fast,) = set(LAYOUTS) - {slow}
    trial = chosen["layout"]
    assert trial["choice"] == fast and trial["ms"][slow] > trial["ms"][fast] and not trial["cached"]
    assert net.memory_format == (torch.channels_last if LAYOUTS[fast] else torch.contiguous_format)
    assert chosen["pointwise"]["trials"] and chosen["net"]["ms"]  # the forms picked in the chosen layout
    again, _ = proxy_net("separate_downsampling")
    assert pick_forms(again, AUTO, shape, CPU, "fp32", True, cache, layout="auto")["layout"]["cached"]
    assert again.memory_format == net.memory_format and forms_in_use(again) == forms_in_use(net)


def test_a_set_form_is_not_tried(monkeypatch):
    for trial in ("_trial", "_time_net"):
        monkeypatch.setattr(autotune, trial, lambda *a: pytest.fail("a set form was timed"))
    net, shape = proxy_net("separate_downsampling")
    chosen = pick_forms(net, {"pointwise": "linear", "layer_norm": "mean_var", "batch_norm": "folded"}, shape, CPU,
                        "fp32", False, None)
    assert chosen == {"pointwise": {"setting": "linear"}, "layer_norm": {"setting": "mean_var"},
                      "batch_norm": {"setting": "folded"}}
    assert forms_in_use(net) == {"pointwise": {"linear": 36}, "layer_norm": {"mean_var": 23}}  # no BN to fold


def test_the_choice_is_cached_on_disk(tmp_path, monkeypatch):
    cache = tmp_path / "forms.json"
    net, shape = proxy_net("layer_norm")
    first = pick_forms(net, AUTO, shape, CPU, "fp32", True, str(cache))
    assert not any(t["cached"] for kind in TUNED for t in first[kind]["trials"]) and not first["net"]["cached"]
    for trial in ("_trial", "_time_net"):
        monkeypatch.setattr(autotune, trial, lambda *a: pytest.fail("timed again despite the cache"))
    again, _ = proxy_net("layer_norm")
    second = pick_forms(again, AUTO, shape, CPU, "fp32", True, str(cache))
    assert all(t["cached"] for kind in TUNED for t in second[kind]["trials"]) and second["net"]["cached"]
    assert [t["choice"] for t in second["pointwise"]["trials"]] == [t["choice"] for t in first["pointwise"]["trials"]]
    assert forms_in_use(again) == forms_in_use(net)
    # another batch is another shape: timed, not read from the cache
    monkeypatch.undo()
    other = pick_forms(again, AUTO, (4, *shape[1:]), CPU, "fp32", True, str(cache))
    assert not any(t["cached"] for t in other["pointwise"]["trials"])
    assert len(json.loads(cache.read_text())) == 2 * (len(first["pointwise"]["trials"]) +
                                                     len(first["layer_norm"]["trials"]) + 1)  # + the net's


def test_an_unreadable_cache_is_timed_again_and_rewritten(tmp_path):
    cache = tmp_path / "forms.json"
    cache.write_text("{not json")
    net, shape = proxy_net("separate_downsampling")
    chosen = pick_forms(net, AUTO, shape, CPU, "fp32", True, str(cache))
    assert not any(t["cached"] for t in chosen["pointwise"]["trials"])
    assert json.loads(cache.read_text())


def test_the_trial_leaves_the_global_rng_alone():
    net, shape = proxy_net("separate_downsampling")
    torch.manual_seed(3)
    pick_forms(net, AUTO, shape, CPU, "fp32", True, None)
    after = torch.rand(4)
    torch.manual_seed(3)
    assert torch.equal(after, torch.rand(4))


def test_forms_land_in_the_record_and_are_outside_the_identity(tmp_path, capsys):
    out = tmp_path / "run"
    cache = f"train.forms_cache={tmp_path / 'forms.json'}"
    first = train(run_config(compose_config(["+step=separate_downsampling", *SMOKE, cache])), out)
    forms = json.loads((out / RESULT).read_text())["segments"][-1]["forms"]
    assert forms["pointwise"]["setting"] == "auto" and forms["pointwise"]["trials"] and forms["net"]["ms"]
    assert {t["choice"] for t in forms["layer_norm"]["trials"]} <= set(FORMS["layer_norm"])
    assert forms["layout"]["setting"] == "auto" and forms["layout"]["choice"] in LAYOUTS  # the default: a trial
    for other in ("train.pointwise_form=linear", "train.layer_norm_form=mean_var", "train.channels_last=false"):
        run = run_config(compose_config(["+step=separate_downsampling", *SMOKE, cache, other]))
        assert run.identity_hash == first["identity_hash"]
        again = train(run, out)  # the finished run is found, not retrained
        assert again["final"] == first["final"] and "finished run found" in capsys.readouterr().out
