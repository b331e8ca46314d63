"""Where the project's configs live, and the OmegaConf resolvers they use (``${project_root:}``)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = PROJECT_ROOT / "conf"


def register_resolvers() -> None:
    """``${project_root:}``: the checkout, so shipped data paths work from any working directory."""
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))
