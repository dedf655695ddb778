"""Per-patch training targets of the toy VLM's tower, checked against the scene's own geometry."""

import numpy as np

from toy import patch_labels, world
from toy.world import Obj, Scene


def test_targets_follow_the_objects():
    scene = Scene(objects=(Obj("circle", "red", "large", 0, 0), Obj("square", "blue", "small", 2, 2)))
    targets = patch_labels.patch_targets(scene)  # (4, 64)
    colour, shape, cell, centre = targets.reshape(4, 8, 8)
    # the large circle sits around (10.7, 10.7) px: patches (0..2, 0..2); the square near (53.3, 53.3)
    assert colour[1, 1] == 1 + world.COLOURS.index("red") and shape[1, 1] == 1 + world.SHAPES.index("circle")
    assert cell[1, 1] == 1 + 0 and cell[6, 6] == 1 + 8
    assert colour[6, 6] == 1 + world.COLOURS.index("blue") and shape[6, 6] == 1 + world.SHAPES.index("square")
    assert (colour[3:5, 3:5] == patch_labels.BACKGROUND).all()  # the middle is empty
    assert centre.sum() == 2 and centre[1, 1] == 1 and centre[6, 6] == 1
    # labels agree with each other: a patch has all of colour, shape and cell or none of them
    assert ((colour > 0) == (shape > 0)).all() and ((shape > 0) == (cell > 0)).all()


def test_centre_flags_count_the_objects():
    for i in range(50):
        scene = world.make_scene("train", i)
        assert patch_labels.patch_targets(scene)[3].sum() == len(scene.objects)


def test_attention_target_is_a_distribution_over_object_patches():
    scene = world.make_scene("train", 1)
    targets = patch_labels.patch_targets(scene)
    attention = patch_labels.object_attention_target(targets)  # (64,)
    assert np.isclose(attention.sum(), 1.0)
    assert ((attention > 0) == (targets[1] > 0)).all()
    empty = patch_labels.object_attention_target(np.zeros((2, 4, 64), dtype=np.int64))  # batched, no objects
    assert np.allclose(empty, 1 / 64)
