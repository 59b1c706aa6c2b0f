"""``--log`` for a search: Ray Tune's own logger callbacks, one tracking run per candidate.

Every candidate's one result carries its scores, latency, params, MACs, generation and the Ray node it ran on
(``experiment.evaluate_trial``); the trial config (the architecture, its key and origin) becomes the run's
parameters. Each backend's package is imported only when it is chosen.
"""

from __future__ import annotations

from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback

from pipeline.shared.progress import say
from pipeline.shared.tracking import TrackingPlan, allow_file_store

# Text a candidate's result carries: tracker metrics are numbers only, so these go to the run's parameters (MLflow)
# or config (W&B).
TEXT_RESULTS = ("node", "evaluator", "status")


class CandidateMLflowCallback(MLflowLoggerCallback):
    """Ray Tune's MLflow callback, plus the text of each result (where the candidate ran, and its status)."""

    def setup(self, *args: Any, **kwargs: Any) -> None:
        allow_file_store(self.tracking_uri)  # here, not at construction: a restored search sets up again
        super().setup(*args, **kwargs)

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        super().log_trial_result(iteration, trial, result)
        text = {k: result[k] for k in TEXT_RESULTS if isinstance(result.get(k), str) and result[k]}
        self.mlflow_util.log_params(run_id=self._trial_runs[trial], params_to_log=text)


def tune_callbacks(plan: TrackingPlan) -> list[Any]:
    """The logger callbacks of the chosen backends, for the search's ``RunConfig``.

    TensorBoard: event files in each ``candidate_*/`` directory (Tune copies them to the run's storage). MLflow:
    one run per candidate in the experiment named after the search. W&B: one run per candidate, grouped by the
    search's name, its files in ``<run>/wandb/``; the hits bitmask (one bit per search image) is left out.
    """
    callbacks: list[Any] = []
    where: list[str] = []
    if "tensorboard" in plan.backends:
        from ray.tune.logger import TBXLoggerCallback

        callbacks.append(TBXLoggerCallback())
        where.append(f"tensorboard {plan.run_path}/candidate_*")
    if "mlflow" in plan.backends:
        callbacks.append(CandidateMLflowCallback(plan.mlflow_uri, experiment_name=plan.run))
        where.append(f"mlflow {plan.mlflow_uri} (experiment {plan.run})")
    if "wandb" in plan.backends:
        from ray.air.integrations.wandb import WandbLoggerCallback

        wandb_callback = WandbLoggerCallback(
            project=plan.wandb_project,
            group=plan.run,
            excludes=["hits"],
            mode=plan.wandb_mode,
            # On local storage W&B writes straight into the run (wandb/offline-run-*-TRIAL): a trial directory is
            # copied from Ray's staging area when the trial ends, before its logging actor has finished.
            dir=plan.local_dir,
            reinit="finish_previous",  # what Ray's True means, without W&B's deprecation warning per candidate
            settings={"silent": True, "console": "off"},  # the searcher's lines are the progress
        )
        # The result keys Ray's callback moves into the run's config (it logs only numbers to the history).
        wandb_callback.AUTO_CONFIG_KEYS = [*wandb_callback.AUTO_CONFIG_KEYS, *TEXT_RESULTS]
        callbacks.append(wandb_callback)
        where.append(f"wandb project {plan.wandb_project} (group {plan.run})")
    if where:
        say("[search] logging every candidate to " + "; ".join(where))
    return callbacks
