"""The swappable parts of a model, chosen by config: ``model/loss``, ``model/optimizer``, ``model/scheduler``.

Each option names a class or a function by ``_target_`` (docs/extending.md). The model node is instantiated
with ``_recursive_: false``, so a module receives these nodes as plain dicts: they go into the checkpoint's
hyper-parameters as they are (weights-only loading), and the module builds the objects itself, when it needs
them, with Hydra's ``instantiate``. A user's own option is a YAML file in their config dir whose ``_target_``
is importable (their module on ``PYTHONPATH``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from core.config import CONF_DIR

GROUPS = ("loss", "optimizer", "scheduler")


def options(group: str) -> list[str]:
    """The options the project ships for ``model/<group>`` (``conf/model/<group>/*.yaml``)."""
    return sorted(p.stem for p in (CONF_DIR / "model" / group).glob("*.yaml"))


def plugin_settings(group: str, node: Any) -> dict[str, Any]:
    """``node`` checked as a ``model/<group>`` option, as a new dict: a mapping with a ``_target_``, no ``name``.

    ``name:`` was the spelling before the options became config groups; a config that still has it (a user's
    own model YAML or experiment) stops here with the new spelling.
    """
    where = f"model.{group}"
    if not isinstance(node, Mapping):
        raise ValueError(
            f"{where} must be a config node with a _target_ (got {type(node).__name__}): a model node of your own "
            "needs `_recursive_: false`, so that the module receives its options as settings (docs/extending.md)."
        )
    settings = dict(node)
    if "name" in settings:
        value = settings["name"]
        raise ValueError(
            f"{where}.name: {value} is the old spelling: choose the option with model/{group}={value} on the command "
            f"line, or `- override /model/{group}: {value}` in an experiment's defaults list, and drop the name key "
            f"(options: {', '.join(options(group))}; conf/model/{group}/*.yaml)."
        )
    if not settings.get("_target_"):
        raise ValueError(
            f"{where} has no _target_: choose an option with model/{group}=<option> "
            f"({', '.join(options(group))}) or give your own class (docs/extending.md)."
        )
    return settings


def locate(group: str, target: str) -> Callable[..., Any]:
    """The class or function ``_target_`` names; a clear error when it cannot be imported."""
    from hydra.utils import get_object

    try:
        found = get_object(str(target))
    except Exception as error:  # noqa: BLE001 - Hydra says which import failed
        raise ValueError(
            f"model.{group}._target_={target!r} cannot be imported ({str(error).splitlines()[0]}): shipped options "
            f"are {', '.join(options(group))} (model/{group}=<option>); your own class must be on PYTHONPATH."
        ) from None
    if not callable(found):
        raise ValueError(f"model.{group}._target_={target!r} is not a class or a function.")
    return found


def accepted_arguments(function: Callable[..., Any]) -> set[str] | None:
    """The keyword arguments ``function`` takes, or None when it takes any (``**kwargs``)."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # a builtin without a signature: let the call itself decide
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    return {name for name, p in parameters.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL}


def partial(settings: Mapping[str, Any]) -> Any:
    """``instantiate(settings, _partial_=True)``: the option's callable with its own keys bound."""
    from hydra.utils import instantiate

    return instantiate({**settings, "_partial_": True}, _convert_="all")
