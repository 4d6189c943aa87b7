"""``conun demo``: the whole story on one small dataset in about a minute.

Trains the original, then for a class request and a random-sample request runs the original,
retraining from scratch and contrastive unlearning, prints the comparison and writes one
results.json holding all six runs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from conun.config import TrainConfig, build_config, build_unlearn_config, preset_path, read_yaml
from conun.data.splits import ForgetRetainSplit
from conun.engine.checkpoint import save_checkpoint
from conun.evaluation.results import Results
from conun.methods.base import get_method
from conun.workflows.runs import ForgetSpec, prepare_output_dir, run_method, train_original


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
    preset = preset_path("train", dataset)
    train_config = build_config(
        TrainConfig, [read_yaml(preset) if preset else None, {"dataset": dataset, "seed": seed}]
    )
    prepare_output_dir(out_dir, force=force)
    trained = train_original(train_config, None, quiet=quiet)
    data, model = trained.data, trained.model
    validation = torch.tensor(trained.meta.validation, dtype=torch.long)
    results = Results(dataset, train_config.model, seed, train_config.device)
    requests: list[ForgetRetainSplit] = [
        ForgetSpec(classes=(forget_class,)).resolve(data, validation, seed),
        ForgetSpec(fraction=forget_fraction).resolve(data, validation, seed),
    ]
    for split in requests:
        for name in ("original", "retrain", "contrastive"):
            unlearn_config = build_unlearn_config(
                name, split.scenario, [{"seed": seed}], dataset=dataset
            )
            method = get_method(name).for_scenario(split.scenario, unlearn_config.options)
            _, record = run_method(
                method,
                model,
                data,
                split,
                unlearn_config,
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
