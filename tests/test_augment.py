"""Augmentation: exact geometry on known cases, reproducibility, and digits that stay digits."""

import numpy as np
import pytest

from lenet5.augment import AUGMENTS, Augment, bilinear, join_draws, make_augment, not_one_digit, repen, smooth

RNG = np.random.default_rng(0)


def test_identity_transform_returns_the_images():
    images = RNG.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    same = Augment(shift=0, rotate_deg=0, scale=(1, 1), shear=0)
    np.testing.assert_array_equal(same(images, np.random.default_rng(1)), images)


def test_pure_shift_moves_pixels_by_whole_steps():
    image = np.zeros((1, 28, 28), np.float32)
    image[0, 10, 12] = 200
    coords = np.stack(np.meshgrid(np.arange(28), np.arange(28), indexing="ij"), -1)[None].astype(float)
    out = bilinear(image, coords - np.array([2.0, -3.0]))  # read 2 rows up, 3 columns right
    assert out[0, 12, 9] == 200 and out.sum() == 200


def test_bilinear_interpolates_and_is_zero_outside():
    image = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    coords = np.array([[[[0.5, 0.5], [1.0, 2.25], [-5.0, 1.0], [3.0, 3.5]]]])
    out = bilinear(image, coords)[0, 0]
    assert out[0] == pytest.approx((0 + 1 + 4 + 5) / 4)
    assert out[1] == pytest.approx(4 * 1 + 2.25)
    assert out[2] == 0  # far outside
    assert out[3] == pytest.approx(15 * 0.5)  # halfway into the zero border


def test_rotation_turns_a_bar_through_the_whole_range():
    """A horizontal bar through the centre, rotated by random angles in ±90°: each copy stays a
    bar of the same length, and its orientation (from image moments) covers the range, up to
    vertical. Nothing here depends on the order in which the transform draws its numbers."""
    images = np.zeros((64, 28, 28), np.uint8)
    images[:, 13:15, 6:22] = 255
    out = Augment(shift=0, rotate_deg=90, scale=(1, 1), shear=0)(images, np.random.default_rng(3)).astype(float)
    rows, cols = np.indices((28, 28)) - 13.5
    mass = out.sum(axis=(1, 2))
    mrr, mcc, mrc = ((out * m).sum(axis=(1, 2)) / mass for m in (rows * rows, cols * cols, rows * cols))
    angle = np.degrees(0.5 * np.arctan2(2 * mrc, mcc - mrr))  # of the principal axis, from the columns
    length = np.sqrt(12 * 0.5 * (mrr + mcc + np.hypot(mrr - mcc, 2 * mrc)))  # uniform bar: var = L²/12
    np.testing.assert_allclose(length, 16, atol=1.0)
    np.testing.assert_allclose(mass, mass[0], rtol=0.08)
    assert np.abs(angle).max() > 80 and np.abs(angle).min() < 10  # from near-horizontal to near-vertical


