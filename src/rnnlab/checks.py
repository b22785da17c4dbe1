"""Checks of the settings a user gives: one ValueError naming the setting and what it must be."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Mapping, Sequence

import torch
from hydra.utils import get_object
from omegaconf import MISSING, OmegaConf

SEED_MAX = 2**32 - 1


def is_int(value: object) -> bool:
    """An int and not a bool (YAML's true is not a count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """An int or a float, and not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_count(name: str, value: int | None, nullable: bool = False) -> None:
    """A count (a batch size, a window length): an int >= 1, or None where `nullable` (the default it stands for)."""
    if value is None and nullable:
        return
    if not is_int(value) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1{' or null' if nullable else ''}, got {value!r}")


def check_switch(name: str, value: object) -> None:
    """A yes/no setting: YAML's true or false (a typo such as `maybe` is not a yes)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")


def check_switches(prefix: str, **switches: object) -> None:
    """Several yes/no settings, named `prefix` + their keyword."""
    for name, value in switches.items():
        check_switch(f"{prefix}{name}", value)


def check_seed(name: str, value: object, nullable: bool = False) -> None:
    """A seed: an int in NumPy's range [0, 2**32 - 1] (which seed_everything sets too), or None where `nullable`."""
    if value is None and nullable:
        return
    if not is_int(value) or not 0 <= value <= SEED_MAX:
        raise ValueError(f"{name} must be an integer in [0, {SEED_MAX}]{' or null' if nullable else ''}, got {value!r}")


def check_fractions(name: str, fractions: object) -> None:
    """Train / valid / test fractions: three numbers >= 0 summing to 1."""
    values = list(fractions) if isinstance(fractions, Sequence) and not isinstance(fractions, str) else None
    if (values is None or len(values) != 3 or not all(isinstance(f, (int, float)) and f >= 0 for f in values)
            or abs(sum(values) - 1) > 1e-6):
        shown = values if values is not None else fractions
        raise ValueError(f"{name} must be three non-negative fractions (train, valid, test) summing to 1, "
                         f"got {shown!r}")


def check_folds(folds: object, fold: object) -> None:
    """Cross-validation: `data.folds` null (one split) or an int >= 2, and `data.fold` (the test fold) one of them."""
    if folds is None:
        if fold not in (0, None):
            raise ValueError(f"data.fold={fold!r} needs data.folds, the number of folds (e.g. data.folds=10)")
        return
    if not is_int(folds) or folds < 2:
        raise ValueError(f"data.folds must be an integer >= 2 or null, got {folds!r}")
    if not is_int(fold) or not 0 <= fold < folds:
        raise ValueError(f"data.fold must be in [0, {folds}), got {fold!r}")


def check_range(name: str, value: float, low: float, high: float | None = None) -> None:
    """A number >= `low`, and <= `high` when one is given."""
    expected = f">= {low}" if high is None else f"in [{low}, {high}]"
    if not is_number(value):
        raise ValueError(f"{name} must be a number {expected}, got {value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be {expected}, got {value}")


def check_trainer(trainer: Mapping) -> None:
    """The loop settings Lightning takes without checking: a fractional `max_epochs` ends in an assertion, a zero
    `accumulate_grad_batches` or interval in a ZeroDivisionError, a negative `gradient_clip_val` turns clipping
    off without a word, a string `min_epochs` is ignored."""
    for key in ("accumulate_grad_batches", "check_val_every_n_epoch"):
        if key in trainer:
            check_count(f"trainer.{key}", trainer[key], nullable=key == "check_val_every_n_epoch")
    for key, low in (("max_epochs", -1), ("max_steps", -1), ("min_epochs", 0), ("min_steps", 0),
                     ("log_every_n_steps", 0)):
        value = trainer.get(key)
        if value is not None and (not is_int(value) or value < low):
            raise ValueError(f"trainer.{key} must be an integer >= {low} or null, got {value!r}")
    clip = trainer.get("gradient_clip_val")
    if clip is not None and (not is_number(clip) or clip < 0):
        raise ValueError(f"trainer.gradient_clip_val must be a number >= 0 (0: no clipping) or null, got {clip!r}")
    interval = trainer.get("val_check_interval")
    if interval is not None and not ((is_int(interval) and interval >= 1)
                                     or (isinstance(interval, float) and 0 < interval <= 1)):
        raise ValueError("trainer.val_check_interval must be an integer >= 1 (batches), a fraction in (0, 1] of an "
                         f"epoch or null, got {interval!r}")


def check_run(cfg: Mapping) -> None:
    """A run's own settings, before any file is written: `seed`, the switches `test`, `keep_freed_memory` and
    `extras.*`, the list `tags`, `optimized_metric` (a name; a test metric only with `test`), and the Trainer's
    (`check_trainer`)."""
    check_seed("seed", cfg.get("seed"))
    for key in ("test", "keep_freed_memory"):
        if key in cfg:
            check_switch(key, cfg[key])
    for key, value in (cfg.get("extras") or {}).items():
        check_switch(f"extras.{key}", value)
    tags = cfg.get("tags")
    if tags is not None and (isinstance(tags, str) or not isinstance(tags, Sequence)):
        raise ValueError(f"tags must be a list, e.g. tags=[baseline,ptb], got {tags!r}")
    metric = cfg.get("optimized_metric")
    if metric is not None and not isinstance(metric, str):
        raise ValueError(f"optimized_metric must be the name of a final metric such as val/ppl, got {metric!r}")
    if metric and metric.startswith("test/") and not cfg.get("test"):
        raise ValueError(f"optimized_metric={metric} is measured only with test=true; set it, or optimize a val/ "
                         "metric")
    check_trainer(cfg.get("trainer") or {})
    check_typed_settings(cfg)


def init_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword parameters `cls(...)` takes, through the `**kwargs` its `__init__` hands to a base class."""
    found: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            try:
                params = inspect.signature(klass.__init__, eval_str=True).parameters.values()
            except (NameError, TypeError, ValueError):  # annotations that do not resolve here
                params = inspect.signature(klass.__init__).parameters.values()
            found |= {p.name: p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
            if not any(p.kind == p.VAR_KEYWORD for p in params):
                break
    return found


KINDS = {  # what a parameter's annotation asks of a setting: (the annotation's types, the check, what it must be)
    "switch": ({bool}, lambda v: isinstance(v, bool), "true or false"),
    "integer": ({int}, is_int, "an integer"),
    "number": ({float}, is_number, "a number"),
}


def typed_parameters(target: str) -> dict[str, tuple[str, bool]]:
    """The parameters of `target` (a class or function path) typed `bool`, `int`, `float` or `int | float`, each
    perhaps `| None` or `| Tensor`: name -> (kind, a key of KINDS; nullable)."""
    try:
        obj = get_object(target)
        params = init_parameters(obj) if isinstance(obj, type) else inspect.signature(obj, eval_str=True).parameters
    except Exception:  # not importable here, or no signature: nothing to check
        return {}
    typed = {}
    for name, param in params.items():
        union = typing.get_origin(param.annotation) in (typing.Union, types.UnionType)
        kinds = set(typing.get_args(param.annotation)) if union else {param.annotation}
        nullable = type(None) in kinds
        kinds -= {type(None), torch.Tensor}  # a setting is never a tensor (an optimizer's `lr: float | Tensor`)
        if kinds == {int, float}:
            kinds = {float}
        for kind, (annotation, _, _) in KINDS.items():
            if kinds == annotation:
                typed[name] = (kind, nullable)
    return typed


def check_typed_settings(cfg: Mapping, where: str = "") -> None:
    """Every yes/no, integer and number setting of every object the config instantiates (`_target_`), as its
    signature types it: a typo such as `model.net.tie_weights=maybe` would otherwise count as true, and
    `model.net.dropout=abc` fail inside the object with a message that names neither the setting nor the value."""
    node = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg
    if isinstance(node, Mapping):
        typed = typed_parameters(str(node["_target_"])) if "_target_" in node else {}
        for name, (kind, nullable) in typed.items():
            if node.get(name, MISSING) == MISSING:
                continue  # the object's own default, or a size the data gives (`???` until then)
            value, (_, valid, expected) = node[name], KINDS[kind]
            if not (valid(value) or (nullable and value is None)):
                raise ValueError(f"{where}{name} must be {expected}{' or null' if nullable else ''}, got {value!r}")
        for key, value in node.items():
            check_typed_settings(value, f"{where}{key}.")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            check_typed_settings(value, f"{where}{i}.")


def check_accelerator(trainer: Mapping) -> None:
    """`trainer.accelerator` gpu / cuda on a machine whose PyTorch sees no CUDA device: one line saying so (Lightning
    says "No supported gpu backend found!")."""
    accelerator = str(trainer.get("accelerator") or "")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(f"trainer.accelerator={accelerator}, but this PyTorch ({torch.__version__}) sees no CUDA "
                         "device; use trainer=cpu (or trainer=ddp trainer.accelerator=cpu)")
