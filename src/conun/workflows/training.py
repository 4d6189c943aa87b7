"""``conun train``: train the original model that later requests are unlearned from."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from conun.config import TrainConfig, config_to_yaml
from conun.data.arrays import DatasetBundle
from conun.distributed.group import context
from conun.engine.checkpoint import CheckpointMeta, save_checkpoint
from conun.engine.training import train_classifier
from conun.evaluation.accuracy import evaluate_split
from conun.evaluation.results import Results, RunRecord
from conun.io import atomic_write_text, sha256_json
from conun.models.base import Classifier
from conun.models.registry import build_model
from conun.models.weights import load_init_weights
from conun.reproducibility import seed_everything
from conun.workflows.inputs import ensure_dataset, load_training_data, validation_indices
from conun.workflows.outputs import CONFIG_FILE, record_digests, resumable_run


@dataclass
class TrainedModel:
    """An original model fresh from :func:`train_original`.

    Attributes:
        model: the trained classifier.
        meta: its checkpoint metadata (recipe, validation indices, accuracies, seconds).
        data: the dataset it was trained on, as :func:`~conun.workflows.inputs.load_training_data`
            returns it.
        results: its one run (method "original", scenario "none").
    """

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

    Returns:
        The trained model, its metadata, the data and the results.
    """
    ensure_dataset(config)
    recipe = config.model_dump(mode="json")
    # Content, not paths: the recipe's digest is compared before any work, the data's and the
    # validation split's once the data is loaded (record_digests), so that a resume never
    # continues a state on other data or another split under the same dataset name.
    resumable = resumable_run(
        out_dir,
        "train",
        {"config": recipe, "config_sha256": sha256_json(recipe)},
        save_every=save_every,
        resume=resume,
        force=force,
    )
    data = load_training_data(config)
    generator = seed_everything(config.seed)
    held_out = validation_indices(data, config)
    if resumable is not None:
        digests = {
            "dataset_sha256": train_data_sha256(data),
            "validation_sha256": sha256_json(held_out.tolist()),
        }
        record_digests(resumable, digests, resumable.directory)
    fit = torch.ones(len(data.train), dtype=torch.bool)
    fit[held_out] = False
    model = build_model(
        config.model,
        num_classes=data.num_classes,
        input_shape=data.input_shape,
        model_args=config.model_args,
    )
    if config.init is not None:
        load_init_weights(model, config.init)
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
        atomic_write_text(target / CONFIG_FILE, config_to_yaml(config))
        results.write(target)
    if resumable is not None:
        resumable.finish()
    return TrainedModel(model, meta, data, results)


def train_data_sha256(data: DatasetBundle) -> str:
    """SHA-256 of a dataset's identity as a training run sees it: its name, the train images'
    shape and bytes (after normalisation and ``max_train_samples``) and the train labels.

    About a second per 600 MB (CIFAR-10's train set as float32): cheap next to any training
    that is worth resuming, and only computed for runs that save or resume a state.
    """
    digest = hashlib.sha256(data.name.encode("utf-8"))
    for tensor in (data.train.images, data.train.labels):
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().data)
    return digest.hexdigest()


__all__ = ["TrainedModel", "train_data_sha256", "train_original"]
