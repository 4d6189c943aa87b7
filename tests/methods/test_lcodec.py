"""L-CODEC: CODEC and FOCI against loop references and known values, the Newton removal step
against exact retraining of a quadratic problem, the exact restricted Hessian against autograd,
bit-identity of unselected weights, the size budget's error, and a run on digits."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from conun.config import ConfigError
from conun.evaluation.results import RunRecord
from conun.methods import METHODS, get_method
from conun.methods.base import UnsupportedScenarioError
from conun.methods.lcodec import (
    LCodec,
    LCodecOptions,
    SelectionTooLargeError,
    codec,
    foci,
    gather_selected,
    gaussian_mechanism_std,
    hessian_vector_product,
    newton_removal_step,
    newton_update,
    removed_gradient_sum,
    scatter_selected,
    selected_blocks,
    selected_hessian,
    solve_damped_minres,
    unit_layers,
    write_selected_,
)
from conun.workflows.requests import ForgetSpec
from conun.workflows.training import TrainedModel

FAST = {"perturbations": 200, "hessian_samples": 16}
"""Cheap settings for tests: fewer perturbations, a 16-sample Hessian."""


def loop_codec(y: list[float], z: list[list[float]], x: list[list[float]] | None) -> float:
    """Azadkia & Chatterjee's T_n written out with Python loops (the reference)."""
    n = len(y)
    ranks = [sum(1 for b in y if b <= a) for a in y]
    lower = [sum(1 for b in y if b >= a) for a in y]

    def nearest(points: list[list[float]]) -> list[int]:
        result = []
        for i in range(n):
            distances = [
                math.inf
                if j == i
                else sum((p - q) ** 2 for p, q in zip(points[i], points[j], strict=True))
                for j in range(n)
            ]
            result.append(distances.index(min(distances)))
        return result

    if x is None:
        m = nearest(z)
        numerator = sum(n * min(ranks[i], ranks[m[i]]) - lower[i] ** 2 for i in range(n))
        return numerator / sum(lower[i] * (n - lower[i]) for i in range(n))
    given = nearest(x)
    joint = nearest([a + b for a, b in zip(x, z, strict=True)])
    numerator = sum(
        min(ranks[i], ranks[joint[i]]) - min(ranks[i], ranks[given[i]]) for i in range(n)
    )
    return numerator / sum(ranks[i] - min(ranks[i], ranks[given[i]]) for i in range(n))


def test_codec_matches_a_loop_reference_with_ties() -> None:
    generator = torch.Generator().manual_seed(0)
    y = torch.randint(0, 5, (40,), generator=generator).double()  # ties in Y
    z = torch.randn(40, 2, generator=generator, dtype=torch.float64)
    x = torch.randn(40, 1, generator=generator, dtype=torch.float64)
    assert float(codec(y, z)) == pytest.approx(loop_codec(y.tolist(), z.tolist(), None))
    assert float(codec(y, z, x)) == pytest.approx(loop_codec(y.tolist(), z.tolist(), x.tolist()))


def test_codec_known_values() -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(2000, generator=generator)
    noise = torch.rand(2000, generator=generator)
    # Y a function of Z: -> 1 (1 - O(1/n)); Y independent of Z: -> 0.
    assert float(codec(x, x)) > 0.99
    assert abs(float(codec(x, noise))) < 0.05
    # Y = sin(6 X1) + W (W independent): given X1, X2 adds nothing (-> 0); given X2, X1 still
    # explains much of Y. (Without W, Y would be a function of X1 and the conditional
    # coefficient undefined: its denominator vanishes.)
    other = torch.rand(2000, generator=generator)
    y = torch.sin(6 * x) + 0.3 * other
    assert abs(float(codec(y, noise, x))) < 0.05
    assert float(codec(y, x, noise)) > 0.5
    # Y = sin(6 X1) exactly: X1 determines Y given X2 (-> 1).
    assert float(codec(torch.sin(6 * x), x, noise)) > 0.9
    with pytest.raises(ValueError, match="constant"):
        codec(torch.ones(10), x[:10])


