"""Visual token pruners (encoders.pruning): contract shared by all, then each method on hand-made cases."""

import pytest
import torch
import torch.nn.functional as F

from encoders.pruning import PRUNERS, get_pruner, keep_count
from encoders.pruning.tome import merge_round
from encoders.pruning.visionzip import contextual_count
from triptych.errors import RequestError
from triptych.types import VisionFeatures

METHODS = sorted(PRUNERS)
SIZES = [(1, 1), (2, 1), (2, 2), (7, 1), (7, 3), (7, 7), (16, 4), (16, 15), (64, 1), (64, 11), (64, 64),
         (576, 64)]


def features(num_tokens: int, dim: int = 8, seed: int = 0, dtype=torch.float32) -> VisionFeatures:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randn(num_tokens, dim, generator=generator).to(dtype)
    attention = torch.rand(num_tokens, generator=generator).softmax(0)
    return VisionFeatures(tokens=tokens, cls_attention=attention)


def given(tokens, attention=None) -> VisionFeatures:
    tokens = torch.as_tensor(tokens, dtype=torch.float32)
    if attention is None:
        attention = torch.full((tokens.shape[0],), 1.0 / tokens.shape[0])
    return VisionFeatures(tokens=tokens, cls_attention=torch.as_tensor(attention, dtype=torch.float32))


# ---- the contract every pruner keeps ----

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("num_tokens", "keep"), SIZES)
def test_shape_order_and_dtype(method, num_tokens, keep):
    for dtype in (torch.float32, torch.bfloat16):
        feats = features(num_tokens, dtype=dtype)
        out = get_pruner(method)(feats, keep)
        expected = num_tokens if method == "none" else keep
        assert out.tokens.shape == (expected, 8)
        assert out.tokens.dtype == dtype
        assert out.positions.dtype == torch.int64 and out.positions.shape == (expected,)
        assert bool((out.positions[1:] > out.positions[:-1]).all())  # strictly ascending
        assert int(out.positions.min()) >= 0 and int(out.positions.max()) < num_tokens
        assert torch.isfinite(out.tokens.float()).all()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_keep_all_is_identity(method, dtype):
    feats = features(24, dtype=dtype)
    out = get_pruner(method)(feats, 24)
    assert out.tokens is feats.tokens  # bit-identical: the very tensor
    assert torch.equal(out.positions, torch.arange(24))


@pytest.mark.parametrize("method", METHODS)
def test_deterministic(method):
    feats = features(100, seed=3)
    first = get_pruner(method)(feats, 17)
    again = get_pruner(method)(VisionFeatures(feats.tokens.clone(), feats.cls_attention.clone()), 17)
    assert torch.equal(first.tokens, again.tokens) and torch.equal(first.positions, again.positions)


@pytest.mark.parametrize("method", METHODS)
def test_deterministic_with_ties(method):
    # All tokens identical and uniform attention: every similarity and attention score ties.
    feats = given(torch.ones(10, 4))
    outs = [get_pruner(method)(feats, 4) for _ in range(3)]
    assert all(torch.equal(o.positions, outs[0].positions) and torch.equal(o.tokens, outs[0].tokens) for o in outs)
    assert outs[0].tokens.shape[0] == (10 if method == "none" else 4)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("keep", [0, -1, 9, 1.5, True])
def test_bad_keep_raises(method, keep):
    with pytest.raises(ValueError):
        get_pruner(method)(features(8), keep)


@pytest.mark.parametrize("method", METHODS)
def test_bad_shapes_raise(method):
    with pytest.raises(ValueError):
        get_pruner(method)(VisionFeatures(torch.zeros(8), torch.zeros(8)), 2)
    with pytest.raises(ValueError):
        get_pruner(method)(VisionFeatures(torch.zeros(8, 4), torch.zeros(7)), 2)


@pytest.mark.parametrize("method", ["cls_attention", "divprune"])
def test_selecting_methods_return_input_rows(method):
    feats = features(40, seed=5)
    out = get_pruner(method)(feats, 9)
    assert torch.equal(out.tokens, feats.tokens[out.positions])


def test_unknown_method_is_a_request_error():
    with pytest.raises(RequestError) as caught:
        get_pruner("magic")
    assert caught.value.field == "pruning_method"
    for name in ("none", "cls_attention", "visionzip", "tome", "divprune"):
        assert name in caught.value.message
    with pytest.raises(RequestError) as caught:
        get_pruner("magic", field="options.pruning_method")
    assert caught.value.field == "options.pruning_method"


def test_registry_names():
    assert set(PRUNERS) == {"none", "cls_attention", "visionzip", "tome", "divprune"}


