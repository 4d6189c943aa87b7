"""U-LiRA's shadow jobs as Ray tasks (a local Ray with 2 CPUs for the module): the serial
numbers, and the same shadow cache as the local executor. Skipped without Ray (``conun[ray]``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from conun.config import TrainConfig
from conun.workflows.ulira_shadows import plan_shadow_jobs, run_shadow, run_shadow_jobs

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(
        num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False
    )
    yield
    ray.shutdown()


def test_ray_shadows_give_the_serial_numbers_and_share_the_cache(
    local_ray: None, make_digits_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    config = make_digits_config(epochs=2, max_train_samples=120)
    cache = tmp_path / "cache"
    jobs = plan_shadow_jobs(
        config, "finetune", num_shadows=4, num_targets=8, seed=5, cache_dir=cache
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tasks' setting, so that reductions run in the same order
    try:
        serial = [
            run_shadow(job)
            for job in plan_shadow_jobs(config, "finetune", num_shadows=4, num_targets=8, seed=5)
        ]
        on_ray = run_shadow_jobs(jobs, workers=2, executor="ray")
        # the shadows the Ray tasks trained, read back by a local run from the same cache
        cached = run_shadow_jobs(jobs, workers=1)
    finally:
        torch.set_num_threads(threads)
    assert [result.shadow for result in on_ray] == [0, 1, 2, 3]
    assert not any(result.from_cache for result in on_ray)
    assert all(result.from_cache for result in cached)
    assert len(list(cache.glob("shadow-*.safetensors"))) == 4
    for one, other, again in zip(serial, on_ray, cached, strict=True):
        assert np.array_equal(one.seen, other.seen)
        assert np.array_equal(one.scores, other.scores)  # identical, not close
        assert np.array_equal(one.scores, again.scores)
