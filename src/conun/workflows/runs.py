"""Run workflows behind the CLI: train an original, unlearn a checkpoint, evaluate, the demo.

Each workflow validates everything it can (config, dataset files, checkpoint, forget request,
method and scenario, output directory) before any training starts, and writes its outputs only
at the end, each file atomically, so that a failed run leaves an existing directory untouched.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from conun.config import TrainConfig, UnlearnConfig, config_to_yaml
from conun.data.arrays import DatasetBundle
from conun.data.registry import check_dataset_available, load_dataset
from conun.data.splits import ForgetRequestError, ForgetRetainSplit, Scenario, read_ids_file
from conun.data.validation import split_validation
from conun.distributed.group import context
from conun.engine.checkpoint import (
    CHECKPOINT_FILE,
    CheckpointError,
    CheckpointMeta,
    load_checkpoint,
    read_checkpoint_meta,
    resolve_checkpoint_path,
    save_checkpoint,
)
from conun.engine.resume import (
    DEFAULT_SAVE_EVERY,
    RESUME_FILE,
    Resumable,
    check_invocation,
    read_state,
)
from conun.engine.training import train_classifier
from conun.evaluation.accuracy import evaluate_split
from conun.evaluation.distances import UnlearningScores, output_distances, summary_scores
from conun.evaluation.privacy import AttackName, audit_model
from conun.evaluation.results import RESULTS_FILE, Results, RunRecord, format_table
from conun.io import atomic_write_text
from conun.methods.base import UnlearningMethod, UnlearningTask, get_method
from conun.models.base import Classifier
from conun.models.registry import build_model
from conun.reproducibility import seed_everything
from conun.workflows.names import check_train_names

logger = logging.getLogger(__name__)


class OutputExistsError(FileExistsError):
    """The output directory already holds results that a run would overwrite."""


def prepare_output_dir(out_dir: str | Path, *, force: bool) -> Path:
    """Refuse to overwrite an earlier run's results or checkpoint unless ``force``."""
    target = Path(out_dir)
    if target.exists() and not target.is_dir():
        raise OutputExistsError(f"--out {target} exists and is not a directory")
    if (target / RESUME_FILE).exists() and not force:
        raise OutputExistsError(
            f"{target} holds an interrupted run ({RESUME_FILE}): continue it with --resume "
            f"{target}, or pass --force to start afresh"
        )
    existing = [name for name in (RESULTS_FILE, CHECKPOINT_FILE) if (target / name).exists()]
    if existing and not force:
        raise OutputExistsError(
            f"{target} already holds {', '.join(existing)}; choose another --out or pass --force "
            "to overwrite"
        )
    return target


def ensure_dataset(config: TrainConfig) -> None:
    """Fail before any work when the dataset or model name is unknown, or the dataset's files
    are missing and downloads are off."""
    check_train_names(config)
    if not config.download:
        check_dataset_available(config.dataset, config.data_dir)


def load_training_data(config: TrainConfig) -> DatasetBundle:
    """The dataset exactly as the original saw it (``max_train_samples`` applied, seeded)."""
    data = load_dataset(config.dataset, data_dir=config.data_dir, download=config.download)
    if config.max_train_samples is not None and config.max_train_samples < len(data.train):
        generator = torch.Generator().manual_seed(config.seed)
        keep = torch.randperm(len(data.train), generator=generator)[: config.max_train_samples]
        data = DatasetBundle(
            data.name,
            data.train.subset(torch.sort(keep).values),
            data.test,
            data.num_classes,
            data.mean,
            data.std,
            data.class_names,
        )
    return data


def validation_indices(data: DatasetBundle, config: TrainConfig) -> torch.Tensor:
    """The seeded, stratified validation split the original is trained without."""
    return split_validation(
        len(data.train), data.train.labels, fraction=config.validation_fraction, seed=config.seed
    ).validation_indices


@dataclass
class TrainedModel:
    """An original model fresh from :func:`train_original`."""

    model: Classifier
    meta: CheckpointMeta
    data: DatasetBundle
    results: Results


