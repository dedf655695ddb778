"""The toy VLM's training recipes: curriculum stages, distinct turns, the run directory, and that a
stopped and resumed run ends with the same weights as one that ran straight through."""

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from toy import world
from toy.run_state import RunDir
from toy.vlm_recipes import RECIPES, curriculum_scene, max_objects, parse_curriculum


def test_curriculum_stages_bound_the_object_count():
    stages = parse_curriculum("1:0.1,2:0.4")
    assert stages == [(1, 0.1), (2, 0.4)]
    assert [max_objects(stages, p) for p in (0.0, 0.09, 0.1, 0.39, 0.4, 0.99)] == [1, 1, 2, 2, None, None]
    assert parse_curriculum("") == []
    rng = random.Random(0)
    counts = {most: {len(curriculum_scene(rng, most).objects) for _ in range(200)} for most in (1, 2, None)}
    assert counts == {1: {1}, 2: {1, 2}, None: {1, 2, 3}}


@pytest.mark.parametrize("spec", ["1-0.1", "4:0.5", "1:0.5,2:0.2", "1:1.5"])
def test_bad_curriculum_is_rejected_naming_the_flag(spec):
    with pytest.raises(ValueError, match="--curriculum"):
        parse_curriculum(spec)


def test_recipes_set_known_flags_and_explicit_flags_win():
    from toy.train_vlm import build_parser, parse_args

    flags = {action.dest for action in build_parser()._actions}
    for name, values in RECIPES.items():
        assert set(values) <= flags, name
        recipe, args = parse_args(["--recipe", name])
        assert recipe == name and all(getattr(args, k) == v for k, v in values.items())
    _, args = parse_args(["--recipe", "curriculum-deep", "--layers", "2"])
    assert args.layers == 2 and args.heads == RECIPES["curriculum-deep"]["heads"]


def test_distinct_turns_never_repeat_a_question():
    from toy.train_vlm import sample_turns

    rng = random.Random(1)
    for i in range(50):
        scene = world.make_scene("train", i)
        available = len(world.questions(scene))
        turns = sample_turns(scene, rng, 20, distinct=True)
        keys = [(qa.qtype, qa.answer, qa.question.lower()) for qa in turns]
        assert len(turns) == available and len(set(keys)) == len(keys)


def test_run_dir_restores_state_and_drops_log_lines_after_the_checkpoint(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    rng = random.Random(5)
    run = RunDir(tmp_path)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched.step()
    run.log({"step": 1})
    run.save(1, {"m": model}, opt, sched, rng)
    expected_draw = rng.random()
    run.log({"step": 2})  # logged, but the run stops before checkpointing step 2

    fresh, again = torch.nn.Linear(3, 2), RunDir(tmp_path)
    opt2 = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 1.0 / (s + 1))
    rng2 = random.Random(0)
    assert again.restore({"m": fresh}, opt2, sched2, rng2) == 1
    torch.testing.assert_close(fresh.state_dict(), model.state_dict())
    assert sched2.get_last_lr() == sched.get_last_lr() and rng2.random() == expected_draw
    assert [r["step"] for r in again.records()] == [1]
    weights_only = torch.nn.Linear(3, 2)
    again.load_modules({"m": weights_only})  # --init-from: the weights without the optimizer
    torch.testing.assert_close(weights_only.state_dict(), model.state_dict())
    with pytest.raises(ValueError, match="modules"):
        again.restore({"other": fresh}, opt2, sched2, rng2)


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    from toy import train_vlm

    common = ["--recipe", "curriculum", "--steps", "4", "--batch-size", "2", "--max-turns", "2",
              "--eval-every", "2", "--val-items", "10", "--eval-items", "6", "--threads", "1",
              "--key-answer-loss", "1.0", "--relay-loss", "1.0"]  # fmt: skip
    train_vlm.main([*common, "--run-dir", str(tmp_path / "straight"), "--out", str(tmp_path / "a")])
    train_vlm.main([*common, "--run-dir", str(tmp_path / "split"), "--out", str(tmp_path / "b"), "--stop-at", "2"])
    assert not (tmp_path / "b").exists()
    train_vlm.main([*common, "--run-dir", str(tmp_path / "split"), "--out", str(tmp_path / "b"), "--resume"])
    for name in ("projector.safetensors", "vision_tower.safetensors", "language_model/model.safetensors"):
        a, b = load_file(tmp_path / "a" / name), load_file(tmp_path / "b" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    steps = [r["step"] for r in RunDir(tmp_path / "split").records()]
    assert steps == [2, 4]
    assert json.loads((tmp_path / "b" / "training.json").read_text())["recipe"] == "curriculum"


def test_training_curves_plot_from_run_logs(tmp_path):
    from toy.plot_training import plot

    run = RunDir(tmp_path / "run")
    for step in (250, 500):
        run.log({"step": step, "val": {"all": step / 1000, "colour@2": 0.5, "count": 0.9}})
    out = plot([run.path], tmp_path / "curves.png", "test", reference={"all": 0.7, "colour@2": 0.5}, reference_label="ref")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no metrics"):
        plot([tmp_path / "empty"], tmp_path / "x.png", "test")


def test_key_answer_loss_reads_the_answer_at_the_key_word():
    from toy.lookup_supervision import key_answer_loss, key_lookups, relay_loss

    ignore = -100
    ids = torch.tensor([[5, 7, 9, 11, 4, 2]])  # key token 7 at position 1; the answer " 4 </s>" from position 4
    labels = torch.tensor([[ignore, ignore, ignore, ignore, 4, 2]])
    lookups = key_lookups(ids, labels, [[(torch.ones(64, dtype=torch.bool), 7)]], ignore)
    assert lookups == [(0, 1, 3)] and key_lookups(ids, labels, [None], ignore) == []
    readout = lambda h: h  # (N, 12) residual dims read as logits over a 12-token vocabulary
    at_key, elsewhere = torch.zeros(1, 6, 12), torch.zeros(1, 6, 12)
    at_key[0, 1, 4] = 10.0  # the key word's residual names the answer
    elsewhere[0, 3, 4] = 10.0  # the answer-predicting position does, the key word does not
    low = key_answer_loss(at_key, readout, ids, lookups)
    high = key_answer_loss(elsewhere, readout, ids, lookups)
    assert low < 0.01 and high > 2.0 and key_answer_loss(at_key, readout, ids, []) == 0
    on_key, off_key = torch.zeros(1, 6, 6), torch.zeros(1, 6, 6)
    on_key[0, 3, 1], off_key[0, 3, 3] = 1.0, 1.0  # the answer position looks at the key word / at itself
    assert relay_loss(on_key, lookups) < 0.01 and relay_loss(off_key, lookups) > 5.0
