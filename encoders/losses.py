"""Contrastive objectives: CLIP/InfoNCE, CWCL, DCL, alignment + uniformity; masked, chunked, distributed.

Notation: ``a`` [N, D] and ``b`` [N, D] are L2-normalised embeddings of two views of the same N
samples (row i of ``a`` pairs with row i of ``b``); ``logit_scale`` is the *log* of the inverse
temperature, as the model stores it, so logits are ``exp(logit_scale) * a @ b.T``.

All directional losses reduce to, per query row i over keys j,

    loss_i = logsumexp_{j in D_i} logits_ij - sum_j T_ij logits_ij

with T the target distribution (one-hot for CLIP/DCL, CWCL's normalised weights) and D_i the
denominator set (all j, or all j except the positive for DCL). Direction a->b uses rows of the logits
matrix and b->a its columns, so "both" costs ONE logits matmul: the column log-sum-exps and
weighted column sums are accumulated from the same blocks. With ``chunk_size`` the rows are processed
in blocks and the backward pass recomputes each block's logits from the saved log-sum-exps, so
forward and backward memory grow with N x chunk rather than N^2, and the result equals the unchunked
one (to float rounding).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from encoders.distributed import gather_features, is_distributed

Direction = Literal["both", "a2b", "b2a"]
Kind = Literal["cwcl", "clip", "dcl"]


def _fp32_or_wider(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 (autocast) features are upcast: the log-sum-exps run in at least fp32."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def cwcl_weights(
    reference: torch.Tensor, reference_keys: torch.Tensor | None = None, power: float = 1.0
) -> torch.Tensor:
    """CWCL targets: ``w_ij = (1 + cos(r_i, r_j)) / 2``, each row normalised to sum to 1.

    Srinivasa et al. 2023 ("CWCL: Cross-modal transfer with continuously weighted contrastive
    loss", Sec. 3): r are the frozen pretrained modality's features, so intra-modal similarity
    turns near-duplicates into partial positives instead of pure negatives. ``power`` > 1 sharpens
    the weights (``w_ij ** power`` before normalising; 1 is the paper's formula): templated clinical
    reports sit close together, which leaves the paper's weights nearly uniform.
    """
    rows = F.normalize(_fp32_or_wider(reference), dim=-1)
    keys = rows if reference_keys is None else F.normalize(_fp32_or_wider(reference_keys), dim=-1)
    weights = ((1.0 + rows @ keys.T) / 2.0).pow(power)
    return weights / weights.sum(dim=1, keepdim=True)


# --------------------------------------------------------------------------- core
#
# Cost model (N queries and keys, D features, R reference features): open_clip's ClipLoss forms
# both logits matrices and back-propagates through each, six N x N x D matmuls. Here the row and
# column log-sum-exps share one logits matrix and its gradient is written by hand
# (:class:`_SoftmaxTerms`): forward one matmul, backward two, and chunking only adds one
# recomputation of each block's logits (four in all) instead of checkpointing the whole block graph.
# Targets cost no N x N work except for CWCL with a weight power != 1 (or explicit weights): CLIP's
# and DCL's positive logits are N dot products, and CWCL's paper weights are affine in the reference
# cosine, so their weighted logit sums factor through R x D matrices (:func:`_affine_cwcl_targets`).


def _blocks(n: int, step: int) -> list[tuple[int, int]]:
    return [(start, min(start + step, n)) for start in range(0, n, step)]


def _cache_rows(n_keys: int) -> int:
    """Rows of logits per elementwise pass: about 2**18 values (1 MiB in fp32) stay in a core's L2
    cache through the log-sum-exps, instead of streaming the N x N matrix through memory per pass."""
    return max(1, (1 << 18) // max(n_keys, 1))


def _power_(x: torch.Tensor, power: float) -> torch.Tensor:
    """``x ** power`` in place; powers of two by repeated squaring (a multiply per pass, where a
    general ``pow`` costs a transcendental per element: 3x faster for the default power 8)."""
    exponent = int(power)
    if exponent == power and exponent >= 1 and exponent & (exponent - 1) == 0:
        for _ in range(exponent.bit_length() - 1):
            x.square_()
        return x
    return x.pow_(power)


class _DenseWeights:
    """Unnormalised CWCL weight blocks, constants of the loss: ``(1 + r_i . k_j) ** power`` or given rows.

    The paper's ``(1 + cos) / 2`` loses its 1/2: every use of a weight is divided by its row's or
    column's sum, so a constant factor cancels. The 1 rides in the matmul as an extra feature
    (``[r, 1] . [k, 1] = 1 + r . k``), which saves an elementwise pass over each N x N block.
    """

    def __init__(
        self,
        reference_rows: torch.Tensor | None,
        reference_keys: torch.Tensor | None,
        weights: torch.Tensor | None,
        power: float,
    ) -> None:
        self.weights, self.power = weights, power
        self.rows = self.keys = None
        if reference_rows is not None:
            self.rows = F.pad(reference_rows, (0, 1), value=1.0)
            self.keys = (
                self.rows if reference_keys is reference_rows else F.pad(reference_keys, (0, 1), value=1.0)
            )

    def block(self, start: int, stop: int) -> torch.Tensor:
        if self.weights is not None:
            return self.weights[start:stop]
        block = self.rows[start:stop] @ self.keys.T
        # Rounding can leave 1 + cos a hair below 0, where a fractional power is NaN.
        return _power_(block.clamp_(min=0), self.power) if self.power != 1 else block


class _SoftmaxTerms(torch.autograd.Function):
    """Row and column log-sum-exps of ``logits = exp(log_scale) * queries @ keys.T``, minus dense targets.

    Returns ``row [M]`` = lse_j(logits_ij) - sum_j T_ij logits_ij and ``column [N]`` the same over i
    (T = the dense weights normalised per row, resp. per column; no target term without weights).
    Backward uses d lse / d logits = softmax, so the gradient of the logits is
    ``g_i (softmax_row - T_row)_ij + g_j (softmax_column - T_column)_ij`` and costs two matmuls; the
    logits are kept (``step >= M``) or recomputed block by block from the saved log-sum-exps, so
    memory is O(N * step) beyond the inputs. ``positives`` marks, with ``exclude_positive``, the
    entries DCL leaves out of the denominators.
    """

    @staticmethod
    def forward(
        ctx,
        queries: torch.Tensor,
        keys: torch.Tensor,
        log_scale: torch.Tensor,
        positives: torch.Tensor,
        dense: _DenseWeights | None,
        exclude_positive: bool,
        with_columns: bool,
        step: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n_queries, n_keys = queries.shape[0], keys.shape[0]
        scaled_keys = keys * log_scale.exp()
        keep_logits = step >= n_queries
        row_lse = queries.new_empty(n_queries)
        row_target = queries.new_zeros(n_queries)
        row_weight = queries.new_ones(n_queries)
        # Running column log-sum-exp: O(N) memory however many blocks.
        column_lse = queries.new_full((n_keys if with_columns else 0,), float("-inf"))
        column_target = queries.new_zeros(n_keys)
        column_weight = queries.new_zeros(n_keys) if dense is not None else queries.new_ones(n_keys)
        kept = []
        for start, stop in _blocks(n_queries, step):
            logits = _SoftmaxTerms._logits(queries, scaled_keys, positives, exclude_positive, start, stop)
            weights = dense.block(start, stop) if dense is not None else None
            if keep_logits:
                kept += [logits] if weights is None else [logits, weights]
            for low, high in _blocks(stop - start, _cache_rows(n_keys)):
                part = logits[low:high]
                row_lse[start + low : start + high] = torch.logsumexp(part, dim=1)
                if with_columns:
                    column_lse = torch.logaddexp(column_lse, torch.logsumexp(part, dim=0))
                if weights is not None:
                    weighted = weights[low:high] * part
                    row_target[start + low : start + high] = weighted.sum(dim=1)
                    row_weight[start + low : start + high] = weights[low:high].sum(dim=1)
                    if with_columns:
                        column_target += weighted.sum(dim=0)
                        column_weight += weights[low:high].sum(dim=0)
        row = row_lse - row_target / row_weight
        column = column_lse - column_target / column_weight if with_columns else column_lse
        ctx.save_for_backward(
            queries, scaled_keys, log_scale, positives, row_lse, column_lse, row_weight, column_weight, *kept
        )
        ctx.dense, ctx.exclude_positive = dense, exclude_positive
        ctx.with_columns, ctx.step = with_columns, step
        return row, column

    @staticmethod
    def _logits(
        queries: torch.Tensor,
        scaled_keys: torch.Tensor,
        positives: torch.Tensor,
        exclude_positive: bool,
        start: int,
        stop: int,
    ) -> torch.Tensor:
        logits = queries[start:stop] @ scaled_keys.T
        if exclude_positive:
            # DCL, Yeh et al. 2022, Eq. 6: the positive pair leaves the denominator.
            logits[torch.arange(stop - start, device=logits.device), positives[start:stop]] = float("-inf")
        return logits

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_row: torch.Tensor, grad_column: torch.Tensor):
        queries, scaled_keys, log_scale, positives, row_lse, column_lse, row_weight, column_weight, *kept = (
            ctx.saved_tensors
        )
        grad_queries = torch.empty_like(queries)
        grad_keys = torch.zeros_like(scaled_keys)
        with_columns = ctx.with_columns
        if ctx.dense is not None:
            row_factor = grad_row / row_weight
            column_factor = grad_column / column_weight if with_columns else None
        for start, stop in _blocks(queries.shape[0], ctx.step):
            if kept:
                logits, weights = kept[0], (kept[1] if len(kept) > 1 else None)
            else:
                logits = _SoftmaxTerms._logits(
                    queries, scaled_keys, positives, ctx.exclude_positive, start, stop
                )
                weights = ctx.dense.block(start, stop) if ctx.dense is not None else None
            grad_logits = torch.empty_like(logits)
            for low, high in _blocks(stop - start, _cache_rows(logits.shape[1])):
                rows = slice(start + low, start + high)
                part, grad = logits[low:high], grad_logits[low:high]
                torch.sub(part, row_lse[rows, None], out=grad).exp_().mul_(grad_row[rows, None])
                if with_columns:
                    grad.addcmul_((part - column_lse).exp_(), grad_column)
                if weights is not None:
                    grad.addcmul_(weights[low:high], row_factor[rows, None], value=-1)
                    if with_columns:
                        grad.addcmul_(weights[low:high], column_factor, value=-1)
            torch.mm(grad_logits, scaled_keys, out=grad_queries[start:stop])
            grad_keys.addmm_(grad_logits.T, queries[start:stop])
        # logits = s q.k, so d/d log_scale = sum_ij g_ij logits_ij = sum_i q_i . (d/d q_i).
        grad_log_scale = (queries * grad_queries).sum().reshape(log_scale.shape)
        grad_keys.mul_(log_scale.exp())
        return grad_queries, grad_keys, grad_log_scale, None, None, None, None, None


def _affine_is_cheaper(n_keys: int, dim: int, chunked: bool) -> bool:
    """Whether the factored CWCL targets beat an N x N weight matrix for the paper's weights.

    The factored form costs about 8 N R D multiply-adds (four R x D products forward, four backward);
    the weight matrix N^2 R once (twice when chunked: backward recomputes it) plus a few N x N
    elementwise passes. So the factored form wins for N above a few D: measured on CPU, the weight
    matrix was faster at N = 2D and 4D, the factored form at 8D and 16D (and it keeps no N x N).
    """
    return n_keys >= (4 if chunked else 6) * dim


def _affine_cwcl_targets(
    queries: torch.Tensor,
    keys: torch.Tensor,
    log_scale: torch.Tensor,
    reference_rows: torch.Tensor,
    reference_keys: torch.Tensor,
    with_columns: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """CWCL's target logits for the paper's weights, ``w_ij = (1 + r_i . k_j) / 2``, without an N x N matrix.

    sum_j w_ij logits_ij = s/2 (a_i . sum_j b_j + r_i^T (K^T B) a_i) and sum_j w_ij = (N + r_i . sum_j k_j) / 2:
    the weighted row sum is bilinear in (r_i, a_i), so it costs O(N R D). Columns swap the roles.
    """
    scale = log_scale.exp()
    row = scale * (queries * (keys.sum(0) + reference_rows @ (reference_keys.T @ keys))).sum(1)
    row = row / (keys.shape[0] + reference_rows @ reference_keys.sum(0))
    if not with_columns:
        return row, None
    column = scale * (keys * (queries.sum(0) + reference_keys @ (reference_rows.T @ queries))).sum(1)
    return row, column / (queries.shape[0] + reference_keys @ reference_rows.sum(0))


def _directional_terms(
    queries: torch.Tensor,
    keys: torch.Tensor,
    log_scale: torch.Tensor,
    *,
    positives: torch.Tensor | None = None,
    reference_rows: torch.Tensor | None = None,
    reference_keys: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    exclude_positive: bool = False,
    with_columns: bool = True,
    chunk_size: int | None = None,
    weight_power: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-query losses (query->key direction) and, when ``with_columns``, per-key losses (key->query).

    ``positives`` [M]: column of each query's positive (default: the diagonal). Columns are only
    meaningful when the queries are all N samples (the positives a permutation of the keys). CWCL
    weights (from ``reference_*`` or ``weights``) are constants: no gradient flows into them.
    """
    n_queries = queries.shape[0]
    if positives is None:
        positives = torch.arange(n_queries, device=queries.device)
    queries, keys = _fp32_or_wider(queries), _fp32_or_wider(keys)
    dtype = torch.promote_types(queries.dtype, keys.dtype)
    queries, keys, log_scale = queries.to(dtype), keys.to(dtype), log_scale.to(dtype)
    step = n_queries if not chunk_size or chunk_size >= n_queries else int(chunk_size)
    dense = affine = None
    with torch.no_grad():
        if reference_rows is not None:
            rows = F.normalize(reference_rows.to(dtype), dim=-1)
            keys_ref = rows if reference_keys is None else F.normalize(reference_keys.to(dtype), dim=-1)
            if weight_power == 1 and _affine_is_cheaper(keys.shape[0], keys.shape[1], step < n_queries):
                affine = (rows, keys_ref)
            else:
                dense = _DenseWeights(rows, keys_ref, None, weight_power)
        elif weights is not None:
            dense = _DenseWeights(None, None, weights.detach().to(dtype), 1.0)
    if exclude_positive and dense is not None:
        raise ValueError("positives leave the denominator only with one-hot targets (DCL), not CWCL weights")
    # The logits and their log-sum-exps run in fp32 even under autocast (bf16 would cost ~0.01 nats).
    with torch.autocast(queries.device.type, enabled=False):
        row_loss, column_loss = _SoftmaxTerms.apply(
            queries, keys, log_scale, positives, dense, exclude_positive, with_columns, step
        )
        if dense is not None:
            return row_loss, column_loss if with_columns else None
        if affine is not None:
            row_target, column_target = _affine_cwcl_targets(queries, keys, log_scale, *affine, with_columns)
        else:
            # One-hot targets: query i's target logit is its positive's; key j's sits in the query
            # row whose positive is j.
            row_target = log_scale.exp() * (queries * keys[positives]).sum(1)
            column_target = (
                torch.empty_like(column_loss).scatter(0, positives, row_target) if with_columns else None
            )
    return row_loss - row_target, column_loss - column_target if with_columns else None


def _reduce_directions(
    row_loss: torch.Tensor, column_loss: torch.Tensor | None, direction: Direction
) -> torch.Tensor:
    if direction == "a2b":
        return row_loss.mean()
    if direction == "b2a":
        return column_loss.mean()
    if direction == "both":
        return (row_loss.mean() + column_loss.mean()) / 2
    raise ValueError(f"unknown direction {direction!r}; expected both, a2b or b2a")


def clip_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    logit_scale: torch.Tensor,
    *,
    direction: Direction = "both",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE of CLIP (Radford et al. 2021; van den Oord et al. 2018): cross-entropy with the diagonal."""
    return cwcl_loss(a, b, logit_scale, direction=direction, chunk_size=chunk_size)


def cwcl_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    logit_scale: torch.Tensor,
    reference: torch.Tensor | None = None,
    *,
    weights: torch.Tensor | None = None,
    direction: Direction = "both",
    chunk_size: int | None = None,
    weight_power: float = 1.0,
) -> torch.Tensor:
    """CWCL (Srinivasa et al. 2023, Eq. 3): soft cross-entropy with targets from :func:`cwcl_weights`.

    ``reference`` [N, R]: the pretrained view's features (weights computed blockwise, never as a full
    N x N matrix when chunked), or ``weights`` [N, N] given directly (w_ij pairs a_i with b_j; b->a uses
    its columns). Neither: one-hot targets, i.e. CLIP. Both directions share one logits matmul.
    """
    rows, columns = _directional_terms(
        a,
        b,
        logit_scale,
        reference_rows=reference,
        weights=weights,
        with_columns=direction != "a2b",
        chunk_size=chunk_size,
        weight_power=weight_power,
    )
    return _reduce_directions(rows, columns, direction)


def dcl_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    logit_scale: torch.Tensor,
    *,
    direction: Direction = "both",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Decoupled contrastive loss (Yeh et al. 2022, Eq. 6): InfoNCE with the positive removed from the denominator.

    Cross-modal form: the negatives are the other view's non-matching rows.
    """
    rows, columns = _directional_terms(
        a, b, logit_scale, exclude_positive=True, with_columns=direction != "a2b", chunk_size=chunk_size
    )
    return _reduce_directions(rows, columns, direction)


def uniformity_loss(x: torch.Tensor, t: float = 2.0, chunk_size: int | None = None) -> torch.Tensor:
    """``log mean_{i != j} exp(-t ||x_i - x_j||^2)`` (Wang & Isola 2020, Eq. 5), x L2-normalised."""
    x = _fp32_or_wider(x)
    n = x.shape[0]
    step = n if not chunk_size or chunk_size >= n else int(chunk_size)

    def block(rows: torch.Tensor, start: int) -> torch.Tensor:
        # ||x_i - x_j||^2 = 2 - 2 x_i.x_j on the unit sphere.
        kernel = -t * (2.0 - 2.0 * rows @ x.T)
        index = torch.arange(rows.shape[0], device=x.device)
        kernel = kernel.index_put(
            (index, index + start), torch.tensor(float("-inf"), dtype=kernel.dtype, device=x.device)
        )
        return torch.logsumexp(kernel.flatten(), dim=0)

    parts = [
        checkpoint(block, x[s : s + step], s, use_reentrant=False) if step < n else block(x, 0)
        for s in range(0, n, step)
    ]
    return torch.logsumexp(torch.stack(parts), dim=0) - math.log(n * (n - 1))


def alignment_loss(a: torch.Tensor, b: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """``mean_i ||a_i - b_i||^alpha`` (Wang & Isola 2020, Eq. 4)."""
    return (_fp32_or_wider(a) - _fp32_or_wider(b)).norm(dim=1).pow(alpha).mean()


def align_uniform_loss(
    a: torch.Tensor, b: torch.Tensor, *, t: float = 2.0, alpha: float = 2.0, chunk_size: int | None = None
) -> torch.Tensor:
    """Alignment + uniformity of the two views, the terms Fahim et al. 2024 ("It's Not a Modality Gap")
    add to CLIP's loss to close the contrastive gap: align(a, b) + (unif(a) + unif(b)) / 2."""
    uniform = (uniformity_loss(a, t, chunk_size) + uniformity_loss(b, t, chunk_size)) / 2
    return alignment_loss(a, b, alpha) + uniform


# --------------------------------------------------------------------------- objective


@dataclasses.dataclass
class PairSpec:
    """Two views to align; ``weights_from`` names the view whose reference features give CWCL weights."""

    a: str
    b: str
    weights_from: str | None = None
    weight: float = 1.0

    @property
    def name(self) -> str:
        return f"{self.a}-{self.b}"


class ContrastiveObjective(nn.Module):
    """Weighted sum of a contrastive loss over view pairs, with presence masks and optional gathering.

    ``features``: view -> [B, D] L2-normalised embeddings; ``present``: view -> BoolTensor[B] (a view
    absent from ``present`` counts as present in every row). Rows where a pair's views (and its
    ``weights_from`` view) are not all present are dropped for that pair, so padding values never
    matter; a pair with fewer than 2 valid rows contributes 0. ``reference``: view -> [B, R] frozen
    features for CWCL weights.

    ``gather=True`` (under an initialised process group) all-gathers features, masks and references
    in rank order first, see :mod:`encoders.distributed`; with ``gather_with_grad`` (default) the
    per-rank losses and DDP-averaged gradients equal the single-process ones on the concatenated batch.
    ``local_loss=True`` keeps only this rank's rows as queries (two B x N matmuls instead of one N x N);
    its returned value is ``world_size`` times this rank's share, so the mean over ranks is the global loss.
    """

    def __init__(
        self,
        pairs: list[PairSpec],
        kind: Kind = "cwcl",
        direction: Direction = "both",
        align_uniform_weight: float = 0.0,
        chunk_size: int | None = None,
        gather: bool = False,
        local_loss: bool = False,
        gather_with_grad: bool = True,
        cwcl_weight_power: float = 1.0,
    ) -> None:
        super().__init__()
        if not pairs:
            raise ValueError("ContrastiveObjective needs at least one PairSpec")
        if kind not in ("cwcl", "clip", "dcl"):
            raise ValueError(f"unknown objective kind {kind!r}; expected cwcl, clip or dcl")
        if direction not in ("both", "a2b", "b2a"):
            raise ValueError(f"unknown direction {direction!r}; expected both, a2b or b2a")
        self.pairs = list(pairs)
        self.kind = kind
        self.direction = direction
        self.align_uniform_weight = align_uniform_weight
        self.chunk_size = chunk_size
        self.gather = gather
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad
        self.cwcl_weight_power = cwcl_weight_power

    def _weights_view(self, pair: PairSpec) -> str | None:
        return pair.weights_from if self.kind == "cwcl" else None

    def forward(
        self,
        features: dict[str, torch.Tensor],
        present: dict[str, torch.Tensor],
        logit_scale: torch.Tensor,
        reference: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        reference = reference or {}
        views = sorted({v for p in self.pairs for v in (p.a, p.b)} & set(features))
        wanted_refs = sorted(({self._weights_view(p) for p in self.pairs} - {None}) & set(reference))
        local = {v: features[v] for v in views}
        masks = {v: present[v] for v in views if v in present}
        refs = {v: reference[v] for v in wanted_refs}
        for v in wanted_refs:
            if v in present:
                masks.setdefault(v, present[v])
        rank, world = 0, 1
        distributed = self.gather and is_distributed()
        if distributed:
            import torch.distributed as dist

            rank, world = dist.get_rank(), dist.get_world_size()
            local_rows = {v: t.shape[0] for v, t in local.items()}
            local, masks, refs = gather_features(local, masks, refs, gather_with_grad=self.gather_with_grad)

        total = logit_scale * 0.0
        parts: dict[str, torch.Tensor] = {}
        for pair in self.pairs:
            if pair.a not in local or pair.b not in local:
                parts[pair.name] = total.detach() * 0.0
                continue
            weights_view = self._weights_view(pair)
            if weights_view is not None and weights_view not in refs:
                raise KeyError(
                    f"pair {pair.name}: CWCL weights come from view {weights_view!r}, but no reference "
                    f"features were given for it (got {sorted(refs)})"
                )
            a, b = local[pair.a], local[pair.b]
            valid = torch.ones(a.shape[0], dtype=torch.bool, device=a.device)
            for v in (pair.a, pair.b, weights_view):
                if v is not None and v in masks:
                    valid = valid & masks[v].to(a.device).bool()
            n_valid = int(valid.sum())
            if n_valid < 2:
                parts[pair.name] = (a.sum() + b.sum()) * 0.0
                total = total + parts[pair.name]
                continue
            ref = refs[weights_view][valid] if weights_view is not None else None
            if distributed and self.local_loss:
                start = rank * local_rows[pair.a]
                loss = self._local_pair_loss(a, b, ref, valid, start, local_rows[pair.a], logit_scale) * world
            else:
                rows, columns = _directional_terms(
                    a[valid],
                    b[valid],
                    logit_scale,
                    reference_rows=ref,
                    exclude_positive=self.kind == "dcl",
                    with_columns=self.direction != "a2b",
                    chunk_size=self.chunk_size,
                    weight_power=self.cwcl_weight_power,
                )
                loss = _reduce_directions(rows, columns, self.direction)
            if self.align_uniform_weight:
                au = align_uniform_loss(a[valid], b[valid], chunk_size=self.chunk_size)
                parts[f"{pair.name}.align_uniform"] = au.detach()
                loss = loss + self.align_uniform_weight * au
            parts[pair.name] = loss
            total = total + pair.weight * loss
        return total, {k: v.detach() for k, v in parts.items()}

    def _local_pair_loss(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        ref: torch.Tensor | None,
        valid: torch.Tensor,
        start: int,
        n_local: int,
        logit_scale: torch.Tensor,
    ) -> torch.Tensor:
        """This rank's rows as queries against all gathered keys, summed and divided by the global count."""
        n_valid = valid.sum()
        # Position of each local valid row among the global valid rows = its positive's column.
        compact = torch.cumsum(valid.long(), dim=0) - 1
        local_valid = valid[start : start + n_local]
        positives = compact[start : start + n_local][local_valid]
        local_index = torch.arange(start, start + n_local, device=a.device)[local_valid]
        a_all, b_all = a[valid], b[valid]
        ref_rows = None if ref is None else ref[positives]
        common = dict(
            positives=positives,
            reference_rows=ref_rows,
            reference_keys=ref,
            exclude_positive=self.kind == "dcl",
            with_columns=False,
            chunk_size=self.chunk_size,
            weight_power=self.cwcl_weight_power,
        )
        loss = a.new_zeros(())
        if self.direction in ("both", "a2b"):
            rows, _ = _directional_terms(a[local_index], b_all, logit_scale, **common)
            loss = loss + rows.sum() / n_valid
        if self.direction in ("both", "b2a"):
            rows, _ = _directional_terms(b[local_index], a_all, logit_scale, **common)
            loss = loss + rows.sum() / n_valid
        return loss / 2 if self.direction == "both" else loss
