"""`auto` forms: each tunable layer's form (stages/forms.py) picked by short timed trials on the machine that
runs it, as cudnn.benchmark picks convolution algorithms. First each layer alone: every form of it on an input of
that layer's shape (forward and backward when training, interleaved, the best of a few blocks; layers that share
a signature and a shape share one trial). Then the whole net, because a layer timed alone can mislead (measured:
per-layer choices trained one proxy net at 0.95x the all-conv form): the per-layer assignment against each
kind's forms applied to all its layers, whole training steps interleaved, and the fastest kept. With
`train.channels_last=auto` all this runs in both activation layouts (NHWC, NCHW) and the two winners are timed as
whole nets against each other: no layout is fastest everywhere (measured: ResNet-50 inference at 32 px ran 1.2x
faster in NCHW than in NHWC with its best forms; its training is faster in NHWC). Every result is cached on disk
per (device model, torch version, threads, precision, layout, mode, layer or net, shape), so a machine pays for a
trial once. The trials run eager: under `train.compile=true` the fastest eager form need not compile best
(measured at 96 px: 8 of the 9 proxy nets with Linear 1x1 layers compiled to 0.45-0.84x eager; all 14 with conv
ones to 0.95-1.33x)."""
from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path

import torch
from torch import nn

from stages.forms import AUTO, EVAL_ONLY, FORMS, set_forms, tunable_layers

from .device import autocast
from .io import atomic_write_json
from .provenance import cpu_model

TRIAL_WARMUP = 2     # untimed calls of each form (first-call allocation, oneDNN primitive creation)
TRIAL_BLOCKS = 3     # timed blocks per form, interleaved across forms; the fastest block counts
TRIAL_ITERS = 3      # calls per block
NET_TRIAL_ITERS = 2  # whole-net calls per block
# a LayerNorm or BatchNorm follows some pointwise convs: their forms are chosen first, so the pointwise trial runs
# the chosen ones
TUNING_ORDER = ("layer_norm", "batch_norm", "pointwise")


def pick_forms(net: nn.Module, requested: dict[str, str], input_shape: tuple[int, ...], device: torch.device,
               precision: str, training: bool, cache_path: str | None, layout: bool | str = True) -> dict:
    """Sets the form of every tunable layer of `net`: the requested one, or with `auto` the fastest in a trial;
    with `layout=auto`, the forms are picked in both activation layouts and the two whole nets timed against each
    other (`net.set_layout`). Returns what the record keeps: per kind, the setting and, for `auto`, each trial
    (signature, input shape, how many layers, timings in ms, the choice, and whether it came from the cache); with
    `layout=auto`, the layout trial too."""
    cache = FormCache(cache_path)
    if layout != AUTO:
        chosen = _pick_in_layout(net, requested, input_shape, device, precision, training, cache)
    else:
        chosen = _pick_layout(net, requested, input_shape, device, precision, training, cache)
    cache.save()
    return chosen


LAYOUTS = {"channels_last": True, "contiguous": False}  # a trial's name of a layout -> Net.set_layout's argument


def _pick_layout(net: nn.Module, requested: dict[str, str], input_shape, device, precision: str, training: bool,
                 cache: "FormCache") -> dict:
    """The forms picked in each layout, then the two whole nets (each layout with its forms) timed against each
    other; sets the faster. The layout trial is cached per net, forms and shape, as the others."""
    picked = {}  # layout -> (its form trials, every tunable layer's form)
    for name, nhwc in LAYOUTS.items():
        net.set_layout(nhwc)
        chosen = _pick_in_layout(net, requested, input_shape, device, precision, training, cache)
        picked[name] = chosen, [dict(m.forms) for m in net.modules() if getattr(m, "forms", None)]

    def use(target: nn.Module, name: str) -> None:
        target.set_layout(LAYOUTS[name])
        for m, forms in zip([m for m in target.modules() if getattr(m, "forms", None)], picked[name][1]):
            m.forms.update(forms)

    tried = json.dumps([repr(net), sorted((name, forms) for name, (_, forms) in picked.items())], default=str)
    signature = f"{type(net).__name__}:{hashlib.sha256(tried.encode()).hexdigest()[:16]}"
    key = cache.key(device, precision, training, "layout", signature, input_shape, AUTO)
    entry = cache.get(key, "layout")
    cached = entry is not None and entry["choice"] in LAYOUTS
    if not cached:
        entry = _time_net(net, list(LAYOUTS), use, input_shape, device, precision, training)
        cache.put(key, entry)
    use(net, entry["choice"])
    return {**picked[entry["choice"]][0], "layout": {"setting": AUTO, "input": list(input_shape), **entry,
                                                     "cached": cached}}


