"""U-LiRA: the per-example membership attack against an unlearning method (issue #5 item 3).

Hayes, Shumailov, Triantafillou, Khalifa, Papernot, "Inexact Unlearning Needs More Careful
Evaluations to Avoid a False Sense of Privacy" (2024) adapt LiRA (Carlini et al. 2022) to
unlearning. A population attack fits one threshold for every example; U-LiRA fits a dedicated
attacker per example, which is much stronger because examples differ widely in how confidently
any model classifies them. The question it answers: *after the method unlearned an example, can
an adversary tell it apart from an example the model never saw?* (retraining from scratch makes
the two indistinguishable by construction.)

The protocol implemented here:

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
   unlearned shadow.
5. :func:`ulira_attack`, leave-one-shadow-out: each shadow in turn is the target model; for each
   target example, Gaussians are fitted to its scores under the other K−1 shadows where it was
   unlearned ("in") and where it was never seen ("out"); the attack is the log-likelihood ratio.
   Reported: ROC AUC over all (target model, example) pairs, balanced accuracy at the likelihood
   ratio 1 (the Bayes threshold for the balanced game of the paper), and TPR at low FPR where the
   number of never-seen pairs makes it meaningful. 0.5 is ideal.

Two registered "methods" are reference points through the same code path: ``original`` (no
unlearning: the seen targets are plain members, so the attack must succeed; this shows that the
recipe leaks membership at all) and ``retrain`` (each shadow retrained from scratch on its half
minus the targets: the ideal, AUC near 0.5).

Shadows are independent jobs: :func:`run_shadow` is a pure function of a :class:`ShadowJob` (plain
data, JSON-serialisable) and returns a :class:`ShadowResult` (JSON-serialisable), so it can run in
another process; :func:`run_ulira` runs them serially or in a spawn-context process pool with the
same numbers either way. Trained shadows can be cached on disk (``cache_dir``), keyed by a hash of
the job's training part (recipe, seed, half), so that auditing several methods trains each shadow
once. Cache files are safetensors written atomically; nothing is ever pickled to disk.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import math
import multiprocessing
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor
from tqdm.auto import tqdm

from conun.config import TrainConfig, build_unlearn_config
from conun.data.arrays import DatasetBundle
from conun.data.splits import ForgetRetainSplit
from conun.distributed.device import to_device
from conun.engine.training import train_classifier
from conun.io import atomic_write, atomic_write_json
from conun.methods.base import get_method
from conun.models.base import Classifier
from conun.models.registry import build_model
from conun.reproducibility import seed_everything
from conun.workflows.runs import ensure_dataset, load_training_data, run_method, validation_indices

logger = logging.getLogger(__name__)

SHADOW_CACHE_FORMAT = "conun-ulira-shadow/1"
"""Format tag in the metadata of a cached shadow (bumped if the training part changes meaning)."""

RESULTS_FORMAT = "conun-ulira-results/1"
"""Format tag of a file written by :func:`save_shadow_results`."""

MIN_SHADOWS = 4
"""Fewest shadows accepted. Leave-one-out scores a (target model, example) pair only when the
other K−1 shadows include some that unlearned the example and some that never saw it; with
independent fair-coin memberships that fails for a share ``2^(2−K)`` of the pairs (1/4 at K = 4,
1/64 at K = 8), which are left out of the metrics."""

LOW_FPRS: tuple[tuple[str, float], ...] = (("1pct", 0.01), ("0p1pct", 0.001))
"""False-positive rates at which TPRs are reported (key suffix, rate), when meaningful."""

MIN_FALSE_POSITIVES = 10
"""A TPR at FPR α is reported only when α × (never-seen pairs) >= this: with fewer negatives the
threshold is set by a handful of scores and the number is noise."""

Variance = Literal["per_example", "pooled"]


class ULiraError(ValueError):
    """A U-LiRA request that cannot be run; the message says why and what is allowed."""


# -- jobs and results ----------------------------------------------------------------------------


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


@dataclass(frozen=True, eq=False)
class ShadowResult:
    """One unlearned shadow's view of the targets.

    Attributes:
        shadow: index of the shadow.
        seed: its seed.
        method: the method that unlearned it.
        targets: ``(T,)`` int64 training-set indices of the targets.
        seen: ``(T,)`` bool, True where the target was in the shadow's half (so it was unlearned;
            under ``original`` it is simply a member), False where it was never seen.
        scores: ``(T,)`` float64 logit-scaled confidences ``z_y − logsumexp_{i≠y} z_i`` of the
            unlearned shadow.
        metrics: accuracies of the unlearned shadow (results.json meanings).
        train_seconds: wall-clock of training the shadow (the cached value on a cache hit).
        unlearn_seconds: wall-clock of the method itself.
        from_cache: the trained shadow came from the cache.
    """

    shadow: int
    seed: int
    method: str
    targets: NDArray[np.int64]
    seen: NDArray[np.bool_]
    scores: NDArray[np.float64]
    metrics: dict[str, float | None] = field(default_factory=dict)
    train_seconds: float = 0.0
    unlearn_seconds: float = 0.0
    from_cache: bool = False

    def __post_init__(self) -> None:
        shapes = {self.targets.shape, self.seen.shape, self.scores.shape}
        if len(shapes) != 1 or self.targets.ndim != 1:
            raise ULiraError(
                "targets, seen and scores must be (T,) arrays of one length; got shapes "
                f"{self.targets.shape}, {self.seen.shape}, {self.scores.shape}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (floats are written with full precision: ``from_dict`` restores them
        bit for bit)."""
        return {
            "shadow": self.shadow,
            "seed": self.seed,
            "method": self.method,
            "targets": self.targets.tolist(),
            "seen": self.seen.tolist(),
            "scores": self.scores.tolist(),
            "metrics": self.metrics,
            "train_seconds": self.train_seconds,
            "unlearn_seconds": self.unlearn_seconds,
            "from_cache": self.from_cache,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShadowResult:
        return cls(
            shadow=int(data["shadow"]),
            seed=int(data["seed"]),
            method=str(data["method"]),
            targets=np.asarray(data["targets"], dtype=np.int64),
            seen=np.asarray(data["seen"], dtype=np.bool_),
            scores=np.asarray(data["scores"], dtype=np.float64),
            metrics=dict(data.get("metrics", {})),
            train_seconds=float(data.get("train_seconds", 0.0)),
            unlearn_seconds=float(data.get("unlearn_seconds", 0.0)),
            from_cache=bool(data.get("from_cache", False)),
        )


def save_shadow_results(path: str | Path, results: Sequence[ShadowResult]) -> Path:
    """Write shadow results as one JSON file (atomically)."""
    return atomic_write_json(
        path, {"format": RESULTS_FORMAT, "shadows": [result.to_dict() for result in results]}
    )


def load_shadow_results(path: str | Path) -> list[ShadowResult]:
    """Read a file written by :func:`save_shadow_results`."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT:
        raise ULiraError(f"{path} is not a U-LiRA results file (format {RESULTS_FORMAT})")
    return [ShadowResult.from_dict(entry) for entry in data["shadows"]]


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
    unlearn_config = build_unlearn_config(method, "sample", [layer], dataset=train_config.dataset)
    get_method(method).for_scenario("sample", unlearn_config.options)
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
    return build_model(config.model, num_classes=data.num_classes, input_shape=data.input_shape)


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


@torch.no_grad()
def logit_scaled_confidence(
    model: Classifier,
    images: Tensor,
    labels: Tensor,
    *,
    batch_size: int = 1024,
    channels_last: bool = False,
) -> Tensor:
    """LiRA's per-example score ``z_y − logsumexp_{i≠y} z_i`` (= ``log p_y − log(1 − p_y)``).

    Computed from the logits rather than the probabilities so that it stays finite and exact for
    confidently classified examples (where ``1 − p_y`` underflows), which are the ones that leak.

    Args:
        model: the classifier; evaluated in eval mode, its mode restored afterwards.
        images: ``(N, C, H, W)`` normalised images.
        labels: ``(N,)`` int64 true classes.
        batch_size: images per forward pass.
        channels_last: feed batches in channels_last format.

    Returns:
        ``(N,)`` float64 scores on the CPU (members: high).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    parts = []
    for start in range(0, images.shape[0], batch_size):
        batch = to_device(images[start : start + batch_size], device, channels_last=channels_last)
        parts.append(model(batch).double().cpu())
    model.train(was_training)
    logits = torch.cat(parts) if parts else torch.empty(0, 1, dtype=torch.float64)
    true_logit = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, labels.view(-1, 1), float("-inf"))
    return true_logit - torch.logsumexp(others, dim=1)


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
        unlearn_config = build_unlearn_config(
            job.method,
            "sample",
            [
                {
                    "seed": job.seed,
                    "device": config.device,
                    "channels_last": config.channels_last,
                    "eval_batch_size": config.eval_batch_size,
                },
                job.unlearn_layer,
            ],
            dataset=config.dataset,
        )
        # Everything outside the half is held out: the shadow never saw it, so the stopping
        # rules may use it as unseen data, and retrain/retain-based methods see only the half.
        split = ForgetRetainSplit.from_ids(
            targets[seen], len(data.train), validation=torch.nonzero(~in_half).flatten()
        )
        method = get_method(job.method).for_scenario("sample", unlearn_config.options)
        model, record = run_method(
            method,
            model,
            data,
            split,
            unlearn_config,
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


def run_shadow_jobs(
    jobs: Sequence[ShadowJob], *, workers: int = 1, quiet: bool = True
) -> list[ShadowResult]:
    """Run shadow jobs serially (``workers=1``, in this process) or in a spawn-context process
    pool; results come back in job order either way.

    Each pool worker runs with one torch thread. A serial run gives the same numbers as a pool
    when this process also uses one thread (``torch.set_num_threads(1)``); with more threads the
    last bits of convolutions may differ.
    """
    if workers < 1:
        raise ULiraError(f"jobs must be >= 1, got {workers}")
    progress = tqdm(total=len(jobs), desc="U-LiRA shadows", disable=quiet, leave=False)
    results: list[ShadowResult] = []
    if workers == 1:
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
        jobs: processes; 1 runs in this process.
        cache_dir: cache of trained shadows shared between audits of several methods.
        quiet: no progress bar.

    Returns:
        One :class:`ShadowResult` per shadow, in shadow order.
    """
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
    results = run_shadow_jobs(planned, workers=jobs, quiet=quiet)
    logger.info(
        "U-LiRA %s: %d shadows x %d targets in %.1f s (%d from cache)",
        method,
        num_shadows,
        num_targets,
        time.perf_counter() - started,
        sum(result.from_cache for result in results),
    )
    return results


# -- the attack (pure math) ----------------------------------------------------------------------


@dataclass(frozen=True)
class ULiraScores:
    """Leave-one-shadow-out attack scores.

    Attributes:
        llr: ``(K, T)`` float64 log-likelihood ratio ``log N(s; μ_in, σ_in) − log N(s; μ_out,
            σ_out)`` of target example t under target model k (Gaussians fitted on the other
            shadows); NaN where one of the two Gaussians could not be fitted.
        seen: ``(K, T)`` bool ground truth: target model k unlearned example t (True) or never
            saw it (False).
    """

    llr: NDArray[np.float64]
    seen: NDArray[np.bool_]

    @property
    def valid(self) -> NDArray[np.bool_]:
        """``(K, T)`` pairs with a defined score."""
        return np.isfinite(self.llr)


def _stack(results: Sequence[ShadowResult]) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    if len(results) < MIN_SHADOWS:
        raise ULiraError(f"the attack needs at least {MIN_SHADOWS} shadows, got {len(results)}")
    targets = results[0].targets
    for result in results[1:]:
        if not np.array_equal(result.targets, targets):
            raise ULiraError(
                f"shadow {result.shadow} scored other targets than shadow {results[0].shadow}: "
                "results of one audit must share the targets"
            )
    scores = np.stack([result.scores for result in results]).astype(np.float64)
    seen = np.stack([result.seen for result in results]).astype(np.bool_)
    if not np.isfinite(scores).all():
        raise ULiraError("shadow scores must be finite")
    return scores, seen


def _gaussian_logpdf(
    x: NDArray[np.float64], mean: NDArray[np.float64], std: NDArray[np.float64]
) -> NDArray[np.float64]:
    result: NDArray[np.float64] = (
        -0.5 * ((x - mean) / std) ** 2 - np.log(std) - 0.5 * math.log(2 * math.pi)
    )
    return result


def _fit(
    scores: NDArray[np.float64],
    mask: NDArray[np.bool_],
    *,
    variance: Variance,
    min_std: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-example Gaussian of the ``mask``-ed scores.

    Args:
        scores: ``(S, T)`` scores of S fitting shadows.
        mask: ``(S, T)`` which entries belong to the group.
        variance: ``per_example`` (its own std where it has >= 2 scores, else the pooled one) or
            ``pooled`` (one within-example std for the group, LiRA's "fixed variance", which is
            the better estimate when there are few shadows).
        min_std: floor on every std: a near-constant score (e.g. an example every shadow
            classifies at the same saturated confidence) must not give an infinitely sharp
            Gaussian.

    Returns:
        ``(T,)`` means (NaN where the group is empty for that example) and ``(T,)`` stds.
    """
    count = mask.sum(axis=0)  # (T,)
    total = np.where(mask, scores, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    squared = np.where(mask, (scores - np.nan_to_num(mean)) ** 2, 0.0).sum(axis=0)  # (T,)
    dof = np.maximum(count - 1, 0)
    pooled = math.sqrt(squared.sum() / dof.sum()) if dof.sum() > 0 else 0.0
    if variance == "pooled":
        std = np.full(count.shape, pooled)
    else:
        own = np.sqrt(squared / np.maximum(dof, 1))
        std = np.where(count >= 2, own, pooled)
    return mean, np.maximum(std, min_std)


def ulira_scores(
    results: Sequence[ShadowResult],
    *,
    variance: Variance = "per_example",
    min_std: float = 0.1,
) -> ULiraScores:
    """Leave-one-shadow-out log-likelihood ratios of every (target model, example) pair.

    For target model k and example t, Gaussians are fitted to t's scores under the other K−1
    shadows where t was unlearned (in) and where it was never seen (out); the score is the
    log-likelihood ratio of t's score under model k. Larger means "unlearned".

    Args:
        results: one per shadow, all with the same targets.
        variance: ``per_example`` or ``pooled`` (see :func:`_fit`).
        min_std: floor on the fitted stds, in units of the logit-scaled confidence.

    Returns:
        ``(K, T)`` ratios and ground truth.
    """
    if variance not in ("per_example", "pooled"):
        raise ULiraError(f"variance must be 'per_example' or 'pooled', got {variance!r}")
    if not min_std > 0:
        raise ULiraError(f"min_std must be > 0, got {min_std}")
    scores, seen = _stack(results)
    num_shadows = scores.shape[0]
    llr = np.full(scores.shape, np.nan)
    for target_model in range(num_shadows):
        others = np.arange(num_shadows) != target_model
        mean_in, std_in = _fit(scores[others], seen[others], variance=variance, min_std=min_std)
        mean_out, std_out = _fit(scores[others], ~seen[others], variance=variance, min_std=min_std)
        observed = scores[target_model]
        llr[target_model] = _gaussian_logpdf(observed, mean_in, std_in) - _gaussian_logpdf(
            observed, mean_out, std_out
        )
    return ULiraScores(llr=llr, seen=seen)


def _roc_auc(labels: NDArray[np.bool_], scores: NDArray[np.float64]) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def ulira_attack(
    results: Sequence[ShadowResult],
    *,
    variance: Variance = "per_example",
    min_std: float = 0.1,
) -> dict[str, float]:
    """The U-LiRA attack's strength on a set of shadow results (pure math, deterministic).

    Every shadow in turn is the target model (:func:`ulira_scores`); the pairs of all target
    models are pooled; pairs whose other shadows hold only one of the two groups have no score
    and are left out. Memberships are fair coins, so unlearned and never-seen pairs are about
    balanced; accuracies are balanced accuracies regardless (the paper's balanced game).

    Args:
        results: one per shadow (>= 4), all with the same targets.
        variance: ``per_example`` or ``pooled`` Gaussian widths.
        min_std: floor on the fitted stds.

    Returns:
        - ``auc``: ROC AUC of the ratio, unlearned vs never seen (0.5 ideal, 1 total leak);
        - ``accuracy``: balanced accuracy of "unlearned iff likelihood ratio > 1" (0.5 ideal);
        - ``best_accuracy``: balanced accuracy at the best threshold (LiRA's reporting;
          optimistic, since the threshold is chosen on the evaluated pairs);
        - ``auc_mean`` / ``auc_std``: mean and standard deviation of the per-target-model AUCs;
        - ``tpr_at_{1pct,0p1pct}_fpr``: TPR at that FPR, present only when the never-seen pairs
          allow at least :data:`MIN_FALSE_POSITIVES` false positives at that rate;
        - ``unlearned_score_mean`` / ``never_seen_score_mean``: mean logit-scaled confidence of
          the two groups (how far unlearning moved the examples, on average);
        - ``num_unlearned`` / ``num_never_seen``: pairs evaluated;
        - ``num_shadows``, ``num_targets``.
    """
    from sklearn.metrics import roc_curve

    fitted = ulira_scores(results, variance=variance, min_std=min_std)
    scores, seen = _stack(results)
    valid = fitted.valid
    labels = fitted.seen[valid]
    llr = fitted.llr[valid]
    num_unlearned, num_never_seen = int(labels.sum()), int((~labels).sum())
    if num_unlearned == 0 or num_never_seen == 0:
        raise ULiraError(
            "the attack needs both unlearned and never-seen pairs; got "
            f"{num_unlearned} and {num_never_seen}"
        )
    tpr_threshold = float((llr[labels] > 0).mean())
    tnr_threshold = float((llr[~labels] <= 0).mean())
    fpr, tpr, _ = roc_curve(labels, llr)
    metrics: dict[str, float] = {
        "auc": _roc_auc(labels, llr),
        "accuracy": 0.5 * (tpr_threshold + tnr_threshold),
        "best_accuracy": float(np.max(0.5 * (tpr + 1.0 - fpr))),
    }
    per_model = [
        _roc_auc(fitted.seen[k][valid[k]], fitted.llr[k][valid[k]])
        for k in range(fitted.llr.shape[0])
        if 0 < fitted.seen[k][valid[k]].sum() < valid[k].sum()
    ]
    metrics["auc_mean"] = float(np.mean(per_model)) if per_model else float("nan")
    metrics["auc_std"] = float(np.std(per_model)) if per_model else float("nan")
    for suffix, rate in LOW_FPRS:
        if rate * num_never_seen >= MIN_FALSE_POSITIVES:
            metrics[f"tpr_at_{suffix}_fpr"] = float(tpr[fpr <= rate].max())
    metrics["unlearned_score_mean"] = float(scores[seen].mean())
    metrics["never_seen_score_mean"] = float(scores[~seen].mean())
    metrics["num_unlearned"] = float(num_unlearned)
    metrics["num_never_seen"] = float(num_never_seen)
    metrics["num_shadows"] = float(scores.shape[0])
    metrics["num_targets"] = float(scores.shape[1])
    return metrics


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
) -> dict[str, dict[str, float]]:
    """U-LiRA of several methods on the same shadows and targets: method -> attack metrics
    (:func:`ulira_attack`) plus ``seconds`` (wall-clock of that method's shadows, training
    included unless it came from ``cache_dir``)."""
    report: dict[str, dict[str, float]] = {}
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
        )
        report[method] = {**ulira_attack(results), "seconds": time.perf_counter() - started}
    return report


__all__ = [
    "LOW_FPRS",
    "MIN_SHADOWS",
    "ShadowJob",
    "ShadowResult",
    "ULiraError",
    "ULiraScores",
    "load_shadow_results",
    "logit_scaled_confidence",
    "plan_shadow_jobs",
    "run_shadow",
    "run_shadow_jobs",
    "run_ulira",
    "save_shadow_results",
    "ulira_attack",
    "ulira_audit",
    "ulira_scores",
]
