"""Sweeps through main.py: a Hydra grid multirun and the Optuna sweeper (failures, resume, pruning)."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import optuna
import pytest
from lightning.pytorch import Callback
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from sweeps.summary import trial_overrides
from sweeps.trials import search_space
from tests.conftest import TINY_RUN, read_json, run_main
from tests.test_wandb import offline_run

CURRICULUM = "datamodule.curriculum.name"
# A search space with one bad value: a brute-force sampler tries each value once, the bad one first.
OPTUNA_TINY = [
    "hparams_search=optuna",
    "~hydra.sweeper.params",
    "hydra/sweeper/sampler=brute_force",
    f"{CURRICULUM}=choice(none,length,vibes)",
    f"hydra.sweeper.enqueue_trials=[{{{CURRICULUM}:vibes}}]",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One feature/tokenizer cache for the module: the tiny tokenizer is trained once."""
    return tmp_path_factory.mktemp("cache")


def run_sweep(*overrides: str, sweep_dir: Path, cache_dir: Path):
    return run_main(*overrides, f"hydra.sweep.dir={sweep_dir}", run_dir=sweep_dir / "unused", cache_dir=cache_dir)  # fmt: skip


def test_search_space_from_hydra_sweep_grammar() -> None:
    space, fixed = search_space(
        [
            "model.optimizer.lr=tag(log, interval(1e-5, 1e-2))",
            "model.scheduler.warmup_ratio=interval(0.0, 0.2)",
            "trainer.max_epochs=tag(int, interval(1, 4))",
            "model.n_best_size=tag(int, log, interval(4, 64))",
            "datamodule.batch_size=choice(8, 16)",
            "model/scheduler=linear,cosine",
            "seed=range(1, 4)",
            "trainer.precision=32-true",
            "datamodule.batch_size=choice(4, 32)",  # later beats earlier: the command line beats the config
        ]
    )
    assert space["model.optimizer.lr"] == FloatDistribution(1e-5, 1e-2, log=True)
    assert space["model.scheduler.warmup_ratio"] == FloatDistribution(0.0, 0.2)
    assert space["trainer.max_epochs"] == IntDistribution(1, 4)
    assert space["model.n_best_size"] == IntDistribution(4, 64, log=True)
    assert space["datamodule.batch_size"] == CategoricalDistribution([4, 32])
    assert space["model/scheduler"] == CategoricalDistribution(["linear", "cosine"])
    assert space["seed"] == CategoricalDistribution([1, 2, 3])
    assert fixed == ["trainer.precision=32-true"]
    assert trial_overrides({"model.optimizer.lr": 3e-4, "datamodule.batch_size": 32}) == [
        "model.optimizer.lr=0.0003",
        "datamodule.batch_size=32",
    ]