def _pick_in_layout(net: nn.Module, requested: dict[str, str], input_shape, device, precision: str, training: bool,
                    cache: "FormCache") -> dict:
    chosen = {}
    for kind in TUNING_ORDER:
        form = requested.get(kind, AUTO)
        if training and kind in EVAL_ONLY:
            continue  # its forms differ only in eval mode: nothing to time in training
        if form != AUTO:
            set_forms(net, kind, form)
            chosen[kind] = {"setting": form}
            continue
        trials = []
        for (signature, shape, layout), layers in _group_layers(net, kind, input_shape, device, precision).items():
            key = cache.key(device, precision, training, kind, signature, shape, layout)
            entry = cache.get(key, kind)
            cached = entry is not None
            if not cached:
                entry = _trial(layers[0], kind, shape, layout, device, precision, training)
                cache.put(key, entry)
            for layer in layers:
                layer.forms[kind] = entry["choice"]
            trials.append({"layer": signature, "input": list(shape), "layout": layout, "layers": len(layers),
                           **entry, "cached": cached})
        chosen[kind] = {"setting": AUTO, "trials": trials}
    auto = [kind for kind in TUNING_ORDER if requested.get(kind, AUTO) == AUTO and tunable_layers(net, kind)
            and not (training and kind in EVAL_ONLY)]
    if auto:
        chosen["net"] = _net_trial(net, auto, input_shape, device, precision, training, cache)
    return chosen


def _net_trial(net: nn.Module, kinds: list[str], input_shape, device, precision: str, training: bool,
               cache: "FormCache") -> dict:
    """The per-layer assignment against each kind's forms on all its layers, timed as whole-net steps; sets the
    fastest. Returns the candidates' timings (ms per step), the choice and whether it came from the cache."""
    slots = [(m, kind) for kind in kinds for m in tunable_layers(net, kind)]
    per_layer = tuple(m.forms[kind] for m, kind in slots)
    candidates = {"per_layer": per_layer}
    for kind in kinds:
        for form in FORMS[kind]:
            candidates.setdefault(f"{kind}={form}", tuple(form if k == kind else m.forms[k] for m, k in slots))
    unique = {}
    for name, assignment in candidates.items():
        unique.setdefault(assignment, name)
    candidates = {name: assignment for assignment, name in unique.items()}
    # the net and the candidates it was tried with: a choice among other candidates is another trial
    tried = json.dumps([repr(net), sorted(candidates.items())])
    signature = f"{type(net).__name__}:{hashlib.sha256(tried.encode()).hexdigest()[:16]}"
    layout = "channels_last" if getattr(net, "memory_format", None) == torch.channels_last else "contiguous"
    key = cache.key(device, precision, training, "net", signature, input_shape, layout)
    entry = cache.get(key, "net")
    cached = entry is not None and entry.get("choice") in candidates
    if not cached:
        entry = _time_net(net, list(candidates), lambda trial, name: _assign(trial, kinds, candidates[name]),
                          input_shape, device, precision, training) \
            if len(candidates) > 1 else {"ms": {}, "choice": "per_layer"}
        cache.put(key, entry)
    _assign(net, kinds, candidates[entry["choice"]])
    return {"input": list(input_shape), "candidates": list(candidates), **entry, "cached": cached}


def _assign(net: nn.Module, kinds: list[str], assignment: tuple[str, ...]) -> None:
    for (layer, kind), form in zip([(m, kind) for kind in kinds for m in tunable_layers(net, kind)], assignment):
        layer.forms[kind] = form


def _time_net(net: nn.Module, candidates: list[str], use, input_shape, device, precision: str,
              training: bool) -> dict:
    """Milliseconds per whole-net call (forward and backward when training) of each candidate (`use(copy,
    name)` sets it on a copy), on a copy of the net (its parameters, statistics and the global RNG untouched)."""
    trial = copy.deepcopy(net).train(training)
    x = torch.randn(input_shape, generator=torch.Generator().manual_seed(0)).to(device)

    def call():
        with torch.set_grad_enabled(training), autocast(device, precision):
            y = trial(x.contiguous(memory_format=getattr(trial, "memory_format", torch.contiguous_format)))
        if training:
            y.float().sum().backward()
            trial.zero_grad(set_to_none=True)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # drop path draws
        return _fastest(candidates, lambda name: use(trial, name), call, device, warmup=1, iters=NET_TRIAL_ITERS,
                        digits=3)


