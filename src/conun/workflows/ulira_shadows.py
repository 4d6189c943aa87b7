"""U-LiRA's shadow models: plan, train, unlearn, cache and score them (issue #5 item 3).

The attack itself (the per-example Gaussians, the leave-one-shadow-out likelihood ratios, the
reported metrics) is :mod:`conun.evaluation.ulira`; this workflow produces what it attacks, one
:class:`~conun.evaluation.ulira.ShadowResult` per shadow. The protocol (Hayes et al. 2024):

1. The training pool is the training set minus the validation split of the audited recipe (a
   :class:`~conun.config.TrainConfig`). T target examples are drawn from the pool (seeded).
2. K shadow originals are trained on random halves of the pool with the audited recipe: every
   (shadow, example) membership is an independent fair coin. (LiRA's exact balancing, every
   example in exactly ``K // 2`` halves, must not be used with leave-one-out: the other shadows'
   memberships would then reveal the held-out shadow's, and with few shadows the fitted Gaussians
   carry that leak, pushing even a retrained model's AUC far below 0.5.)
3. Each shadow is unlearned with the audited method (its shipped preset for the sample scenario)
   on the targets it saw: its forget set is ``targets ∩ half``, its retain set the rest of its
   half; everything outside its half is held out (never seen). The targets outside its half are
   the "never seen" ones.
4. Each target's logit-scaled confidence ``z_y − logsumexp_{i≠y} z_i`` is recorded under each
   unlearned shadow (:func:`~conun.evaluation.ulira.logit_scaled_confidence`).
5. :func:`~conun.evaluation.ulira.ulira_attack` attacks the results, leave-one-shadow-out.

Two registered "methods" are reference points through the same code path: ``original`` (no
unlearning: the seen targets are plain members, so the attack must succeed; this shows that the
recipe leaks membership at all) and ``retrain`` (each shadow retrained from scratch on its half
minus the targets: the ideal, AUC near 0.5).

Shadows are independent jobs: :func:`run_shadow` is a pure function of a :class:`ShadowJob` (plain
data, JSON-serialisable) and returns a ``ShadowResult`` (JSON-serialisable), so it can run in
another process; :func:`run_ulira` runs them serially, in a spawn-context process pool
(``executor="local"``) or as Ray tasks (``executor="ray"``, ``pip install 'conun[ray]'``), with
the same numbers every way (one torch thread per job). Trained shadows can be cached on disk
(``cache_dir``), keyed by a hash of the job's training part (recipe, seed, half), so that
auditing several methods trains each shadow once; under Ray the cache must be a directory that
every worker sees (a shared file system on a cluster), and so must the dataset's files. Cache
files are safetensors written atomically; nothing is ever pickled to disk.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from conun.config import TrainConfig
from conun.data.arrays import DatasetBundle
from conun.data.splits import ForgetRetainSplit
from conun.engine.training import train_classifier
from conun.evaluation.ulira import (
    MIN_SHADOWS,
    ShadowResult,
    ULiraError,
    logit_scaled_confidence,
    ulira_attack,
)
from conun.io import atomic_write
from conun.models.base import Classifier
from conun.models.registry import build_model
from conun.reproducibility import seed_everything
from conun.workflows.configs import resolve_unlearn_config
from conun.workflows.inputs import ensure_dataset, load_training_data, validation_indices
from conun.workflows.ray_runtime import import_ray, ray_session, set_task_threads
from conun.workflows.unlearning import resolve_method, run_method

logger = logging.getLogger(__name__)

SHADOW_CACHE_FORMAT = "conun-ulira-shadow/1"
"""Format tag in the metadata of a cached shadow (bumped if the training part changes meaning)."""

SHADOW_EXECUTORS = ("local", "ray")
"""Where shadow jobs run: this process or a local process pool, or Ray tasks."""


# -- jobs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShadowJob:
    """Everything one shadow needs; plain data, so it can be sent to another process or saved.

    Attributes:
        train_config: the audited recipe, ``TrainConfig.model_dump(mode="json")``. It also
            defines the data (``max_train_samples`` subset, validation split).
        shadow: index of the shadow, 0..K-1.
        seed: the shadow's own seed (model initialisation, batch order, unlearning draws).
        half: sorted training-set indices the shadow is trained on.
        targets: sorted training-set indices of the T target examples (the same for every shadow).
        method: registered unlearning method audited.
        unlearn_layer: a config layer over the method's shipped sample-scenario preset, e.g.
            ``{"options": {...}, "stopping": {"max_passes": 5}}``.
        cache_dir: directory of cached trained shadows, or None to always train.
        quiet: no progress bars inside the job.
    """

    train_config: dict[str, Any]
    shadow: int
    seed: int
    half: tuple[int, ...]
    targets: tuple[int, ...]
    method: str
    unlearn_layer: dict[str, Any] = field(default_factory=dict)
    cache_dir: str | None = None
    quiet: bool = True

    def training_part(self) -> dict[str, Any]:
        """What determines the trained shadow (not the method): the cache key is its hash."""
        return {
            "format": SHADOW_CACHE_FORMAT,
            "train_config": self.train_config,
            "seed": self.seed,
            "half": list(self.half),
        }

    def cache_key(self) -> str:
        """SHA-256 of the canonical JSON of :meth:`training_part`."""
        canonical = json.dumps(self.training_part(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; :meth:`from_dict` inverts it."""
        return {
            "train_config": self.train_config,
            "shadow": self.shadow,
            "seed": self.seed,
            "half": list(self.half),
            "targets": list(self.targets),
            "method": self.method,
            "unlearn_layer": self.unlearn_layer,
            "cache_dir": self.cache_dir,
            "quiet": self.quiet,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShadowJob:
        return cls(
            train_config=dict(data["train_config"]),
            shadow=int(data["shadow"]),
            seed=int(data["seed"]),
            half=tuple(int(i) for i in data["half"]),
            targets=tuple(int(i) for i in data["targets"]),
            method=str(data["method"]),
            unlearn_layer=dict(data.get("unlearn_layer", {})),
            cache_dir=data.get("cache_dir"),
            quiet=bool(data.get("quiet", True)),
        )


# -- planning ------------------------------------------------------------------------------------


def _derived_seed(seed: int, *stream: int) -> int:
    """An independent 31-bit seed for sub-stream ``stream`` of ``seed`` (numpy SeedSequence, so
    that neighbouring seeds do not give correlated shadows)."""
    state = np.random.SeedSequence([seed % 2**32, *stream]).generate_state(1)[0]
    return int(state) & 0x7FFFFFFF


def plan_shadow_jobs(
    train_config: TrainConfig,
    method: str,
    *,
    num_shadows: int = 16,
    num_targets: int = 100,
    seed: int = 0,
    unlearn_layer: Mapping[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    quiet: bool = True,
) -> list[ShadowJob]:
    """The K shadow jobs of a U-LiRA audit; validates the request before any training.

    The halves depend on ``(train_config, num_shadows, seed)`` only, not on ``method`` or
    ``num_targets``: so auditing several methods (or target counts) with the same ``cache_dir``
    reuses the trained shadows. The targets are a seeded draw of ``num_targets`` pool examples.

    Args:
        train_config: the audited recipe (dataset, model, epochs, ...).
        method: registered method that supports the sample scenario.
        num_shadows: K >= 4.
        num_targets: T, between 2 and the pool size.
        seed: seeds the targets, the halves and every shadow.
        unlearn_layer: config layer over the method's preset (see :class:`ShadowJob`).
        cache_dir: where trained shadows are cached, or None.
        quiet: no progress bars inside the jobs.

    Raises:
        ULiraError: K or T out of range.
        UnknownMethodError, UnsupportedScenarioError, ConfigError: bad method or options.
    """
    if num_shadows < MIN_SHADOWS:
        raise ULiraError(
            f"U-LiRA needs at least {MIN_SHADOWS} shadows (leave-one-out must leave, for every "
            f"target, shadows that saw it and shadows that did not); got {num_shadows}"
        )
    layer = dict(unlearn_layer or {})
    # Fail now, naming the allowed values, rather than in every worker.
    unlearn_config = resolve_unlearn_config(
        method,
        "sample",
        dataset=train_config.dataset,
        model=train_config.model,
        layers=[("unlearn layer", layer)],
    ).config
    resolve_method(unlearn_config, "sample")
    ensure_dataset(train_config)
    data = load_training_data(train_config)
    in_pool = torch.ones(len(data.train), dtype=torch.bool)
    in_pool[validation_indices(data, train_config)] = False
    pool = torch.nonzero(in_pool).flatten().numpy()
    if not 2 <= num_targets <= pool.size:
        raise ULiraError(
            f"num_targets must be between 2 and the pool size {pool.size} (training set minus "
            f"validation split); got {num_targets}"
        )
    # Independent fair coins, not LiRA's exact K // 2 per example: under leave-one-out the
    # latter makes the other shadows' memberships determine the held-out one's (module docstring).
    membership_rng = np.random.default_rng(_derived_seed(seed, 1))
    keep = membership_rng.random((num_shadows, pool.size)) < 0.5  # (K, N_pool)
    target_rng = np.random.default_rng(_derived_seed(seed, 2))
    targets = tuple(sorted(int(i) for i in target_rng.choice(pool, num_targets, replace=False)))
    recipe = train_config.model_dump(mode="json")
    return [
        ShadowJob(
            train_config=recipe,
            shadow=shadow,
            seed=_derived_seed(seed, 3, shadow),
            half=tuple(int(i) for i in pool[keep[shadow]]),
            targets=targets,
            method=method,
            unlearn_layer=layer,
            cache_dir=None if cache_dir is None else str(cache_dir),
            quiet=quiet,
        )
        for shadow in range(num_shadows)
    ]


# -- one shadow ----------------------------------------------------------------------------------


def _fresh_classifier(config: TrainConfig, data: DatasetBundle) -> Classifier:
    return build_model(
        config.model,
        num_classes=data.num_classes,
        input_shape=data.input_shape,
        model_args=config.model_args,
    )


def _from_state(config: TrainConfig, data: DatasetBundle, state: dict[str, Tensor]) -> Classifier:
    """A model of the recipe's architecture holding ``state``, in eval mode on the CPU.

    Freshly trained shadows go through here too, not only cached ones, so that a cache hit hands
    the method bit-identical weights in the same memory format (training leaves channels_last
    parameters behind, which would change the last bits of later convolutions).
    """
    model = _fresh_classifier(config, data)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


def _cache_path(job: ShadowJob) -> Path | None:
    if job.cache_dir is None:
        return None
    return Path(job.cache_dir) / f"shadow-{job.cache_key()}.safetensors"


def _read_cached(path: Path, job: ShadowJob) -> tuple[dict[str, Tensor], float] | None:
    """The cached weights and training seconds, or None when absent or not this job's shadow."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        meta = json.loads(header.get(SHADOW_CACHE_FORMAT, "null"))
        state = load_file(str(path))
    except (SafetensorError, OSError, json.JSONDecodeError) as error:
        logger.warning("ignoring unreadable cached shadow %s: %s", path, error)
        return None
    # The key is a hash; comparing the stored training part makes a collision or a stale file
    # a cache miss instead of a wrong shadow.
    if not isinstance(meta, dict) or meta.get("training_part") != job.training_part():
        logger.warning("cached shadow %s was trained for another job; retraining", path)
        return None
    return state, float(meta["train_seconds"])


def _write_cached(path: Path, job: ShadowJob, state: dict[str, Tensor], seconds: float) -> None:
    from safetensors.torch import save_file

    header = {
        SHADOW_CACHE_FORMAT: json.dumps(
            {"training_part": job.training_part(), "train_seconds": seconds}
        )
    }
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))


def _train_shadow(
    job: ShadowJob, config: TrainConfig, data: DatasetBundle
) -> tuple[Classifier, float, bool]:
    """The trained shadow (from the cache when there), its training seconds, whether cached."""
    path = _cache_path(job)
    cached = _read_cached(path, job) if path is not None else None
    if cached is not None:
        state, seconds = cached
        return _from_state(config, data, state), seconds, True
    # The recipe's own seed stays in config (it defines the data subset and the validation
    # split, identical for every shadow); the shadow's seed drives initialisation and batches.
    generator = seed_everything(job.seed)
    model = _fresh_classifier(config, data)
    outcome = train_classifier(
        model,
        data.train.subset(torch.tensor(job.half, dtype=torch.long)),
        config,
        generator=generator,
        quiet=job.quiet,
        description=f"shadow {job.shadow}",
    )
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    if path is not None:
        _write_cached(path, job, state, outcome.seconds)
    return _from_state(config, data, state), outcome.seconds, False


def run_shadow(job: ShadowJob) -> ShadowResult:
    """Train (or load) one shadow, unlearn the targets it saw with ``job.method``, score targets.

    A pure function of ``job`` (seeded; no state shared with the caller), so it can run in
    another process. When the shadow saw no target there is nothing to unlearn, and the trained
    shadow is scored as it is (unlearning an empty set is the identity, for retraining too).

    Args:
        job: see :class:`ShadowJob`.

    Returns:
        The targets' scores under the unlearned shadow and which targets it saw.
    """
    config = TrainConfig.model_validate(job.train_config)
    data = load_training_data(config)
    model, train_seconds, from_cache = _train_shadow(job, config, data)
    targets = torch.tensor(job.targets, dtype=torch.long)
    in_half = torch.zeros(len(data.train), dtype=torch.bool)
    in_half[torch.tensor(job.half, dtype=torch.long)] = True
    seen = in_half[targets]
    unlearn_seconds = 0.0
    metrics: dict[str, float | None] = {}
    if bool(seen.any()):
        unlearn_config = resolve_unlearn_config(
            job.method,
            "sample",
            dataset=config.dataset,
            model=config.model,
            layers=[
                (
                    "shadow job",
                    {
                        "seed": job.seed,
                        "device": config.device,
                        "channels_last": config.channels_last,
                        "eval_batch_size": config.eval_batch_size,
                    },
                ),
                ("unlearn layer", job.unlearn_layer),
            ],
        ).config
        # Everything outside the half is held out: the shadow never saw it, so the stopping
        # rules may use it as unseen data, and retrain/retain-based methods see only the half.
        split = ForgetRetainSplit.from_ids(
            targets[seen], len(data.train), validation=torch.nonzero(~in_half).flatten()
        )
        model, record = run_method(
            unlearn_config,
            model,
            data,
            split,
            train_config=config,
            original_seconds=train_seconds,
            quiet=job.quiet,
        )
        unlearn_seconds = record.seconds
        metrics = {
            key: record.metrics.get(key)
            for key in ("forget_train_acc", "retain_train_acc", "test_acc")
        }
    scores = logit_scaled_confidence(
        model,
        data.train.images[targets],
        data.train.labels[targets],
        batch_size=config.eval_batch_size,
        channels_last=config.channels_last,
    )
    return ShadowResult(
        shadow=job.shadow,
        seed=job.seed,
        method=job.method,
        targets=targets.numpy().astype(np.int64),
        seen=seen.numpy().astype(np.bool_),
        scores=scores.numpy().astype(np.float64),
        metrics=metrics,
        train_seconds=train_seconds,
        unlearn_seconds=unlearn_seconds,
        from_cache=from_cache,
    )


def _init_worker() -> None:
    # One thread per worker: the workers already use the cores, and a fixed thread count keeps
    # the floating-point reduction order (hence the numbers) independent of the pool size.
    torch.set_num_threads(1)


def _ray_shadow(job: ShadowJob) -> ShadowResult:
    """A Ray task: one shadow, with one torch thread (as in the process pool)."""
    set_task_threads(1)
    return run_shadow(job)


def check_shadow_executor(executor: str, gpus_per_job: float = 0.0) -> None:
    """Before any work: a known executor, Ray installed when asked for, GPUs only under Ray.

    Raises:
        ULiraError: an unknown executor, or GPUs per job out of range or without Ray.
        RayNotInstalledError: ``ray`` asked for but not installed.
    """
    if executor not in SHADOW_EXECUTORS:
        raise ULiraError(f"unknown executor {executor!r}; allowed: {', '.join(SHADOW_EXECUTORS)}")
    if gpus_per_job < 0 or (gpus_per_job > 0 and executor != "ray"):
        raise ULiraError(
            f"gpus_per_job must be >= 0, and > 0 only with executor ray; got {gpus_per_job:g} "
            f"with {executor}"
        )
    if executor == "ray":
        import_ray("U-LiRA's executor ray")


def _run_on_ray(
    jobs: Sequence[ShadowJob], workers: int, gpus_per_job: float, progress: Any
) -> list[ShadowResult]:
    """Run ``jobs`` as Ray tasks, at most ``workers`` at a time; results in job order."""
    # The cache is written by workers that may start in another directory.
    shared = [
        job
        if job.cache_dir is None
        else dataclasses.replace(job, cache_dir=str(Path(job.cache_dir).resolve()))
        for job in jobs
    ]
    with ray_session(quiet=True) as ray:
        task = ray.remote(_ray_shadow)
        options = {"num_cpus": 1, "num_gpus": gpus_per_job, "max_retries": 0}
        results: dict[int, ShadowResult] = {}
        in_flight: dict[Any, int] = {}
        queue = list(enumerate(shared))
        while queue or in_flight:
            while queue and len(in_flight) < workers:
                index, job = queue.pop(0)
                named = task.options(name=f"U-LiRA shadow {job.shadow}", **options)
                in_flight[named.remote(job)] = index
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                index = in_flight.pop(ref)
                results[index] = ray.get(ref)  # a job's error surfaces as soon as it happens
                progress.update()
    return [results[index] for index in range(len(jobs))]


def run_shadow_jobs(
    jobs: Sequence[ShadowJob],
    *,
    workers: int = 1,
    quiet: bool = True,
    executor: str = "local",
    gpus_per_job: float = 0.0,
) -> list[ShadowResult]:
    """Run shadow jobs; results come back in job order whichever way they ran.

    ``executor="local"``: serially in this process (``workers=1``) or in a spawn-context process
    pool of ``workers`` processes. ``executor="ray"``: as Ray tasks, at most ``workers`` at a
    time, each asking for one CPU (and ``gpus_per_job`` GPUs).

    Each pool worker and each Ray task runs with one torch thread. A serial run gives the same
    numbers as the others when this process also uses one thread (``torch.set_num_threads(1)``);
    with more threads the last bits of convolutions may differ.

    Raises:
        ULiraError: ``workers`` < 1, an unknown executor, GPUs without Ray.
        RayNotInstalledError: ``ray`` asked for but not installed.
    """
    if workers < 1:
        raise ULiraError(f"jobs must be >= 1, got {workers}")
    check_shadow_executor(executor, gpus_per_job)
    progress = tqdm(total=len(jobs), desc="U-LiRA shadows", disable=quiet, leave=False)
    results: list[ShadowResult] = []
    if executor == "ray":
        results = _run_on_ray(jobs, workers, gpus_per_job, progress)
    elif workers == 1:
        for job in jobs:
            results.append(run_shadow(job))
            progress.update()
    else:
        # spawn, not fork: forking a process that already holds torch threads (and possibly a
        # CUDA context) can deadlock or crash.
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            max_workers=min(workers, len(jobs)), mp_context=context, initializer=_init_worker
        ) as pool:
            futures = [pool.submit(run_shadow, job) for job in jobs]
            for future in concurrent.futures.as_completed(futures):
                future.result()  # surface a worker's error as soon as it happens
                progress.update()
            results = [future.result() for future in futures]
    progress.close()
    return results


def run_ulira(
    train_config: TrainConfig,
    method: str,
    *,
    num_shadows: int = 16,
    num_targets: int = 100,
    seed: int = 0,
    unlearn_layer: Mapping[str, Any] | None = None,
    jobs: int = 1,
    cache_dir: str | Path | None = None,
    quiet: bool = False,
    executor: str = "local",
    gpus_per_job: float = 0.0,
) -> list[ShadowResult]:
    """Plan (:func:`plan_shadow_jobs`) and run (:func:`run_shadow_jobs`) a U-LiRA audit of
    ``method`` under ``train_config``; feed the results to :func:`ulira_attack`.

    Args:
        train_config: the audited recipe.
        method: the audited method (``original`` and ``retrain`` are the reference points).
        num_shadows: K >= 4 shadows.
        num_targets: T target examples.
        seed: seeds everything; the same seed gives the same results.
        unlearn_layer: config layer over the method's shipped preset.
        jobs: processes (1 runs in this process), or Ray tasks at once under ``executor="ray"``.
        cache_dir: cache of trained shadows shared between audits of several methods.
        quiet: no progress bar.
        executor: ``local`` or ``ray`` (:func:`run_shadow_jobs`).
        gpus_per_job: GPUs each Ray task asks for (a CUDA recipe needs > 0 under Ray).

    Returns:
        One :class:`ShadowResult` per shadow, in shadow order.
    """
    check_shadow_executor(executor, gpus_per_job)  # before planning loads the data
    planned = plan_shadow_jobs(
        train_config,
        method,
        num_shadows=num_shadows,
        num_targets=num_targets,
        seed=seed,
        unlearn_layer=unlearn_layer,
        cache_dir=cache_dir,
    )
    started = time.perf_counter()
    results = run_shadow_jobs(
        planned, workers=jobs, quiet=quiet, executor=executor, gpus_per_job=gpus_per_job
    )
    logger.info(
        "U-LiRA %s: %d shadows x %d targets in %.1f s (%d from cache)",
        method,
        num_shadows,
        num_targets,
        time.perf_counter() - started,
        sum(result.from_cache for result in results),
    )
    return results


def ulira_audit(
    train_config: TrainConfig,
    methods: Iterable[str],
    *,
    num_shadows: int = 16,
    num_targets: int = 100,
    seed: int = 0,
    unlearn_layers: Mapping[str, Mapping[str, Any]] | None = None,
    jobs: int = 1,
    cache_dir: str | Path | None = None,
    quiet: bool = False,
    executor: str = "local",
    gpus_per_job: float = 0.0,
) -> dict[str, dict[str, float]]:
    """U-LiRA of several methods on the same shadows and targets: method -> attack metrics
    (:func:`ulira_attack`) plus ``seconds`` (wall-clock of that method's shadows, training
    included unless it came from ``cache_dir``). ``executor``, ``gpus_per_job``: as
    :func:`run_ulira`; Ray is started (or joined) once for all the methods."""
    check_shadow_executor(executor, gpus_per_job)
    report: dict[str, dict[str, float]] = {}
    # One Ray for every method (each run would otherwise start and stop its own).
    with ray_session(quiet=True) if executor == "ray" else contextlib.nullcontext():
        for method in methods:
            started = time.perf_counter()
            results = run_ulira(
                train_config,
                method,
                num_shadows=num_shadows,
                num_targets=num_targets,
                seed=seed,
                unlearn_layer=(unlearn_layers or {}).get(method),
                jobs=jobs,
                cache_dir=cache_dir,
                quiet=quiet,
                executor=executor,
                gpus_per_job=gpus_per_job,
            )
            report[method] = {**ulira_attack(results), "seconds": time.perf_counter() - started}
    return report


__all__ = [
    "SHADOW_CACHE_FORMAT",
    "SHADOW_EXECUTORS",
    "ShadowJob",
    "check_shadow_executor",
    "plan_shadow_jobs",
    "run_shadow",
    "run_shadow_jobs",
    "run_ulira",
    "ulira_audit",
]
