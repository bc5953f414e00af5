"""Optimizers: ``SGD`` and ``Adam``, with PyTorch's update rules step for step.

An optimizer holds the Parameters it was given (keeping their memory alive) and one Swift
optimizer object that updates their ``.data`` in place from their ``.grad``::

    opt = swiftcnn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt.zero_grad(); loss, g = softmax_cross_entropy(model(x), y); model.backward(g); opt.step()

``step()`` never changes ``.grad``. ``opt.lr`` can be assigned and takes effect at the next step.
Settings PyTorch rejects raise ``ValueError`` with PyTorch's messages ("Invalid learning rate: -1").
"""
from . import _core
from ._convert import check_bool, check_real, describe_type
from .parameter import Parameter

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler"]


def _check_non_negative(value, argument, owner, message):
    """``value`` as a float >= 0 (nan rejected); ``message`` shows the value as given, as PyTorch's do."""
    number = check_real(value, argument, owner)
    if not 0.0 <= number:
        raise ValueError(message.format(value=value))
    return number


def _collect_parameters(params, owner):
    """Turn ``params`` (Parameters, a generator of them, or a module) into a checked list."""
    if hasattr(params, "parameters") and callable(params.parameters) and not isinstance(params, Parameter):
        params = params.parameters()
    if isinstance(params, Parameter):
        raise TypeError(f"{owner}: params must be an iterable of Parameters (e.g. "
                        f"model.parameters()), got a single Parameter; wrap it in a list")
    try:
        params = list(params)
    except TypeError:
        raise TypeError(f"{owner}: params must be an iterable of Parameters (e.g. "
                        f"model.parameters()), got {describe_type(params)}") from None
    if not params:
        raise ValueError("optimizer got an empty parameter list")
    seen = {}
    for index, parameter in enumerate(params):
        if not isinstance(parameter, Parameter):
            hint = " (parameter groups as dicts are not supported)" if isinstance(parameter, dict) else ""
            raise TypeError(f"{owner}: params[{index}] must be a swiftcnn Parameter, got "
                            f"{describe_type(parameter)}{hint}")
        if id(parameter.data) in seen:
            raise ValueError(f"{owner}: params holds the same parameter twice ({parameter.name!r} "
                             f"at positions {seen[id(parameter.data)]} and {index})")
        seen[id(parameter.data)] = index
        if parameter.dtype != params[0].dtype:
            raise TypeError(f"{owner}: params[{index}] ({parameter.name!r}) has dtype "
                            f"{parameter.dtype} but params[0] has {params[0].dtype}; one optimizer "
                            f"updates parameters of one dtype")
    return params


