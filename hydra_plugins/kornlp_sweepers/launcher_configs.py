"""Lets conf/hydra/launcher/joblib.yaml and submitit_slurm.yaml extend the launcher plugins' configs of the
same names (hydra-joblib-launcher, hydra-submitit-launcher), so that ``hydra/launcher=joblib`` is ours (it
also gives each job a GPU of its own).

A config file named like a structured config of the ConfigStore is merged with it by name, which Hydra 1.3
still does but warns about on every run (and in every joblib worker): "deprecated, see
automatic_schema_matching". The migration Hydra asks for is to store the schema under another name and extend
it explicitly from the file's defaults list; the plugins' schemas are theirs to name, so this plugin renames
them (``joblib_schema``, ``submitit_slurm_schema``) once every plugin has registered its configs and before
Hydra composes the config: Hydra asks search-path plugins for their paths at that moment (this one adds none).
Joblib's workers and SLURM's jobs receive Hydra's ConfigStore from the launching process, renamed. (No ``from
__future__ import annotations``: Hydra's plugin scan executes this module before registering it.)
"""

from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.search_path_plugin import SearchPathPlugin

EXTENDED = ("joblib", "submitit_slurm")


class LauncherConfigs(SearchPathPlugin):
    def manipulate_search_path(self, search_path: Any) -> None:
        store = ConfigStore.instance()
        launchers = store.repo.get("hydra", {}).get("launcher", {})
        for name in EXTENDED:
            schema = launchers.pop(f"{name}.yaml", None)
            if schema is not None:
                store.store(
                    group="hydra/launcher", name=f"{name}_schema", node=schema.node, provider=schema.provider
                )
            elif f"{name}_schema.yaml" not in launchers:  # the plugin is not installed: its _target_ says so
                store.store(group="hydra/launcher", name=f"{name}_schema", node={}, provider="kornlp")
