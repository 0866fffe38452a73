"""LAF with verified early stopping on a tiny model that memorised random X-ray/ECG pairs.

The fixture is built so that there is something to remove: the two views of a study are independent
noise, so the model aligns a pair only if it trained on it. Membership inference then tells members
from held-out studies almost perfectly; after unlearning, the forgotten studies must look held-out while
the retained pairs stay aligned.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import pytest
import torch

from encoders import MultimodalModel
from pipelines.data.dataset import StudyDataset
from pipelines.training import TrainConfig
from pipelines.unlearning.forgetting import ForgettingCheck, model_embeddings
from pipelines.unlearning.methods import ItemList, MethodConfig, StudySubset, is_check_step, unlearn_model
from pipelines.unlearning.verify import VerifyConfig, attack_draws, check_forgetting, verify_unlearning
from tests.pipelines.unlearning.helpers import tiny_pair_config, write_random_pairs_dataset

CPU = torch.device("cpu")
PAIRS = [("xray", "ecg")]
N_FORGET = 8
VERIFY = VerifyConfig(bootstrap_resamples=200, folds=3)
# Strong retain term, small steps: memorised random pairs are fragile, any drift of the towers loses them.
LAF = MethodConfig(
    steps=90, lr=2e-4, batch_size=32, retain_weight=20.0, match_temperature=0.05, check_every=5, min_steps=5
)


@dataclasses.dataclass
class Memorised:
    cfg: TrainConfig
    model: MultimodalModel
    forget: list[dict]
    retain: StudySubset
    groups: dict[str, object]


@contextlib.contextmanager
def one_thread():
    """The towers are tiny: a second intra-op thread only adds synchronisation (several times slower
    when the cores are busy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def memorised(tmp_path_factory: pytest.TempPathFactory) -> Memorised:
    """70 training studies (8 to forget), 15 validation (the pool), 15 test (held-out); the model is
    trained on all 70 with the training objective for 150 steps from a seeded random init."""
    root = write_random_pairs_dataset(Path(tmp_path_factory.mktemp("pairs")) / "demo", n_studies=100)
    cfg = tiny_pair_config(root)
    torch.manual_seed(0)
    train = StudyDataset(root, "train", cfg.views)
    with one_thread():
        fitted = unlearn_model(
            MultimodalModel(cfg.model),
            [],
            train,
            cfg,
            "finetune",
            MethodConfig(steps=150, lr=3e-3, batch_size=16, check_every=0),
            CPU,
            progress=False,
        )
    forget = [train[i] for i in range(N_FORGET)]
    retain = StudySubset(train, range(N_FORGET, len(train)))
    groups = {
        "members": retain,
        "heldout": StudyDataset(root, "test", cfg.views),
        "forget": ItemList(forget, cfg.views),
        "pool": StudyDataset(root, "val", cfg.views),
    }
    return Memorised(cfg, fitted.model, forget, retain, groups)


def _laf(m: Memorised, settings: MethodConfig, verify: VerifyConfig = VERIFY):
    check = ForgettingCheck(m.groups, m.cfg, CPU, verify, reference_auc=0.5)
    return unlearn_model(
        m.model,
        m.forget,
        m.retain,
        m.cfg,
        "laf",
        settings,
        CPU,
        progress=False,
        check=check,
        unseen_set=m.groups["pool"],
    )


def test_check_steps_start_at_min_steps_and_include_the_last_step() -> None:
    settings = MethodConfig(steps=12, check_every=5, min_steps=3)
    assert [s for s in range(1, 13) if is_check_step(s, settings)] == [5, 10, 12]
    late = MethodConfig(steps=12, check_every=2, min_steps=7)
    assert [s for s in range(1, 13) if is_check_step(s, late)] == [8, 10, 12]
    assert not any(is_check_step(s, MethodConfig(steps=12, check_every=0)) for s in range(1, 13))


def test_laf_removes_what_the_model_memorised_and_keeps_the_retained_pairs(memorised: Memorised) -> None:
    original = model_embeddings(memorised.model, memorised.groups, memorised.cfg, CPU)
    before = check_forgetting(original, PAIRS, VERIFY).metrics
    assert before["mia.unlearned.auc_forget_vs_heldout_ci_low"] > 0.8  # clearly memorised
    assert before["alignment.unlearned.forget_minus_heldout"] > 0.3

    outcome = _laf(memorised, LAF)
    assert outcome.stop_reason == "stop_check_passed" and outcome.steps < LAF.steps
    assert [int(c["step"]) for c in outcome.checks] == list(range(5, outcome.steps + 1, 5))
    assert [c["passed"] for c in outcome.checks] == [0.0] * (len(outcome.checks) - 1) + [1.0]

    after = model_embeddings(outcome.model, memorised.groups, memorised.cfg, CPU)
    result = verify_unlearning(original, after, PAIRS, VERIFY)
    m = result.metrics
    # The check that stopped the run attacked the stopping draw; the verification a fresh, disjoint one.
    g = memorised.groups
    stop, confirm = attack_draws(len(g["members"]), len(g["heldout"]), len(g["pool"]), VERIFY).values()
    assert stop.disjoint_from(confirm)
    on_stop = check_forgetting(after.take(stop), PAIRS, VERIFY, seed=stop.seed).metrics
    on_confirm = check_forgetting(after.take(confirm), PAIRS, VERIFY, seed=confirm.seed).metrics
    key = "mia.unlearned.auc_forget_vs_heldout"
    assert outcome.checks[-1]["mia_auc_forget_vs_heldout"] == pytest.approx(on_stop[key])
    assert m[key] == pytest.approx(on_confirm[key])
    assert abs(m["mia.unlearned.auc_forget_vs_heldout"] - 0.5) <= VERIFY.mia_tolerance
    assert m["alignment.unlearned.forget_minus_heldout"] <= VERIFY.alignment_tolerance
    retained_drop = (
        m["retained.retained_train.mean_r@1.original"] - m["retained.retained_train.mean_r@1.unlearned"]
    )
    assert m["retained.retained_train.mean_r@1.original"] > 0.5 and retained_drop <= VERIFY.retained_tolerance


def test_without_a_passing_check_laf_runs_to_max_steps(memorised: Memorised) -> None:
    settings = dataclasses.replace(LAF, steps=12, check_every=5)
    never = dataclasses.replace(VERIFY, mia_tolerance=-1.0)  # |AUC - 0.5| <= -1 cannot hold
    outcome = _laf(memorised, settings, never)
    assert outcome.stop_reason == "max_steps" and outcome.steps == 12
    assert [int(c["step"]) for c in outcome.checks] == [5, 10, 12]
    assert not any(c["passed"] for c in outcome.checks)


def test_a_run_stopped_at_step_k_equals_the_first_k_steps_without_checks(memorised: Memorised) -> None:
    always = dataclasses.replace(VERIFY, mia_tolerance=1.0, alignment_tolerance=2.0)
    stopped = _laf(memorised, dataclasses.replace(LAF, steps=20, check_every=3, min_steps=3), always)
    assert stopped.stop_reason == "stop_check_passed" and stopped.steps == 3
    plain = unlearn_model(
        memorised.model,
        memorised.forget,
        memorised.retain,
        memorised.cfg,
        "laf",
        dataclasses.replace(LAF, steps=3, check_every=0),
        CPU,
        progress=False,
        unseen_set=memorised.groups["pool"],
    )
    for a, b in zip(stopped.model.parameters(), plain.model.parameters(), strict=True):
        assert torch.equal(a, b)
