"""``conun demo``: the whole story on one small dataset in about a minute.

Trains the original, then for a class request and a random-sample request runs the original,
retraining from scratch and contrastive unlearning, prints the comparison and writes one
results.json holding all six runs.
"""

from __future__ import annotations

import logging
from pathlib import Path

from conun.config import build_train_config
from conun.data.splits import ForgetRetainSplit
from conun.engine.checkpoint import save_checkpoint
from conun.evaluation.results import Results
from conun.workflows.configs import resolve_unlearn_config
from conun.workflows.inputs import check_requests, ensure_dataset, validation_of
from conun.workflows.outputs import prepare_output_dir
from conun.workflows.requests import ForgetSpec
from conun.workflows.training import train_original
from conun.workflows.unlearning import run_method

# INFO only: the command line shows these with -v; by default its progress bars and the final
# table say where the demo is.
logger = logging.getLogger(__name__)


def run_demo(
    out_dir: str | Path,
    *,
    dataset: str = "digits",
    forget_class: int = 5,
    forget_fraction: float = 0.05,
    seed: int = 0,
    quiet: bool = False,
    force: bool = False,
) -> Results:
    """Train, retrain and unlearn on ``dataset``; write ``out_dir/results.json`` and the
    original's checkpoint; return the results (printed by the CLI)."""
    train_config = build_train_config(dataset, [{"seed": seed}])
    ensure_dataset(train_config)
    prepare_output_dir(out_dir, force=force)
    # The two requests are resolved on the data now: a class the dataset lacks or a fraction
    # outside (0, 1) is an error before the training, not after it.
    check_requests(
        train_config,
        {
            "--forget-class": ForgetSpec(classes=(forget_class,)),
            "--forget-fraction": ForgetSpec(fraction=forget_fraction),
        },
    )
    logger.info("demo: training the original %s on %s", train_config.model, dataset)
    trained = train_original(train_config, None, quiet=quiet)
    data, model = trained.data, trained.model
    validation = validation_of(trained.meta)
    results = Results(dataset, train_config.model, seed, train_config.device)
    requests: list[ForgetRetainSplit] = [
        ForgetSpec(classes=(forget_class,)).resolve(data, validation, seed),
        ForgetSpec(fraction=forget_fraction).resolve(data, validation, seed),
    ]
    for split in requests:
        logger.info(
            "demo: %s request (%d training samples to forget): original, retrain, contrastive",
            split.scenario,
            split.forget.numel(),
        )
        for name in ("original", "retrain", "contrastive"):
            unlearn_config = resolve_unlearn_config(
                name,
                split.scenario,
                dataset=dataset,
                model=train_config.model,
                layers=[("--seed", {"seed": seed})],
            ).config
            _, record = run_method(
                unlearn_config,
                model,
                data,
                split,
                train_config=train_config,
                original_seconds=trained.meta.seconds,
                quiet=quiet,
            )
            results.runs.append(record)
    target = Path(out_dir)
    save_checkpoint(target / "original", model, trained.meta)
    results.write(target)
    return results


__all__ = ["run_demo"]
