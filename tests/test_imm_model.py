"""IMM networks: shapes for the options, where gradients flow, and the pair sampler / crops that feed them."""

import numpy as np
import pytest
import torch

from kprl.config import IMMConfig
from kprl.imm.pairs import PairSampler, centre_offset, crop_frames, crop_windows
from kprl.nets.imm import IMM, KeypointHead
from kprl.nets.keypoints import temporal_separation_loss


def frames(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("size", "cfg"),
    [
        (84, IMMConfig()),
        (84, IMMConfig(keypoints=1, norm="batch", mix_layers=3)),
        (64, IMMConfig(keypoints=5, num_conv_layers=2, num_filters=8, norm="instance", source_skip=True)),
        (33, IMMConfig(keypoints=2, num_conv_layers=3, num_filters=4)),
        (84, IMMConfig(keypoints=3, mix_layers=1, same_padding=True)),
        (33, IMMConfig(keypoints=2, num_conv_layers=3, num_filters=4, same_padding=True, source_skip=True)),
    ],
)
def test_shapes_for_every_option(size: int, cfg: IMMConfig) -> None:
    model = IMM(cfg, size)
    out = model(frames(2, size), frames(2, size, 1))
    side = model.map_size
    assert out.generated.shape == (2, 3, size, size)
    kp = out.keypoints
    assert kp.coords.shape == (2, cfg.keypoints, 2) and kp.score_maps.shape == (2, cfg.keypoints, side, side)
    assert kp.marginal_x.shape == (2, cfg.keypoints, side) and kp.gauss_maps.shape == (2, cfg.keypoints, side, side)
    assert (kp.coords.abs() <= 1).all()


def test_loss_trains_keynet_only_through_the_generator() -> None:
    model = IMM(IMMConfig(keypoints=2, num_conv_layers=2, num_filters=8), 32)
    loss, _ = model.loss(frames(4, 32), frames(4, 32, 1))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.keynet.head.score.weight.grad.abs().sum() > 0
    assert model.keynet.trunk.convs[0].weight.grad.abs().sum() > 0


def test_training_loss_is_the_mse_alone_unless_separation_is_weighted() -> None:
    torch.manual_seed(0)
    source, target = frames(4, 32), frames(4, 32, 1)
    model = IMM(IMMConfig(keypoints=3, num_conv_layers=2, num_filters=8), 32)
    total, parts = model.training_loss(source, target)
    torch.testing.assert_close(total, model.loss(source, target)[0])
    assert set(parts) == {"reconstruction"}

    model.cfg = IMMConfig(keypoints=3, num_conv_layers=2, num_filters=8, separation_weight=0.5, separation_sigma=0.2)
    total, parts = model.training_loss(source, target)
    torch.testing.assert_close(parts["reconstruction"], model.loss(source, target)[0])
    kp_source, kp_target = model.keynet(source).coords, model.keynet(target).coords
    expected = temporal_separation_loss(torch.stack([kp_source, kp_target], dim=1), 0.2)
    torch.testing.assert_close(parts["separation"], expected)
    torch.testing.assert_close(total, parts["reconstruction"] + 0.5 * expected)
    # The separation term alone trains KeyNet (through both frames' keypoints) and leaves GenNet alone.
    parts["separation"].backward()
    assert model.keynet.head.score.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.gennet.parameters())


def test_keypoint_head_as_encoder_head_gives_flat_coordinates() -> None:
    head = KeypointHead(in_channels=8, num_keypoints=3, sigma=0.1)
    maps = torch.randn(2, 8, 11, 11)
    flat = head(maps)
    assert head.out_dim == 6 and flat.shape == (2, 6)
    torch.testing.assert_close(flat, head.keypoints(maps).coords.flatten(1))


