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
in blocks under activation checkpointing, so forward and backward memory grow with N x chunk rather
than N^2, and the result equals the unchunked one (to float rounding).
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


def _block_terms(
    queries: torch.Tensor,
    keys: torch.Tensor,
    log_scale: torch.Tensor,
    positives: torch.Tensor,
    weight_rows: torch.Tensor | None,
    weight_keys: torch.Tensor | None,
    exclude_positive: bool,
    with_columns: bool,
    weight_power: float = 1.0,
) -> tuple[torch.Tensor, ...]:
    """Per-row and per-column partial terms of one block of query rows against all keys.

    ``weight_rows``/``weight_keys``: normalised reference features (CWCL weights are computed here,
    block by block), or ``weight_rows`` an explicit [C, N] weight block with ``weight_keys`` None.
    """
    logits = log_scale.exp() * queries @ keys.T
    rows = torch.arange(logits.shape[0], device=logits.device)
    positive_logits = logits[rows, positives]
    if exclude_positive:
        # DCL, Yeh et al. 2022, Eq. 6: the positive pair leaves the denominator.
        is_positive = torch.zeros_like(logits, dtype=torch.bool)
        is_positive[rows, positives] = True
        denominators = logits.masked_fill(is_positive, float("-inf"))
    else:
        denominators = logits
    row_lse = torch.logsumexp(denominators, dim=1)
    empty = logits.new_zeros(0)
    if weight_rows is None:
        row_target, column_weighted, column_weight = positive_logits, empty, empty
    else:
        weights = (
            weight_rows
            if weight_keys is None
            else ((1.0 + weight_rows @ weight_keys.T) / 2.0).pow(weight_power)
        )
        weighted = weights * logits
        row_target = weighted.sum(dim=1) / weights.sum(dim=1)
        column_weighted = weighted.sum(dim=0) if with_columns else empty
        column_weight = weights.sum(dim=0) if with_columns else empty
    column_lse = torch.logsumexp(denominators, dim=0) if with_columns else empty
    return row_lse, row_target, positive_logits, column_lse, column_weighted, column_weight


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
    meaningful when the queries are all N samples (the positives a permutation of the keys).
    """
    n_queries = queries.shape[0]
    if positives is None:
        positives = torch.arange(n_queries, device=queries.device)
    queries, keys = _fp32_or_wider(queries), _fp32_or_wider(keys)
    if reference_rows is not None:
        reference_rows = F.normalize(_fp32_or_wider(reference_rows), dim=-1)
        reference_keys = (
            F.normalize(_fp32_or_wider(reference_keys), dim=-1)
            if reference_keys is not None
            else reference_rows
        )
    step = n_queries if not chunk_size or chunk_size >= n_queries else int(chunk_size)
    blocks = []
    for start in range(0, n_queries, step):
        stop = min(start + step, n_queries)
        if reference_rows is not None:
            weight_rows, weight_keys = reference_rows[start:stop], reference_keys
        elif weights is not None:
            weight_rows, weight_keys = _fp32_or_wider(weights[start:stop]), None
        else:
            weight_rows = weight_keys = None
        args = (queries[start:stop], keys, log_scale, positives[start:stop], weight_rows, weight_keys)
        if step < n_queries:
            # Recompute the block in backward instead of keeping its C x N logits alive.
            blocks.append(
                checkpoint(
                    _block_terms, *args, exclude_positive, with_columns, weight_power, use_reentrant=False
                )
            )
        else:
            blocks.append(_block_terms(*args, exclude_positive, with_columns, weight_power))
    row_lse, row_target, positive_logits = (torch.cat([b[i] for b in blocks]) for i in range(3))
    row_loss = row_lse - row_target
    if not with_columns:
        return row_loss, None
    column_lse = torch.logsumexp(torch.stack([b[3] for b in blocks]), dim=0)
    if reference_rows is None and weights is None:
        # One-hot targets: key j's positive logit sits in the query row whose positive is j.
        column_target = torch.empty_like(column_lse).scatter(0, positives, positive_logits)
    else:
        column_target = sum(b[4] for b in blocks) / sum(b[5] for b in blocks)
    return row_loss, column_lse - column_target


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
