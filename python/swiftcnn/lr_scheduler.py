"""Learning-rate schedules (``swiftcnn.optim.lr_scheduler``): ``StepLR`` and ``CosineAnnealingLR``.

A schedule owns an optimizer's ``lr``: ``step()`` advances one epoch and sets ``optimizer.lr``;
``get_last_lr()`` returns ``[lr]``. The values are PyTorch's for the same calls (its closed forms,
which its recursive updates equal to rounding). ``fit(..., scheduler=s)`` calls ``s.step()`` after
every epoch.
"""
import math

from ._convert import check_int, check_real

__all__ = ["LRScheduler", "StepLR", "CosineAnnealingLR"]


class LRScheduler:
    """Base class: remembers the optimizer's initial lr and the epoch count."""

    def __init__(self, optimizer):
        if not hasattr(optimizer, "lr"):
            raise TypeError(f"{type(self).__name__}: optimizer must be a swiftcnn optimizer, got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = float(optimizer.lr)
        self.last_epoch = 0
        self._last_lr = [self.base_lr]

    def _lr_at(self, epoch):
        raise NotImplementedError

    def step(self):
        """Advance one epoch and set the optimizer's lr for it."""
        self.last_epoch += 1
        lr = self._lr_at(self.last_epoch)
        self.optimizer.lr = lr
        self._last_lr = [lr]

    def get_last_lr(self):
        """``[lr]``: the learning rate the last step set (the initial one before any step)."""
        return list(self._last_lr)

    def state_dict(self):
        """``{"last_epoch": n, "base_lr": lr}``."""
        return {"last_epoch": self.last_epoch, "base_lr": self.base_lr}


class StepLR(LRScheduler):
    """``lr = base_lr * gamma ** (epoch // step_size)``."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        self.step_size = check_int(step_size, "step_size", "StepLR")
        self.gamma = check_real(gamma, "gamma", "StepLR")
        super().__init__(optimizer)

    def _lr_at(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``.

    Past ``T_max`` the curve continues (rises again), as PyTorch's does.
    """

    def __init__(self, optimizer, T_max, eta_min=0.0):  # noqa: N803 (PyTorch's name)
        self.T_max = check_int(T_max, "T_max", "CosineAnnealingLR")
        self.eta_min = check_real(eta_min, "eta_min", "CosineAnnealingLR")
        super().__init__(optimizer)

    def _lr_at(self, epoch):
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2
