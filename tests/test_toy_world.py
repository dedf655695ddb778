"""toy.world: determinism, disjoint splits, QA consistent with the geometry; toy.oracle on ground truth."""

import random

import numpy as np
import pytest

from toy import oracle, world
from toy.world import QTYPES, SHAPES, Obj, Scene


def test_same_seed_same_scene_and_bytes():
    for i in range(5):
        a, b = world.make_scene("train", i), world.make_scene("train", i)
        assert a == b
        assert world.render(a).tobytes() == world.render(b).tobytes()
        assert world.questions(a) == world.questions(b)
    assert world.make_scene("train", 0) != world.make_scene("train", 1)


def test_splits_use_disjoint_streams():
    train = {repr(world.make_scene("train", i)) for i in range(50)}
    test = {repr(world.make_scene("test", i)) for i in range(50)}
    assert not train & test
    with pytest.raises(ValueError):
        world.make_scene("nope", 0)


def test_render_is_64x64_rgb_with_neutral_background():
    scene = world.make_scene("train", 3)
    image = world.render(scene)
    assert image.size == (64, 64) and image.mode == "RGB"
    arr = np.asarray(image).astype(int)
    corner = arr[0, 0]
    if not any(o.cell == 0 for o in scene.objects):
        assert corner.max() - corner.min() == 0  # grey noise keeps the background neutral


def test_scene_validation():
    with pytest.raises(ValueError):
        Scene(objects=(Obj("circle", "red", "large", 0, 0), Obj("square", "red", "large", 0, 0)))
    with pytest.raises(ValueError):
        Scene(objects=(Obj("blob", "red", "large", 0, 0),))


def test_questions_match_geometry():
    for i in range(100):
        scene = world.make_scene("train", i)
        qas = world.questions(scene)
        assert {qa.qtype for qa in qas} == set(QTYPES)
        assert len({o.shape for o in scene.objects}) == len(scene.objects)  # "the circle" is unambiguous
        for qa in qas:
            q = qa.question
            if qa.qtype == "colour":
                shape = next(s for s in SHAPES if f"the {s}?" in q)
                assert scene.find(shape).colour == qa.answer
            elif qa.qtype == "shape":
                position = q.split("at the ")[1].rstrip("?")
                assert scene.at(position).shape == qa.answer
            elif qa.qtype == "position":
                shape = next(s for s in SHAPES if f"{s}?" in q)
                assert scene.find(shape).position == qa.answer
            elif qa.qtype == "count":
                assert qa.answer == world.NUMBERS[len(scene.objects)]
            elif qa.qtype == "exists":
                words = q.removeprefix("is there a ").rstrip("?").removesuffix(" in the image").split()
                present = any(o.colour == words[0] and o.shape == words[1] for o in scene.objects)
                assert qa.answer == ("yes" if present else "no")
            else:
                assert qa.answer == world.caption(scene)
            if qa.qtype != "describe":
                assert " " not in qa.answer


def test_items_are_deterministic_and_balanced():
    items = world.vqa_items(24)
    assert [it.qtype for it in items[:6]] == list(QTYPES)
    again = world.vqa_items(12)
    assert [(it.question, it.answer) for it in again] == [(it.question, it.answer) for it in items[:12]]
    prompts = world.t2i_items(30)
    assert {(p.colour, p.shape) for p in prompts} == {(c, s) for c in world.COLOURS for s in SHAPES}
    assert all(p.prompt == f"a {p.colour} {p.shape}" for p in prompts)


def test_oracle_answers():
    assert oracle.grade_answer(" Red.", "red")
    assert oracle.grade_answer("Top left", "top-left")
    assert oracle.grade_answer("2", "two")
    assert oracle.grade_answer("centre", "center")
    assert not oracle.grade_answer("blue", "red")


def test_oracle_detects_ground_truth_scenes():
    for i in range(60):
        scene = world.make_scene("test", i)
        found = sorted(
            (d.shape, d.colour, d.position, d.size) for d in oracle.detect_objects(world.render(scene))
        )
        assert found == sorted((o.shape, o.colour, o.position, o.size) for o in scene.objects)


def test_oracle_grades_generated_style_images():
    items = world.t2i_items(60, with_position=True, with_size=True)
    for it in items:
        grade = oracle.grade_image(world.render(it.scene), it.prompt)
        assert grade.both and grade.all_ok and grade.n_objects == 1
    rng = random.Random(0)
    for it in items:
        other_colour = rng.choice([c for c in world.COLOURS if c != it.colour])
        other_shape = rng.choice([s for s in SHAPES if s != it.shape])
        image = world.render(it.scene)
        assert not oracle.grade_image(image, f"a {other_colour} {it.shape}").colour_ok
        assert not oracle.grade_image(image, f"a {it.colour} {other_shape}").shape_ok
    blank = np.full((64, 64, 3), 200, dtype=np.uint8)
    grade = oracle.grade_image(blank, "a red circle at the top-left")
    assert not grade.both and grade.position_ok is False and grade.detected is None


def test_parse_description():
    d = oracle.parse_description("A large Red circle at the top left.")
    assert (d.size, d.colour, d.shape, d.position) == ("large", "red", "circle", "top-left")
    with pytest.raises(ValueError):
        oracle.parse_description("a dog")
