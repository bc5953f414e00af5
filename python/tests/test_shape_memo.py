"""The extension remembers each op's last successful shape query (_core.c, shape_memo) and skips
the query when the next call has the same operand shapes, dtypes and settings. These tests pin that
the memo never changes a result or lets a bad call through: the compute call still validates."""
import numpy as np
import pytest

import swiftcnn as sc


def conv_reference(x, w, stride):
    """Plain loops: y[n,k,i,j] = sum_{c,r,s} x[n,c,i*stride+r,j*stride+s] w[k,c,r,s]."""
    n, c, h, wd = x.shape
    k, _, kh, kw = w.shape
    ho, wo = (h - kh) // stride + 1, (wd - kw) // stride + 1
    y = np.zeros((n, k, ho, wo), x.dtype)
    for i in range(ho):
        for j in range(wo):
            patch = x[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            y[:, :, i, j] = np.einsum("ncrs,kcrs->nk", patch, w)
    return y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_alternating_shapes_and_settings_give_the_reference(dtype):
    rng = np.random.default_rng(0)
    xa = rng.standard_normal((2, 3, 9, 9)).astype(dtype)
    xb = rng.standard_normal((1, 3, 7, 11)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    tol = 1e-12 if dtype == np.float64 else 1e-4
    for x, stride in [(xa, 1), (xa, 1), (xa, 2), (xb, 1), (xa, 1), (xb, 2), (xb, 2)]:
        y = sc.conv2d(x, w, stride=stride)
        ref = conv_reference(x.astype(np.float64), w.astype(np.float64), stride)
        assert y.shape == ref.shape and y.dtype == dtype
        np.testing.assert_allclose(y, ref, rtol=tol, atol=tol)


def test_same_shapes_other_dtype_follow_the_dtype():
    x32 = np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4)
    for _ in range(2):
        assert sc.relu(x32).dtype == np.float32
        assert sc.relu(x32.astype(np.float64)).dtype == np.float64


def test_a_remembered_shape_does_not_skip_validation():
    x = np.ones((1, 1, 6, 6), np.float32)
    w = np.ones((1, 1, 3, 3), np.float32)
    assert sc.conv2d(x, w).shape == (1, 1, 4, 4)
    # Same shapes, bad settings: still rejected, naming the argument.
    with pytest.raises(ValueError, match="padding"):
        sc.conv2d(x, w, padding=-1)
    # Same shapes and settings as the remembered call, a wrong out=: rejected.
    with pytest.raises(ValueError, match="out"):
        sc.conv2d(x, w, out=np.empty((1, 1, 3, 3), np.float32))
    with pytest.raises(ValueError, match="share memory"):
        sc.conv2d(x, w, out=x.reshape(-1)[:16].reshape(1, 1, 4, 4))
    # Same shapes, labels out of range (a check on the data, made by the compute call).
    logits = np.zeros((2, 3))
    sc.softmax_cross_entropy(logits, np.array([0, 2]))
    with pytest.raises(ValueError):
        sc.softmax_cross_entropy(logits, np.array([0, 3]))
    # And the remembered call still works afterwards.
    np.testing.assert_array_equal(sc.conv2d(x, w), np.full((1, 1, 4, 4), 9, np.float32))
