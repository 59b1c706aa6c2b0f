"""The parts behind retrain, finetune, fidelity and score intervals: statistics, picks, recipes, transfer, the
reference-code optimizer step."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from pipeline.core.agreement import (
    bootstrap_interval,
    kendall_tau,
    mcnemar_p,
    spearman_rho,
    top_k_overlap,
    wilson_interval,
)
from pipeline.core.arch import Architecture
from pipeline.core.complexity import count_params, space_ranges
from pipeline.core.records import candidate_record, tied_with
from pipeline.core.space import load_space
from pipeline.core.strata import spread_by_params
from pipeline.core.task import load_task
from pipeline.fidelity.summary import describe, summarize
from pipeline.model.static import StaticViT
from pipeline.model.supernet import Supernet
from pipeline.model.transfer import target_fixed, transferred_state
from pipeline.shared.errors import UserError
from pipeline.training.exact_step import zero_fill_gradients
from pipeline.training.recipe import build_optimizer


def test_spearman_matches_scipy_with_ties() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(0)
    a = [rng.randint(0, 5) for _ in range(30)]
    b = [x + rng.random() * 3 for x in a]
    assert spearman_rho(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    assert kendall_tau(a, b) == pytest.approx(stats.kendalltau(a, b).statistic, abs=1e-12)
    assert math.isnan(spearman_rho([1, 1, 1], [1, 2, 3]))


def test_bootstrap_interval_covers_the_statistic_and_shrinks_with_more_pairs() -> None:
    rng = random.Random(1)
    small = [rng.random() for _ in range(12)]
    large = [rng.random() for _ in range(120)]
    noisy = lambda xs: [x + rng.gauss(0, 0.3) for x in xs]  # noqa: E731
    b_small, b_large = noisy(small), noisy(large)
    lo, hi = bootstrap_interval(kendall_tau, small, b_small, resamples=500)
    assert lo <= kendall_tau(small, b_small) <= hi
    lo2, hi2 = bootstrap_interval(kendall_tau, large, b_large, resamples=500)
    assert hi2 - lo2 < hi - lo
    assert bootstrap_interval(kendall_tau, small, b_small, resamples=200, seed=3) == bootstrap_interval(
        kendall_tau, small, b_small, resamples=200, seed=3
    )


def test_wilson_interval_and_mcnemar() -> None:
    lo, hi = wilson_interval(420, 1000)
    assert lo < 0.42 < hi and hi - lo == pytest.approx(2 * 1.96 * math.sqrt(0.42 * 0.58 / 1000), rel=0.01)
    assert wilson_interval(0, 50)[0] == pytest.approx(0.0, abs=1e-12) and wilson_interval(50, 50)[1] == 1.0
    assert mcnemar_p(4, 0) == pytest.approx(0.125) and mcnemar_p(0, 0) == 1.0 and mcnemar_p(30, 10) < 0.01
    assert top_k_overlap([1, 2, 3, 4], [4, 3, 2, 1], 2) == 0.0 and top_k_overlap([1, 2, 3, 4], [1, 2, 3, 4], 2) == 1.0


def _scored(arch: Architecture, hits: np.ndarray) -> dict:
    outcome = {
        "status": "ok",
        "top1": float(hits.mean()),
        "images": len(hits),
        "hits": np.packbits(hits).tobytes().hex(),
    }
    return candidate_record(arch, 0, "random", count_params(arch, load_space("digits")), 1, outcome)


def test_ties_with_the_best_are_paired() -> None:
    rng = np.random.default_rng(0)
    base = rng.random(400) < 0.8
    best = _scored(Architecture(64, 2, (4, 4), (4.0, 4.0)), base)
    near = base.copy()
    near[np.flatnonzero(base)[:4]] = False  # 4 fewer right: 1 pt lower, on otherwise the same images
    far = base.copy()
    far[np.flatnonzero(base)[:40]] = False  # 10 pt lower
    tied_arch, far_arch = Architecture(32, 2, (2, 2), (2.0, 2.0)), Architecture(48, 2, (2, 2), (2.0, 2.0))
    records = [best, _scored(tied_arch, near), _scored(far_arch, far)]
    assert [r["key"] for r in tied_with(best, records)] == [tied_arch.key]


def test_spread_picks_cover_the_size_range_and_are_seeded() -> None:
    space = load_space("compact-32")
    picks = spread_by_params(space, 8, seed=0)
    params = [count_params(a, space) for a in picks]
    lo, hi = space_ranges(space)["params"]
    assert len({a.key for a in picks}) == 8 and params == sorted(params)
    assert params[0] < lo + (hi - lo) / 8 and params[-1] >= lo + 7 * (hi - lo) / 8
    assert picks == spread_by_params(space, 8, seed=0) and picks != spread_by_params(space, 8, seed=1)
    with pytest.raises(UserError, match="exceeds the 22,113 architectures of space 'digits'"):
        spread_by_params(load_space("digits"), 22_114, seed=0)


def test_recipes_lay_the_phase_over_train() -> None:
    task = load_task("digits", ["retrain.epochs=7", "finetune.lr_scale=0.5", "retrain.mixup=0.2"])
    retrain, finetune = task.recipe("retrain"), task.recipe("finetune")
    assert retrain.epochs == 7 and retrain.augment.mixup == 0.2 and retrain.optim.lr == task.train.optim.lr
    assert finetune.epochs == 40 and finetune.optim.lr == pytest.approx(task.train.optim.lr * 0.5)
    assert finetune.optim.warmup_epochs == 1 and "lr_scale" not in finetune.to_flat()
    assert task.for_phase("retrain").train == retrain
    with pytest.raises(UserError, match="'retrain.epochs': value 0 is not allowed"):
        load_task("digits", ["retrain.epochs=0"])
    with pytest.raises(UserError, match="unknown key 'retrain.eval_subnets'"):
        load_task("digits", ["retrain.eval_subnets=2"])


def test_transfer_resamples_positions_and_replaces_the_head() -> None:
    space = load_space("digits")
    arch = Architecture(48, 2, (3, 2), (2.0, 3.0))
    model = StaticViT(arch, space.fixed_parts()).eval()
    fixed = target_fixed(model, 16, 1, 3, "test")
    state = transferred_state(model, fixed, seed=0)
    moved = StaticViT.from_state_dict(arch, fixed, state).eval()
    assert moved.pos_embed.shape == (1, 8 * 8 + 1, 48) and moved.head.weight.shape == (3, 48)
    assert torch.equal(moved.pos_embed[:, 0], model.pos_embed[:, 0])  # the class token's entry is kept
    assert torch.equal(moved.blocks[1].attn.rel_pos_k.table_v, model.blocks[1].attn.rel_pos_k.table_v)
    assert moved(torch.zeros(2, 1, 16, 16)).shape == (2, 3)
    same = transferred_state(model, target_fixed(model, 8, 1, 10, "test"), seed=0)
    assert all(torch.equal(same[k], v) for k, v in model.state_dict().items())
    with pytest.raises(UserError, match="takes 1-channel images and the task has 3"):
        target_fixed(model, 8, 3, 10, "test")
    with pytest.raises(UserError, match="image size 9 is not a multiple of the model's patch size 2"):
        target_fixed(model, 9, 1, 10, "test")


def test_reference_step_moves_every_weight_and_the_exact_step_none() -> None:
    """freeze_inactive=false: layers beyond the sampled depth still decay (the reference code's zero_grad)."""
    space = load_space("digits")
    net = Supernet(space)
    optimizer = build_optimizer(net, load_task("digits").train)
    deep = net.blocks[3].mlp.mlp.fc1.weight
    before = deep.detach().clone()
    shallow = Architecture(32, 2, (2, 2), (2.0, 2.0))
    net(torch.randn(4, 1, 8, 8), shallow).sum().backward()
    assert deep.grad is None
    zero_fill_gradients(optimizer)
    optimizer.step()
    assert not torch.equal(deep, before)  # decoupled weight decay shrank a layer the subnet never ran


def test_fidelity_summary_of_perfect_and_reversed_rankings() -> None:
    rows = [
        {
            "inherited_search_top1": 0.5 + i / 100,
            "standalone_search_top1": 0.6 + i / 100,
            "inherited_test_top1": 0.5 + i / 100,
            "standalone_test_top1": 0.6 + i / 100,
        }
        for i in range(8)
    ]
    summary = summarize(rows)
    assert summary["kendall_tau"] == pytest.approx(1.0) and summary["kendall_tau_95"] == [1.0, 1.0]
    assert summary["mean_gap_search"] == pytest.approx(-0.1) and summary["top_k_overlap"] == 1.0
    assert "Kendall tau 1.00 [1.00, 1.00]" in describe(summary)
    reversed_rows = [{**r, "standalone_search_top1": 0.7 - i / 100} for i, r in enumerate(rows)]
    assert summarize(reversed_rows)["kendall_tau"] == pytest.approx(-1.0)
    assert "too few" in describe(summarize(rows[:2]))
    # interrupted: rows only for the trials that started, the count of what was planned from the plan
    partial = summarize([*rows[:4], {**rows[4], "standalone_search_top1": float("nan")}], planned=16)
    assert (partial["architectures"], partial["planned"]) == (4, 16)


def test_a_fidelity_run_started_before_a_setting_existed_resumes(tmp_path) -> None:
    """A run's recorded plan lacks the keys the tool gained since: at their defaults they change nothing, so the
    run resumes; a changed setting that stand-alone training learns from is refused, naming it."""
    from pipeline.core.training_settings import recipe_differences
    from pipeline.fidelity.experiment import PLAN_FILE, check_plan, fidelity_plan
    from pipeline.shared.storage import write_json

    task = load_task("digits")
    plan = fidelity_plan("/s", task, [])
    older = {**plan, "recipe": {k: v for k, v in plan["recipe"].items() if k not in ("gradient_projection", "lr")}}
    older["recipe"]["lr"] = task.train.optim.lr
    write_json(str(tmp_path / PLAN_FILE), older)
    assert check_plan(str(tmp_path), plan)
    assert (
        recipe_differences(older["recipe"], {**plan["recipe"], "gradient_projection": "largest"}) == []
    )  # supernets only
    assert recipe_differences(older["recipe"], {**plan["recipe"], "checkpoint_every": 1}) == []  # bookkeeping
    assert recipe_differences({**older["recipe"], "dropped_key": 1}, plan["recipe"]) == ["dropped_key"]
    epochs = task.recipe("retrain").epochs
    changed = fidelity_plan("/s", load_task("digits", [f"retrain.epochs={epochs + 1}"]), [])
    with pytest.raises(UserError, match=rf"was made with retrain.epochs = {epochs} \(now {epochs + 1}\)"):
        check_plan(str(tmp_path), changed)


def test_two_seeds_give_the_ceiling_beside_the_inherited_tau() -> None:
    """``--seeds 2``: each architecture's two stand-alone trainings against each other (tau and interval), over
    the architectures both finished; one seed reports no ceiling."""
    from pipeline.fidelity.summary import ceiling
    from pipeline.results.fidelity import fidelity_rows

    archs = [Architecture(embed_dim=48, depth=2, num_heads=(2, 2), mlp_ratio=(r, r)) for r in (2, 3, 4, 2.5)]
    second = [0.62, 0.61, 0.70, 0.66]  # swaps the first two of the first seed's ranking
    results = []
    for i, arch in enumerate(archs):
        metrics = {"search_top1": 0.6 + i / 100, "test_top1": 0.5, "inherited_search_top1": 0.4 + i / 100}
        results.append({"arch": arch, "picked": "stratum", "metrics": metrics, "done": True, "seed_index": 0})
        done = i != 3  # the fourth architecture's second training has not finished
        again = {"search_top1": second[i], "test_top1": 0.5}
        results.append({"arch": arch, "picked": "stratum", "metrics": again, "done": done, "seed_index": 1})
    rows = fidelity_rows(results)
    assert len(rows) == 4 and all(len(r["standalone_search_top1_by_seed"]) == 2 for r in rows)
    by_key = {r["key"]: r for r in rows}
    assert by_key[archs[3].key]["standalone_search_top1_by_seed"][0] == pytest.approx(0.63)
    assert math.isnan(by_key[archs[3].key]["standalone_search_top1_by_seed"][1])
    found = ceiling(rows)
    first = [0.60, 0.61, 0.62]
    assert found["ceiling_architectures"] == 3
    assert found["ceiling_tau"] == pytest.approx(kendall_tau(first, second[:3])) and found["ceiling_tau"] < 1
    lo, hi = found["ceiling_tau_95"]
    assert lo <= found["ceiling_tau"] <= hi
    summary = summarize(rows)
    assert summary["ceiling_tau"] == found["ceiling_tau"] and "ceiling (stand-alone seed 1 against seed 2)" in describe(
        summary
    )
    one_seed = fidelity_rows([r for r in results if r["seed_index"] == 0])
    assert ceiling(one_seed) == {} and "ceiling" not in describe(summarize(one_seed))
