"""``conun evaluate`` and ``conun audit``: accuracies and the privacy audit of a checkpoint, and
the audit of freshly unlearned models that ``conun unlearn --audit``, the bench and the API add.
"""

from __future__ import annotations

import functools
from pathlib import Path

from conun.data.arrays import DatasetBundle
from conun.data.splits import ForgetRequestError, ForgetRetainSplit
from conun.distributed.group import context
from conun.engine.checkpoint import CheckpointError, CheckpointMeta, read_checkpoint_meta
from conun.evaluation.accuracy import evaluate_split
from conun.evaluation.distances import UnlearningScores, output_distances, summary_scores
from conun.evaluation.privacy import AttackName, audit_model
from conun.evaluation.results import Results, RunRecord
from conun.models.base import Classifier
from conun.workflows.inputs import (
    ensure_dataset,
    load_checkpoint_for,
    load_training_data,
    recipe_of,
    validation_of,
)
from conun.workflows.outputs import prepare_output_dir
from conun.workflows.requests import ForgetSpec


def audit_against(
    model: Classifier,
    record: RunRecord,
    data: DatasetBundle,
    split: ForgetRetainSplit,
    *,
    seed: int,
    batch_size: int,
    channels_last: bool = False,
    attack: AttackName = "logistic",
    reference: tuple[Classifier, RunRecord] | None = None,
) -> None:
    """Add the privacy audit to ``record.metrics``: the population attacks (a)-(c) of
    :func:`conun.evaluation.privacy.audit_model`, and, given the retrained ``reference`` (model
    and its audited record), the distances to it on ``D_u_tr`` and the summary scores.

    Args:
        model: the audited classifier.
        record: its run, holding its accuracies on every split (updated in place).
        data: the dataset ``split`` indexes into; ``data.test`` are the non-members.
        split: the forget request.
        seed: seeds the attacks' draws.
        batch_size: images per forward pass.
        channels_last: feed batches in channels_last format.
        attack: the classifier of attack (a).
        reference: the retrained model and its audited record, or None (no distances).
    """
    record.metrics.update(
        audit_model(
            model,
            data,
            split,
            seed=seed,
            batch_size=batch_size,
            attack=attack,
            channels_last=channels_last,
        )
    )
    if reference is None:
        return
    reference_model, reference_record = reference
    record.metrics.update(
        output_distances(
            model,
            reference_model,
            data.train.images[split.forget],
            batch_size=batch_size,
            channels_last=channels_last,
        )
    )
    # In the class scenario TA is the test accuracy on the retained classes (Fan et al. 2024).
    test_key = "retain_test_acc" if split.scenario == "class" else "test_acc"
    record.metrics.update(
        summary_scores(
            UnlearningScores.from_metrics(record.metrics, test_key=test_key),
            UnlearningScores.from_metrics(reference_record.metrics, test_key=test_key),
        )
    )


def audit_runs(
    runs: list[tuple[Classifier, RunRecord]],
    data: DatasetBundle,
    split: ForgetRetainSplit,
    *,
    seed: int,
    batch_size: int,
    channels_last: bool = False,
) -> None:
    """:func:`audit_against` every run; the retrain run first, so that the others are compared
    with it."""
    audit = functools.partial(
        audit_against,
        data=data,
        split=split,
        seed=seed,
        batch_size=batch_size,
        channels_last=channels_last,
    )
    retrained = next(((m, r) for m, r in runs if r.method == "retrain"), None)
    if retrained is not None:
        audit(*retrained)
    for model, record in runs:
        if record.method != "retrain":
            audit(model, record, reference=retrained)


