"""The whole network: finite-difference gradients, presets, state dicts, determinism."""

import numpy as np
import pytest

from conftest import numerical_grad, rel_error
from lenet5 import PRESETS, SGD, LeNet5, fit, load_dir
from lenet5.losses import Criterion
from lenet5.presets import seed_tanh_init

RNG = np.random.default_rng(2)


def crit(model) -> Criterion:
    """The preset's own training criterion (the step owns it; the model does not)."""
    return Criterion(model.preset.criteria[0])


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_network_and_loss_gradients_match_finite_differences(preset):
    model = LeNet5(preset, seed=3, dtype=np.float64)
    size = model.preset.input_size
    x = RNG.random((2, 1, size, size))
    labels = np.array([3, 7])

    def f():
        model.seed_step([0])  # the same dropout masks at every evaluation
        return crit(model).loss(model.forward(x), labels)[0]

    model.seed_step([0])
    _, dlogits = crit(model).loss(model.forward(x), labels)
    model.backward(dlogits)
    params, grads = model.params(), model.grads()
    for name in params:
        p = params[name]
        if p.size > 400:  # check a random subset of entries of the big tensors
            idx = RNG.choice(p.size, 40, replace=False)
            numeric = numerical_grad(f, p, entries=idx)
            assert rel_error(grads[name].reshape(-1)[idx], numeric) < 1e-6, name
        else:
            assert rel_error(grads[name], numerical_grad(f, p)) < 1e-6, name


def test_parameter_names_and_shapes_match_the_torch_layout():
    shapes = {k: v.shape for k, v in LeNet5().params().items()}
    assert shapes == {"c1.weight": (6, 1, 5, 5), "c1.bias": (6,), "c3.weight": (16, 6, 5, 5), "c3.bias": (16,),
                      "c5.weight": (120, 16, 5, 5), "c5.bias": (120,), "f6.weight": (84, 120), "f6.bias": (84,),
                      "output.weight": (10, 84), "output.bias": (10,)}


def test_seed_tanh_init_bounds():
    model = LeNet5("seed-tanh", seed=0)
    p = model.params()
    for name, fan_in in [("c1.weight", 25), ("c3.weight", 150), ("c5.weight", 400)]:
        bound = np.sqrt(3 / fan_in)
        assert np.abs(p[name]).max() <= bound and np.abs(p[name]).max() > 0.9 * bound
    assert np.abs(p["f6.weight"]).max() <= 4 * np.sqrt(6 / (120 + 84))
    assert all(np.all(p[k] == 0) for k in p if k.endswith("bias"))
    assert seed_tanh_init(np.random.default_rng(0), "x", np.zeros((3, 4))).shape == (3, 4)


def test_float32_forward_agrees_with_float64():
    m64 = LeNet5(seed=5, dtype=np.float64)
    m32 = LeNet5(seed=5, dtype=np.float32)
    x = RNG.random((8, 1, 28, 28))
    z32 = m32.forward(x.astype(np.float32))
    assert z32.dtype == np.float32
    np.testing.assert_allclose(z32, m64.forward(x), rtol=1e-4, atol=1e-5)


