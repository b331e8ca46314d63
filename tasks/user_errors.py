"""Bad input ends in one line: which errors are the user's, and the nearest config key to a mistyped one."""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import OmegaConf

from core.config import CONF_DIR
from core.errors import DataFormatError

log = logging.getLogger(__name__)


USER_ERRORS = (DataFormatError, FileNotFoundError, ValueError)


def user_error(error: BaseException) -> BaseException | None:
    """The bad-input error behind ``error``, also when Hydra's instantiate wrapped it; None for bugs."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, USER_ERRORS):
            return seen
        seen = seen.__cause__
    return None


def config_hint(args: list[str]) -> str | None:
    """After Hydra refused the command line: the existing keys nearest to those it could not find.

    Only the config-group choices of ``args`` are composed (they decide which keys exist); every other
    ``key=value`` whose key is missing gets its closest matches (difflib) among all keys and group names.
    """
    import difflib

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        overrides = OverridesParser.create().parse_overrides([a for a in args if "=" in a and not a.startswith("-")])
    except Exception:  # noqa: BLE001 - Hydra has already said what is wrong with the syntax
        return None
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        groups = set(GlobalHydra.instance().config_loader().list_groups(""))
        choices = [o.input_line for o in overrides if o.key_or_group.split("@")[0] in groups]
        try:
            cfg = compose("config", overrides=choices, return_hydra_config=True)
        except Exception:  # noqa: BLE001 - a bad group option: Hydra's message lists the options
            return None
    GlobalHydra.instance().clear()
    keys = sorted({*groups, *_dotted_keys(OmegaConf.to_container(cfg, resolve=False))})
    absent = object()
    lines = []
    for override in overrides:
        key = override.key_or_group
        if override.is_add() or key in groups or OmegaConf.select(cfg, key, default=absent) is not absent:
            continue
        near = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
        if not near:
            lines.append(f"hint: {key} is not a config key and none is close to it.")
        else:
            others = f" (or {', '.join(near[1:])})" if len(near) > 1 else ""
            lines.append(f"hint: {key} is not a config key; did you mean {near[0]}?{others}")
    if lines:
        lines.append("(python main.py --cfg job prints every key; +key=value adds a new one)")
    return "\n".join(lines) or None


def _dotted_keys(node: Any, prefix: str = "") -> list[str]:
    """Every key of a nested config as ``a.b.c`` (lists are leaves)."""
    if not isinstance(node, dict):
        return []
    out = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        out += [path, *_dotted_keys(value, path + ".")]
    return out


# Spellings an issue renamed: old override key -> the new spelling (a config group choice).
RENAMED_KEYS = {
    "model.loss.name": "model/loss={value}",
    "model.optimizer.name": "model/optimizer={value}",
    "model.scheduler.name": "model/scheduler={value}",
}


def renamed_key_error(args: list[str]) -> str | None:
    """The one-line error for a command-line override that uses a renamed key, naming the new spelling."""
    for arg in args:
        key, sep, value = arg.lstrip("+~").partition("=")
        if sep and key in RENAMED_KEYS:
            new = RENAMED_KEYS[key].format(value=value or "<option>")
            return f"{key}=... was renamed: write {new} (options: conf/{new.split('=')[0]}/*.yaml)."
    return None
