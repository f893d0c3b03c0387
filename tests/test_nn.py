"""The shared torch layer: field embeddings (shapes, index 0 is padding in every table: zero rows that get no
gradient, in every mean kernel), the item bag, the attention merge, early stopping keeping the best state in
both modes, the epoch loop, and state dicts written before the one padding convention still loading."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from lookalike_models.dataset import UserFields
from lookalike_models.nn.attention import AttentionMerge
from lookalike_models.nn.early_stopping import EarlyStopping
from lookalike_models.nn.fields import FieldEmbedding, FieldSizes, ItemBag, UserFeatures
from lookalike_models.nn.training import EpochPlan, train_epochs
from lookalike_models.pinterest.encoder_model import EncoderShape, StarSpaceUserEncoder

SIZES = FieldSizes(single=(4, 6), multi=(9,), n_continuous=3)
KERNELS = ["bag", "bag_sum", "gather"]


def features(n: int = 5) -> UserFeatures:
    """Row 0: everything missing; row 1: a multi row with padding between codes; others random."""
    gen = torch.Generator().manual_seed(0)
    single = torch.stack([torch.randint(1, 4, (n,), generator=gen), torch.randint(1, 6, (n,), generator=gen)], 1)
    multi = torch.randint(1, 9, (n, 4), generator=gen)
    single[0], multi[0] = 0, 0
    multi[1] = torch.tensor([3, 0, 5, 0])
    return UserFeatures(single, (multi,), torch.rand(n, 3, generator=gen))


@pytest.mark.parametrize("kernel", KERNELS)
def test_field_embedding_shapes_and_padding_gives_zeros(kernel):
    torch.manual_seed(0)
    emb = FieldEmbedding(SIZES, 8, mean=kernel)
    x = features()
    h = emb(x)
    assert h.shape == (5, emb.n_fields, 8) and emb.n_fields == 4
    assert torch.equal(h[0, :3], torch.zeros(3, 8))  # missing singles and an empty multi row: zero vectors
    table = emb.multi[0].weight
    torch.testing.assert_close(h[1, 2], (table[3] + table[5]) / 2)  # the mean of the non-padding codes
    assert FieldEmbedding(SIZES, 8, continuous_field=False, mean=kernel)(x).shape == (5, 3, 8)
    assert FieldEmbedding(SIZES, 8, mean=kernel).normal_(0.5).parts(x)[0].shape == (5, 8)


def test_mean_kernels_agree_and_bag_kernels_give_the_same_forward_bits():
    torch.manual_seed(0)
    emb = FieldEmbedding(SIZES, 8)
    x = features(50)
    out = {}
    for kernel in KERNELS:
        emb.mean_kernel = kernel
        out[kernel] = emb(x)
    assert torch.equal(out["bag"], out["bag_sum"])
    torch.testing.assert_close(out["bag"], out["gather"])


@pytest.mark.parametrize("kernel", KERNELS)
def test_padding_rows_stay_zero_and_get_no_gradient(kernel):
    torch.manual_seed(0)
    emb = FieldEmbedding(SIZES, 8, mean=kernel).normal_(1.0)
    tables = [*emb.single, *emb.multi]
    assert all(torch.equal(t.weight[0], torch.zeros(8)) for t in tables)
    emb(features()).pow(2).sum().backward()
    for table in tables:
        assert torch.equal(table.weight.grad[0], torch.zeros(8))
        assert table.weight.grad[1:].abs().sum() > 0


def test_normal_draws_the_same_numbers_as_a_plain_draw_then_zeroes_padding():
    emb = FieldEmbedding(SIZES, 8)
    torch.manual_seed(3)
    emb.normal_(0.1)
    torch.manual_seed(3)
    plain = [torch.empty(s, 8).normal_(0.0, 0.1) for s in (*SIZES.single, *SIZES.multi)]
    for table, drawn in zip([*emb.single, *emb.multi], plain):
        assert torch.equal(table.weight[1:], drawn[1:]) and not table.weight[0].any()


def test_item_bag_offsets_item_codes_by_one_and_pools_flat_or_padded_bags():
    torch.manual_seed(0)
    bag = ItemBag(10, 4)
    assert bag.weight.shape == (11, 4) and not bag.weight[0].any()
    items = torch.tensor([0, 9, 4])
    assert torch.equal(bag.items(items), bag.weight[items + 1]) and torch.equal(bag.item_rows[items], bag.items(items))
    codes = torch.tensor([[1, 10, 0], [5, 0, 0]])  # item_idx + 1, 0 = padding
    weights = torch.tensor([[0.5, 2.0, 0.0], [1.0, 0.0, 0.0]])
    padded = bag.pool(codes, weights)
    flat = bag.pool(torch.tensor([1, 10, 5]), torch.tensor([0.5, 2.0, 1.0]), torch.tensor([0, 2]))
    torch.testing.assert_close(padded, flat)
    torch.testing.assert_close(padded[0], 0.5 * bag.weight[1] + 2.0 * bag.weight[10])
    torch.testing.assert_close(bag.pool(codes)[0], (bag.weight[1] + bag.weight[10]) / 2)
    bag.pool(codes).sum().backward()
    assert not bag.weight.grad[0].any()


def test_user_features_from_fields_rows_and_profile_free():
    users = UserFields(
        ["a"], ["m1", "m2"], ["c"], np.array([[1], [2], [0]]), [3], [np.ones((3, 2), np.int64)] * 2, [2, 2],
        np.zeros((3, 1), np.float32),
    )  # fmt: skip
    x = UserFeatures.of(users, multi=[1])
    assert x.n_users == 3 and len(x.multi) == 1 and x.single.dtype == torch.long
    rows = x.rows(np.array([2, 0]))
    assert rows.single[:, 0].tolist() == [0, 1] and rows.continuous.shape == (2, 1)
    bare = x.profile_free()
    assert bare.single.shape == (3, 0) and bare.multi == () and bare.continuous.shape == (3, 0)
    assert FieldSizes.of(users) == FieldSizes((3,), (2, 2), 1)


def test_attention_merge_weights_sum_to_one_and_merge_the_fields():
    torch.manual_seed(0)
    merge = AttentionMerge(8, 4)
    h = torch.randn(5, 3, 8)
    merged, a = merge(h)
    assert merged.shape == (5, 8) and a.shape == (5, 3)
    torch.testing.assert_close(a.sum(1), torch.ones(5))
    torch.testing.assert_close(merged, (a.unsqueeze(-1) * h).sum(1))
    assert a.std(0).max() > 1e-3  # the weights depend on the row's own fields


def mark(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        model.weight.fill_(value)


@pytest.mark.parametrize(
    ("mode", "values", "best", "stops_at"),
    [("min", [3.0, 2.0, 2.5, 2.6, 1.0], 2.0, 4), ("max", [0.1, 0.4, 0.3, 0.2, 0.9], 0.4, 4)],
)
def test_early_stopping_keeps_the_best_state_in_both_modes(mode, values, best, stops_at):
    model = nn.Linear(1, 1, bias=False)
    stopper = EarlyStopping(model, patience=2, mode=mode, min_delta=0.0)
    stopped = None
    for epoch, value in enumerate(values, 1):
        mark(model, value)  # the weight remembers which epoch it is
        if stopper.stop(model, value):
            stopped = epoch
            break
    assert stopped == stops_at and stopper.best == best
    stopper.restore(model)
    assert model.weight.item() == pytest.approx(best)


def test_epoch_loop_restores_the_best_epoch_and_counts_a_nan_start_as_no_epoch():
    model = nn.Linear(1, 1, bias=False)
    values = iter([0.5, 0.3, 0.2, 0.25, 0.26, 0.1])  # start, then epochs 1..5

    def run_epoch(epoch, progress):
        mark(model, epoch)
        progress.advance()
        return 1.0 / epoch

    curve = train_epochs(
        model, EpochPlan("t", 9, 1, value="err"), run_epoch, lambda: next(values), EarlyStopping(model, 2)
    )
    assert [e["err"] for e in curve.epochs] == [0.5, 0.3, 0.2, 0.25, 0.26]
    assert curve.best_epoch == 2 and model.weight.item() == 2 and curve.epochs[0]["epoch"] == 0
    assert not model.training

    mark(model, -1.0)
    nan = train_epochs(
        model, EpochPlan("t", 9, 1), run_epoch, lambda: math.nan, EarlyStopping(model, 2, "max", min_delta=0.0)
    )
    assert len(nan.epochs) == 3 and nan.best_epoch == 0 and model.weight.item() == -1.0  # the start is kept
    last = train_epochs(model, EpochPlan("t", 3, 1), run_epoch, lambda: math.nan)
    assert len(last.epochs) == 4 and last.best_epoch == 3 and model.weight.item() == 3


def roundtrip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_field_tables_of_an_older_state_dict_load_with_a_zero_padding_row():
    torch.manual_seed(0)
    emb = FieldEmbedding(SIZES, 8).normal_(0.1)
    old = emb.state_dict()
    old["single.0.weight"] = old["single.0.weight"].clone()
    old["single.0.weight"][0] = 1.0  # a trained missing-value row, as version 1 kept it
    old._metadata[""]["version"] = 1
    fresh = FieldEmbedding(SIZES, 8)
    fresh.load_state_dict(roundtrip(old))
    assert not fresh.single[0].weight[0].any() and torch.equal(fresh.single[0].weight[1:], emb.single[0].weight[1:])
    again = FieldEmbedding(SIZES, 8)
    again.load_state_dict(roundtrip(emb.state_dict()))  # the current version loads as it is
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), emb.state_dict().values()))


@pytest.mark.parametrize("share", [True, False])
def test_a_starspace_encoder_saved_before_the_shared_layer_loads_into_the_new_one(share):
    """Version 1 kept the fields at the top level and the item padding row last."""
    torch.manual_seed(0)
    sizes = FieldSizes((4, 6), (9,), 4)
    model = StarSpaceUserEncoder(sizes, 12, EncoderShape(dim=8, field_dim=4, share_embeddings=share))
    state = model.state_dict()
    old = type(state)()
    for key, value in state.items():
        old[key.removeprefix("fields.")] = value.roll(-1, 0) if key == "history.weight" else value
    old._metadata = type(state._metadata)({"": {"version": 1}})
    assert not old["history.weight"][-1].any()
    loaded = StarSpaceUserEncoder(sizes, 12, EncoderShape(dim=8, field_dim=4, share_embeddings=share))
    loaded.load_state_dict(roundtrip(old))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = features()
    x = UserFeatures(x.single, x.multi, torch.rand(5, 4))
    bag = loaded.bag(torch.tensor([0, 11, 3]), torch.ones(3), torch.tensor([0, 1, 3, 3, 3]))
    torch.testing.assert_close(loaded(x, bag, torch.ones(5)), model(x, bag, torch.ones(5)))


def test_the_packed_serving_rows_encode_users_as_training_does(synthetic_data):
    """The serving format pads history codes (item_idx + 1) with 0, like every table."""
    from lookalike_models.pinterest.encoder import EncoderConfig, encode_users, make_encoder
    from lookalike_models.pinterest.encoder_inputs import organic_mask, user_inputs
    from lookalike_models.pinterest.serving import pack_inputs, packed_encoder

    cfg = EncoderConfig(dim=8, field_dim=4)
    torch.manual_seed(0)
    model = make_encoder(synthetic_data, cfg)
    inputs = user_inputs(synthetic_data, organic_mask(synthetic_data), 50, True, "tfidf")
    users = np.arange(200)
    packed = torch.as_tensor(pack_inputs(inputs, users))
    with torch.no_grad():
        served = packed_encoder(model, inputs)(packed).numpy()
    np.testing.assert_allclose(served, encode_users(model, inputs)[users], atol=1e-5)
    x = inputs.features
    fields = x.single.shape[1] + sum(m.shape[1] for m in x.multi) + x.continuous.shape[1]
    codes, weights = packed[:, fields:].chunk(2, dim=1)
    assert torch.equal(codes == 0, weights == 0) and codes.max() <= synthetic_data.n_items