def test_state_dict_roundtrip_and_mismatch_errors():
    a, b = LeNet5(seed=1), LeNet5(seed=2)
    b.load_state_dict(a.state_dict())
    x = RNG.random((3, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    state = a.state_dict()
    del state["c3.bias"]
    with pytest.raises(KeyError, match="c3.bias"):
        b.load_state_dict(state)
    state = a.state_dict()
    state["f6.weight"] = np.zeros((84, 121))
    with pytest.raises(ValueError, match="f6.weight"):
        b.load_state_dict(state)


def test_forward_outputs_are_not_overwritten_by_later_calls():
    model = LeNet5(seed=0)
    x1, x2 = RNG.random((4, 28, 28)).astype(np.float32), RNG.random((4, 28, 28)).astype(np.float32)
    z1 = model.forward(x1)
    kept = z1.copy()
    model.forward(x2)
    np.testing.assert_array_equal(z1, kept)


@pytest.mark.parametrize("n", [1, 2, 7, 64])
def test_any_batch_size(n):
    model = LeNet5(seed=0)
    z = model.forward(model.prepare(np.zeros((n, 28, 28), np.uint8)))
    assert z.shape == (n, 10)
    model.backward(np.ones_like(z))
    assert all(np.all(np.isfinite(g)) for g in model.grads().values())


def test_same_seed_gives_identical_weights(mini_dir):
    data = load_dir(mini_dir)
    finals = []
    for _ in range(2):
        model = LeNet5(seed=11)
        fit(model, data, epochs=2, batch_size=32, lr=0.1, momentum=0.5, schedule="constant", seed=11,
            progress=False)
        finals.append(model.state_dict())
    for k in finals[0]:
        np.testing.assert_array_equal(finals[0][k], finals[1][k])
    other = LeNet5(seed=12)
    assert not np.array_equal(other.params()["c1.weight"], finals[0]["c1.weight"])


def test_sgd_matches_hand_computed_update():
    p = {"w": np.array([1.0, -2.0])}
    g = {"w": np.array([0.5, 0.5])}
    opt = SGD(p, g, lr=0.1, momentum=0.9, weight_decay=0.01)
    opt.step()  # v = g + wd*p = [0.51, 0.48]; p = p - 0.1 v
    np.testing.assert_allclose(p["w"], [1 - 0.051, -2 - 0.048])
    opt.step()  # v = 0.9 v + (g + wd*p)
    v = 0.9 * np.array([0.51, 0.48]) + np.array([0.5 + 0.01 * 0.949, 0.5 + 0.01 * -2.048])
    np.testing.assert_allclose(p["w"], np.array([0.949, -2.048]) - 0.1 * v)


def test_sgd_rejects_bad_settings():
    p = {"w": np.zeros(2)}
    for kwargs in [{"lr": 0}, {"lr": float("nan")}, {"lr": 0.1, "momentum": 1.0}, {"lr": 0.1, "weight_decay": -1}]:
        with pytest.raises(ValueError):
            SGD(p, {"w": np.zeros(2)}, **kwargs)


@pytest.mark.parametrize("n", [130, 300])
def test_micro_batched_threaded_pass_equals_single_pass(n):
    """Big batches are cut into micro-batches on worker threads; gradients must be the same sums."""
    single = LeNet5(seed=8, dtype=np.float64, threads=1)
    split = LeNet5(seed=8, dtype=np.float64, threads=2)
    x = RNG.random((n, 1, 28, 28))
    labels = RNG.integers(0, 10, n)
    for model in (single, split):
        loss, d = crit(model).loss(model.forward(x), labels)
        model.backward(d)
    assert split._cpu._parts is not None and len(split._cpu._parts) >= 2  # the split path really ran
    np.testing.assert_allclose(split.forward(x), single.forward(x), rtol=1e-10, atol=1e-12)
    for name, g in single.grads().items():
        np.testing.assert_allclose(split.grads()[name], g, rtol=1e-10, atol=1e-14, err_msg=name)
    np.testing.assert_allclose(split.infer((x[:, 0] * 255).astype(np.uint8)),
                               single.infer((x[:, 0] * 255).astype(np.uint8)), rtol=1e-10, atol=1e-12)


def test_flip_test_time_augmentation_averages_each_image_with_its_mirror():
    from lenet5.data import Split
    from lenet5.train import evaluate

    model = LeNet5("modern", seed=4).eval()
    images = np.random.default_rng(5).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = np.arange(7) % 10
    split = Split(images, labels)
    # the definition, through the plain forward pass: mirror the pixel columns, average the logits
    plain = model.forward_pass(model.prepare(images))
    mirrored = model.forward_pass(model.prepare(images[:, :, ::-1].copy()))
    mean = (plain + mirrored) / 2
    expected_acc = np.mean(mean.argmax(axis=1) == labels)
    shifted = mean - mean.max(axis=1, keepdims=True)
    expected_loss = np.mean(np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(7), labels])

    result = evaluate(model, split, batch_size=3, tta="flip")
    assert result["accuracy"] == pytest.approx(expected_acc)
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-5)
    # an image that is its own mirror gets exactly its plain outputs
    symmetric = np.concatenate([images[:, :, :14], images[:, :, :14][:, :, ::-1]], axis=2)
    same = Split(symmetric, labels)
    assert evaluate(model, same, tta="flip")["loss"] == pytest.approx(evaluate(model, same)["loss"], rel=1e-6)
    with pytest.raises(Exception, match="test-time augmentation"):
        evaluate(model, split, tta="rotate")


def test_fit_refuses_a_recipe_for_another_network_than_the_model(mini_dir):
    from lenet5 import Lenet5Error

    data = load_dir(mini_dir)
    with pytest.raises(Lenet5Error, match=r"'widths': \[8, 12, 40\].*'widths': None"):
        fit(LeNet5("modern", seed=0), data, widths=(8, 12, 40), epochs=1, progress=False)
    with pytest.raises(Lenet5Error, match=r"'dropout': 0.3.*'dropout': None"):
        fit(LeNet5("modern", seed=0), data, dropout=0.3, epochs=1, progress=False)
    # the model's own network is the default recipe's: a float64 model with other widths trains
    model = LeNet5("modern", seed=0, dtype=np.float64, widths=(4, 8, 16))
    fit(model, data, epochs=1, train_limit=64, progress=False)


