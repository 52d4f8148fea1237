"""Tests for the batched augmentations.

Test images encode position: pixel (c, i, j) holds ``c * 10000 + i * 100 + j`` (float), so the offset a crop or shift
used can be read off its output and the whole output compared with the corresponding slice of the input.
"""

from __future__ import annotations

import pytest
import torch

from kprl.rl.augment import Augmentation, center_crop, random_crop, random_shift

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def coded(batch: int, channels: int, size: int, device: str = "cpu") -> torch.Tensor:
    c = torch.arange(channels).view(channels, 1, 1) * 10000
    i = torch.arange(size).view(1, size, 1) * 100
    j = torch.arange(size).view(1, 1, size)
    return (c + i + j).float().expand(batch, -1, -1, -1).contiguous().to(device)


def gen(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_shapes_and_dtypes(device: str, dtype: torch.dtype) -> None:
    x = torch.randint(0, 256, (8, 9, 100, 100), device=device).to(dtype)
    for out in (random_crop(x, 84), center_crop(x, 84)):
        assert out.shape == (8, 9, 84, 84) and out.dtype == dtype and out.device == x.device
    shifted = random_shift(x[..., :84, :84], pad=4)
    assert shifted.shape == (8, 9, 84, 84) and shifted.dtype == dtype


@pytest.mark.parametrize("device", DEVICES)
def test_random_crop_is_a_slice_with_one_offset_per_sample(device: str) -> None:
    x = coded(32, 9, 20, device)
    out = random_crop(x, 12, gen(0))
    top = (out[:, 0, 0, 0] // 100).long()
    left = (out[:, 0, 0, 0] % 100).long()
    for b in range(32):
        # Comparing all channels checks that every frame of the stack got the same offset.
        assert torch.equal(out[b], x[b, :, top[b] : top[b] + 12, left[b] : left[b] + 12])
    offsets = set(zip(top.tolist(), left.tolist(), strict=True))
    assert len(offsets) > 10, "offsets should differ across the batch"
    assert 0 <= top.min() and top.max() <= 8 and 0 <= left.min() and left.max() <= 8


def test_random_crop_uint8_matches_float_with_same_generator() -> None:
    x = torch.randint(0, 256, (16, 6, 20, 20), dtype=torch.uint8)
    assert torch.equal(random_crop(x, 12, gen(3)).float(), random_crop(x.float(), 12, gen(3)))


def test_random_crop_covers_all_offsets() -> None:
    out = random_crop(coded(2000, 1, 10), 7, gen(1))
    top = (out[:, 0, 0, 0] // 100).long()
    left = (out[:, 0, 0, 0] % 100).long()
    assert set(top.tolist()) == {0, 1, 2, 3} and set(left.tolist()) == {0, 1, 2, 3}


def test_random_crop_non_square_input() -> None:
    x = coded(4, 2, 20)[..., :15]  # 20 x 15
    out = random_crop(x, 15, gen(0))
    assert (out[:, 0, 0, 0] % 100 == 0).all()  # no horizontal room: left offset must be 0


def test_center_crop_is_deterministic() -> None:
    x = coded(3, 2, 100)
    out = center_crop(x, 84)
    assert torch.equal(out, x[:, :, 8:92, 8:92])
    assert torch.equal(out, center_crop(x, 84))
    assert torch.equal(center_crop(coded(1, 1, 101), 84), coded(1, 1, 101)[:, :, 8:92, 8:92])
    assert torch.equal(center_crop(x, 100), x)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pad", [1, 4])
def test_random_shift_is_integer_shift_of_replicate_padded_image(device: str, pad: int) -> None:
    size = 16
    x = coded(64, 3, size, device)
    out = random_shift(x, pad, gen(0))
    assert out.shape == x.shape
    # Reference padding built independently of the implementation: clamped indices repeat the edge pixels.
    idx = torch.arange(-pad, size + pad, device=device).clamp(0, size - 1)
    padded = x[:, :, idx][:, :, :, idx]
    # Output pixel (pad, pad) is never clamped, so it reads off the window's corner in the padded image.
    dy = (out[:, 0, pad, pad] // 100).long()
    dx = (out[:, 0, pad, pad] % 100).long()
    for b in range(64):
        assert torch.equal(out[b], padded[b, :, dy[b] : dy[b] + size, dx[b] : dx[b] + size])
    shifts = torch.stack([dy, dx]) - pad
    assert shifts.abs().max() <= pad
    assert len(set(zip(dy.tolist(), dx.tolist(), strict=True))) > 1, "shifts should differ across the batch"


def test_random_shift_covers_full_range_and_zero_pad_is_identity() -> None:
    pad = 2
    out = random_shift(coded(2000, 1, 8), pad, gen(5))
    dy = (out[:, 0, pad, pad] // 100).long() - pad
    assert set(dy.tolist()) == set(range(-pad, pad + 1))
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(random_shift(x, 0), x)


def test_uint8_shift_matches_float_with_same_generator() -> None:
    x = torch.randint(0, 256, (16, 6, 12, 12), dtype=torch.uint8)
    assert torch.equal(random_shift(x, 3, gen(7)).float(), random_shift(x.float(), 3, gen(7)))


def test_generator_reproducibility() -> None:
    x = torch.randint(0, 256, (32, 9, 24, 24), dtype=torch.uint8)
    assert torch.equal(random_crop(x, 16, gen(1)), random_crop(x, 16, gen(1)))
    assert not torch.equal(random_crop(x, 16, gen(1)), random_crop(x, 16, gen(2)))
    assert torch.equal(random_shift(x, 4, gen(1)), random_shift(x, 4, gen(1)))
    assert not torch.equal(random_shift(x, 4, gen(1)), random_shift(x, 4, gen(2)))
    torch.manual_seed(0)
    a = random_crop(x, 16)
    torch.manual_seed(0)
    assert torch.equal(a, random_crop(x, 16))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_generator_with_cuda_images() -> None:
    x = torch.randint(0, 256, (8, 3, 20, 20), dtype=torch.uint8)
    on_gpu = random_crop(x.cuda(), 12, gen(4))
    assert on_gpu.device.type == "cuda"
    assert torch.equal(on_gpu.cpu(), random_crop(x, 12, gen(4)))
    assert torch.equal(random_shift(x.cuda(), 2, gen(4)).cpu(), random_shift(x, 2, gen(4)))


def test_function_errors() -> None:
    x = torch.zeros(2, 3, 10, 10)
    with pytest.raises(ValueError, match="larger than"):
        random_crop(x, 11)
    with pytest.raises(ValueError, match="larger than"):
        center_crop(x, 11)
    with pytest.raises(ValueError, match="out_size"):
        random_crop(x, 0)
    with pytest.raises(ValueError, match="pad"):
        random_shift(x, -1)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        random_crop(torch.zeros(3, 10, 10), 8)


def test_augmentation_kinds() -> None:
    x = torch.randint(0, 256, (4, 9, 100, 100), dtype=torch.uint8)
    crop = Augmentation("crop", 84)
    assert crop.out_size == 84
    assert crop.for_update(x, gen(0)).shape == (4, 9, 84, 84)
    assert torch.equal(crop.for_update(x, gen(0)), random_crop(x, 84, gen(0)))
    assert torch.equal(crop.for_acting(x), center_crop(x, 84))

    y = x[..., :84, :84]
    shift = Augmentation("shift", 84, pad=4)
    assert shift.out_size == 84
    assert torch.equal(shift.for_update(y, gen(0)), random_shift(y, 4, gen(0)))
    assert torch.equal(shift.for_acting(y), y)

    none = Augmentation("none", 84)
    assert torch.equal(none.for_update(y), y) and torch.equal(none.for_acting(y), y)
    assert none.for_update(y).dtype == torch.uint8


def test_augmentation_errors() -> None:
    with pytest.raises(ValueError, match="unknown augmentation kind"):
        Augmentation("flip", 84)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pad"):
        Augmentation("shift", 84, pad=-1)
    with pytest.raises(ValueError, match="out_size"):
        Augmentation("crop", 0)
    with pytest.raises(ValueError, match="larger than"):
        Augmentation("crop", 84).for_update(torch.zeros(1, 3, 64, 64))
    # Size-preserving kinds check the input against out_size, catching a render size / network size mismatch.
    with pytest.raises(ValueError, match="84x84"):
        Augmentation("shift", 84).for_update(torch.zeros(1, 3, 100, 100))
    with pytest.raises(ValueError, match="84x84"):
        Augmentation("none", 84).for_acting(torch.zeros(1, 3, 100, 100))