@pytest.mark.parametrize("name", ["affine", "elastic"])
def test_reproducible_and_mass_preserving(name, mini_dir):
    from lenet5 import load_dir

    images = load_dir(mini_dir).test.images[:64]
    aug = AUGMENTS[name]
    a = aug(images, np.random.default_rng(7))
    b = aug(images, np.random.default_rng(7))
    c = aug(images, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.uint8 and a.shape == images.shape
    ink = images.reshape(64, -1).sum(1).astype(float)
    ratio = a.reshape(64, -1).sum(1) / ink
    assert 0.7 < np.median(ratio) < 1.3  # the digit is moved and bent, not erased or smeared


@pytest.mark.parametrize("name", ["affine", "elastic", "lecun1998", "lecun1998-pool", "flip", "affine-pen",
                                  "affine-pen-junk"])
def test_joined_draws_give_the_images_of_separate_calls(name, mini_dir):
    """Training augments a chunk of steps in one call from each step's own draws: image for
    image, the same as calling the transform once per step with that step's generator."""
    from lenet5 import load_dir

    images = load_dir(mini_dir).test.images[:40]
    aug = make_augment(name)
    sizes = [1, 7, 32]  # steps of unequal size
    starts = np.cumsum([0] + sizes)
    separate = [aug(images[a:b], np.random.default_rng([4, k])) for k, (a, b) in enumerate(zip(starts, starts[1:]))]
    joined = aug.apply(images[:starts[-1]], join_draws([aug.draw(n, np.random.default_rng([4, k]))
                                                        for k, n in enumerate(sizes)]))
    np.testing.assert_array_equal(joined, np.concatenate(separate))
    assert not np.array_equal(joined, images[:starts[-1]])


def test_the_paper_pool_leaves_one_image_in_ten_as_it_is_and_distorts_the_rest_alike():
    """lecun1998-pool draws like the paper's 60,000 originals + 540,000 distortions: each image
    is its original with probability 0.1, else exactly what lecun1998 makes of it."""
    images = RNG.integers(0, 256, (4000, 28, 28), dtype=np.uint8)
    pooled = AUGMENTS["lecun1998-pool"](images, np.random.default_rng(5))
    distorted = AUGMENTS["lecun1998"](images, np.random.default_rng(5))
    clean = (pooled == images).all(axis=(1, 2))
    assert 0.085 < clean.mean() < 0.115  # 400 ± 19 expected
    np.testing.assert_array_equal(pooled[~clean], distorted[~clean])
    assert not (distorted == images).all(axis=(1, 2)).any()


def test_another_pen_makes_strokes_bolder_or_finer():
    """repen on a vertical bar 2 pixels wide: a low inking level gives a wider stroke, a high one
    a narrower one; more blur (a coarser picture) rounds its ends. The bar stays where it was."""
    bar = np.zeros((3, 28, 28), np.uint8)
    bar[:, 6:22, 13:15] = 255
    bold, fine, coarse = repen(bar, np.array([1.0, 1.0, 1.5]), np.array([0.1, 0.6, 0.1]))
    width = lambda im: int((im[14] > 127).sum())  # noqa: E731  (pixels across the bar's middle row)
    assert width(fine) <= 2 < width(bold)
    for im in (bold, fine):
        assert np.nonzero(im[14] > 127)[0].mean() == pytest.approx(13.5)
    assert (coarse > 127).any(axis=1).sum() > (bar[0] > 127).any(axis=1).sum()  # taller: ends blurred out
    assert bold.dtype == np.uint8 and bold.max() == 255


def test_affine_pen_is_affine_with_a_new_pen_for_some_images():
    """affine-pen draws the affine map as affine does, then its pen draws: the images it leaves
    with their own pen are exactly affine's, and about half get another pen."""
    images = RNG.integers(0, 256, (400, 28, 28), dtype=np.uint8)
    draws = AUGMENTS["affine-pen"].draw(400, np.random.default_rng(9))
    with_pen = AUGMENTS["affine-pen"].apply(images, draws)
    affine = AUGMENTS["affine"](images, np.random.default_rng(9))
    kept = ~draws["pen"]
    assert 0.4 < kept.mean() < 0.6
    np.testing.assert_array_equal(with_pen[kept], affine[kept])
    assert not (with_pen[~kept] == affine[~kept]).all(axis=(1, 2)).any()


def test_images_left_as_they_are_keep_their_own_pen():
    """``clean`` and ``pen`` together: an image drawn to be left as it is is exactly the original,
    whatever pen was drawn for it."""
    images = RNG.integers(0, 256, (300, 28, 28), dtype=np.uint8)
    both = Augment(pen=1.0, clean=0.5)
    draws = both.draw(300, np.random.default_rng(2))
    out = both.apply(images, draws)
    assert 0.4 < draws["clean"].mean() < 0.6
    np.testing.assert_array_equal(out[draws["clean"]], images[draws["clean"]])


def test_elastic_fields_bend_by_the_displacement_their_alpha_gives():
    """With the affine map switched off, the only move is α·smooth(field): a pixel's source lies
    α·rms(smoothed uniform field) away on average per axis, measured here on a ramp image whose
    value is its column (the value read minus the pixel's own column is the column shift)."""
    from dataclasses import replace

    ramp = np.tile(np.arange(28, dtype=np.uint8) * 9, (200, 28, 1))  # value = 9 * column
    interior = (slice(None), slice(8, 20), slice(8, 20))  # away from the zero border
    shifts = {}
    for name in ("elastic",):
        aug = replace(AUGMENTS[name], shift=0.0, rotate_deg=0.0, scale=(1.0, 1.0), shear=0.0)
        d = aug.draw(200, np.random.default_rng(1))
        moved = aug.apply(ramp, d) / 9 - np.arange(28)
        shifts[name] = np.sqrt((moved[interior] ** 2).mean())
        # the column part of the field, scaled: what bilinear sampling of the ramp must have read
        field = aug.elastic_alpha * smooth(d["field"], aug.elastic_sigma)[..., 1]
        assert abs(shifts[name] - np.sqrt((field[interior] ** 2).mean())) < 0.05
    # the bend the docs state: about 1.7 px per axis for elastic (α = 34, σ = 4)
    assert 1.2 < shifts["elastic"] < 2.4


def _ink_box(image: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero((image > 127).any(axis=1))[0], np.nonzero((image > 127).any(axis=0))[0]
    return rows[0], rows[-1], cols[0], cols[-1]


def test_two_digits_side_by_side_are_prepared_as_mnist_prepares_one():
    """A pair of upright bars 16 pixels tall and 4 wide, the second half the height (8 px) to
    the right of the first, or overlapping it by a tenth of the height: side by side, left and
    right of the centre, the pair's box scaled to 20 pixels on its longer side; overlapping, no
    paper between them."""
    bar = np.zeros((1, 28, 28), np.uint8)
    bar[0, 6:22, 12:16] = 255
    out = not_one_digit(np.concatenate([bar, bar]), np.array([0, 0]), np.array([1, 1]), np.array([True, True]),
                        np.array([0.5, -0.1]), np.zeros(2), np.full(2, 0.5), np.zeros(2, bool))
    apart, touching = out
    top, bottom, left, right = _ink_box(apart)
    assert max(bottom - top + 1, right - left + 1) == pytest.approx(20, abs=1)
    assert (left + right) / 2 == pytest.approx(13.5, abs=1)  # centred
    row = apart[14, left:right + 1] > 127
    assert row[:3].all() and row[-3:].all() and not row.all()  # two strokes, paper between them
    top, bottom, left, right = _ink_box(touching)
    assert (touching[14, left:right + 1] > 63).all()  # one stroke 7 px wide, scaled: no gap
    assert right - left + 1 < 20 - 8  # narrower than the two apart: they overlap


def test_a_piece_of_a_wide_digit_is_what_lies_on_one_side_of_the_cut_scaled_up():
    """A ring 16 wide and 16 tall cut at half its width: the left piece is a "[" (the right side
    of the ring gone), scaled so its longer side is 20 pixels; a piece narrower than a 1's width
    would be, is made a pair instead (two rings)."""
    ring = np.zeros((1, 28, 28), np.uint8)
    ring[0, 6:22, 6:22] = 255
    ring[0, 9:19, 9:19] = 0
    left, narrow = not_one_digit(np.concatenate([ring, ring]), np.array([0, 0]), np.array([1, 1]),
                                 np.array([False, False]), np.zeros(2), np.zeros(2), np.array([0.5, 0.2]),
                                 np.array([True, True]))
    top, bottom, l, r = _ink_box(left)
    assert bottom - top + 1 == pytest.approx(20, abs=1) and r - l + 1 == pytest.approx(10, abs=2)
    assert left[14, l:l + 3].min() > 127 and left[14, r - 2:r + 1].max() < 128  # the left side only
    top, bottom, l, r = _ink_box(narrow)
    assert r - l + 1 == pytest.approx(20, abs=1) and bottom - top + 1 < 12  # two rings side by side


def test_junk_images_get_random_labels_and_the_rest_keep_theirs():
    images = RNG.integers(0, 256, (500, 28, 28), dtype=np.uint8)
    labels = np.full(500, 3)
    aug = AUGMENTS["affine-pen-junk"]
    draws = aug.draw(500, np.random.default_rng(1))
    junk = draws["junk"]
    assert 0.05 < junk.mean() < 0.15
    out = aug.labels(labels, draws)
    np.testing.assert_array_equal(out[~junk], 3)
    assert len(set(out[junk])) >= 8
    pen = AUGMENTS["affine-pen"].apply(images, {k: v for k, v in draws.items() if not k.startswith("junk")})
    out = aug.apply(images, draws)
    np.testing.assert_array_equal(out[~junk], pen[~junk])
    assert not (out[junk] == pen[junk]).all(axis=(1, 2)).any()  # every junk image is a new picture
