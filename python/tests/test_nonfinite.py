"""The state fit leaves behind when a batch's loss is not finite (API.md: FloatingPointError naming
the epoch and batch, raised before that step is applied).

The chosen behaviour is PyTorch's for the canonical step ``zero_grad(); loss = ...; loss.backward();
check the loss; step()``: the check comes after backward, so when fit raises, every parameter's
``.grad`` holds that batch's gradients (NaN where the non-finite values reached them) and ``.data``
holds the weights of the last applied step. The gradients of the failing batch are what one
inspects to find where the NaN came from.

fit has two paths that must agree: the fused Swift step (``scnn_train_step_cross_entropy``) for
swiftcnn's own optimizers (the default SGD, Adam), and the Python step (``zero_grad``/``forward``/
``backward``/``step`` calls) for any other optimizer object. Each is checked to have been taken.
"""
import numpy as np
import pytest

import swiftcnn
from swiftcnn import _core

S = swiftcnn


class WrappedSGD:
    """Not a swiftcnn Optimizer (only zero_grad and step), so fit takes its Python path."""

    def __init__(self, params, lr):
        self.inner = S.optim.SGD(params, lr=lr)

    def zero_grad(self):
        self.inner.zero_grad()

    def step(self):
        self.inner.step()


def make_model(seed):
    return S.Sequential(S.Conv2d(1, 3, 3, padding=1, dtype="float64", seed=seed), S.ReLU(), S.MaxPool2d(2),
                        S.Flatten(), S.Linear(48, 4, dtype="float64", seed=seed + 1))


def make_optimizer(kind, model):
    if kind == "fused-default-SGD":
        return None  # fit's default: SGD(lr=0.1)
    if kind == "fused-Adam":
        return S.optim.Adam(model.parameters(), lr=0.01)
    return WrappedSGD(model.parameters(), lr=0.1)


@pytest.mark.parametrize("kind", [
    "fused-default-SGD",
    "fused-Adam",
    "python-path",
])
def test_nonfinite_loss_grad_state(kind, monkeypatch):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((16, 1, 8, 8))
    y = rng.integers(0, 4, 16)
    x[11, 0, 3, 4] = np.nan  # sample 11: in the second batch of 8 (shuffle=False)
    model = make_model(seed=3)
    reference = make_model(seed=3)  # the same weights, trained by hand below
    fused_calls = []
    real_step = _core.train_step_cross_entropy
    monkeypatch.setattr(_core, "train_step_cross_entropy",
                        lambda *args: fused_calls.append(1) or real_step(*args))

    with pytest.raises(FloatingPointError, match="batch 2"):
        model.fit(x, y, epochs=1, batch_size=8, shuffle=False, progress=False,
                  optimizer=make_optimizer(kind, model))
    assert bool(fused_calls) == kind.startswith("fused"), f"{kind}: {len(fused_calls)} fused steps"

    # By hand: the first batch's full step, then the second batch's step up to backward.
    optimizer = make_optimizer(kind, reference) or S.optim.SGD(reference.parameters(), lr=0.1)
    for start, apply in ((0, True), (8, False)):
        optimizer.zero_grad()
        loss, g = S.softmax_cross_entropy(reference(x[start:start + 8]), y[start:start + 8])
        assert np.isfinite(loss) == apply
        reference.backward(g)
        if apply:
            optimizer.step()

    for p, r in zip(model.parameters(), reference.parameters()):
        # the failing batch's step was not applied: the weights are those after the first batch
        np.testing.assert_allclose(p.data, r.data, rtol=1e-12, atol=1e-14, err_msg=f"{kind}: {p.name}.data")
        # and .grad holds the failing batch's gradients, NaN where the NaN reached them
        assert np.isnan(r.grad).any(), f"{p.name}: the reference gradient should contain NaN"
        np.testing.assert_allclose(p.grad, r.grad, rtol=1e-12, atol=1e-14, equal_nan=True,
                                   err_msg=f"{kind}: {p.name}.grad")