def train_original(
    config: TrainConfig,
    out_dir: str | Path | None,
    *,
    quiet: bool = False,
    force: bool = False,
    save_every: int | None = None,
    resume: bool = False,
) -> TrainedModel:
    """Train the original model and write ``checkpoint.safetensors``, ``config.yaml`` and
    ``results.json`` (one run: method "original", scenario "none") into ``out_dir``.

    Args:
        config: the training recipe.
        out_dir: output directory, or None to write nothing (used by the demo and tests).
        quiet: no progress bars.
        force: overwrite an earlier run in ``out_dir``.
        save_every: write ``out_dir/resume.safetensors`` every this many optimizer steps
            (removed when the run finishes); None: no resumable state.
        resume: continue the interrupted run in ``out_dir`` from its resumable state (the
            config must be the one it started with).
    """
    ensure_dataset(config)
    resumable = _resumable(
        out_dir, "train", {"config": config.model_dump(mode="json")}, save_every, resume, force
    )
    data = load_training_data(config)
    generator = seed_everything(config.seed)
    held_out = validation_indices(data, config)
    fit = torch.ones(len(data.train), dtype=torch.bool)
    fit[held_out] = False
    model = build_model(config.model, num_classes=data.num_classes, input_shape=data.input_shape)
    outcome = train_classifier(
        model,
        data.train.subset(torch.nonzero(fit).flatten()),
        config,
        generator=generator,
        test=data.test,
        quiet=quiet,
        description=f"train {config.model} on {config.dataset}",
        resume=resumable,
    )
    metrics = evaluate_split(
        model, data, None, batch_size=config.eval_batch_size, channels_last=config.channels_last
    )
    record = RunRecord(
        scenario="none",
        method="original",
        seconds=outcome.seconds,
        metrics=metrics.to_dict(),
        extra={"epochs": outcome.epochs},
    )
    results = Results(config.dataset, config.model, config.seed, config.device, [record])
    meta = CheckpointMeta(
        model=config.model,
        dataset=config.dataset,
        num_classes=data.num_classes,
        input_shape=data.input_shape,
        train_config=config.model_dump(mode="json"),
        validation=held_out.tolist(),
        method="original",
        seconds=outcome.seconds,
        metrics=metrics.to_dict(),
    )
    if out_dir is not None and context().is_main:  # under torchrun, rank 0 writes
        target = Path(out_dir)
        save_checkpoint(target, model, meta)
        atomic_write_text(target / "config.yaml", config_to_yaml(config))
        results.write(target)
    if resumable is not None:
        resumable.finish()
    return TrainedModel(model, meta, data, results)


def _resumable(
    out_dir: str | Path | None,
    kind: str,
    invocation: dict[str, Any],
    save_every: int | None,
    resume: bool,
    force: bool,
) -> Resumable | None:
    """Check ``out_dir`` and build the run's :class:`Resumable` (before any work is done)."""
    if out_dir is None:
        if resume or save_every is not None:
            raise ValueError("resumable states need an output directory")
        return None
    if resume:
        if force:
            raise ValueError("--resume continues a run and --force starts it afresh: pick one")
        state = read_state(out_dir, kind=kind)
        check_invocation(state, invocation, out_dir)
        every = save_every if save_every is not None else DEFAULT_SAVE_EVERY
        return Resumable(Path(out_dir), every, kind, invocation, state)
    prepare_output_dir(out_dir, force=force)
    if save_every is None:
        return None
    return Resumable(Path(out_dir), save_every, kind, invocation)


@dataclass(frozen=True)
class ForgetSpec:
    """A forget request as the user gives it (exactly one field set)."""

    classes: tuple[int, ...] = ()
    num_samples: int | None = None
    fraction: float | None = None
    ids_file: str | None = None

    def __post_init__(self) -> None:
        given = sum(
            [
                bool(self.classes),
                self.num_samples is not None,
                self.fraction is not None,
                self.ids_file is not None,
            ]
        )
        if given != 1:
            raise ForgetRequestError(
                "give exactly one forget request: --forget-class C, --forget-samples N, "
                "--forget-fraction F or --forget-ids FILE"
            )

    @property
    def scenario(self) -> Scenario:
        return "class" if self.classes else "sample"

    def resolve(
        self, data: DatasetBundle, validation: torch.Tensor, seed: int
    ) -> ForgetRetainSplit:
        """The concrete split on ``data`` (validation samples are never forgotten/retained)."""
        if self.classes:
            return ForgetRetainSplit.from_classes(
                data.train.labels, self.classes, num_classes=data.num_classes, validation=validation
            )
        if self.ids_file is not None:
            return ForgetRetainSplit.from_ids(
                read_ids_file(self.ids_file),
                len(data.train),
                validation=validation,
                ids_file=self.ids_file,
            )
        return ForgetRetainSplit.from_random(
            len(data.train),
            num_samples=self.num_samples,
            fraction=self.fraction,
            seed=seed,
            validation=validation,
        )