def test_optuna_sweep_records_a_failed_trial_goes_on_and_resumes(tmp_path: Path, cache: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    run_sweep(*OPTUNA_TINY, *TINY_RUN, "hydra.sweeper.n_trials=2", sweep_dir=sweep_dir, cache_dir=cache)
    summary = read_json(sweep_dir / "sweep_summary.json")
    failed, first = summary["trials"]
    assert failed["state"] == "FAIL" and failed["params"] == {CURRICULUM: "vibes"}
    assert "curriculum.name='vibes' is unknown" in failed["error"] and failed["metrics"] is None
    assert "ValueError" in (sweep_dir / "0" / "error.txt").read_text(encoding="utf-8")
    assert first["state"] == "COMPLETE"  # the sweep went on after the failure

    # the same command on the same sweep dir resumes the stored study: n_trials counts the earlier trials
    run_sweep(*OPTUNA_TINY, *TINY_RUN, "hydra.sweeper.n_trials=3", sweep_dir=sweep_dir, cache_dir=cache)
    summary = read_json(sweep_dir / "sweep_summary.json")
    trials = summary["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2]
    assert [t["state"] for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert {t["params"][CURRICULUM] for t in trials} == {"none", "length", "vibes"}
    for trial in trials[1:]:
        metrics = read_json(sweep_dir / str(trial["number"]) / "metrics.json")
        assert trial["metrics"] == metrics and trial["value"] == metrics["f1"]
        assert trial["output_dir"] == str(sweep_dir / str(trial["number"]))
    best = max(trials[1:], key=lambda t: t["value"])
    assert (summary["best_trial"], summary["best_value"]) == (best["number"], best["value"])
    assert summary["best_params"] == best["params"] and summary["best_overrides"] == best["overrides"]
    assert (summary["optimized_metric"], summary["direction"]) == ("f1", "maximize")
    study = optuna.load_study(study_name=summary["study_name"], storage=summary["storage"])
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE", "COMPLETE"]


def test_optuna_sweep_where_every_trial_fails_exits_non_zero(tmp_path: Path, cache: Path) -> None:
    """A sampled value the config cannot take fails its trial (recorded); a sweep with no good trial is an error."""
    sweep_dir = tmp_path / "sweep"
    result = run_main(
        "hparams_search=optuna", "~hydra.sweeper.params", "model.no_such_key=choice(1,2)", "hydra.sweeper.n_trials=2",
        *TINY_RUN, f"hydra.sweep.dir={sweep_dir}", run_dir=sweep_dir / "unused", cache_dir=cache, check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "Every trial failed" in result.stderr
    summary = read_json(sweep_dir / "sweep_summary.json")
    assert summary["states"] == {"FAIL": 2} and summary["best_trial"] is None
    assert all("Could not override 'model.no_such_key'" in t["error"] for t in summary["trials"])


def test_optuna_pruning_and_minimize_and_the_trials_wandb_run(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pruner that stops every trial at its first validation; the study minimises exact_match. The trial's
    W&B run (offline) is in the group of its study, job_type sweep, with the trial's number and parameters in
    its config."""
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    sweep_dir = tmp_path / "sweep"
    run_sweep(
        "hparams_search=optuna", "~hydra.sweeper.params", "model.optimizer.lr=tag(log,interval(1e-4,1e-2))",
        "hydra.sweeper.n_trials=1", "hydra.sweeper.direction=minimize", "optimized_metric=exact_match",
        "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner", "~hydra.sweeper.pruner.n_startup_trials",
        "hydra.sweeper.pruner.n_warmup_steps=0", "+hydra.sweeper.pruner.upper=-1.0", "hydra.sweeper.study_name=dash",
        *[o for o in TINY_RUN if not o.startswith("logger=")], "logger=many", "trainer.max_epochs=2",
        sweep_dir=sweep_dir, cache_dir=cache,
    )  # fmt: skip
    summary = read_json(sweep_dir / "sweep_summary.json")
    (trial,) = summary["trials"]
    assert trial["state"] == "PRUNED" and trial["error"].startswith("pruned: val_exact_match=")
    assert list(trial["intermediate_values"]) == ["0"]  # stopped after epoch 0 of 2
    assert summary["direction"] == "minimize" and summary["best_trial"] is None
    assert not (sweep_dir / "0" / "metrics.json").exists()
    wb = offline_run(sweep_dir / "0")
    assert (wb["run"].run_group, wb["run"].job_type, wb["run"].display_name) == ("dash", "sweep", "fit-0")
    lr = trial["params"]["model.optimizer.lr"]
    trial_config = {"number": 0, "study": "dash", "params": {"model.optimizer.lr": lr}}
    assert wb["config"]["hparams_search"]["trial"] == trial_config
    assert wb["config"]["model"]["optimizer"]["lr"] == lr


def test_hydra_grid_multirun_one_dir_metrics_and_wandb_run_per_job(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    sweep_dir = tmp_path / "grid"
    overrides = [o for o in TINY_RUN if not o.startswith("logger=")]
    run_sweep(
        "-m", "model.optimizer.lr=1e-5,3e-3", *overrides, "logger=many",
        sweep_dir=sweep_dir, cache_dir=cache,
    )  # fmt: skip
    runs = []
    for job, lr in (("0", 1e-5), ("1", 3e-3)):
        metrics = read_json(sweep_dir / job / "metrics.json")
        assert metrics["task"] == "fit" and metrics["examples"] == 12
        assert f"model.optimizer.lr={lr:g}" in (sweep_dir / job / ".hydra" / "overrides.yaml").read_text()
        assert (sweep_dir / job / "csv" / "metrics.csv").exists()
        wb = offline_run(sweep_dir / job)
        assert wb["config"]["model"]["optimizer"]["lr"] == lr
        runs.append(wb["run"])
    assert runs[0].run_id != runs[1].run_id  # each job finished its own W&B run
    assert runs[0].run_group == runs[1].run_group == str(sweep_dir)  # one dashboard group per sweep
    assert [r.display_name for r in runs] == ["fit-0", "fit-1"]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_interrupted_trial_is_failed_and_retried_on_resume(tmp_path: Path) -> None:
    """A trial left RUNNING by a killed sweep (its process on this machine is gone): the next start marks it
    FAIL and queues the same params again. A RUNNING trial whose worker lives (another worker of the study) is
    left alone."""
    import socket
    import subprocess

    from sweeps.optuna_study import OptunaStudy
    from sweeps.storage import WORKER_ATTR
    from sweeps.summary import counted, write_summary

    sweeper = OptunaStudy(study_name="s", n_trials=3)
    study, url = sweeper._create_study(tmp_path, ["+experiment=nli"])
    space = {"lr": FloatDistribution(1e-4, 1e-2, log=True), "n": IntDistribution(1, 4)}
    done = study.ask(space)
    study.tell(done, 1.0)
    killed = study.ask(space)  # the process died here: the trial stays RUNNING in SQLite
    finished = subprocess.Popen(["true"])
    finished.wait()
    killed.set_user_attr(WORKER_ATTR, {"host": socket.gethostname(), "pid": finished.pid})
    running = study.ask(space)  # another worker's, alive (the test's parent process)
    running.set_user_attr(WORKER_ATTR, {"host": socket.gethostname(), "pid": os.getppid()})
    study, _ = sweeper._create_study(tmp_path, ["+experiment=nli"])
    retry = study.ask(space)
    assert retry.params == killed.params and retry.number == 3
    summary = write_summary(study, tmp_path / "summary.json", "f1", url)
    rows = summary["trials"]
    assert [r["state"] for r in rows] == ["COMPLETE", "FAIL", "RUNNING", "RUNNING"]
    assert summary["interrupted"] == [1] and rows[1]["error"].startswith("interrupted")
    assert (rows[1]["retried_by"], rows[3]["retry_of"]) == (3, 1)
    assert counted(study.get_trials()) == 3  # the interrupted trial does not count towards n_trials
    # another setting, same study: refused
    with pytest.raises(ValueError, match="hparams_search.study=<new name>"):
        sweeper._create_study(tmp_path, ["+experiment=re_focal"])
    other = tmp_path / "other"
    (other / "0").mkdir(parents=True)
    (other / "0" / "metrics.json").write_text("{}")
    # a new study, old results
    with pytest.raises(ValueError, match=r"trial dirs \['0'\] of an earlier study"):
        sweeper._create_study(other, ["+experiment=nli"])


def test_pruner_presets_and_stable_sweep_dir() -> None:
    """hydra/sweeper/pruner=NAME picks a preset; the study dir has no time stamp, so the same command resumes."""
    from hydra.utils import instantiate

    for name, cls in (("median", optuna.pruners.MedianPruner), ("successive_halving", optuna.pruners.SuccessiveHalvingPruner),
                      ("hyperband", optuna.pruners.HyperbandPruner), ("none", optuna.pruners.NopPruner)):  # fmt: skip
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(Path(__file__).parents[1] / "conf"), version_base="1.3"):
            full = compose("config", overrides=["hparams_search=optuna", f"hydra/sweeper/pruner={name}",
                                                "+experiment=nli", "hparams_search.n_jobs=2"], return_hydra_config=True)  # fmt: skip
        assert isinstance(instantiate(full.hydra.sweeper.pruner), cls)
        assert full.hydra.sweep.dir == "multirun/nli/optuna/default" and full.hydra.sweeper.n_jobs == 2
        assert full.hparams_search.study == "default" and full.hparams_search.n_jobs == 2
    # the search space declared in conf/hparams_search/optuna.yaml: log-float, float and categorical
    space, _ = search_space([f"{key}={value}" for key, value in full.hydra.sweeper.params.items()])
    assert space == {
        "model.optimizer.lr": FloatDistribution(1e-5, 1e-2, log=True),
        "model.optimizer.weight_decay": FloatDistribution(0.0, 0.1),
        "model.scheduler.warmup_ratio": FloatDistribution(0.0, 0.2),
        "datamodule.batch_size": CategoricalDistribution([8, 16, 32]),
    }


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_sampler_presets_draw_per_trial_seeds() -> None:
    """hydra/sweeper/sampler=NAME: each preset is an Optuna sampler built per trial with seed + trial number
    (QMC: one seed for all, its workers draw one sequence)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    from sweeps.samplers import TrialSeededSampler, build_sampler

    for name, cls in (("tpe", optuna.samplers.TPESampler), ("random", optuna.samplers.RandomSampler),
                      ("brute_force", optuna.samplers.BruteForceSampler), ("qmc", optuna.samplers.QMCSampler)):  # fmt: skip
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(Path(__file__).parents[1] / "conf"), version_base="1.3"):
            full = compose("config", overrides=["hparams_search=optuna", f"hydra/sweeper/sampler={name}", "seed=7"],
                           return_hydra_config=True)  # fmt: skip
        sampler = build_sampler(instantiate(full.hydra.sweeper.sampler))
        inner = sampler._sampler if isinstance(sampler, TrialSeededSampler) else sampler
        assert isinstance(inner, cls) and isinstance(sampler, TrialSeededSampler) == (name != "qmc")
    study = optuna.create_study(sampler=build_sampler(instantiate(
        {"_target_": "optuna.samplers.RandomSampler", "_partial_": True, "seed": 7})))  # fmt: skip
    space = {"x": FloatDistribution(0.0, 1.0)}
    drawn = [study.ask(space).params["x"] for _ in range(3)]
    assert len(set(drawn)) == 3
    # trial 2 draws what a sampler seeded 7 + 2 draws first, whichever worker asks for it
    seeded = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=9))
    assert seeded.ask(space).params["x"] == drawn[2]


class CtrlCInTrial(Callback):
    """Test helper, loaded by main.py through Hydra: a Ctrl-C (SIGINT to this process) after the first
    optimiser step of trial ``trial``. Sent from inside, so the test does not race a trial that lasts a second
    or two."""

    def __init__(self, trial: int) -> None:
        self.trial = trial

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.get().job.num == self.trial and trainer.global_step == 1:
            os.kill(os.getpid(), signal.SIGINT)


class PruneUnanswerable(optuna.pruners.BasePruner):
    """Test helper: prunes a trial at its first validation when it cannot answer (max_answer_length 0). A
    threshold on F1 would also prune a 3-step model that answered wrongly by chance; this depends on the
    parameters alone."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.params.get("model.max_answer_length") == 0


def test_optuna_study_pruned_interrupted_and_resumed_in_parallel(tmp_path: Path) -> None:
    """4 trials: trial 1 answers nothing (max_answer_length 0, F1 0) and is pruned at its first validation;
    Ctrl-C during trial 2; the same command resumes: trial 2 runs again (as 3) beside a new trial 4, in 2
    worker processes."""
    sweep_dir = tmp_path / "sweep"
    command = [
        "hparams_search=optuna", "~hydra.sweeper.params", "model.max_answer_length=choice(0,30)",
        "model.optimizer.lr=tag(log,interval(1e-3,5e-3))", "model.n_best_size=tag(int,interval(5,20))",
        "hydra.sweeper.n_trials=4", f"hydra.sweeper.pruner._target_={__name__}.PruneUnanswerable",
        "~hydra.sweeper.pruner.n_startup_trials", "~hydra.sweeper.pruner.n_warmup_steps",
        "hydra.sweeper.enqueue_trials=[{model.max_answer_length:30},"
        "{model.max_answer_length:0},{model.max_answer_length:30}]", *TINY_RUN, "datamodule.max_train_examples=24",
        "callbacks.progress_bar=null", "callbacks.model_summary=null", "trainer.num_sanity_val_steps=0",
        "export.enabled=false", f"+callbacks.ctrl_c._target_={__name__}.CtrlCInTrial", "+callbacks.ctrl_c.trial=2",
    ]  # fmt: skip
    own_cache = tmp_path / "cache"
    sweep = run_main(*command, f"hydra.sweep.dir={sweep_dir}", run_dir=sweep_dir / "unused", cache_dir=own_cache,
                     check=False)  # fmt: skip
    output = sweep.stdout + sweep.stderr
    assert sweep.returncode == 130 and "Ctrl-C: stopping after this batch" in output, output[-3000:]
    first = read_json(sweep_dir / "sweep_summary.json")
    assert [t["state"] for t in first["trials"]] == ["COMPLETE", "PRUNED", "FAIL", "WAITING"], output[-3000:]

    # the same command again, its 2 worker processes on one cold cache (they must build each entry once)
    shutil.rmtree(own_cache)
    run_sweep(*command, "hparams_search.n_jobs=2", sweep_dir=sweep_dir, cache_dir=own_cache)
    assert len([p for p in (own_cache / "tokenizers").iterdir() if not p.name.startswith(".")]) == 1
    assert not list(own_cache.rglob(".tmp-*"))
    tokenizers = {(sweep_dir / str(n) / "backbone" / "tokenizer.json").read_bytes() for n in (0, 3, 4)}
    assert len(tokenizers) == 1  # the tokenizer trial 0 trained alone, rebuilt by one of the two workers
    summary = read_json(sweep_dir / "sweep_summary.json")
    trials = summary["trials"]
    assert [t["state"] for t in trials][:4] == ["COMPLETE", "PRUNED", "FAIL", "COMPLETE"]
    assert trials[4]["state"] in ("COMPLETE", "PRUNED") and len(trials) == 5
    assert trials[1]["error"].startswith("pruned: val_f1=0.0000")
    assert trials[1]["params"]["model.max_answer_length"] == 0
    assert trials[2]["error"].startswith("interrupted") and summary["interrupted"] == [2]
    assert (trials[3]["retry_of"], trials[3]["params"]) == (2, trials[2]["params"])  # retried, same params
    last = trials[4]["state"]
    assert summary["states"] == {
        "COMPLETE": 2 + (last == "COMPLETE"),
        "PRUNED": 1 + (last == "PRUNED"),
        "FAIL": 1,
    }
    for trial in (trials[0], trials[3]):
        assert trial["value"] == read_json(sweep_dir / str(trial["number"]) / "metrics.json")["f1"] >= 0
    # trials 3 and 4 ran at the same time (two processes sharing the SQLite study)
    assert trials[3]["started"] < trials[4]["finished"] and trials[4]["started"] < trials[3]["finished"]
    study = optuna.load_study(study_name=summary["study_name"], storage=summary["storage"])
    assert [t.state.name for t in study.trials] == [t["state"] for t in trials]
