"""dVAE / prior training: schedules, the logit-Laplace likelihood, the KL term, resumable runs."""

import itertools
import math

import pytest
import torch
from t2i_dalle.trainables import (
    DVAESchedule,
    DVAETrainable,
    codebook_diversity,
    kl_to_uniform,
    logit_laplace_nll,
)


def test_temperature_anneals_cosine_and_kl_weight_ramps():
    s = DVAESchedule(tau_min=1 / 16, anneal_steps=100, kl_weight=6.6, kl_warmup=10)
    taus = [s.tau(i) for i in range(0, 121, 10)]
    assert taus[0] == 1.0 and taus[-1] == pytest.approx(1 / 16)
    assert all(a >= b for a, b in itertools.pairwise(taus))
    assert s.tau(50) == pytest.approx(1 / 16 + (1 - 1 / 16) / 2)
    assert [s.beta(i) for i in (0, 5, 10, 50)] == pytest.approx([0, 3.3, 6.6, 6.6])
    timed = DVAESchedule(anneal_steps=10_000, anneal_seconds=60)
    assert timed.tau(10, seconds=60) == pytest.approx(1 / 16)  # time-boxed runs end the anneal


def test_logit_laplace_nll_is_a_normalised_density():
    """exp(-nll) integrates to 1 over (0, 1) for any (mu, ln b): a proper likelihood."""
    mu, ln_b = torch.randn(()) * 2, torch.rand(()) - 1.5
    x = torch.linspace(1e-6, 1 - 1e-6, 400_001, dtype=torch.float64)
    stats = torch.stack([mu.expand_as(x), ln_b.expand_as(x)]).double()[None, :, :, None]
    per_point = torch.stack(
        [
            logit_laplace_nll(xi.view(1, 1, 1, 1), stats[:, :, i : i + 1])
            for i, xi in zip(range(0, 400_001, 40_000), x[::40_000])
        ]
    )
    b = ln_b.double().exp()
    y = torch.logit(x[::40_000])
    want = (y - mu).abs() / b + torch.log(2 * b * x[::40_000] * (1 - x[::40_000]))
    assert torch.allclose(per_point.double(), want, rtol=1e-5, atol=1e-5)
    density = torch.exp(-((torch.logit(x) - mu).abs() / b)) / (2 * b * x * (1 - x))
    assert torch.trapezoid(density, x).item() == pytest.approx(1.0, abs=2e-3)


def test_kl_to_uniform_matches_torch_distributions():
    logits = torch.randn(3, 16, 2, 2)
    q = torch.distributions.Categorical(logits=logits.permute(0, 2, 3, 1))
    u = torch.distributions.Categorical(logits=torch.zeros(16))
    want = torch.distributions.kl_divergence(q, u).sum((1, 2)).mean()
    assert kl_to_uniform(logits).item() == pytest.approx(want.item(), rel=1e-5)
    assert kl_to_uniform(torch.zeros(1, 16, 2, 2)).item() == pytest.approx(0.0, abs=1e-6)
    assert kl_to_uniform(torch.full((1, 16, 1, 1), -1e4).index_fill(1, torch.tensor([3]), 0.0)
                         ).item() == pytest.approx(math.log(16), rel=1e-5)  # fmt: skip


def test_codebook_diversity_is_zero_for_even_use_and_one_for_collapse():
    k = 16
    even = torch.eye(k)[:, :, None, None].mul(50.0)  # each row certain of a different code
    assert codebook_diversity(even).item() == pytest.approx(0.0, abs=1e-5)
    collapsed = torch.zeros(8, k, 2, 2).index_fill(1, torch.tensor([5]), 50.0)
    assert codebook_diversity(collapsed).item() == pytest.approx(1.0, abs=1e-4)
    half = torch.eye(k)[: k // 2].repeat(2, 1)[:, :, None, None].mul(50.0)  # 8 of 16 codes
    want = 1 - math.log(8) / math.log(16)
    assert codebook_diversity(half).item() == pytest.approx(want, abs=1e-4)


def test_diversity_weight_adds_the_term_and_the_step_reports_codebook_use():
    from t2i_dalle.dvae import DVAEConfig

    config = DVAEConfig(group_count=2, n_hid=8, n_blk_per_group=1, n_init=16, vocab_size=32)
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    losses = []
    for weight in (0.0, 2.0):
        torch.manual_seed(0)
        model = DVAETrainable(config, DVAESchedule(diversity_weight=weight))
        torch.manual_seed(1)
        losses.append(model.loss(images))
        metrics = model.logged_metrics()
    assert set(metrics) == {"nll", "kl", "diversity", "codes_used", "tau"}
    assert 1 <= metrics["codes_used"] <= 32 and 0.0 <= metrics["diversity"] <= 1.0
    assert (losses[1] - losses[0]).item() == pytest.approx(2.0 * metrics["diversity"], rel=1e-4)


def _run(out, stage, steps, **extra):
    from t2i_dalle.train import DalleTrainer

    from t2i.training import TrainConfig

    options = {o.keyword: o.default for o in DalleTrainer.options}
    options.update(stage=stage, tiny=True, images=16, workers=1, **extra)
    config = TrainConfig(steps=steps, batch_size=4, lr=1e-3, save_every=1, log_every=1,
                         device="cpu")  # fmt: skip
    return DalleTrainer().run(config, out, **options)


@pytest.mark.slow
def test_both_stages_train_resume_and_give_a_folder_the_recipe_runs(tmp_path):
    from t2i_dalle import plugin

    from t2i import Engine
    from t2i.testing import make_manager

    vae = _run(tmp_path / "vae", "vae", 2)
    state = torch.load(tmp_path / "vae" / "dalle-vae.state.pt", weights_only=False)
    assert int(state["model"]["step"]) == 2
    _run(tmp_path / "vae", "vae", 3)  # resumes: one more step, the schedule's counter goes on
    state = torch.load(tmp_path / "vae" / "dalle-vae.state.pt", weights_only=False)
    assert int(state["model"]["step"]) == 3
    model = _run(tmp_path / "prior", "prior", 2, dvae=str(vae))
    pipe = Engine.build("dalle-shapes", plugins=make_manager(plugin), checkpoint=model)
    assert pipe("a red circle", seed=0).images[0].size == (64, 64)
    # --init continues the prior from that folder (its dVAE too), a different config is refused
    from t2i_dalle.checkpoint import load_dalle

    again = _run(tmp_path / "again", "prior", 1, init=str(model))
    spec = load_dalle(again).spec["training"]["prior"]
    assert (spec["init"]["folder"], spec["init"]["steps"], spec["steps"]) == (str(model), 2, 1)
    # each stage records its device and minutes; a continued prior keeps the earlier record,
    # so t2i compare adds up the whole chain: vae 2 steps + prior 2 + prior 1
    from t2i.compare.measure import training_compute

    compute = training_compute(again)
    assert (compute.runs, compute.untimed_runs, compute.cpu_seconds is not None) == (3, 0, True)
    assert spec["device"] == "cpu" and spec["minutes"] >= 0
    from t2i.training import TrainOptionsError

    with pytest.raises(TrainOptionsError, match="differs from this run"):
        _run(tmp_path / "other", "prior", 1, init=str(model), attn="row")