def test_foci_finds_the_markov_blanket_and_reports_codec_values() -> None:
    generator = torch.Generator().manual_seed(2)
    features = torch.rand(400, 8, generator=generator)
    response = features[:, 3] + features[:, 6]
    result = foci(features, response)
    assert sorted(result.ordering[:2]) == [3, 6]
    assert len(result.ordering) <= 3  # early stop once nothing adds dependence
    # Each value is CODEC's: unconditional first, then conditional on the earlier picks.
    first = result.ordering[0]
    assert result.values[0] == pytest.approx(float(codec(response, features[:, first])))
    assert result.values[1] == pytest.approx(
        float(codec(response, features[:, result.ordering[1]], features[:, [first]]))
    )


def test_newton_step_equals_retraining_a_least_squares_model() -> None:
    generator = torch.Generator().manual_seed(3)
    n, m, d = 50, 5, 4
    inputs = torch.randn(n, d, generator=generator, dtype=torch.float64)
    targets = torch.randn(n, generator=generator, dtype=torch.float64)
    # loss_i = (x_i . w - y_i)^2 / 2; the full-data optimum has a vanishing total gradient.
    trained = torch.linalg.lstsq(inputs, targets.unsqueeze(1)).solution.squeeze(1)
    removed, kept = slice(0, m), slice(m, n)
    residual = inputs[removed] @ trained - targets[removed]
    gradient_sum = inputs[removed].T @ residual
    hessian = inputs[kept].T @ inputs[kept] / (n - m)  # mean Hessian of the remaining samples
    updated = newton_removal_step(trained, gradient_sum, hessian, remaining=n - m, damping=0.0)
    retrained = torch.linalg.lstsq(inputs[kept], targets[kept].unsqueeze(1)).solution.squeeze(1)
    torch.testing.assert_close(updated, retrained)
    # With damping: (H + lambda I)^-1 in place of H^-1.
    damped = newton_removal_step(trained, gradient_sum, hessian, remaining=n - m, damping=0.5)
    expected = trained + torch.linalg.solve(hessian + 0.5 * torch.eye(d), gradient_sum) / (n - m)
    torch.testing.assert_close(damped, expected)


def small_network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 5), nn.Tanh(), nn.Linear(5, 3)
    ).eval()


def test_restricted_hessian_and_gradient_match_autograd() -> None:
    model = small_network()
    images, labels = torch.randn(10, 1, 4, 4), torch.randint(0, 3, (10,))
    layers = unit_layers(model)
    assert [layer.units for layer in layers] == [3, 5, 3]
    blocks = selected_blocks(model, layers, [9, 1, 4])  # head unit 1, conv filter 1, linear unit 1
    parameters = {name: p.detach() for name, p in model.named_parameters()}
    theta = gather_selected(parameters, blocks)
    assert theta.numel() == (9 + 1) + (12 + 1) + (5 + 1)

    def loss(selected: torch.Tensor) -> torch.Tensor:
        merged = scatter_selected(parameters, blocks, selected)
        logits = torch.func.functional_call(model, merged, (images,))
        return F.cross_entropy(logits, labels, reduction="sum")

    reference = torch.autograd.functional.hessian(loss, theta)
    batches = iter([(images[:4], labels[:4]), (images[4:], labels[4:])])
    hessian = selected_hessian(model, blocks, batches, tangent_chunk=7)
    torch.testing.assert_close(hessian, reference, atol=1e-5, rtol=1e-4)
    gradient = torch.autograd.functional.jacobian(loss, theta)
    torch.testing.assert_close(removed_gradient_sum(model, blocks, images, labels), gradient)