def evaluate_checkpoint(
    checkpoint: str | Path,
    spec: ForgetSpec | None,
    out_dir: str | Path,
    *,
    seed: int = 0,
    audit: bool = False,
    force: bool = False,
) -> Results:
    """Evaluate a checkpoint on every split of ``spec`` (or of the split it was unlearned for,
    or none) and write ``results.json`` into ``out_dir``; ``audit`` adds the privacy audit
    (which needs a forget request).

    Raises:
        ForgetRequestError: ``audit`` without a forget request.
    """
    meta = read_checkpoint_meta(checkpoint)
    if audit and spec is None and meta.split is None:
        raise ForgetRequestError(
            "--audit needs a forget request: give --forget-class/--forget-samples/--forget-ids, "
            "or evaluate a checkpoint written by `conun unlearn`"
        )
    train_config = recipe_of(meta, checkpoint)
    ensure_dataset(train_config)
    prepare_output_dir(out_dir, force=force)
    data = load_training_data(train_config)
    model, meta = load_checkpoint_for(checkpoint, data)
    if spec is not None:
        split: ForgetRetainSplit | None = spec.resolve(data, validation_of(meta), seed)
    elif meta.split is not None:
        split = ForgetRetainSplit.from_dict(meta.split)
    else:
        split = None
    metrics = evaluate_split(model, data, split, batch_size=train_config.eval_batch_size)
    record = RunRecord(
        scenario=split.scenario if split else "none",
        forget=split.request() if split else None,
        method=meta.method,
        seconds=meta.seconds,
        metrics=metrics.to_dict(),
    )
    if audit and split is not None:
        audit_against(
            model, record, data, split, seed=seed, batch_size=train_config.eval_batch_size
        )
    results = Results(meta.dataset, meta.model, seed, "cpu", [record])
    if context().is_main:  # under torchrun, rank 0 writes
        results.write(out_dir)
    return results


def audit_checkpoint(
    checkpoint: str | Path,
    spec: ForgetSpec | None,
    out_dir: str | Path,
    *,
    reference: str | Path | None = None,
    seed: int = 0,
    attack: AttackName = "logistic",
    force: bool = False,
) -> Results:
    """Audit a checkpoint: accuracies on every split, the population membership attacks and,
    with the retrained model as ``reference``, the distances to it and the summary scores.

    The forget request is ``spec``, else the one the checkpoint was unlearned for. Writes
    ``results.json`` (the reference's run first, then the audited one) into ``out_dir``.

    Raises:
        ForgetRequestError: no forget request given or recorded in the checkpoint.
        CheckpointError: ``reference`` is for another dataset, number of classes or input shape.
    """
    meta = read_checkpoint_meta(checkpoint)
    if spec is None and meta.split is None:
        raise ForgetRequestError(
            "an audit needs a forget request: give --forget-class/--forget-samples/--forget-ids, "
            "or audit a checkpoint written by `conun unlearn`"
        )
    reference_meta = read_checkpoint_meta(reference) if reference is not None else None
    if reference_meta is not None and (
        reference_meta.dataset != meta.dataset
        or reference_meta.num_classes != meta.num_classes
        or tuple(reference_meta.input_shape) != tuple(meta.input_shape)
    ):
        raise CheckpointError(
            f"--reference {reference} is a {reference_meta.model} on {reference_meta.dataset} "
            f"({reference_meta.num_classes} classes); the audited checkpoint is a {meta.model} on "
            f"{meta.dataset} ({meta.num_classes} classes): they cannot be compared"
        )
    train_config = recipe_of(meta, checkpoint)
    ensure_dataset(train_config)
    prepare_output_dir(out_dir, force=force)
    data = load_training_data(train_config)
    model, meta = load_checkpoint_for(checkpoint, data)
    split = (
        spec.resolve(data, validation_of(meta), seed)
        if spec is not None
        else ForgetRetainSplit.from_dict(meta.split or {})
    )
    audit = functools.partial(
        audit_against,
        data=data,
        split=split,
        seed=seed,
        batch_size=train_config.eval_batch_size,
        attack=attack,
    )

    def record_of(of: Classifier, of_meta: CheckpointMeta) -> RunRecord:
        metrics = evaluate_split(of, data, split, batch_size=train_config.eval_batch_size)
        return RunRecord(
            scenario=split.scenario,
            forget=split.request(),
            method=of_meta.method,
            seconds=of_meta.seconds,
            metrics=metrics.to_dict(),
        )

    results = Results(meta.dataset, meta.model, seed, "cpu")
    retrained: tuple[Classifier, RunRecord] | None = None
    if reference is not None:
        reference_model, reference_meta = load_checkpoint_for(reference, data)
        retrained = (reference_model, record_of(reference_model, reference_meta))
        audit(*retrained)
        results.runs.append(retrained[1])
    record = record_of(model, meta)
    audit(model, record, reference=retrained)
    results.runs.append(record)
    if context().is_main:  # under torchrun, rank 0 writes
        results.write(out_dir)
    return results


__all__ = ["audit_against", "audit_checkpoint", "audit_runs", "evaluate_checkpoint"]
