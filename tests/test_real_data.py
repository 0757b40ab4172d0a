"""Real data: seed-tanh on the 5,000-image MNIST subset, official 10k test set."""

import pytest

from lenet5 import SGD, LeNet5, fit, load_dir


@pytest.mark.slow
def test_seed_tanh_reaches_90_percent_on_official_test_set(mnist5k_dir):
    data = load_dir(mnist5k_dir)
    assert len(data.train) == 5000 and len(data.test) == 10000
    model = LeNet5("seed-tanh", seed=0)
    opt = SGD(model.params(), model.grads(), lr=0.1)
    history = fit(model, opt, data, epochs=4, batch_size=64, seed=0, progress=False, schedule="cosine")
    assert history[-1]["test_acc"] >= 0.90, history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
