"""Each objective equals a straightforward loop implementation of its formula; masks, chunks, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from encoders import (
    ContrastiveObjective,
    PairSpec,
    align_uniform_loss,
    clip_loss,
    cwcl_loss,
    cwcl_weights,
    dcl_loss,
)

# --------------------------------------------------------------------------- reference implementations
# Written row by row from the papers' formulas, in float64, sharing no code with encoders.losses.


def naive_cwcl(a, b, log_scale, similarity, direction="both"):
    """Srinivasa et al. 2023: -1/N sum_i sum_j (w_ij / sum_k w_ik) log softmax; ``similarity`` w (not normalised)."""
    a, b, w = a.double(), b.double(), similarity.double()
    n = a.shape[0]
    s = math.exp(float(log_scale))
    logits = [[s * float(a[i] @ b[j]) for j in range(n)] for i in range(n)]
    a2b = b2a = 0.0
    for i in range(n):
        denominator = math.log(sum(math.exp(logits[i][k]) for k in range(n)))
        row_weight = sum(float(w[i, k]) for k in range(n))
        a2b -= sum(float(w[i, j]) / row_weight * (logits[i][j] - denominator) for j in range(n)) / n
    for j in range(n):
        denominator = math.log(sum(math.exp(logits[k][j]) for k in range(n)))
        row_weight = sum(float(w[j, k]) for k in range(n))
        b2a -= sum(float(w[j, i]) / row_weight * (logits[i][j] - denominator) for i in range(n)) / n
    return {"a2b": a2b, "b2a": b2a, "both": (a2b + b2a) / 2}[direction]


def naive_similarity(reference):
    n = reference.shape[0]
    r = reference.double()
    return torch.tensor(
        [
            [(1 + float(r[i] @ r[j]) / float(r[i].norm() * r[j].norm())) / 2 for j in range(n)]
            for i in range(n)
        ],
        dtype=torch.float64,
    )


def naive_dcl(a, b, log_scale, direction="both"):
    """Yeh et al. 2022: -s a_i.b_i + log sum_{j != i} exp(s a_i.b_j), each direction."""
    a, b = a.double(), b.double()
    n = a.shape[0]
    s = math.exp(float(log_scale))
    a2b = (
        sum(
            -s * float(a[i] @ b[i])
            + math.log(sum(math.exp(s * float(a[i] @ b[j])) for j in range(n) if j != i))
            for i in range(n)
        )
        / n
    )
    b2a = (
        sum(
            -s * float(b[i] @ a[i])
            + math.log(sum(math.exp(s * float(b[i] @ a[j])) for j in range(n) if j != i))
            for i in range(n)
        )
        / n
    )
    return {"a2b": a2b, "b2a": b2a, "both": (a2b + b2a) / 2}[direction]


def naive_align_uniform(a, b, t=2.0):
    """Wang & Isola 2020: E||a_i - b_i||^2 + (log E_{i!=j} exp(-t||x_i - x_j||^2) for x = a, b) / 2."""
    a, b = a.double(), b.double()
    n = a.shape[0]
    align = sum(float((a[i] - b[i]).norm() ** 2) for i in range(n)) / n

    def uniform(x):
        pairs = [
            math.exp(-t * float((x[i] - x[j]).norm() ** 2)) for i in range(n) for j in range(n) if i != j
        ]
        return math.log(sum(pairs) / len(pairs))

    return align + (uniform(a) + uniform(b)) / 2


def unit(n, d, seed):
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=generator, dtype=torch.float64), dim=-1)


LOG_SCALE = torch.tensor(math.log(10.0), dtype=torch.float64)


# --------------------------------------------------------------------------- formulas


@pytest.mark.parametrize("direction", ["both", "a2b", "b2a"])
def test_clip_loss_equals_cross_entropy_with_the_diagonal(direction):
    a, b = unit(6, 4, 1), unit(6, 4, 2)
    expected = naive_cwcl(a, b, LOG_SCALE, torch.eye(6), direction)
    assert float(clip_loss(a, b, LOG_SCALE, direction=direction)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("direction", ["both", "a2b", "b2a"])
def test_cwcl_loss_equals_its_formula(direction):
    a, b, reference = unit(7, 4, 1), unit(7, 4, 2), torch.randn(7, 5, dtype=torch.float64)
    expected = naive_cwcl(a, b, LOG_SCALE, naive_similarity(reference), direction)
    assert float(cwcl_loss(a, b, LOG_SCALE, reference, direction=direction)) == pytest.approx(
        expected, rel=1e-6
    )


def test_cwcl_weights_are_shifted_cosines_normalised_per_row():
    reference = torch.randn(5, 3, dtype=torch.float64)
    similarity = naive_similarity(reference)
    torch.testing.assert_close(
        cwcl_weights(reference).double(), similarity / similarity.sum(1, keepdim=True), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("direction", ["both", "a2b", "b2a"])
def test_dcl_loss_removes_the_positive_from_the_denominator(direction):
    a, b = unit(6, 4, 3), unit(6, 4, 4)
    expected = naive_dcl(a, b, LOG_SCALE, direction)
    assert float(dcl_loss(a, b, LOG_SCALE, direction=direction)) == pytest.approx(expected, rel=1e-6)


def test_align_uniform_loss_equals_wang_and_isola_terms():
    a, b = unit(6, 4, 5), unit(6, 4, 6)
    assert float(align_uniform_loss(a, b)) == pytest.approx(naive_align_uniform(a, b), rel=1e-6)
    assert float(align_uniform_loss(a, b, chunk_size=4)) == pytest.approx(naive_align_uniform(a, b), rel=1e-6)


def test_cwcl_with_onehot_similarity_equals_clip():
    a, b = unit(8, 4, 7), unit(8, 4, 8)
    onehot = torch.eye(8, dtype=torch.float64)
    torch.testing.assert_close(cwcl_loss(a, b, LOG_SCALE, weights=onehot), clip_loss(a, b, LOG_SCALE))
    # A reference whose samples are mutually orthogonal is not one-hot: (1 + 0) / 2 off the diagonal.
    assert float(cwcl_loss(a, b, LOG_SCALE, torch.eye(8))) != pytest.approx(float(clip_loss(a, b, LOG_SCALE)))


def test_cwcl_penalises_a_near_duplicate_negative_less_than_clip():
    # Sample 1 is a near-duplicate of sample 0 (same finding): close reports and close embeddings.
    # Wide random vectors are nearly orthogonal, so the other samples barely interact with 0 and 1.
    a, b, reference = unit(4, 256, 9), unit(4, 256, 10), torch.randn(4, 256, dtype=torch.float64)
    a[0] = b[0]
    b[1] = F.normalize(b[0] + 0.1 * b[1], dim=0)
    reference[1] = reference[0] + 0.1 * reference[1]
    b = b.clone().requires_grad_(True)

    def push_away(loss):
        (grad,) = torch.autograd.grad(loss, b)
        # Gradient descent moves b_1 along -grad: the component of grad along a_0 is how hard the
        # loss pushes the duplicate away from sample 0's anchor.
        return float(grad[1] @ a[0])

    clip_push = push_away(clip_loss(a, b, LOG_SCALE, direction="a2b"))
    cwcl_push = push_away(cwcl_loss(a, b, LOG_SCALE, reference, direction="a2b"))
    assert clip_push > 0.5
    assert cwcl_push < 0.6 * clip_push


# --------------------------------------------------------------------------- gradients and chunks


@pytest.mark.parametrize("kind", ["clip", "cwcl", "dcl", "align_uniform"])
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_losses_pass_float64_gradcheck(kind, chunk_size):
    a = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    log_scale = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    reference = torch.randn(5, 4, dtype=torch.float64)
    losses = {
        "clip": lambda a, b, s: clip_loss(a, b, s, chunk_size=chunk_size),
        "cwcl": lambda a, b, s: cwcl_loss(a, b, s, reference, chunk_size=chunk_size),
        "dcl": lambda a, b, s: dcl_loss(a, b, s, chunk_size=chunk_size),
        "align_uniform": lambda a, b, s: align_uniform_loss(a, b, chunk_size=chunk_size) * s,
    }
    assert torch.autograd.gradcheck(losses[kind], (a, b, log_scale))


@pytest.mark.parametrize("kind", ["clip", "cwcl", "dcl"])
@pytest.mark.parametrize("direction", ["both", "a2b", "b2a"])
def test_chunked_loss_and_gradients_equal_unchunked(kind, direction):
    a = unit(23, 8, 11).requires_grad_(True)
    b = unit(23, 8, 12).requires_grad_(True)
    reference = torch.randn(23, 6, dtype=torch.float64)
    objective = {"clip": clip_loss, "dcl": dcl_loss, "cwcl": lambda *x, **k: cwcl_loss(*x, reference, **k)}[
        kind
    ]
    full = objective(a, b, LOG_SCALE, direction=direction)
    full_grads = torch.autograd.grad(full, (a, b))
    chunked = objective(a, b, LOG_SCALE, direction=direction, chunk_size=5)
    chunked_grads = torch.autograd.grad(chunked, (a, b))
    torch.testing.assert_close(chunked, full)
    for got, want in zip(chunked_grads, full_grads, strict=True):
        torch.testing.assert_close(got, want)


# --------------------------------------------------------------------------- objective with masks


def test_objective_uses_only_rows_where_both_views_are_present():
    a, b, reference = unit(8, 4, 13), unit(8, 4, 14), torch.randn(8, 5, dtype=torch.float64)
    present_a = torch.tensor([1, 1, 0, 1, 1, 1, 0, 1], dtype=torch.bool)
    present_b = torch.tensor([1, 0, 1, 1, 1, 1, 1, 1], dtype=torch.bool)
    objective = ContrastiveObjective([PairSpec("xray", "report", weights_from="report")], kind="cwcl")
    total, parts = objective(
        {"xray": a, "report": b}, {"xray": present_a, "report": present_b}, LOG_SCALE, {"report": reference}
    )
    keep = present_a & present_b
    expected = naive_cwcl(a[keep], b[keep], LOG_SCALE, naive_similarity(reference[keep]))
    assert float(total) == pytest.approx(expected, rel=1e-6)
    assert float(parts["xray-report"]) == pytest.approx(expected, rel=1e-6)


def test_missing_rows_change_nothing_and_get_no_gradient():
    present = {
        "ecg": torch.tensor([1, 1, 1, 0, 1], dtype=torch.bool),
        "report": torch.ones(5, dtype=torch.bool),
    }
    objective = ContrastiveObjective(
        [PairSpec("ecg", "report", weights_from="report")], align_uniform_weight=0.5
    )
    ecg, report, reference = unit(5, 4, 15), unit(5, 4, 16), torch.randn(5, 3, dtype=torch.float64)
    ecg.requires_grad_(True)
    first, _ = objective({"ecg": ecg, "report": report}, present, LOG_SCALE, {"report": reference})
    (grad,) = torch.autograd.grad(first, ecg)
    assert torch.all(grad[3] == 0)
    padded = ecg.detach().clone()
    padded[3] = float("nan")  # whatever a missing row holds, it must not leak into the loss
    second, _ = objective({"ecg": padded, "report": report}, present, LOG_SCALE, {"report": reference})
    assert float(second) == pytest.approx(float(first), rel=1e-12)


def test_pair_with_fewer_than_two_valid_rows_contributes_zero_without_nan():
    a = unit(4, 4, 17).requires_grad_(True)
    b = unit(4, 4, 18)
    log_scale = LOG_SCALE.clone().requires_grad_(True)
    objective = ContrastiveObjective([PairSpec("a", "b")], kind="clip")
    for mask in ([0, 0, 0, 0], [0, 1, 0, 0]):
        total, parts = objective({"a": a, "b": b}, {"a": torch.tensor(mask, dtype=torch.bool)}, log_scale)
        total.backward()
        assert float(total.detach()) == 0.0 and float(parts["a-b"]) == 0.0
        assert torch.isfinite(a.grad).all() and torch.isfinite(log_scale.grad).all()


def test_objective_sums_weighted_pairs_and_cwcl_without_weights_view_is_clip():
    x, e, r = unit(6, 4, 19), unit(6, 4, 20), unit(6, 4, 21)
    reference = torch.randn(6, 5, dtype=torch.float64)
    pairs = [PairSpec("x", "r", weights_from="r"), PairSpec("x", "e", weight=0.5)]
    total, parts = ContrastiveObjective(pairs)({"x": x, "e": e, "r": r}, {}, LOG_SCALE, {"r": reference})
    expected_xr = naive_cwcl(x, r, LOG_SCALE, naive_similarity(reference))
    expected_xe = naive_cwcl(x, e, LOG_SCALE, torch.eye(6))
    assert float(parts["x-r"]) == pytest.approx(expected_xr, rel=1e-6)
    assert float(parts["x-e"]) == pytest.approx(expected_xe, rel=1e-6)
    assert float(total) == pytest.approx(expected_xr + 0.5 * expected_xe, rel=1e-6)


def test_cwcl_objective_without_reference_features_says_which_view_is_missing():
    objective = ContrastiveObjective([PairSpec("x", "r", weights_from="r")])
    with pytest.raises(KeyError, match="'r'"):
        objective({"x": unit(3, 4, 1), "r": unit(3, 4, 2)}, {}, LOG_SCALE)


def test_cwcl_weight_power_sharpens_the_targets_and_matches_the_formula() -> None:
    from encoders import cwcl_loss, cwcl_weights

    torch.manual_seed(3)
    a = torch.nn.functional.normalize(torch.randn(6, 8, dtype=torch.float64), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(6, 8, dtype=torch.float64), dim=-1)
    ref = torch.randn(6, 5, dtype=torch.float64)
    log_scale = torch.tensor(2.0, dtype=torch.float64)
    rn = torch.nn.functional.normalize(ref, dim=-1)
    raw = ((1 + rn @ rn.T) / 2) ** 3
    targets = raw / raw.sum(1, keepdim=True)
    torch.testing.assert_close(cwcl_weights(ref, power=3.0), targets)
    log_probs = torch.log_softmax(log_scale.exp() * a @ b.T, dim=1)
    expected = -(targets * log_probs).sum(1).mean()
    torch.testing.assert_close(cwcl_loss(a, b, log_scale, ref, direction="a2b", weight_power=3.0), expected)
    torch.testing.assert_close(
        cwcl_loss(a, b, log_scale, ref, direction="a2b", weight_power=3.0, chunk_size=2), expected
    )
    entropy = [-(w * w.log()).sum(1).mean() for w in (cwcl_weights(ref, power=p) for p in (1, 4, 32))]
    assert entropy[0] > entropy[1] > entropy[2]