def run_method(
    method: UnlearningMethod,
    model: Classifier,
    data: DatasetBundle,
    split: ForgetRetainSplit,
    config: UnlearnConfig,
    *,
    train_config: TrainConfig | None,
    original_seconds: float | None,
    quiet: bool = False,
    resume: Resumable | None = None,
) -> tuple[Classifier, RunRecord]:
    """Run one method on a copy of ``model`` and evaluate the result on every split
    (``resume``: save resumable states of the method's loop / continue from one)."""
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
    outcome = method.run(task)
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
        method=method.name,
        seconds=outcome.seconds,
        forget_batches=outcome.forget_batches,
        passes=outcome.passes,
        metrics=metrics.to_dict(),
        history=outcome.history,
        extra=outcome.extra,
    )
    return outcome.model, record


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
    and its audited record), the distances to it on ``D_u_tr`` and the summary scores."""
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
    (:func:`audit_against`; distances to retrain when it ran too).

    With ``save_every``, the method's loop (every loop-based method on the shared engine, and
    retrain) writes ``out_dir/resume.safetensors`` every that many optimizer steps; ``resume``
    continues from it with the same arguments, to the same final weights. The reference runs
    of ``with_reference`` are not saved: on resume they run again (same seed, same result).
    """
    meta = read_checkpoint_meta(checkpoint)
    train_config = TrainConfig.model_validate(meta.train_config)
    method = get_method(config.method).for_scenario(spec.scenario, config.options)
    references = (
        [get_method(name).for_scenario(spec.scenario, {}) for name in ("original", "retrain")]
        if with_reference
        else []
    )
    if spec.classes:
        bad = [c for c in spec.classes if not 0 <= c < meta.num_classes]
        if bad:
            raise ForgetRequestError(
                f"forget class {bad} is not in the data: classes are 0..{meta.num_classes - 1}"
            )
    ensure_dataset(train_config)
    invocation = {
        "checkpoint": str(resolve_checkpoint_path(checkpoint).resolve()),
        "request": dataclasses.asdict(spec),
        "config": config.model_dump(mode="json"),
        "with_reference": with_reference,
        "audit": audit,
    }
    resumable = _resumable(out_dir, "unlearn", invocation, save_every, resume, force)
    data = load_training_data(train_config)
    model, meta = load_checkpoint(
        checkpoint, expected_num_classes=data.num_classes, expected_input_shape=data.input_shape
    )
    split = spec.resolve(data, torch.tensor(meta.validation, dtype=torch.long), config.seed)

    results = Results(meta.dataset, meta.model, config.seed, config.device)
    unlearned: Classifier | None = None
    produced_models: list[tuple[Classifier, RunRecord]] = []
    for runner in [*references, method]:
        produced, record = run_method(
            runner,
            model,
            data,
            split,
            config,
            train_config=train_config,
            original_seconds=meta.seconds,
            quiet=quiet,
            resume=resumable if runner is method else None,
        )
        results.runs.append(record)
        produced_models.append((produced, record))
        if runner is method:
            unlearned = produced
    assert unlearned is not None
    if audit:
        audit_runs(produced_models, data, split, config)
    target = Path(out_dir)
    method_record = results.runs[-1]
    if not context().is_main:  # under torchrun, rank 0 writes
        return results
    save_checkpoint(
        target,
        unlearned,
        dataclasses.replace(
            meta,
            method=method.name,
            seconds=method_record.seconds,
            split=split.to_dict(),
            metrics=method_record.metrics,
            versions=None,  # filled with this run's versions when written
        ),
    )
    split.save(target / "split.json")
    atomic_write_text(target / "config.yaml", config_to_yaml(config))
    results.write(target)
    if resumable is not None:
        resumable.finish()
    return results


def audit_runs(
    runs: list[tuple[Classifier, RunRecord]],
    data: DatasetBundle,
    split: ForgetRetainSplit,
    config: UnlearnConfig,
) -> None:
    """Audit every run; the retrain run first, so the others can be compared with it."""
    audit = functools.partial(
        audit_against,
        data=data,
        split=split,
        seed=config.seed,
        batch_size=config.eval_batch_size,
        channels_last=config.channels_last,
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
    (which needs a forget request)."""
    if audit and spec is None and read_checkpoint_meta(checkpoint).split is None:
        raise ForgetRequestError(
            "--audit needs a forget request: give --forget-class/--forget-samples/--forget-ids, "
            "or evaluate a checkpoint written by `conun unlearn`"
        )
    meta = read_checkpoint_meta(checkpoint)
    train_config = TrainConfig.model_validate(meta.train_config)
    ensure_dataset(train_config)
    prepare_output_dir(out_dir, force=force)
    data = load_training_data(train_config)
    model, meta = load_checkpoint(
        checkpoint, expected_num_classes=data.num_classes, expected_input_shape=data.input_shape
    )
    validation = torch.tensor(meta.validation, dtype=torch.long)
    if spec is not None:
        split: ForgetRetainSplit | None = spec.resolve(data, validation, seed)
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
    train_config = TrainConfig.model_validate(meta.train_config)
    ensure_dataset(train_config)
    prepare_output_dir(out_dir, force=force)
    data = load_training_data(train_config)
    model, meta = load_checkpoint(
        checkpoint, expected_num_classes=data.num_classes, expected_input_shape=data.input_shape
    )
    validation = torch.tensor(meta.validation, dtype=torch.long)
    split = (
        spec.resolve(data, validation, seed)
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
        reference_model, reference_meta = load_checkpoint(
            reference, expected_num_classes=data.num_classes, expected_input_shape=data.input_shape
        )
        retrained = (reference_model, record_of(reference_model, reference_meta))
        audit(*retrained)
        results.runs.append(retrained[1])
    record = record_of(model, meta)
    audit(model, record, reference=retrained)
    results.runs.append(record)
    if context().is_main:  # under torchrun, rank 0 writes
        results.write(out_dir)
    return results


def describe(results: Results) -> str:
    """The results table as printed at the end of a command."""
    return format_table(results.to_dict())


__all__ = [
    "CheckpointError",
    "ForgetSpec",
    "OutputExistsError",
    "TrainedModel",
    "audit_against",
    "audit_checkpoint",
    "describe",
    "evaluate_checkpoint",
    "load_training_data",
    "prepare_output_dir",
    "run_method",
    "train_original",
    "unlearn_checkpoint",
]
