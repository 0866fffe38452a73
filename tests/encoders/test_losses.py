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


# --------------------------------------------------------------------------- fast paths equal autograd
# The losses write their gradients by hand (one logits matmul forward, two backward, blocks recomputed
# when chunked) and factor CWCL's paper weights through R x D matrices. Each path must equal the
# plain full-matrix formula differentiated by torch.autograd: values and gradients in a, b, logit_scale.


def autograd_reference(a, b, log_scale, kind, direction, reference=None, power=1.0, weights=None):
    """Full N x N logits, log_softmax over rows (a->b) and columns (b->a), targets normalised the same way."""
    logits = log_scale.exp() * a @ b.T
    n = a.shape[0]
    diagonal = torch.eye(n, dtype=torch.bool)
    if kind == "dcl":
        denominators = logits.masked_fill(diagonal, float("-inf"))
        a2b = (torch.logsumexp(denominators, 1) - logits.diagonal()).mean()
        b2a = (torch.logsumexp(denominators, 0) - logits.diagonal()).mean()
    else:
        if weights is not None:
            w = weights
        elif reference is not None:
            r = F.normalize(reference, dim=-1)
            w = ((1 + r @ r.T) / 2) ** power
        else:
            w = diagonal.to(a.dtype)
        a2b = -(w / w.sum(1, keepdim=True) * F.log_softmax(logits, 1)).sum(1).mean()
        b2a = -(w / w.sum(0, keepdim=True) * F.log_softmax(logits, 0)).sum(0).mean()
    return {"a2b": a2b, "b2a": b2a, "both": (a2b + b2a) / 2}[direction]


FAST_PATHS = ["clip", "cwcl_power1", "cwcl_power8", "cwcl_weights", "dcl"]


@pytest.fixture(params=["factored", "weight_matrix"])
def paper_weights_path(request, monkeypatch):
    """Run a test through both ways of computing CWCL's paper-weight targets (the size decides in use)."""
    import encoders.losses

    monkeypatch.setattr(encoders.losses, "_affine_is_cheaper", lambda *_: request.param == "factored")
    return request.param


def _fast_and_reference(kind, n=23, seed=30):
    generator = torch.Generator().manual_seed(seed)
    reference = torch.randn(n, 6, generator=generator, dtype=torch.float64)
    weights = torch.rand(n, n, generator=generator, dtype=torch.float64)  # not symmetric
    fast = {
        "clip": lambda a, b, s, **k: clip_loss(a, b, s, **k),
        "dcl": lambda a, b, s, **k: dcl_loss(a, b, s, **k),
        "cwcl_power1": lambda a, b, s, **k: cwcl_loss(a, b, s, reference, **k),
        "cwcl_power8": lambda a, b, s, **k: cwcl_loss(a, b, s, reference, weight_power=8.0, **k),
        "cwcl_weights": lambda a, b, s, **k: cwcl_loss(a, b, s, weights=weights, **k),
    }[kind]
    options = {
        "clip": {},
        "dcl": {},
        "cwcl_power1": {"reference": reference},
        "cwcl_power8": {"reference": reference, "power": 8.0},
        "cwcl_weights": {"weights": weights},
    }[kind]
    slow = lambda a, b, s, direction: autograd_reference(  # noqa: E731
        a, b, s, "dcl" if kind == "dcl" else "cwcl", direction, **options
    )
    return fast, slow


