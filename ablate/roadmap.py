"""The roadmap as its step files declare it (conf/step/*.yaml), and every checkpoint derived from it.

A step file is the one declaration of a step: the step it builds on (its first default), what it changes (its
conf/change/ defaults and its own keys) and `step: {index, name, adopted}`. Derived here, never listed again: the
roadmap's order; the leave-one-out (`+undo=CHANGE`) and add-one-in (`+only=CHANGE`) checkpoints, made from the
changes' declarations and registered in Hydra's ConfigStore; the `reference=STEP` they are built on (conf/roadmap.yaml
names the default ends); and the step lists the sweeps of conf/sweep/ read through resolvers."""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from . import CONF_DIR
from .errors import ConfigError

DERIVED_GROUPS = ("undo", "only")  # a design change taken out of the reference, or put alone into it
NONE = "none"                      # the derived option that is the reference itself


def _load(path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def _flat(tree: dict, prefix: str = "") -> dict:
    """{dotted key: value} of a config's leaves (a list is one leaf)."""
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _nested(flat: dict) -> dict:
    tree: dict = {}
    for dotted, v in flat.items():
        *parents, leaf = dotted.split(".")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return tree


@dataclass(frozen=True)
class Effect:
    """What a config sets: config-group choices it overrides and values (dotted key -> value as written)."""
    choices: dict
    values: dict

    @classmethod
    def of(cls, tree: dict) -> "Effect":
        choices = {}
        for entry in tree.get("defaults", []):
            if isinstance(entry, dict):
                for key, choice in entry.items():
                    if key.startswith("override /"):
                        choices[key.removeprefix("override /")] = choice
        return cls(choices, _flat({k: v for k, v in tree.items() if k not in ("defaults", "step")}))

    def then(self, later: "Effect") -> "Effect":
        return Effect({**self.choices, **later.choices}, {**self.values, **later.values})


@dataclass(frozen=True)
class Step:
    """One step file: its place, the step it builds on (None for the start of the roadmap) and what it changes."""
    name: str
    index: int
    adopted: bool
    builds_on: str | None
    changes: tuple[str, ...]    # its conf/change/ configs, in order
    own: Effect                 # what the step file sets itself (kernel_5: net.kernel_size)
    effect: Effect              # the changes' effects, then its own

    @classmethod
    def read(cls, path) -> "Step":
        tree = _load(path)
        defaults = [d for d in tree.get("defaults", []) if isinstance(d, str) and d != "_self_"]
        builds_on = [d for d in defaults if not d.startswith("/")]
        changes = tuple(d.removeprefix("/change/") for d in defaults if d.startswith("/change/"))
        if len(builds_on) > 1 or len(changes) + len(builds_on) != len(defaults):
            raise ConfigError(f"{path}: a step's defaults are the step it builds on, then /change/NAME entries "
                              f"(found {defaults})")
        effect = Effect({}, {})
        for change in changes:
            effect = effect.then(Effect.of(_load(CONF_DIR / "change" / f"{change}.yaml")))
        meta = tree.get("step") or {}
        if meta.get("name") != path.stem:
            raise ConfigError(f"{path}: step.name={meta.get('name')!r} must be the file's name, {path.stem!r}")
        own = Effect.of(tree)
        return cls(path.stem, meta["index"], meta["adopted"], builds_on[0] if builds_on else None, changes, own,
                   effect.then(own))


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


@dataclass(frozen=True)
class Roadmap:
    """Every declared step, in roadmap order (by index; at one index the adopted step, then its branches)."""
    steps: dict                 # name -> Step
    start: str                  # add-one-in puts each change alone into it (ResNet-50)
    endpoint: str               # leave-one-out takes each change out of it (ConvNeXt-T)

    def chain(self, name: str) -> list[str]:
        """The steps from the start to `name`, each built on the one before."""
        out = [name]
        while self.steps[out[-1]].builds_on is not None:
            out.append(self.steps[out[-1]].builds_on)
        return out[::-1]

    def adopted(self, upto: str | None = None) -> list[str]:
        """The adopted steps in order: the whole roadmap to the endpoint (`upto`: to that step instead)."""
        return self.chain(upto or self.endpoint)

    def changes(self) -> list[str]:
        """The design changes: every adopted step but the start, in order (each is an +undo= and an +only=)."""
        return [s.name for s in self.steps.values() if s.adopted and s.builds_on is not None]

    def study(self, name: str) -> list[str]:
        """A step's study: the step it builds on, then it and its branches (the steps at its index built on the same
        step), as the paper's kernel-size study compares kernels 3 to 11."""
        step = self.steps[name]
        return [step.builds_on, *(s.name for s in self.steps.values()
                                  if s.index == step.index and s.builds_on == step.builds_on)]

    def descendants(self, name: str) -> list[str]:
        return [s for s in self.steps if s != name and name in self.chain(s)]

    def before(self, name: str) -> Effect:
        """The choices and values a step's changes replace: the primary config's, then every earlier step's."""
        state = Effect({}, {})
        for earlier in self.chain(name)[:-1]:
            state = state.then(self.steps[earlier].effect)
        return state

    def undone(self, name: str) -> Effect:
        """What undoing a change sets: its keys and group choices at their values before it, except those a later
        step sets again (those are the later step's: undoing stage_ratio keeps width's 96)."""
        again = Effect({}, {})
        for later in self.descendants(name):
            again = again.then(self.steps[later].effect)
        own, before = self.steps[name].effect, self.before(name)
        return Effect({g: before.choices.get(g, _default_choice(g)) for g in own.choices if g not in again.choices},
                      {k: before.values[k] if k in before.values else _default_value(k, before.choices)
                       for k in own.values if k not in again.values})

    def check_derived(self, group: str, change: str, reference: str | None) -> None:
        """A derived checkpoint must change its reference: undo a change it has, add one it lacks."""
        if change == NONE:
            return
        ref = reference or self.default_reference(group)
        has = change in self.chain(ref)
        if group == "undo" and not has:
            raise ConfigError(f"+undo={change}: {ref} has no {change} step to undo; choose a change of its roadmap: "
                              f"{', '.join(self.derived_options('undo', ref)[1:])}")
        if group == "only" and has:
            raise ConfigError(f"+only={change}: {ref} already has {change}; choose a change it lacks: "
                              f"{', '.join(self.derived_options('only', ref)[1:])}")

    def default_reference(self, group: str) -> str:
        return self.endpoint if group == "undo" else self.start

    def derived_options(self, group: str, reference: str | None = None) -> list[str]:
        """`none` and the changes an +undo= (+only=) sweep takes out of (puts into) its reference, in order."""
        ref = reference or self.default_reference(group)
        chain = self.chain(ref)
        return [NONE, *(c for c in self.changes() if (c in chain) == (group == "undo"))]

    def derived_node(self, group: str, change: str) -> dict:
        """The config of +undo=CHANGE or +only=CHANGE: the reference (an override of the primary config's `reference`
        group, which the command line's `reference=STEP` overrides in turn; it merges where that group stands, before
        this config), then the change undone or applied, named and indexed after the change."""
        ref = {"override /reference": self.default_reference(group)}
        if change == NONE:  # the reference itself, under its own step name
            return {"defaults": [ref, "_self_"], "step": {"reference": None}}
        step = self.steps[change]
        meta = {"index": step.index, "name": f"{'no' if group == 'undo' else 'only'}_{change}", "adopted": False}
        if group == "undo":
            undone = self.undone(change)
            return {"defaults": [ref, *({f"override /{g}": c} for g, c in undone.choices.items()), "_self_"],
                    "step": meta, **_nested(undone.values)}
        return {"defaults": [*(f"/change/{c}" for c in step.changes), ref, "_self_"], "step": meta,
                **_nested(step.own.values)}


@functools.cache
def roadmap() -> Roadmap:
    steps = [Step.read(p) for p in (CONF_DIR / "step").glob("*.yaml")]
    steps.sort(key=lambda s: (s.index, not s.adopted, _natural(s.name)))
    ends = _load(CONF_DIR / "roadmap.yaml")
    return Roadmap({s.name: s for s in steps}, ends["start"], ends["endpoint"])


@functools.cache
def _primary_choices() -> dict:
    return {k: v for d in _load(CONF_DIR / "config.yaml")["defaults"] if isinstance(d, dict)
            for k, v in d.items() if " " not in k}


def _default_choice(group: str) -> str:
    return _primary_choices()[group]


def _default_value(dotted: str, choices: dict):
    """A key's value in the primary config: from its group's chosen file, else from config.yaml itself."""
    group, _, rest = dotted.partition(".")
    choice = choices.get(group, _primary_choices().get(group))
    tree, key = (_load(CONF_DIR / group / f"{choice}.yaml"), rest) if choice else (_load(CONF_DIR / "config.yaml"),
                                                                                  dotted)
    value = _flat(tree).get(key, KeyError)
    if value is KeyError:
        raise ConfigError(f"{dotted}: a change sets a key no default config has")
    return value


def register() -> None:
    """Puts the derived configs into Hydra's ConfigStore (undo/, only/, reference/) and the sweeps' resolvers; run
    before any composition (ablate.config does, at import)."""
    road, store = roadmap(), ConfigStore.instance()
    for name in road.steps:
        store.store(group="reference", name=name, package="_global_",
                    node={"defaults": [f"/step/{name}", "_self_"], "step": {"reference": name}})
    for group in DERIVED_GROUPS:
        for change in (NONE, *road.changes()):
            store.store(group=group, name=change, package="_global_", node=road.derived_node(group, change))
    for group in DERIVED_GROUPS:
        OmegaConf.register_new_resolver(
            {"undo": "leave_one_out", "only": "add_one_in"}[group],
            lambda reference=None, group=group: ",".join(roadmap().derived_options(group, reference)), replace=True)
    OmegaConf.register_new_resolver("roadmap", lambda: ",".join(roadmap().adopted()), replace=True)
    OmegaConf.register_new_resolver("study", lambda step: ",".join(roadmap().study(step)), replace=True)