@pytest.mark.parametrize(("num_tokens", "ratio", "expected"), [
    (576, 1.0, 576), (576, 0.5, 288), (576, 0.25, 144), (576, 0.11, 64), (576, 0.05, 29),
    (576, 1e-9, 1), (1, 0.01, 1), (1, 1.0, 1), (30, 0.1, 3), (10, 0.7, 7), (7, 0.5, 4), (3, 0.999, 3),
])
def test_keep_count(num_tokens, ratio, expected):
    assert keep_count(num_tokens, ratio) == expected


# ---- none / cls_attention ----

def test_none_keeps_everything_whatever_keep():
    feats = features(12)
    out = get_pruner("none")(feats, 3)
    assert out.tokens is feats.tokens and torch.equal(out.positions, torch.arange(12))


def test_cls_attention_keeps_top_k():
    attention = torch.tensor([0.05, 0.30, 0.01, 0.20, 0.10, 0.25, 0.09])
    feats = given(torch.arange(14.0).reshape(7, 2), attention)
    out = get_pruner("cls_attention")(feats, 3)
    assert out.positions.tolist() == [1, 3, 5]
    assert torch.equal(out.tokens, feats.tokens[[1, 3, 5]])


def test_cls_attention_ties_go_to_lower_index():
    out = get_pruner("cls_attention")(given(torch.eye(6), [0.1, 0.3, 0.1, 0.3, 0.1, 0.1]), 3)
    assert out.positions.tolist() == [0, 1, 3]


# ---- visionzip ----

@pytest.mark.parametrize(("keep", "contextual"), [(1, 0), (2, 1), (6, 1), (7, 1), (16, 3), (64, 10),
                                                  (128, 20), (192, 30), (144, 23)])
def test_visionzip_split(keep, contextual):
    # the paper's 10 contextual per 64, rounded half up (16 -> 2.5 -> 3), at least 1 once keep >= 2
    assert contextual_count(keep) == contextual


def test_visionzip_dominant_and_contextual_groups():
    # 12 patches, K = 8 -> K_c = 1, K_d = 7: attention makes patches 0..6 dominant; the rest (7..11) all
    # join the single target, the first remaining patch (7).
    attention = torch.tensor([9, 8, 7, 6, 5, 4, 3, 0, 0, 0, 0, 0], dtype=torch.float32) / 100
    tokens = torch.arange(36.0).reshape(12, 3)
    out = get_pruner("visionzip")(given(tokens, attention), 8)
    assert out.positions.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    assert torch.equal(out.tokens[:7], tokens[:7])  # dominant tokens untouched
    assert torch.allclose(out.tokens[7], tokens[7:].mean(0))  # one target: the mean of all the rest


def test_visionzip_contextual_tokens_are_group_means():
    # N = 12, K = 10 -> K_c = 2, K_d = 8. Dominant: patches 0..7 (highest attention).
    # Rest (R = 4): positions 8, 9, 10, 11; step = 4 // 2 = 2,
    # targets at rest slots 0 and 2 -> positions 8 and 10. Tokens 9 and 11 join their most similar target.
    e = torch.eye(4)
    tokens = torch.zeros(12, 4)
    tokens[:8] = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    tokens[8] = e[0]                      # target A
    tokens[9] = 2 * e[1] + 0.1 * e[3]     # closest to target B
    tokens[10] = e[1]                     # target B
    tokens[11] = 3 * e[1]                 # closest to target B too
    attention = torch.cat([torch.linspace(1.0, 0.5, 8), torch.zeros(4)])
    out = get_pruner("visionzip")(given(tokens, attention), 10)
    assert contextual_count(10) == 2
    assert out.positions.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 10]
    assert torch.equal(out.tokens[:8], tokens[:8])
    assert torch.equal(out.tokens[8], e[0])  # target A kept alone: mean of a group of one
    assert torch.allclose(out.tokens[9], (tokens[9] + tokens[10] + tokens[11]) / 3)


def test_visionzip_keeps_top_dominant_by_attention():
    feats = features(64, seed=7)
    keep = 32  # K_c = 5, K_d = 27
    out = get_pruner("visionzip")(feats, keep)
    dominant = feats.cls_attention.topk(27).indices.tolist()
    assert set(dominant) <= set(out.positions.tolist())
    for position in dominant:
        row = out.positions.tolist().index(position)
        assert torch.equal(out.tokens[row], feats.tokens[position])


def test_visionzip_one_token_is_top_attention():
    feats = features(20, seed=2)
    out = get_pruner("visionzip")(feats, 1)
    top = int(feats.cls_attention.argmax())
    assert out.positions.tolist() == [top] and torch.equal(out.tokens[0], feats.tokens[top])


# ---- tome ----

