"""Hyper-parameter sweeps driven from Hydra's multirun (the Optuna study sweeper's logic; the Hydra plugin shim
that registers it lives in hydra_plugins/kornlp_sweepers)."""
