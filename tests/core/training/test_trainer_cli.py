"""``t2i train FAMILY`` built from a registered trainer: options, usage errors, listing."""

import pytest
from click.testing import CliRunner

from t2i.testing import make_manager, toy_training
from t2i.testing.toy_training import ToyTrainer
from t2i.training import Trainer, TrainerOption
from t2i.training.cli import LOOP_OPTIONS, train_group, trainer_command
from t2i.training.state import load_state


def _toy():
    return trainer_command("toy", ToyTrainer())


def test_the_command_has_the_loop_and_the_family_options():
    names = {p.opts[0] for p in _toy().params}
    assert {o.name for o in LOOP_OPTIONS} | {"--out", "--rows", "--noise", "--delay"} == names
    steps = next(p for p in _toy().params if p.name == "steps")
    assert steps.default == ToyTrainer.defaults["steps"]  # the family's default wins


def test_a_run_trains_saves_and_prints_the_model_folder(tmp_path):
    args = ["--out", str(tmp_path), "--steps", "4", "--save-every", "2", "--grad-accum", "2"]
    result = CliRunner().invoke(_toy(), [*args, "--ema-decay", "0.5", "--bf16"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "model")
    assert (tmp_path / "model" / toy_training.FILE).is_file()
    state = load_state(tmp_path / "toy.state.pt")
    assert state["step"] == 4 and state["ema"]["decay"] == 0.5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lr", "-1"], "error: --lr must be > 0, got -1.0: pass a learning rate"),
        (["--batch-size", "6", "--grad-accum", "4"], "error: --batch-size 6 does not split"),
        (["--bf16", "--precision", "fp16"], "error: --bf16 contradicts --precision fp16"),
        (["--cooldown", "2"], "error: --cooldown must be in [0, 1]"),
        (["--rows", "0"], "error: --rows must be >= 1"),  # the family's own check
    ],
)
def test_bad_options_exit_2_with_one_line(tmp_path, args, message):
    result = CliRunner().invoke(_toy(), ["--out", str(tmp_path / "run"), *args])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [result.output.strip()]
    assert result.output.startswith(message)
    assert not (tmp_path / "run").exists()  # refused before any work


def test_the_batch_must_split_over_torchrun_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # checked before joining any process group
    result = CliRunner().invoke(_toy(), ["--out", str(tmp_path), "--batch-size", "3"])
    assert result.exit_code == 2 and "--nproc_per_node" in result.output


def test_the_group_lists_registered_trainers_and_skips_broken_ones():
    manager = make_manager(toy_training)
    manager.registry.add("trainer", "not-a-trainer", lambda: "nope", plugin="broken")
    group = train_group(lambda: manager)
    listing = CliRunner().invoke(group, ["--help"]).output
    assert "toy  Fit the toy regression" in listing
    assert CliRunner().invoke(group, ["not-a-trainer", "--help"]).exit_code == 2


def test_a_trainer_that_shadows_a_loop_option_is_refused():
    class Shadow(Trainer):
        """Shadows --lr."""

        options = (TrainerOption("--lr", float, 1.0),)

    class Unknown(Trainer):
        """Defaults an option that does not exist."""

        defaults = {"stepz": 3}  # noqa: RUF012

    for bad in (Shadow(), Unknown()):
        with pytest.raises(TypeError, match="trainer 'bad'"):
            trainer_command("bad", bad)