def test_tome_merges_duplicates_first():
    # 8 orthogonal-ish patches; positions 2 (A) and 5 (B) are duplicates, as are 4 (A) and 7 (B).
    tokens = torch.eye(8) * torch.arange(1.0, 9.0)[:, None]
    tokens[5] = tokens[2]
    tokens[7] = tokens[4]
    out = get_pruner("tome")(given(tokens), 6)
    assert out.positions.tolist() == [0, 1, 3, 5, 6, 7]  # the A duplicates merged into their B twins
    assert torch.equal(out.tokens, tokens[[0, 1, 3, 5, 6, 7]])  # means of identical tokens are exact

    out = get_pruner("tome")(given(tokens), 7)  # only one merge: the first (lower A) of the tied pairs
    assert out.positions.tolist() == [0, 1, 3, 4, 5, 6, 7]


def test_tome_size_weighted_mean_across_rounds():
    # N = 4, K = 1. Round 1 (r = 2): A = {0, 2}, B = {1, 3}; 0 and 2 are closest to 1, so token 1 becomes
    # the mean of 0, 1, 2 with size 3. Round 2 (r = 1): A = {1}, B = {3}: the result sits at position 3 and
    # is the size-weighted mean (3 * m + x3) / 4 = the plain mean of all four (an unweighted mean would not be).
    tokens = torch.tensor([[1.0, 0.0], [1.0, 0.1], [2.0, 0.3], [0.0, 1.0]])
    out = get_pruner("tome")(given(tokens), 1)
    assert out.positions.tolist() == [3]
    assert torch.allclose(out.tokens[0], tokens.mean(0))
    assert not torch.allclose(out.tokens[0], (tokens[:3].mean(0) + tokens[3]) / 2)

    out = get_pruner("tome")(given(tokens), 2)
    assert out.positions.tolist() == [1, 3]
    assert torch.allclose(out.tokens, torch.stack([tokens[:3].mean(0), tokens[3]]))


def test_tome_merge_round_sizes():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    size = torch.tensor([1.0, 3.0, 2.0, 1.0, 5.0])
    positions = torch.tensor([0, 2, 5, 6, 9])
    # A = ranks {0, 2, 4}, B = ranks {1, 3}; r = 2: ranks 0 -> 1 and 2 -> 3 (cosine 1), rank 4 ties lower.
    new_x, new_size, new_positions = merge_round(x, size, positions, 2)
    assert new_positions.tolist() == [2, 6, 9]
    assert new_size.tolist() == [4.0, 3.0, 5.0]
    assert torch.equal(new_x, torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    # r = 3: rank 4 merges too, into B rank 1 (the first of two equal matches).
    new_x, new_size, new_positions = merge_round(x, size, positions, 3)
    assert new_positions.tolist() == [2, 6]
    assert new_size.tolist() == [9.0, 3.0]
    assert torch.allclose(new_x[0], (4 * torch.tensor([1.0, 0.0]) + 5 * torch.tensor([1.0, 1.0])) / 9)


def test_tome_total_mass_is_preserved():
    # Every patch ends up in exactly one output token, so the size-weighted sum is the input sum;
    # with K = 1 the single token is the mean of all patches.
    feats = features(50, seed=9)
    out = get_pruner("tome")(feats, 1)
    assert torch.allclose(out.tokens[0], feats.tokens.mean(0), atol=1e-5)


# ---- divprune ----

def test_divprune_one_token_per_cluster():
    generator = torch.Generator().manual_seed(4)
    centers = F.normalize(torch.randn(4, 16, generator=generator), dim=1) * 5
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 2, 2, 0, 1, 3, 3, 0, 1])
    tokens = centers[labels] + 0.01 * torch.randn(16, 16, generator=generator)
    out = get_pruner("divprune")(given(tokens), 4)
    assert sorted(labels[out.positions].tolist()) == [0, 1, 2, 3]
    assert torch.equal(out.tokens, tokens[out.positions])


def test_divprune_first_pick_and_greedy_order():
    # Unit vectors at angles 0, 10, 20, 90, 180 degrees (2-D): the loneliest token is 180 (min distance
    # to others: cos 90 -> 1.0), then the one farthest from it is 0 degrees (distance 2), then 90.
    angles = torch.deg2rad(torch.tensor([0.0, 10.0, 20.0, 90.0, 180.0]))
    tokens = torch.stack([angles.cos(), angles.sin()], dim=1)
    from encoders.pruning.divprune import max_min_diverse
    assert max_min_diverse(tokens, 3).tolist() == [4, 0, 3]
    out = get_pruner("divprune")(given(tokens), 3)
    assert out.positions.tolist() == [0, 3, 4]


def test_divprune_never_repeats_with_duplicates():
    tokens = torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 3)
    out = get_pruner("divprune")(given(tokens), 5)
    assert len(set(out.positions.tolist())) == 5