def _group_layers(net: nn.Module, kind: str, input_shape, device, precision) -> dict[tuple, list[nn.Module]]:
    """The layers of one kind grouped by (signature, input shape at the run's batch, input memory layout), found
    by one forward pass of a single image (under the run's autocast, as every forward of the net)."""
    layers = tunable_layers(net, kind)
    seen = {}

    def record(m, args):
        seen.setdefault(m, (tuple(args[0].shape[1:]), _layout_name(args[0])))

    hooks = [m.register_forward_pre_hook(record) for m in layers]
    was_training = net.training
    try:
        with torch.no_grad(), autocast(device, precision):
            net.eval()(torch.zeros(1, *input_shape[1:], device=device))
    finally:
        net.train(was_training)
        for h in hooks:
            h.remove()
    groups: dict[tuple, list[nn.Module]] = {}
    for m in layers:
        if m in seen:  # a layer the forward pass never reached has no shape to tune for
            shape, layout = seen[m]
            groups.setdefault((m.signature(), (input_shape[0], *shape), layout), []).append(m)
    return groups


def _layout_name(x: torch.Tensor) -> str:
    nhwc = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return "channels_last" if nhwc else "contiguous"


def _trial(layer: nn.Module, kind: str, shape: tuple[int, ...], layout: str, device, precision: str,
           training: bool) -> dict:
    """Milliseconds per call of each form of `kind` of a copy of `layer` (the net's own parameters are not
    touched)."""
    layer = copy.deepcopy(layer).train(training)
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    # a generator of its own: a trial, which runs only on a cache miss, leaves the global RNG as it found it
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device).contiguous(memory_format=fmt)
    x.requires_grad_(training)

    def call():
        with torch.set_grad_enabled(training), autocast(device, precision):
            y = layer(x)
        if training:
            y.float().sum().backward()

    def use(form):
        layer.forms[kind] = form

    return _fastest(FORMS[kind], use, call, device, warmup=TRIAL_WARMUP, iters=TRIAL_ITERS, digits=4)


def _fastest(options, use, call, device, warmup: int, iters: int, digits: int) -> dict:
    """Milliseconds per `call()` under each option (`use(option)` sets it): `warmup` untimed calls each, then
    TRIAL_BLOCKS blocks of `iters` calls, interleaved across options so a drift in machine speed hits all alike;
    an option's time is its fastest block. Returns the timings and the fastest option."""
    for option in options:
        use(option)
        for _ in range(warmup):
            call()
    best = dict.fromkeys(options, float("inf"))
    for _ in range(TRIAL_BLOCKS):
        for option in options:
            use(option)
            _sync(device)
            start = time.perf_counter()
            for _ in range(iters):
                call()
            _sync(device)
            best[option] = min(best[option], (time.perf_counter() - start) / iters)
    ms = {option: round(1e3 * t, digits) for option, t in best.items()}
    return {"ms": ms, "choice": min(ms, key=ms.get)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class FormCache:
    """Trial results in a JSON file (none: in memory only). An unreadable file is treated as empty and rewritten:
    it only ever holds timings that a new trial makes again."""

    def __init__(self, path: str | None):
        self.path = Path(path).expanduser() if path else None
        self.entries, self.dirty = {}, False
        if self.path is not None and self.path.is_file():
            try:
                self.entries = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self.entries = {}
            if not isinstance(self.entries, dict):
                self.entries = {}

    @staticmethod
    def key(device, precision, training, kind, signature, shape, layout) -> str:
        machine = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
        return json.dumps([machine, torch.__version__, torch.get_num_threads(), precision, layout,
                           "train" if training else "eval", kind, signature, list(shape)])

    def get(self, key: str, kind: str) -> dict | None:
        """The cached trial of `key`; for a layer kind only a choice among its forms, for the net (kinds `net` and
        `layout`) a candidate's name, which the caller checks."""
        entry = self.entries.get(key)
        ok = isinstance(entry, dict) and isinstance(entry.get("choice"), str) and \
            (kind not in FORMS or entry["choice"] in FORMS[kind])
        return {"ms": entry.get("ms", {}), "choice": entry["choice"]} if ok else None

    def put(self, key: str, entry: dict) -> None:
        self.entries[key], self.dirty = entry, True

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        try:  # merge with what another process wrote meanwhile (two sweep streams share one cache)
            on_disk = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except (OSError, ValueError):
            on_disk = {}
        merged = {**(on_disk if isinstance(on_disk, dict) else {}), **self.entries}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.path, merged)
        except OSError as e:  # a cache that cannot be written costs a trial next time, nothing else
            print(f"warning: form cache {self.path} not written ({type(e).__name__}: {e}); "
                  "the next run times its layers again")
        self.dirty = False