def test_matrix_free_minres_step_equals_the_formed_hessians_step() -> None:
    """The default solver (MINRES on Hessian-vector products) against the formed Hessian, on a
    selection across three layers of a network with a tanh: an indefinite system."""
    model = small_network()
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(40, 1, 4, 4, generator=generator)
    labels = torch.randint(0, 3, (40,), generator=generator)
    blocks = selected_blocks(model, unit_layers(model), [9, 1, 4])
    batches = [(images[:16], labels[:16]), (images[16:], labels[16:])]
    hessian = selected_hessian(model, blocks, iter(batches), tangent_chunk=7) / 40
    assert float(torch.linalg.eigvalsh(hessian.double()).min()) < -0.01  # indefinite
    product = hessian_vector_product(model, blocks, batches)
    vector = torch.randn(hessian.shape[0], generator=generator)
    torch.testing.assert_close(product(vector) / 40, hessian @ vector, atol=1e-5, rtol=1e-4)

    theta = gather_selected({name: p.detach() for name, p in model.named_parameters()}, blocks)
    gradient_sum = removed_gradient_sum(model, blocks, images[:3], labels[:3])
    formed = newton_removal_step(theta, gradient_sum, hessian, remaining=37, damping=0.01)
    solved = solve_damped_minres(
        lambda v: product(v) / 40, gradient_sum, damping=0.01, rtol=1e-8, max_iterations=500
    )
    assert solved.converged and solved.iterations <= 3 * theta.numel()
    step = (formed - theta).double()
    error = (solved.solution / 37 - step).norm() / step.norm()
    assert float(error) < 1e-4
    # An iteration budget too small to converge is reported, not hidden.
    short = solve_damped_minres(
        lambda v: product(v) / 40, gradient_sum, damping=0.01, rtol=1e-8, max_iterations=2
    )
    assert not short.converged and short.iterations <= 3


def test_both_solvers_give_the_same_removal_step() -> None:
    """newton_update with solver matrix and solver minres: the same updated parameters."""
    model = small_network()
    generator = torch.Generator().manual_seed(2)
    images = torch.randn(30, 1, 4, 4, generator=generator)
    labels = torch.randint(0, 3, (30,), generator=generator)
    blocks = selected_blocks(model, unit_layers(model), [0, 9])  # conv filter 0, head unit 1
    theta = gather_selected({name: p.detach() for name, p in model.named_parameters()}, blocks)
    gradient_sum = removed_gradient_sum(model, blocks, images[:4], labels[:4])
    batches = [(images[4:20], labels[4:20]), (images[20:], labels[20:])]
    steps = {}
    for solver in ("matrix", "minres"):
        options = LCodecOptions(solver=solver, solver_rtol=1e-8, tangent_chunk=5)
        updated, record = newton_update(
            model, blocks, theta, gradient_sum, batches, remaining=26, options=options
        )
        steps[solver] = (updated - theta).double()
        assert ("solver_iterations" in record) == (solver == "minres")
    error = (steps["minres"] - steps["matrix"]).norm() / steps["matrix"].norm()
    assert float(steps["matrix"].norm()) > 0 and float(error) < 1e-4


def test_writing_selected_rows_leaves_every_other_weight_bit_identical() -> None:
    model = small_network()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    blocks = selected_blocks(model, unit_layers(model), [4, 9])  # linear unit 1, head unit 1
    theta = gather_selected(dict(model.named_parameters()), blocks)
    write_selected_(model, blocks, theta + 1.0)
    after = dict(model.named_parameters())
    for name, weight in before.items():
        changed = torch.zeros(weight.shape[0], dtype=torch.bool)
        for block in blocks:
            if block.name == name:
                changed[block.rows] = True
        assert torch.equal(after[name][~changed], weight[~changed]), name
        assert torch.equal(after[name][changed], weight[changed] + 1.0), name
    assert torch.equal(gather_selected(dict(model.named_parameters()), blocks), theta + 1.0)


def test_gaussian_mechanism_matches_their_noisy_return() -> None:
    # NoisyReturn(nsamps=50000, m=1, lamb=0.01, epsilon=0.1, delta=0.01, M=0.25, L=1).
    gamma = 2 * 0.25 * 1.0 * 1 / (50000**2 * 0.01**3)
    expected = gamma / 0.1 * math.sqrt(2 * math.log(1.25 / 0.01))
    actual = gaussian_mechanism_std(
        removed=1,
        samples=50000,
        l2_reg=0.01,
        epsilon=0.1,
        delta=0.01,
        hessian_lipschitz=0.25,
        gradient_lipschitz=1.0,
    )
    assert actual == pytest.approx(expected) and actual == pytest.approx(6.21e-3, rel=1e-2)


def test_the_package_registers_the_method_once() -> None:
    assert get_method("lcodec") is LCodec and LCodec.__module__ == "conun.methods.lcodec.method"
    assert [name for name, method in METHODS.items() if method is LCodec] == ["lcodec"]


