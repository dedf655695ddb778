"""The shipped toy CLIP loads with open_clip's own loader and picks the right captions; the toy
training commands run end to end (a few steps each) and write checkpoints the real loaders read."""

import json

from toy import CHECKPOINTS, world

TOY_CLIP = CHECKPOINTS / "toy-clip"


def test_toy_clip_loads_with_open_clip_and_picks_captions():
    import open_clip

    from toy.clip import load_clip, zero_shot_single

    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{TOY_CLIP}")
    assert model.visual.grid_size == (8, 8)
    clip = load_clip(TOY_CLIP)
    acc = zero_shot_single(clip, n=30, split="test")
    assert acc["both"] >= 0.8, acc
    items = world.t2i_items(6)
    images = [world.render(it.scene) for it in items]
    scores = clip.clip_score(images, [it.prompt for it in items])
    wrong = clip.clip_score(images, [it.prompt for it in items[1:] + items[:1]])
    assert (scores > wrong).float().mean() >= 0.8


def test_training_commands_run(tmp_path):
    """A few steps of each training command on a small pool, end to end (weights, loaders, report)."""
    from models import load_language_model, load_vision_tower
    from toy import train_clip, train_vlm

    clip_dir, vlm_dir = tmp_path / "clip", tmp_path / "vlm"
    train_clip.main(["--out", str(clip_dir), "--steps", "2", "--batch-size", "8", "--n-multi", "40",
                     "--n-groups", "4", "--eval-every", "0", "--eval-items", "12", "--threads", "1"])  # fmt: skip
    assert json.loads((clip_dir / "training.json").read_text())["steps"] == 2
    train_vlm.main(["--clip", str(clip_dir), "--out", str(vlm_dir), "--steps", "2", "--batch-size", "4",
                    "--train-tower", "--eval-every", "0", "--eval-items", "6", "--val-items", "12",
                    "--threads", "1", "--run-dir", str(tmp_path / "run")])  # fmt: skip
    assert load_vision_tower(vlm_dir).num_patches == 64
    assert load_language_model(vlm_dir).model_id == "toy-vlm"
    report = json.loads((vlm_dir / "training.json").read_text())
    assert set(report["heldout_exact_match"]) == {"keep_1.0", "keep_0.5", "keep_0.25"}


def test_diffusion_training_command_runs(tmp_path):
    """Two steps of each stage of ``python -m toy.train_diffusion``: an SD directory DenoiserEngine loads."""
    from denoisers import DenoiserEngine
    from toy import train_diffusion

    out = tmp_path / "sd"
    train_diffusion.main(["--out", str(out), "--n-images", "16", "--vae-steps", "2", "--vae-batch", "4",
                          "--unet-steps", "2", "--unet-batch", "4", "--warmup-steps", "1", "--no-eval"])  # fmt: skip
    record = json.loads((out / "training.json").read_text())
    assert record["config"]["unet_steps"] == 2 and set(record["vae_round_trip_oracle"]) == {"colour", "shape", "both"}
    engine = DenoiserEngine.from_pretrained(out)
    assert engine.vae_scale_factor == 4 and engine.unet.config.sample_size == 16
