"""``Parameter``: one trainable tensor of a layer, as a pair of NumPy arrays (value and gradient)."""
import numpy as np

__all__ = ["Parameter"]


class Parameter:
    """A trainable tensor: its value ``.data`` and its accumulated gradient ``.grad``.

    ``data`` and ``grad`` are ndarrays of the same shape and dtype that view the layer's own memory
    (the Swift core's buffers, no copy). They stay the same array objects for the parameter's whole
    life: write into them in place (``p.data[...] = w``, ``np.copyto(p.data, w)``,
    ``p.data -= lr * p.grad``); assigning another array to the attributes raises ``AttributeError``. ``backward`` adds into ``grad``; ``zero_grad`` and
    optimizers' ``zero_grad`` fill it with zeros; ``step`` updates ``data`` in place.

    ``name`` is the state-dict key relative to the module that was asked: ``"weight"`` from a
    ``Conv2d``, ``"0.weight"`` from the ``Sequential`` holding it. A Parameter keeps its layer's
    memory alive, so it stays valid after the model is gone.
    """

    __slots__ = ("_data", "_grad", "_name")

    def __init__(self, data, grad, name):
        if not (isinstance(data, np.ndarray) and isinstance(grad, np.ndarray)):
            raise TypeError("Parameter: data and grad must be ndarrays")
        if data.shape != grad.shape or data.dtype != grad.dtype:
            raise ValueError(f"Parameter: data {data.shape} {data.dtype} and grad {grad.shape} "
                             f"{grad.dtype} must have one shape and dtype")
        self._data = data
        self._grad = grad
        self._name = str(name)

    @property
    def data(self):
        """The value: an ndarray to modify in place (the same object for the parameter's life)."""
        return self._data

    @data.setter
    def data(self, value):
        self._refuse_replacement("data", self._data, value)

    @property
    def grad(self):
        """The accumulated gradient, same shape and dtype as ``data`` (starts at zeros)."""
        return self._grad

    @grad.setter
    def grad(self, value):
        self._refuse_replacement("grad", self._grad, value)

    @staticmethod
    def _refuse_replacement(attribute, current, value):
        # ``p.data -= lr * p.grad`` updates the array in place and then assigns the same object
        # back: allow exactly that, refuse any other array.
        if value is not current:
            raise AttributeError(f"Parameter.{attribute} cannot be replaced (the layer computes "
                                 f"with this very array); write into it in place instead, e.g. "
                                 f"p.{attribute}[...] = value")

    @property
    def name(self):
        """The state-dict key relative to the module asked (``"weight"``, ``"0.bias"``, ...)."""
        return self._name

    @property
    def shape(self):
        """The shape of ``data`` and ``grad``."""
        return self._data.shape

    @property
    def dtype(self):
        """The dtype of ``data`` and ``grad`` (float32 or float64)."""
        return self._data.dtype

    @property
    def size(self):
        """The number of elements."""
        return self._data.size

    def _renamed(self, name):
        """The same arrays under another name (how a Sequential prefixes its children's names)."""
        return Parameter(self._data, self._grad, name)

    def __repr__(self):
        return f"Parameter(name={self._name!r}, shape={self.shape}, dtype={self.dtype})"