class Optimizer:
    """Base class: holds the Parameters and the Swift optimizer; ``step``, ``zero_grad``, ``lr``."""

    def __init__(self, params, handle_factory):
        owner = type(self).__name__
        self._params = _collect_parameters(params, owner)
        self._dtype = self._params[0].dtype
        data = [parameter.data for parameter in self._params]
        grads = [parameter.grad for parameter in self._params]
        self._handle = handle_factory(data, grads)

    @property
    def params(self):
        """The Parameters this optimizer updates (a new list)."""
        return list(self._params)

    @property
    def dtype(self):
        """The parameters' dtype."""
        return self._dtype

    @property
    def lr(self):
        """The learning rate; assign to change it from the next ``step()`` on."""
        return self._lr

    @lr.setter
    def lr(self, value):
        value = _check_non_negative(value, "lr", type(self).__name__, "Invalid learning rate: {value}")
        _core.optimizer_set_lr(self._handle, value)
        self._lr = value

    def step(self):
        """Update every parameter's ``.data`` in place from its ``.grad`` (which is left unchanged)."""
        _core.optimizer_step(self._handle, False)

    def zero_grad(self):
        """Fill every parameter's ``.grad`` with zeros, in place."""
        _core.optimizer_step(self._handle, True)

    def _settings(self):
        return {}

    def __repr__(self):
        settings = ", ".join(f"{name}={value!r}" for name, value in self._settings().items())
        count = len(self._params)
        return f"{type(self).__name__}({count} parameter{'s' if count != 1 else ''}, {settings})"


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with momentum, dampening, weight decay, Nesterov.

    PyTorch's rule: ``g = grad + weight_decay * w``; with momentum, ``b = g`` on the first step and
    ``b = momentum * b + (1 - dampening) * g`` after, then ``g = g + momentum * b`` (Nesterov) or
    ``g = b``; finally ``w -= lr * g``.

    Args:
        params: the Parameters to update (``model.parameters()``, any iterable, or a model).
        lr: learning rate (>= 0; required).
        momentum: momentum factor (>= 0).
        dampening: dampening of the momentum.
        weight_decay: L2 penalty (>= 0).
        nesterov: Nesterov momentum (needs momentum > 0 and dampening 0).
    """

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        owner = "SGD"
        lr = _check_non_negative(lr, "lr", owner, "Invalid learning rate: {value}")
        momentum = _check_non_negative(momentum, "momentum", owner, "Invalid momentum value: {value}")
        dampening = check_real(dampening, "dampening", owner)
        weight_decay = _check_non_negative(weight_decay, "weight_decay", owner,
                                           "Invalid weight_decay value: {value}")
        nesterov = check_bool(nesterov, "nesterov", owner)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        self._lr = lr
        self._momentum = momentum
        self._dampening = dampening
        self._weight_decay = weight_decay
        self._nesterov = nesterov
        super().__init__(params, lambda data, grads: _core.optimizer_create(
            "sgd", data, grads, (lr, momentum, dampening, weight_decay, float(nesterov))))

    momentum = property(lambda self: self._momentum, doc="Momentum factor.")
    dampening = property(lambda self: self._dampening, doc="Dampening of the momentum.")
    weight_decay = property(lambda self: self._weight_decay, doc="L2 penalty.")
    nesterov = property(lambda self: self._nesterov, doc="Whether Nesterov momentum is used.")

    def _settings(self):
        return {"lr": self._lr, "momentum": self._momentum, "dampening": self._dampening,
                "weight_decay": self._weight_decay, "nesterov": self._nesterov}


class Adam(Optimizer):
    """Adam (Kingma and Ba), PyTorch's rule with bias correction and L2 ``weight_decay``.

    Args:
        params: the Parameters to update (``model.parameters()``, any iterable, or a model).
        lr: learning rate (>= 0).
        betas: ``(beta1, beta2)``, each in [0, 1): decay of the first and second moment estimates.
        eps: added to the denominator (>= 0).
        weight_decay: L2 penalty added to the gradient (>= 0).
    """

    _kind = "adam"  # the Swift optimizer kind (AdamW: "adamw", decoupled decay)

    def __init__(self, params, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        owner = type(self).__name__
        lr = _check_non_negative(lr, "lr", owner, "Invalid learning rate: {value}")
        eps = _check_non_negative(eps, "eps", owner, "Invalid epsilon value: {value}")
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"{owner}: betas must be a pair (beta1, beta2), got {betas!r}")
        beta1 = check_real(betas[0], "betas[0]", owner)
        beta2 = check_real(betas[1], "betas[1]", owner)
        for index, beta in enumerate((beta1, beta2)):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {index}: {betas[index]}")
        weight_decay = _check_non_negative(weight_decay, "weight_decay", owner,
                                           "Invalid weight_decay value: {value}")
        self._lr = lr
        self._betas = (beta1, beta2)
        self._eps = eps
        self._weight_decay = weight_decay
        super().__init__(params, lambda data, grads: _core.optimizer_create(
            self._kind, data, grads, (lr, beta1, beta2, eps, weight_decay)))

    betas = property(lambda self: self._betas, doc="(beta1, beta2).")
    eps = property(lambda self: self._eps, doc="Added to the denominator for stability.")
    weight_decay = property(lambda self: self._weight_decay, doc="L2 penalty.")

    def _settings(self):
        return {"lr": self._lr, "betas": self._betas, "eps": self._eps,
                "weight_decay": self._weight_decay}


class AdamW(Adam):
    """AdamW (Loshchilov and Hutter): Adam with decoupled weight decay, PyTorch's rule.

    Each step first shrinks the weights, ``w *= 1 - lr * weight_decay``, then applies Adam's
    update without any L2 term in the gradient. Same arguments as ``Adam``; ``weight_decay``
    defaults to 0.01 as in PyTorch.
    """

    _kind = "adamw"

    def __init__(self, params, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


from . import lr_scheduler  # noqa: E402  (swiftcnn.optim.lr_scheduler, as torch.optim.lr_scheduler)