def test_the_criterion_is_the_steps_not_the_models(mini_dir):
    """lecun1998 trained with MAP or MSE: the same network, the recipe's criterion evaluated by
    the step. Far from every centre (as at the start) the MAP criterion is y_D + log(e^{−j} +
    Σ e^{−y_i}) ≈ y_D − j, and its gradient that of MSE's y_D: the same weights, losses j apart."""
    data = load_dir(mini_dir)
    runs = {}
    for criterion, j in (("mse", 0.1), ("map", 0.1), ("map", 0.5)):
        model = LeNet5("lecun1998", seed=0)
        history = fit(model, data, epochs=1, train_limit=20, criterion=criterion, map_j=j, progress=False)
        runs[criterion, j] = history[0]["train_loss"], model.params()["f6.weight"]
    mse = runs["mse", 0.1][0]
    assert runs["map", 0.1][0] == pytest.approx(mse - 0.1, abs=1e-3)
    assert runs["map", 0.5][0] == pytest.approx(mse - 0.5, abs=1e-3)
    np.testing.assert_allclose(runs["map", 0.1][1], runs["mse", 0.1][1], atol=1e-6)


def test_optimizer_state_that_does_not_fit_is_refused():
    from lenet5 import Lenet5Error

    model = LeNet5("seed-tanh", seed=0)
    opt = SGD(model.params(), model.grads(), lr=0.1, momentum=0.9)
    crit(model).loss(model.forward(RNG.random((2, 1, 28, 28)).astype(np.float32)), np.array([1, 2]))
    opt.step()  # velocity now exists for every parameter
    state = opt.state_dict()
    opt.load_state_dict(state)  # its own state fits
    bad = {**state, "velocity.c1.weight": state["velocity.c1.weight"].reshape(5, 5, 1, 6)}
    with pytest.raises(Lenet5Error, match=r"'velocity.c1.weight' has shape \(5, 5, 1, 6\)"):
        opt.load_state_dict(bad)
    partial = {k: v for k, v in state.items() if k != "velocity.output.bias"}
    with pytest.raises(Lenet5Error, match="'velocity' is missing for output.bias"):
        opt.load_state_dict(partial)
    with pytest.raises(Lenet5Error, match="'m.c1.weight' is not"):
        opt.load_state_dict({**state, "m.c1.weight": state["velocity.c1.weight"]})


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    from lenet5.train import confusion_matrix

    m = confusion_matrix(np.array([0, 1, 1, 2, 9]), np.array([0, 2, 1, 2, 0]))
    expected = np.zeros((10, 10), dtype=int)
    for true, pred in [(0, 0), (1, 2), (1, 1), (2, 2), (9, 0)]:
        expected[true, pred] += 1
    assert np.array_equal(m, expected)


def test_modern_widths_change_the_channels_and_pass_a_gradient_check():
    c1, c3, c5 = 7, 11, 30
    model = LeNet5("modern", seed=2, dtype=np.float64, widths=(c1, c3, c5))
    # weights + biases of C1, C3, C5, F6, OUTPUT, plus batch norm's scale and shift for C1, C3
    by_hand = (c1 * 25 + c1) + 2 * c1 + (c3 * c1 * 25 + c3) + 2 * c3 + (c5 * c3 * 25 + c5) + (84 * c5 + 84) + 850
    assert model.num_parameters() == by_hand
    x = RNG.random((2, 1, 28, 28))
    labels = np.array([1, 4])

    def f():
        model.seed_step([0])
        return crit(model).loss(model.forward(x), labels)[0]

    model.seed_step([0])
    model.backward(crit(model).loss(model.forward(x), labels)[1])
    for name in ("c1.weight", "c3.weight", "c5.bias", "f6.weight"):
        p = model.params()[name]
        idx = RNG.choice(p.size, min(p.size, 30), replace=False)
        assert rel_error(model.grads()[name].reshape(-1)[idx], numerical_grad(f, p, entries=idx)) < 1e-6, name


def test_widths_only_for_modern_and_three_positive_integers():
    from lenet5 import Lenet5Error, resolve

    with pytest.raises(Lenet5Error, match="--widths applies to --preset modern, not seed-tanh"):
        resolve("seed-tanh", widths=(6, 16, 120))
    for bad in [(6, 16), (6, 0, 120), (6, 16, 2.5), "6,16,120"]:
        with pytest.raises(Lenet5Error, match="--widths must be three integers"):
            resolve("modern", widths=bad)
    assert resolve("modern", widths=[8, 12, 40]).widths == (8, 12, 40)  # as config.json gives it back
