"""Every registered sampler, schedule and guidance is reachable through Engine.build."""

import pytest

from t2i import Engine
from t2i.registry import UnknownComponentError
from t2i.testing import make_manager, toy_plugin

MANAGER = make_manager(toy_plugin)


def _fitting(kind: str, contract: str) -> list[str]:
    return [
        e.name
        for e in MANAGER.registry.entries(kind)
        if not e.name.startswith("toy.") and e.model_contract in (None, contract)
    ]


SAMPLERS = _fitting("sampler", "diffusion")
SCHEDULES = MANAGER.registry.names("schedule")
GUIDANCE = _fitting("guidance", "diffusion")


def test_the_issue_list_is_registered():
    for name in (
        "ddpm",
        "ddim",
        "plms",
        "euler",
        "euler_ancestral",
        "heun",
        "dpm_2",
        "lms",
        "dpmpp_2m",
        "dpmpp_2m_sde",
        "dpmpp_sde",
        "unipc",
        "lcm",
    ):
        assert name in SAMPLERS
    for name in ("DDIM", "Euler a", "DPM++ 2M", "DPM++ 2M SDE", "DPM++ SDE", "UniPC", "LMS"):
        assert MANAGER.registry.has("sampler", name)
    assert {"cfg", "dynamic", "static", "rescale", "none"} <= set(GUIDANCE)
    assert {
        "karras",
        "exponential",
        "polyexponential",
        "leading",
        "trailing",
        "linspace",
        "simple",
        "ddim_uniform",
    } <= set(SCHEDULES)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_through_the_engine(sampler):
    pipe = Engine.build("toy-diffusion", plugins=MANAGER, sampler=sampler, guidance="cfg")
    a = pipe("a cube", seed=3, steps=4, negative_prompt="ugly")
    b = pipe("a cube", seed=3, steps=4, negative_prompt="ugly")
    assert a.images[0].tobytes() == b.images[0].tobytes()  # seeded, also the SDE ones


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_schedule_through_the_engine(schedule):
    pipe = Engine.build("toy-diffusion", plugins=MANAGER, sampler="euler", schedule=schedule)
    assert pipe("x", seed=1, steps=3).metadata["schedule_label"]


@pytest.mark.parametrize("guidance", GUIDANCE)
def test_every_guidance_through_the_engine(guidance):
    pipe = Engine.build("toy-diffusion", plugins=MANAGER, sampler="euler", guidance=guidance)
    assert len(pipe("x", seed=1, steps=3, batch_size=2).images) == 2


def test_web_ui_combined_name_picks_schedule():
    pipe = Engine.build("toy-diffusion", plugins=MANAGER, sampler="DPM++ 2M Karras")
    result = pipe("x", seed=2, steps=3)
    assert result.metadata["sampler_label"] == "DPM++ 2M"
    assert result.metadata["schedule_label"] == "Karras"
    assert "Schedule type: Karras" in result.infotexts[0]


def test_unknown_schedule_lists_names():
    with pytest.raises(UnknownComponentError, match="karras"):
        Engine.build("toy-diffusion", plugins=MANAGER, schedule="karas")


def test_schedules_come_from_the_pipelines_own_registry():
    """A schedule registered only in this manager (not the process-wide one) is found."""
    import torch

    from t2i.registry import hookimpl

    class Plugin:
        @hookimpl
        def t2i_register_schedules(self, register):
            class Ladder:
                def get_sigmas(self, model, steps):
                    return torch.cat(
                        [
                            torch.linspace(10.0, 0.1, steps, dtype=torch.float64),
                            torch.zeros(1, dtype=torch.float64),
                        ]
                    )

            register("test.ladder", Ladder)

    manager = make_manager(toy_plugin)
    manager.register_plugin(Plugin(), "ladder")
    pipe = Engine.build("toy-diffusion", plugins=manager, sampler="euler", schedule="test.ladder")
    assert len(pipe("x", seed=1, steps=3).images) == 1
