"""Losses, optimisers and schedules are config groups: a user's own class runs from their own config dir.

The user's classes and YAML are written to the test's tmp dir (never into the project) and run through
``python main.py --config-dir ...``, as docs/extending.md tells a user to.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from models.losses import Loss, build_loss
from models.optim import build_optimizer, build_scheduler
from tests.conftest import ROOT, TINY_RUN, read_json, run_main
from tests.test_configs import compose_config

OPTIONS = [
    (group, p.stem)
    for group in ("loss", "optimizer", "scheduler")
    for p in sorted((ROOT / "conf" / "model" / group).glob("*.yaml"))
]
REGRESSION_LOSSES = ("mse", "huber")

USER_MODULE = '''
import json
from pathlib import Path

import torch

from models.losses import Loss


class MarkedLoss(Loss):
    """Cross-entropy that writes what it was given and how often it ran."""

    def __init__(self, num_labels, marker, scale=1.0):
        super().__init__(num_labels)
        self.marker, self.scale, self.calls = Path(marker), scale, 0

    def forward(self, logits, target):
        self.calls += 1
        self.marker.write_text(json.dumps({"num_labels": self.num_labels, "calls": self.calls,
                                           "width": logits.shape[-1], "scale": self.scale}))
        return self.scale * torch.nn.functional.cross_entropy(logits.float(), target)


class MarkedSGD(torch.optim.SGD):
    """SGD that writes the weight decay of the parameter groups it was given, and counts its steps."""

    def __init__(self, params, lr, marker, momentum=0.0, weight_decay=0.0):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
        self.marker, self.steps = Path(marker), 0

    def step(self, closure=None):
        self.steps += 1
        self.marker.write_text(json.dumps({"decay": [g["weight_decay"] for g in self.param_groups],
                                           "steps": self.steps}))
        return super().step(closure)


def marked_schedule(optimizer, num_warmup_steps, num_training_steps, marker):
    Path(marker).write_text(json.dumps({"warmup": num_warmup_steps, "total": num_training_steps}))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
'''


def user_setup(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """The user's module (on PYTHONPATH) and config dir with one option per group; returns (conf, markers, env)."""
    code, conf, markers = tmp_path / "user_code", tmp_path / "my_conf", tmp_path / "markers"
    for directory in (code, markers, *(conf / "model" / group for group in ("loss", "optimizer", "scheduler"))):
        directory.mkdir(parents=True)
    (code / "my_plugins.py").write_text(USER_MODULE, encoding="utf-8")
    (conf / "model" / "loss" / "my_loss.yaml").write_text(
        f"_target_: my_plugins.MarkedLoss\nmarker: {markers / 'loss.json'}\nscale: 1.0\n", encoding="utf-8")
    (conf / "model" / "optimizer" / "my_sgd.yaml").write_text(
        f"_target_: my_plugins.MarkedSGD\n_partial_: true\nlr: 0.01\nweight_decay: 0.01\nmomentum: 0.9\n"
        f"marker: {markers / 'optimizer.json'}\n", encoding="utf-8")
    (conf / "model" / "scheduler" / "my_schedule.yaml").write_text(
        f"_target_: my_plugins.marked_schedule\nwarmup_ratio: 0.5\nwarmup_steps: null\nkwargs: {{}}\n"
        f"marker: {markers / 'scheduler.json'}\n", encoding="utf-8")
    path = os.pathsep.join(p for p in (str(code), os.environ.get("PYTHONPATH")) if p)
    return conf, markers, {"PYTHONPATH": path}


def run(*overrides: str, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return run_main(*overrides, run_dir=tmp_path / "run", cache_dir=tmp_path / "cache", check=False, env=env)


def test_users_loss_optimizer_and_schedule_run_from_their_config_dir(tmp_path: Path) -> None:
    conf, markers, env = user_setup(tmp_path)
    tiny = [o for o in TINY_RUN if not o.startswith(("datamodule.max_train_examples", "logger="))]
    result = run(
        "--config-dir", str(conf), "model=classifier", "datamodule=re_sample", "model/loss=my_loss",
        "model/optimizer=my_sgd", "model/scheduler=my_schedule", "model.loss.scale=2.0", *tiny,
        "datamodule.max_train_examples=16", "logger=none", "callbacks.early_stopping=null", "export.enabled=false",
        tmp_path=tmp_path, env=env,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    classes = len(read_json(tmp_path / "run" / "label_map.json"))
    loss = read_json(markers / "loss.json")
    # the loss got the contract's num_labels and its own keys (the command line's too), and trained the model
    assert loss["num_labels"] == loss["width"] == classes and loss["scale"] == 2.0 and loss["calls"] >= 2
    optimizer = read_json(markers / "optimizer.json")
    assert optimizer == {"decay": [0.01, 0.0], "steps": 2}  # parameter groups: no decay on biases / LayerNorm
    assert read_json(markers / "scheduler.json") == {"warmup": 1, "total": 2}
    # the checkpoint holds the options as plain settings: it loads weights-only
    best = read_json(tmp_path / "run" / "metrics.json")["best_checkpoint"]
    hparams = torch.load(best, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert hparams["loss"]["_target_"] == "my_plugins.MarkedLoss" and hparams["loss"]["scale"] == 2.0
    assert hparams["optimizer"]["_target_"] == "my_plugins.MarkedSGD"
    assert hparams["scheduler"]["_target_"] == "my_plugins.marked_schedule"


def test_old_name_key_in_a_users_config_stops_with_the_new_spelling(tmp_path: Path) -> None:
    conf, _, env = user_setup(tmp_path)
    (conf / "experiment").mkdir()
    (conf / "experiment" / "old_focal.yaml").write_text(
        "# @package _global_\nmodel:\n  loss:\n    name: focal\n    gamma: 1.0\n", encoding="utf-8")
    result = run("--config-dir", str(conf), "+experiment=old_focal", "model=classifier", "datamodule=re_sample",
                 *TINY_RUN, tmp_path=tmp_path, env=env)
    assert result.returncode == 1
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "model.loss.name: focal is the old spelling" in error[0]
    assert "model/loss=focal" in error[0] and "- override /model/loss: focal" in error[0]


def test_old_name_override_stops_at_once(tmp_path: Path) -> None:
    result = run("model.optimizer.name=sgd", tmp_path=tmp_path, env={})
    assert result.returncode == 1
    assert "model.optimizer.name=... was renamed: write model/optimizer=sgd" in result.stderr


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_every_option_composes_and_builds(group: str, option: str, tmp_path: Path) -> None:
    model = "regressor" if option in REGRESSION_LOSSES else "classifier"
    cfg = compose_config([f"model={model}", "datamodule=re_sample", f"model/{group}={option}"], tmp_path)
    node = OmegaConf.to_container(cfg.model[group], resolve=True)
    net = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
    if group == "loss":
        loss = build_loss(node, 1 if model == "regressor" else 3)
        assert isinstance(loss, Loss)
        logits = torch.randn(5, 3) if model == "classifier" else torch.randn(5)
        target = torch.randint(0, 3, (5,)) if model == "classifier" else torch.rand(5)
        assert loss(logits, target).ndim == 0
    elif group == "optimizer":
        assert isinstance(build_optimizer(net, node), torch.optim.Optimizer)
    else:
        built = build_scheduler(torch.optim.SGD(net.parameters(), lr=0.1), node, 20)
        assert (built is None) == (option == "none")
