"""The functional ops of API.md: stateless forward/backward pairs over NumPy arrays.

These are the C extension's functions themselves (``swiftcnn._core``), re-exported with no Python
wrapper on the hot path; each carries its own docstring and signature. All take float32 or float64
arrays (all float operands of one call share a dtype), return new arrays of that dtype, and accept
``out=`` where API.md lists it.
"""
from ._core import (adaptive_avg_pool2d, adaptive_avg_pool2d_backward, avg_pool2d,
                    avg_pool2d_backward, batch_norm, batch_norm_backward,
                    binary_cross_entropy_with_logits, conv2d, conv2d_backward, convolve2d,
                    correlate2d, leaky_relu, leaky_relu_backward, linear, linear_backward,
                    max_pool2d, max_pool2d_backward, relu, relu_backward, sigmoid, sigmoid_backward,
                    softmax, softmax_cross_entropy, tanh, tanh_backward)

__all__ = [
    "conv2d", "conv2d_backward",
    "max_pool2d", "max_pool2d_backward",
    "avg_pool2d", "avg_pool2d_backward",
    "linear", "linear_backward",
    "sigmoid", "sigmoid_backward",
    "relu", "relu_backward",
    "softmax", "softmax_cross_entropy", "binary_cross_entropy_with_logits",
    "correlate2d", "convolve2d",
    "tanh", "tanh_backward",
    "leaky_relu", "leaky_relu_backward",
    "batch_norm", "batch_norm_backward",
    "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward",
]
