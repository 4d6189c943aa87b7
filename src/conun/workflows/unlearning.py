"""``conun unlearn``: run an unlearning method on a model and evaluate the result.

:func:`run_method` is the one way every caller (the CLI, the demo, the bench, the Python API,
the U-LiRA shadows, the scripts and the tests) runs a method: it resolves the method from the
config, runs it on a copy of the model and evaluates the result on every split.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

from conun.config import TrainConfig, UnlearnConfig, config_to_yaml
from conun.data.arrays import DatasetBundle
from conun.data.splits import ForgetRequestError, ForgetRetainSplit, Scenario
from conun.distributed.group import context
from conun.engine.checkpoint import read_checkpoint_meta, resolve_checkpoint_path, save_checkpoint
from conun.engine.resume import Resumable
from conun.evaluation.accuracy import evaluate_split
from conun.evaluation.results import Results, RunRecord
from conun.io import atomic_write_text, sha256_file
from conun.methods.base import UnlearningMethod, UnlearningTask, get_method
from conun.models.base import Classifier
from conun.reproducibility import seed_everything
from conun.workflows.evaluation import audit_runs
from conun.workflows.inputs import (
    ensure_dataset,
    load_checkpoint_for,
    load_training_data,
    recipe_of,
    validation_of,
)
from conun.workflows.outputs import CONFIG_FILE, SPLIT_FILE, record_split, resumable_run
from conun.workflows.requests import ForgetSpec

REFERENCE_METHODS = ("original", "retrain")
"""The runs ``with_reference`` adds before the method's: the model before unlearning, and the
model retrained without the forget set."""


def resolve_method(config: UnlearnConfig, scenario: Scenario) -> UnlearningMethod:
    """The method ``config.method`` built for ``scenario`` with ``config.options``.

    Cheap and free of data: workflows call it before any data is loaded, so that a bad method,
    scenario or option is an error before any work.

    Raises:
        UnknownMethodError: ``config.method`` is not registered (the registered ones listed).
        UnsupportedScenarioError: the method is not meant for ``scenario``.
        ConfigError: unknown or invalid options, naming the allowed ones.
    """
    return get_method(config.method).for_scenario(scenario, config.options)


def run_method(
    config: UnlearnConfig,
    model: Classifier,
    data: DatasetBundle,
    split: ForgetRetainSplit,
    *,
    train_config: TrainConfig | None,
    original_seconds: float | None,
    quiet: bool = False,
    resume: Resumable | None = None,
    method: UnlearningMethod | None = None,
) -> tuple[Classifier, RunRecord]:
    """Run ``config.method`` on a copy of ``model`` and evaluate the result on every split.

    Args:
        config: the unlearning config; its method, options and seed decide the run.
        model: the trained classifier; left untouched (the method works on a copy).
        data: the dataset ``split`` indexes into.
        split: the forget request.
        train_config: the recipe that trained ``model`` (retrain reuses it); None if unknown.
        original_seconds: training time of ``model``, reported by the ``original`` method.
        quiet: no progress bars.
        resume: save resumable states of the method's loop / continue from one.
        method: run this method object instead of resolving ``config`` with
            :func:`resolve_method` (tests that inspect its state, or methods not registered).

    Returns:
        The unlearned model and its run: accuracies on every split, seconds, forget batches,
        passes, history and the method's extra numbers (``extra["stopped_by"]`` for loops).
    """
    runner = method if method is not None else resolve_method(config, split.scenario)
    generator = seed_everything(config.seed)
    task = UnlearningTask(
        model=copy.deepcopy(model),
        data=data,
        split=split,
        config=config,
        train_config=train_config,
        original_seconds=original_seconds,
        generator=generator,
        quiet=quiet,
        resume=resume,
    )
    outcome = runner.run(task)
    metrics = evaluate_split(
        outcome.model,
        data,
        split,
        batch_size=config.eval_batch_size,
        channels_last=config.channels_last,
    )
    record = RunRecord(
        scenario=split.scenario,
        forget=split.request(),
        method=runner.name,
        seconds=outcome.seconds,
        forget_batches=outcome.forget_batches,
        passes=outcome.passes,
        metrics=metrics.to_dict(),
        history=outcome.history,
        extra=outcome.extra,
    )
    return outcome.model, record


def unlearn_checkpoint(
    checkpoint: str | Path,
    spec: ForgetSpec,
    config: UnlearnConfig,
    out_dir: str | Path,
    *,
    with_reference: bool = False,
    audit: bool = False,
    quiet: bool = False,
    force: bool = False,
    save_every: int | None = None,
    resume: bool = False,
) -> Results:
    """Unlearn ``spec`` from a checkpoint with ``config.method``.

    Writes into ``out_dir``: the unlearned ``checkpoint.safetensors``, ``split.json``,
    ``config.yaml`` and ``results.json`` (the method's run; with ``with_reference`` also the
    original's and retrain's runs, in that order). With ``audit`` every run is audited
    (:func:`~conun.workflows.evaluation.audit_against`; distances to retrain when it ran too).

    With ``save_every``, the method's loop (every loop-based method on the shared engine, SCRUB,
    UNSIR, L-CODEC and retrain) writes ``out_dir/resume.safetensors`` every that many optimizer
    steps (L-CODEC: after every removal batch); ``resume``
    continues from it with the same arguments, to the same final weights. The reference runs
    of ``with_reference`` are not saved: on resume they run again (same seed, same result).

    Raises:
        ForgetRequestError: a forget class outside the checkpoint's classes.
        UnsupportedScenarioError, ConfigError: see :func:`resolve_method`.
    """
    meta = read_checkpoint_meta(checkpoint)
    train_config = recipe_of(meta, checkpoint)
    # The references run with the method's settings (seed, device, batch sizes) and no options.
    configs = [
        *(
            config.model_copy(update={"method": name, "options": {}})
            for name in (REFERENCE_METHODS if with_reference else ())
        ),
        config,
    ]
    for each in configs:  # bad methods, scenarios and options fail before any data is loaded
        resolve_method(each, spec.scenario)
    if spec.classes:
        bad = [c for c in spec.classes if not 0 <= c < meta.num_classes]
        if bad:
            raise ForgetRequestError(
                f"forget class {bad} is not in the data: classes are 0..{meta.num_classes - 1}"
            )
    ensure_dataset(train_config)
    source = resolve_checkpoint_path(checkpoint)
    invocation = {
        "checkpoint": str(source.resolve()),
        # Content, not paths: a checkpoint or ids file replaced under the same name must not
        # be continued as if it were the one the interrupted run began with.
        "checkpoint_sha256": sha256_file(source),
        "request": dataclasses.asdict(spec),
        "request_sha256": spec.digest(),
        "config": config.model_dump(mode="json"),
        "with_reference": with_reference,
        "audit": audit,
    }
    resumable = resumable_run(
        out_dir, "unlearn", invocation, save_every=save_every, resume=resume, force=force
    )
    data = load_training_data(train_config)
    model, meta = load_checkpoint_for(checkpoint, data)
    split = spec.resolve(data, validation_of(meta), config.seed)
    record_split(resumable, split.to_dict(), out_dir)

    results = Results(meta.dataset, meta.model, config.seed, config.device)
    runs: list[tuple[Classifier, RunRecord]] = []
    for each in configs:
        produced, record = run_method(
            each,
            model,
            data,
            split,
            train_config=train_config,
            original_seconds=meta.seconds,
            quiet=quiet,
            resume=resumable if each is config else None,
        )
        results.runs.append(record)
        runs.append((produced, record))
    unlearned, method_record = runs[-1]
    if audit:
        audit_runs(
            runs,
            data,
            split,
            seed=config.seed,
            batch_size=config.eval_batch_size,
            channels_last=config.channels_last,
        )
    if not context().is_main:  # under torchrun, rank 0 writes
        return results
    target = Path(out_dir)
    save_checkpoint(
        target,
        unlearned,
        dataclasses.replace(
            meta,
            method=method_record.method,
            seconds=method_record.seconds,
            split=split.to_dict(),
            metrics=method_record.metrics,
            versions=None,  # filled with this run's versions when written
        ),
    )
    split.save(target / SPLIT_FILE)
    atomic_write_text(target / CONFIG_FILE, config_to_yaml(config))
    results.write(target)
    if resumable is not None:
        resumable.finish()
    return results


__all__ = ["REFERENCE_METHODS", "resolve_method", "run_method", "unlearn_checkpoint"]