def test_options_and_scenarios_are_checked() -> None:
    method = get_method("lcodec")
    with pytest.raises(UnsupportedScenarioError, match="sample"):
        method.for_scenario("class", {})
    with pytest.raises(ConfigError, match="l2_reg"):
        method.for_scenario("sample", {"noise": True, "l2_reg": 0.0})
    with pytest.raises(ConfigError, match="max_selected_params"):
        method.for_scenario("sample", {"max_selected_params": 0})


def test_too_large_a_selection_is_an_error_naming_the_option(
    digits_run: tuple[Path, TrainedModel], run_on_digits: Callable[..., RunRecord]
) -> None:
    _, trained = digits_run
    with pytest.raises(SelectionTooLargeError, match=r"above max_selected_params = 5 .*raise"):
        run_on_digits(
            trained,
            ForgetSpec(fraction=0.05),
            "lcodec",
            options={**FAST, "solver": "matrix", "max_selected_params": 5},
        )


def test_sample_unlearning_on_digits_removes_every_sample_and_keeps_utility(
    digits_run: tuple[Path, TrainedModel], run_on_digits: Callable[..., RunRecord]
) -> None:
    _, trained = digits_run
    original = run_on_digits(trained, ForgetSpec(fraction=0.05), "original").metrics
    record = run_on_digits(trained, ForgetSpec(fraction=0.05), "lcodec", options=FAST)
    split = ForgetSpec(fraction=0.05).resolve(
        trained.data, torch.tensor(trained.meta.validation), 0
    )
    removals = record.extra["removals"]
    # Every forget sample is removed, in batches of 64 (no skipping).
    assert sum(r["removed"] for r in removals) == split.forget.numel()
    assert len(removals) == -(-split.forget.numel() // 64)
    assert all(0 < r["selected_params"] <= 8192 and r["step_norm"] > 0 for r in removals)
    # The default matrix-free solve converged, in far fewer products than forming H would take.
    assert all(r["solver_converged"] == 1.0 for r in removals)
    assert sum(r["solver_iterations"] for r in removals) < sum(
        r["selected_params"] for r in removals
    )
    # A Newton step on a few units: utility stays where it was.
    assert record.metrics["test_acc"] >= original["test_acc"] - 0.03
    assert record.metrics["retain_train_acc"] >= original["retain_train_acc"] - 0.03
    assert 0 < record.seconds < 30


class AttentionNetwork(nn.Module):
    """A one-head self-attention layer over 4 tokens (F.scaled_dot_product_attention, as timm's
    ViTs call it), then a linear head: (B, 1, 4, 4) -> (B, 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(4, 12)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x.flatten(1, 2)).chunk(3, dim=-1)  # (B, 4 tokens, 4) each
        attended = F.scaled_dot_product_attention(q, k, v)
        return self.head(attended.mean(dim=1))  # type: ignore[no-any-return]


def test_hessians_go_through_fused_attention() -> None:
    """Forward-mode AD has no formula for the fused attention kernels (a ViT's lcodec run failed
    on them): both Hessian routes match autograd's reverse-over-reverse Hessian."""
    torch.manual_seed(0)
    model = AttentionNetwork().eval()
    images, labels = torch.randn(6, 1, 4, 4), torch.randint(0, 3, (6,))
    blocks = selected_blocks(model, unit_layers(model), [0, 2])
    parameters = {name: p.detach() for name, p in model.named_parameters()}
    theta = gather_selected(parameters, blocks)

    def loss(selected: torch.Tensor) -> torch.Tensor:
        merged = scatter_selected(parameters, blocks, selected)
        logits = torch.func.functional_call(model, merged, (images,))
        return F.cross_entropy(logits, labels, reduction="sum")

    # The reference's double backward has no formula for them either: it runs the math kernel.
    with sdpa_kernel(SDPBackend.MATH):
        reference = torch.autograd.functional.hessian(loss, theta)
    hessian = selected_hessian(model, blocks, iter([(images, labels)]), tangent_chunk=5)
    torch.testing.assert_close(hessian, reference, atol=1e-5, rtol=1e-4)
    vector = torch.randn(theta.numel())
    product = hessian_vector_product(model, blocks, [(images, labels)])
    torch.testing.assert_close(product(vector), reference @ vector, atol=1e-5, rtol=1e-4)
