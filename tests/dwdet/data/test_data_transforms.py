import pytest
import torch

from dwdet.data.transforms import RandomFlips, hflip, transpose, vflip


def painted(boxes, height=24, width=37):
    """An image whose channel k is 1 exactly inside integer box k (xyxy, x2/y2 exclusive)."""
    image = torch.zeros(len(boxes), height, width)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        image[k, y1:y2, x1:x2] = 1
    return image, {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.arange(len(boxes)),
                   "image_id": 3}


def content_box(channel):
    rows, cols = torch.nonzero(channel.any(dim=1)).flatten(), torch.nonzero(channel.any(dim=0)).flatten()
    return [cols[0].item(), rows[0].item(), cols[-1].item() + 1, rows[-1].item() + 1]


def test_flipped_boxes_match_flipped_content():
    image, target = painted([[0, 2, 5, 9], [30, 0, 37, 24], [11, 5, 12, 6]])
    flipped, flipped_target = hflip(image, target)
    for channel, box in zip(flipped, flipped_target["boxes"].tolist()):
        assert content_box(channel) == box
    assert flipped_target["boxes"].tolist()[0] == [32, 2, 37, 9]
    assert flipped_target["labels"] is target["labels"] and flipped_target["image_id"] == 3
    twice, twice_target = hflip(flipped, flipped_target)
    assert torch.equal(twice, image) and torch.equal(twice_target["boxes"], target["boxes"])


def test_flip_keeps_an_image_without_boxes_valid():
    image = torch.rand(3, 5, 8)
    flipped, target = hflip(image, {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)})
    assert target["boxes"].shape == (0, 4) and torch.equal(flipped, image.flip(-1))


@pytest.mark.parametrize("flip, mirror, first_box", [(vflip, lambda x: x.flip(-2), [0, 15, 5, 22]),
                                                     (transpose, lambda x: x.transpose(-1, -2), [2, 0, 9, 5])])
def test_vertical_flip_and_transpose_move_boxes_with_the_content(flip, mirror, first_box):
    image, target = painted([[0, 2, 5, 9], [30, 0, 37, 24], [11, 5, 12, 6]])
    moved, moved_target = flip(image, target)
    assert torch.equal(moved, mirror(image)) and moved_target["boxes"].tolist()[0] == first_box
    for channel, box in zip(moved, moved_target["boxes"].tolist()):
        assert content_box(channel) == box
    twice, twice_target = flip(moved, moved_target)
    assert torch.equal(twice, image) and torch.equal(twice_target["boxes"], target["boxes"])
    empty = flip(image, {"boxes": torch.zeros(0, 4)})[1]["boxes"]
    assert empty.shape == (0, 4)


def test_random_flips_rate_and_seeding():
    image, target = painted([[0, 2, 5, 9]])
    assert torch.equal(RandomFlips(0.0)(image, target)[0], image)
    assert torch.equal(RandomFlips(1.0)(image, target)[0], image.flip(-1))
    flip = RandomFlips()

    def draws(seed):
        torch.manual_seed(seed)
        return [not torch.equal(flip(image, target)[0], image) for _ in range(400)]

    assert draws(1) == draws(1)
    assert 160 < sum(draws(1)) < 240  # p = 0.5; 400 draws are within 4 sigma of 200
    # a flip at probability 0 draws nothing: the left-right flip alone draws what it always drew
    torch.manual_seed(5)
    flip(image, target)
    after_flip = torch.rand(())
    torch.manual_seed(5)
    torch.rand(())
    assert torch.equal(torch.rand(()), after_flip)
    with pytest.raises(ValueError, match=r"data.vflip: a probability must be in \[0, 1\], got 1.5"):
        RandomFlips(0.5, 1.5)


def test_all_three_flips_give_each_symmetry_of_a_square():
    image, target = painted([[0, 2, 5, 9]], height=16, width=16)
    symmetries = [image, *(image.rot90(k, dims=(-2, -1)) for k in (1, 2, 3))]
    symmetries += [s.flip(-1) for s in symmetries]
    counts = [0] * 8
    torch.manual_seed(0)
    flips = RandomFlips(0.5, 0.5, 0.5)
    for _ in range(800):
        flipped, flipped_target = flips(image, target)
        counts[next(k for k, s in enumerate(symmetries) if torch.equal(s, flipped))] += 1
        assert content_box(flipped[0]) == flipped_target["boxes"][0].tolist()
    assert all(60 < c < 140 for c in counts)  # 100 each expected; 4 sigma is about 37