def test_bf16_autocast_forward_is_finite_and_close() -> None:
    torch.manual_seed(0)
    model = IMM(IMMConfig(keypoints=2, num_conv_layers=2, num_filters=8), 32)
    a, b = frames(2, 32), frames(2, 32, 1)
    loss32, out32 = model.loss(a, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss16, out16 = model.loss(a, b)
    assert torch.isfinite(loss16) and loss16.dtype == torch.float32
    torch.testing.assert_close(out16.keypoints.coords, out32.keypoints.coords, atol=0.05, rtol=0)


def test_pairs_stay_in_their_episode_within_the_offset_and_never_coincide() -> None:
    episode = np.repeat([3, 5, 7, 9], [10, 2, 1, 30])  # episode 7 has one frame: never drawn
    sampler = PairSampler(episode, np.array([3, 5, 7]), max_offset=4)
    src, tgt = sampler.sample(5000, np.random.default_rng(0))
    assert (episode[src] == episode[tgt]).all() and np.isin(episode[src], [3, 5]).all()
    offset = tgt - src
    assert (offset != 0).all() and (np.abs(offset) <= 4).all()
    assert set(np.unique(offset)) == {-4, -3, -2, -1, 1, 2, 3, 4}
    with pytest.raises(ValueError, match="at least 2 frames"):
        PairSampler(episode, np.array([7]), max_offset=2)


def test_min_offset_1_draws_the_pairs_of_a_plain_uniform_nonzero_offset() -> None:
    # Runs made before min_offset existed drew a uniform frame, then a uniform offset in [low, high] without 0, as
    # below; with min_offset 1 the same seed must give the same pairs, so that those runs can be reproduced.
    episode = np.repeat([0, 1, 2], [14, 3, 25])
    src, tgt = PairSampler(episode, np.array([0, 1, 2]), max_offset=10).sample(4000, np.random.default_rng(7))
    rng = np.random.default_rng(7)
    pick = rng.integers(0, len(episode), size=4000)
    starts = np.searchsorted(episode, episode[pick], side="left")
    ends = np.searchsorted(episode, episode[pick], side="right") - 1
    low, high = np.maximum(starts - pick, -10), np.minimum(ends - pick, 10)
    offset = low + (rng.random(4000) * (high - low)).astype(np.int64)
    offset = np.where(offset >= 0, offset + 1, offset)
    assert (src == pick).all() and (tgt == pick + offset).all()


def test_a_gap_keeps_near_pairs_out_and_skips_frames_without_a_far_partner() -> None:
    episode = np.repeat([3, 5, 9], [7, 3, 30])  # episode 5's frames are at most 2 apart: never drawn with a gap of 3
    sampler = PairSampler(episode, np.array([3, 5, 9]), max_offset=4, min_offset=3)
    src, tgt = sampler.sample(5000, np.random.default_rng(0))
    assert (episode[src] == episode[tgt]).all() and np.isin(episode[src], [3, 9]).all()
    offset = tgt - src
    assert set(np.unique(offset)) == {-4, -3, 3, 4}
    # Episode 3 (frames 0-6): frame 3 is 3 from both ends, so it is a source; every frame of it has a partner.
    assert set(np.unique(src[episode[src] == 3])) == set(range(7))
    with pytest.raises(ValueError, match="at least 4 frames"):
        PairSampler(episode, np.array([5]), max_offset=4, min_offset=3)
    with pytest.raises(ValueError, match="min_offset <= max_offset"):
        PairSampler(episode, np.array([3]), max_offset=2, min_offset=3)


def test_crops_share_the_window_and_centre_crop_matches_the_offset() -> None:
    data = np.arange(2 * 10 * 10 * 3, dtype=np.int64).reshape(2, 10, 10, 3).astype(np.uint8)
    windows = crop_windows(10, 10, 6, 2, np.random.default_rng(1))
    assert ((windows >= 0) & (windows <= 4)).all()
    a = crop_frames(data, np.array([0, 1]), windows, 6)
    top, left = windows[1]
    assert a.shape == (2, 3, 6, 6)
    np.testing.assert_array_equal(a[1].permute(1, 2, 0).numpy(), data[1, top : top + 6, left : left + 6])
    centre = crop_windows(10, 10, 6, 1, None)
    assert centre.tolist() == [[2, 2]] and centre_offset(10, 6) == 2
    with pytest.raises(ValueError):
        crop_windows(10, 10, 12, 1, None)


@pytest.mark.parametrize(
    ("size", "layers", "padded"), [(84, 4, False), (64, 2, False), (33, 3, False), (84, 4, True), (33, 3, True)]
)
def test_image_coords_put_map_cells_over_their_receptive_field_centres(size: int, layers: int, padded: bool) -> None:
    from kprl.nets.encoder import ConvTrunk
    from kprl.nets.keypoints import coordinate_grid, to_pixels

    trunk = ConvTrunk(3, size, layers, 2, padded=padded)
    if padded:
        assert trunk.out_shape[-1] == (size + 1) // 2
    for conv in trunk.convs:  # positive weights: every pixel in a receptive field gets a gradient
        torch.nn.init.constant_(conv.weight, 0.1)
        torch.nn.init.constant_(conv.bias, 0.1)
    side = trunk.out_shape[-1]
    grid = coordinate_grid(side)
    # Padded, the border cells' receptive fields are clipped by the image: take cells whose field lies inside.
    cells = [(4, 5), (side // 2, side - 5), (side - 5, 4)] if padded else [(0, 0), (side // 2, side - 1), (side - 1, 3)]
    for row, col in cells:
        x = torch.full((1, 3, size, size), 128.0, requires_grad=True)
        trunk(x)[0, :, row, col].sum().backward()
        rows, cols = torch.nonzero(x.grad[0].abs().sum(0), as_tuple=True)
        centre = torch.tensor([(cols.min() + cols.max()) / 2 + 0.5, (rows.min() + rows.max()) / 2 + 0.5])
        coords = trunk.image_coords(torch.tensor([[[grid[col], grid[row]]]]))
        torch.testing.assert_close(to_pixels(coords, size, size)[0, 0], centre)


def test_same_padding_lets_keypoints_reach_the_frame_edges() -> None:
    from kprl.nets.keypoints import to_pixels

    def reach(padded: bool) -> torch.Tensor:
        trunk = IMM(IMMConfig(keypoints=1, same_padding=padded), 84).keynet.trunk
        return to_pixels(trunk.image_coords(torch.tensor([[[-1.0, -1.0], [1.0, 1.0]]])), 84, 84)[0]

    torch.testing.assert_close(reach(False), torch.tensor([[7.5, 7.5], [75.5, 75.5]]))
    torch.testing.assert_close(reach(True), torch.tensor([[0.5, 0.5], [82.5, 82.5]]))
