"""The lean single-image path of lecun1998 against the general layers: same outputs, same
gradients (float64, to round-off), and the same training when it drives SDLM."""

import numpy as np
import pytest

from lenet5 import LeNet5
from lenet5.losses import Criterion

RNG = np.random.default_rng(5)


def _pair():
    lean = LeNet5("lecun1998", seed=3, dtype=np.float64)
    layers = LeNet5("lecun1998", seed=3, dtype=np.float64)
    for p in lean.params().values():  # move off the init, so every factor matters
        p += 0.05 * RNG.standard_normal(p.shape) * (p != 0)
    layers.load_state_dict(lean.state_dict())
    return lean, layers


@pytest.mark.parametrize("criterion", ["map", "mse"])
def test_one_image_pass_equals_the_layers(criterion):
    lean, layers = _pair()
    criterion = Criterion(criterion)
    x = lean.prepare(RNG.integers(0, 256, (1, 28, 28), dtype=np.uint8))
    label = np.array([RNG.integers(10)])
    out = lean.forward(x)
    assert lean._one_pass
    loss, d = criterion.loss(out, label)
    lean.backward(d)
    ref = layers.forward_pass(x)
    ref_loss, ref_d = criterion.loss(ref, label)
    layers.backward_pass(ref_d)
    np.testing.assert_allclose(out, ref, rtol=1e-12)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    for name, g in layers.grads().items():
        np.testing.assert_allclose(lean.grads()[name], g, rtol=1e-9, atol=1e-14, err_msg=name)


def test_one_image_pass_is_used_only_for_training_single_images():
    model = LeNet5("lecun1998", seed=0)
    images = RNG.integers(0, 256, (2, 28, 28), dtype=np.uint8)
    model.forward(model.prepare(images))
    assert not model._one_pass
    model.eval()
    model.forward(model.prepare(images[:1]))
    assert not model._one_pass
    assert LeNet5("seed-tanh")._one is None


def test_sdlm_steps_through_both_paths_agree(mini_dir):
    """Five SDLM steps, per pattern: the lean path and the layers end on the same weights."""
    from lenet5 import load_dir, resolve

    data = load_dir(mini_dir)
    lean, layers = _pair()
    config = resolve("lecun1998")
    opts = [m.make_optimizer(config) for m in (lean, layers)]
    for model, opt in zip((lean, layers), opts):
        opt.prepare_epoch(model, data.train, np.random.default_rng(0))
        for i in range(5):
            x, y = model.prepare(data.train.images[i:i + 1]), data.train.labels[i:i + 1]
            if model is layers:
                _, d = Criterion("map").loss(model.forward_pass(x), y)
                model.backward_pass(d)
            else:
                _, d = Criterion("map").loss(model.forward(x), y)
                model.backward(d)
            opt.step()
    for name, p in layers.params().items():
        np.testing.assert_allclose(lean.params()[name], p, rtol=1e-9, atol=1e-12, err_msg=name)


def test_sdlm_updates_the_whole_parameter_vector_at_once_and_agrees_with_per_parameter_steps():
    from lenet5.optim import SDLM, as_one_vector

    model = LeNet5("lecun1998", seed=1, dtype=np.float64)
    flat = as_one_vector(list(model.params().values()))
    assert flat is not None and flat.size == sum(p.size for p in model.params().values())
    assert np.shares_memory(flat, model.params()["c5.weight"])
    separate = {k: v.copy() for k, v in model.params().items()}  # not one vector: the fallback path
    assert as_one_vector(list(separate.values())) is None
    grads = {k: RNG.standard_normal(v.shape) for k, v in separate.items()}
    for k, g in grads.items():
        model.grads()[k][...] = g
    hessian = {k: RNG.random(v.shape) for k, v in separate.items()}
    fused, plain = SDLM(model.params(), model.grads(), lr=0.01), SDLM(separate, grads, lr=0.01)
    assert fused._flat is not None and plain._flat is None
    for opt in (fused, plain):
        opt.load_state_dict({f"hessian.{k}": h for k, h in hessian.items()})
        opt.step()
    for k, p in separate.items():
        np.testing.assert_allclose(model.params()[k], p, rtol=1e-12, err_msg=k)
    before = LeNet5("lecun1998", seed=1, dtype=np.float64).params()
    for k, p in before.items():
        np.testing.assert_allclose(separate[k], p - 0.01 * grads[k] / (0.02 + hessian[k]), rtol=1e-12, atol=1e-15,
                                   err_msg=k)