@pytest.mark.parametrize("kind", FAST_PATHS)
@pytest.mark.parametrize("direction", ["both", "a2b", "b2a"])
@pytest.mark.parametrize("chunk_size", [None, 5, 23])
def test_fast_loss_and_gradients_equal_autograd_of_the_full_formula(
    kind, direction, chunk_size, paper_weights_path
):
    a = unit(23, 8, 31).requires_grad_(True)
    b = unit(23, 8, 32).requires_grad_(True)
    log_scale = torch.tensor(math.log(14.0), dtype=torch.float64, requires_grad=True)
    fast, slow = _fast_and_reference(kind)
    got = fast(a, b, log_scale, direction=direction, chunk_size=chunk_size)
    want = slow(a, b, log_scale, direction)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    for got_grad, want_grad in zip(
        torch.autograd.grad(got, (a, b, log_scale)), torch.autograd.grad(want, (a, b, log_scale)), strict=True
    ):
        torch.testing.assert_close(got_grad, want_grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", FAST_PATHS)
def test_fast_paths_in_float32_match_the_float64_formula(kind, paper_weights_path):
    a64, b64 = unit(40, 16, 33), unit(40, 16, 34)
    log_scale64 = torch.tensor(math.log(50.0), dtype=torch.float64, requires_grad=True)
    fast, slow = _fast_and_reference(kind, n=40)
    a, b = a64.float().requires_grad_(True), b64.float().requires_grad_(True)
    log_scale = log_scale64.detach().float().requires_grad_(True)
    for chunk_size in (None, 16):
        got = fast(a, b, log_scale, chunk_size=chunk_size)
        want = slow(a64.requires_grad_(True), b64.requires_grad_(True), log_scale64, "both")
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
        for got_grad, want_grad in zip(
            torch.autograd.grad(got, (a, b, log_scale)),
            torch.autograd.grad(want, (a64, b64, log_scale64)),
            strict=True,
        ):
            torch.testing.assert_close(got_grad.double(), want_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["clip", "cwcl", "dcl"])
@pytest.mark.parametrize("power", [1.0, 8.0])
@pytest.mark.parametrize("chunk_size", [None, 3])
def test_masked_objective_equals_autograd_on_the_present_rows(kind, power, chunk_size, paper_weights_path):
    a = unit(11, 5, 35).requires_grad_(True)
    b = unit(11, 5, 36).requires_grad_(True)
    log_scale = torch.tensor(math.log(9.0), dtype=torch.float64, requires_grad=True)
    reference = torch.randn(11, 7, generator=torch.Generator().manual_seed(37), dtype=torch.float64)
    present_a = torch.tensor([1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1], dtype=torch.bool)
    present_r = torch.tensor([1, 0, 1, 1, 1, 1, 1, 1, 0, 1, 1], dtype=torch.bool)
    objective = ContrastiveObjective(
        [PairSpec("x", "r", weights_from="r")], kind=kind, chunk_size=chunk_size, cwcl_weight_power=power
    )
    got, _ = objective({"x": a, "r": b}, {"x": present_a, "r": present_r}, log_scale, {"r": reference})
    keep = present_a & present_r
    want = autograd_reference(
        a[keep], b[keep], log_scale, kind, "both", reference[keep] if kind == "cwcl" else None, power
    )
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    got_grads = torch.autograd.grad(got, (a, b, log_scale))
    want_grads = torch.autograd.grad(want, (a, b, log_scale))
    for got_grad, want_grad in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(got_grad, want_grad, rtol=1e-9, atol=1e-12)
    assert torch.all(got_grads[0][~keep] == 0) and torch.all(got_grads[1][~keep] == 0)


@pytest.mark.parametrize("power", [1.0, 8.0])
@pytest.mark.parametrize("exclude_positive", [False, True])
def test_a_subset_of_queries_against_all_keys_equals_those_rows_of_the_full_loss(
    power, exclude_positive, paper_weights_path
):
    # The local_loss path: some queries (one rank's rows) against every gathered key, row direction only.
    from encoders.losses import _directional_terms

    a = unit(13, 6, 38).requires_grad_(True)
    b = unit(13, 6, 39).requires_grad_(True)
    log_scale = torch.tensor(math.log(7.0), dtype=torch.float64, requires_grad=True)
    reference = None if exclude_positive else torch.randn(13, 4, dtype=torch.float64)
    local = torch.tensor([3, 4, 5, 6, 7])
    got, columns = _directional_terms(
        a[local],
        b,
        log_scale,
        positives=local,
        reference_rows=None if reference is None else reference[local],
        reference_keys=reference,
        exclude_positive=exclude_positive,
        with_columns=False,
        chunk_size=2,
        weight_power=power,
    )
    assert columns is None
    logits = log_scale.exp() * a @ b.T
    if exclude_positive:
        diagonal = torch.eye(13, dtype=torch.bool)
        per_row = torch.logsumexp(logits.masked_fill(diagonal, float("-inf")), 1) - logits.diagonal()
    else:
        r = F.normalize(reference, dim=-1)
        w = ((1 + r @ r.T) / 2) ** power
        per_row = -(w / w.sum(1, keepdim=True) * F.log_softmax(logits, 1)).sum(1)
    want = per_row[local]
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    weights_of_rows = torch.arange(1.0, 6.0, dtype=torch.float64)  # a non-uniform upstream gradient
    got_grads = torch.autograd.grad((got * weights_of_rows).sum(), (a, b, log_scale))
    want_grads = torch.autograd.grad((want * weights_of_rows).sum(), (a, b, log_scale))
    for got_grad, want_grad in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(got_grad, want_grad, rtol=1e-9, atol=1e-12)


def test_bf16_autocast_features_give_the_fp32_loss_of_the_same_values():
    a = F.normalize(torch.randn(32, 16, generator=torch.Generator().manual_seed(40)), dim=-1)
    b = F.normalize(torch.randn(32, 16, generator=torch.Generator().manual_seed(41)), dim=-1)
    reference = torch.randn(32, 8, generator=torch.Generator().manual_seed(42))
    a16, b16 = a.bfloat16().requires_grad_(True), b.bfloat16().requires_grad_(True)
    log_scale = torch.tensor(math.log(20.0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = cwcl_loss(a16, b16, log_scale, reference)
    assert got.dtype == torch.float32
    want = cwcl_loss(a16.detach().float(), b16.detach().float(), log_scale, reference)
    torch.testing.assert_close(got, want)
    got.backward()
    assert a16.grad.dtype == torch.bfloat16 and torch.isfinite(a16.grad.float()).all()


def _saved_by_the_loss(loss: torch.Tensor) -> list[torch.Tensor]:
    """Tensors the hand-written loss nodes keep for backward (walking the autograd graph)."""
    seen, stack, saved = set(), [loss.grad_fn], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if "SoftmaxTerms" in type(node).__name__:
            saved += list(node.saved_tensors)
        stack += [next_node for next_node, _ in node.next_functions]
    return saved


@pytest.mark.parametrize("power", [1.0, 8.0])
def test_chunked_loss_keeps_nothing_of_size_n_by_n_for_backward(power, paper_weights_path):
    n, chunk = 96, 8
    a, b = unit(n, 4, 43).requires_grad_(True), unit(n, 4, 44).requires_grad_(True)
    reference = torch.randn(n, 5, dtype=torch.float64)
    chunked = _saved_by_the_loss(cwcl_loss(a, b, LOG_SCALE, reference, chunk_size=chunk, weight_power=power))
    assert chunked and max(t.numel() for t in chunked) <= n * 5  # vectors and the [N, D] inputs
    full = _saved_by_the_loss(cwcl_loss(a, b, LOG_SCALE, reference, weight_power=power))
    assert max(t.numel() for t in full) == n * n  # unchunked keeps the logits instead of recomputing


def test_the_factored_targets_are_chosen_for_batches_large_against_the_feature_width():
    from encoders.losses import _affine_is_cheaper

    assert _affine_is_cheaper(4096, 256, chunked=False) and _affine_is_cheaper(4096, 512, chunked=False)
    assert not _affine_is_cheaper(1024, 256, chunked=False) and not _affine_is_cheaper(
        1024, 512, chunked=True
    )
