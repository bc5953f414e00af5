"""Training loops for ``Sequential``: ``fit``, ``predict``, ``evaluate``, and the ``History`` they keep.

``TrainingMixin`` holds the methods; ``Sequential`` inherits them. Each training batch runs the
canonical step ``opt.zero_grad(); loss, g = softmax_cross_entropy(model(x), y); model.backward(g);
opt.step()``: for swiftcnn's own optimizers as a single fused call into Swift, for any other
optimizer object (anything with ``zero_grad()`` and ``step()``) as those Python calls.
"""
import math
import time

import numpy as np

from . import _core
from ._convert import (as_cast_input, as_labels, check_bool, check_int, check_label_range,
                       describe_type)
from ._random import check_seed, next_seed
from .optim import SGD, Optimizer

__all__ = ["History", "TrainingMixin", "random_shift"]


class History:
    """What ``fit`` measured, per epoch.

    Attributes:
        history: ``{"loss": [...], "accuracy": [...]}`` (the means over each epoch's batches as
            trained, weighted by batch size), plus ``"val_loss"`` and ``"val_accuracy"`` (measured
            after each epoch) when ``fit`` was given ``validation_data``. Accuracies are fractions.
        epoch: the indices (from 0) of the epochs recorded.
        interrupted: True if Ctrl-C stopped ``fit`` early; the lists then hold the epochs that
            completed, and the model has the weights of the last completed step.
        seconds: each recorded epoch's training time in seconds (its batches' steps, shuffling
            and augmentation; the validation after it excluded).
    """

    def __init__(self, keys=("loss", "accuracy")):
        self.history = {key: [] for key in keys}
        self.epoch = []
        self.seconds = []
        self.interrupted = False

    def __getitem__(self, key):
        """``history["loss"]`` is ``history.history["loss"]``."""
        return self.history[key]

    def _record(self, epoch, figures, seconds):
        self.epoch.append(epoch)
        self.seconds.append(float(seconds))
        for key, value in figures.items():
            self.history[key].append(float(value))

    def __repr__(self):
        parts = ", ".join(f"{key}={[round(v, 4) for v in values]}"
                          for key, values in self.history.items())
        flag = ", interrupted=True" if self.interrupted else ""
        return f"History(epochs={len(self.epoch)}, {parts}{flag})"


def _num_classes(model, x_shape, owner, argument):
    """K for a model whose output on ``x_shape`` must be (N, K) logits; ValueError otherwise."""
    try:
        out_shape = model._output_shape(x_shape)
    except ValueError as error:
        raise ValueError(f"{owner}: {argument} of shape {tuple(x_shape)} does not fit the model: "
                         f"{error}") from None
    if len(out_shape) != 2:
        raise ValueError(f"{owner}: the model's output for {argument} has shape {out_shape}; "
                         f"loss='cross_entropy' needs logits of shape (N, K)")
    return out_shape[1]


def random_shift(batch, rng, max_shift=2):
    """Each image of ``batch`` (N, C, H, W) moved by its own random (dy, dx), each drawn uniformly
    from [-max_shift, max_shift], the uncovered border filled with zeros (MNIST's background).

    ``rng`` is a ``numpy.random.Generator``. The signature is fit's ``augment`` protocol:
    ``fit(..., augment=random_shift)`` moves every training image by up to 2 pixels, anew in
    every epoch (``functools.partial(random_shift, max_shift=1)`` for 1 pixel). Returns a new
    C-contiguous array of ``batch``'s dtype (``batch`` itself when ``max_shift`` is 0 or the
    batch is empty).
    """
    batch = np.asarray(batch)
    if batch.ndim != 4:
        raise ValueError(f"random_shift: batch must have shape (N, C, H, W), got {batch.shape}")
    s = int(max_shift)
    if s < 0:
        raise ValueError(f"random_shift: max_shift must be >= 0, got {max_shift}")
    n, channels, height, width = batch.shape
    if s == 0 or n == 0:
        return batch
    padded = np.zeros((n, channels, height + 2 * s, width + 2 * s), dtype=batch.dtype)
    padded[:, :, s:s + height, s:s + width] = batch
    # Every (H, W) window of the padded images, indexed by its top-left corner: (n, C, 2s+1, 2s+1, H, W).
    # Output image i is the window whose corner is (s - dy_i, s - dx_i): a shift by (dy_i, dx_i).
    windows = np.lib.stride_tricks.sliding_window_view(padded, (height, width), axis=(2, 3))
    corners = rng.integers(0, 2 * s + 1, size=(2, n))
    return np.ascontiguousarray(windows[np.arange(n), :, corners[0], corners[1]])


def _applied_augment(augment, x_batch, rng, owner, epoch, batch):
    """``augment(x_batch, rng)``, checked to keep the batch's shape; cast to its dtype, contiguous."""
    out = np.asarray(augment(x_batch, rng))
    if out.shape != x_batch.shape:
        raise ValueError(f"{owner}: augment returned shape {out.shape} for a batch of shape "
                         f"{x_batch.shape} (epoch {epoch + 1}, batch {batch + 1}); it must keep the shape")
    return np.ascontiguousarray(out, dtype=x_batch.dtype)


class _Progress:
    """One tqdm bar per epoch (if tqdm is installed) or one printed line per epoch; or nothing."""

    def __init__(self, enabled, epochs, batches):
        self.enabled = enabled
        self.epochs = epochs
        self.batches = batches
        self.tqdm = None
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm
                self.tqdm = tqdm
            except ImportError:
                self.tqdm = None

    def start_epoch(self, epoch):
        if self.enabled and self.tqdm is not None:
            self.bar = self.tqdm(total=self.batches, desc=f"Epoch {epoch + 1}/{self.epochs}",
                                 unit="batch", leave=True)

    def batch_done(self, loss, accuracy):
        if self.bar is not None:
            self.bar.set_postfix({"loss": f"{loss:.4f}", "accuracy": f"{accuracy:.4f}"},
                                 refresh=False)
            self.bar.update(1)

    def end_epoch(self, epoch, figures, seconds, samples):
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix({key: f"{value:.4f}" for key, value in figures.items()},
                                 refresh=True)
            self.close()
        else:
            text = " - ".join(f"{key}: {value:.4f}" for key, value in figures.items())
            rate = f" ({samples / seconds:,.0f} samples/s)" if seconds > 0 else ""
            print(f"Epoch {epoch + 1}/{self.epochs} - {text} - {seconds:.1f}s{rate}", flush=True)

    def interrupted(self, epoch, completed):
        self.close()
        if self.enabled:
            print(f"fit: interrupted during epoch {epoch + 1}; returning the history of the "
                  f"{completed} completed epoch(s)", flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class TrainingMixin:
    """``fit``, ``predict`` and ``evaluate`` for ``Sequential`` (which provides forward/backward)."""

    def fit(self, x, y, *, epochs=1, batch_size=64, optimizer=None, loss="cross_entropy",
            validation_data=None, shuffle=True, seed=None, progress=True, scheduler=None,
            augment=None, distributed=False):
        """Train the model on ``(x, y)`` with mini-batches; returns a :class:`History`.

        Each batch runs the canonical step ``opt.zero_grad(); loss, g =
        softmax_cross_entropy(model(x), y); model.backward(g); opt.step()``. Every argument is
        checked before the first step, so a rejected call leaves the model unchanged.

        Args:
            x: inputs, cast to the model's dtype (e.g. (N, 1, 28, 28) images).
            y: integer class labels of shape (N,), values in [0, K) for K outputs.
            epochs: passes over the data (an int >= 0).
            batch_size: samples per step; the last, partial batch of an epoch is kept.
            optimizer: anything with ``zero_grad()`` and ``step()``; default a new
                ``SGD(model.parameters(), lr=0.1)`` for this call.
            loss: "cross_entropy" (softmax cross-entropy on the logits); the only one supported.
            validation_data: an ``(x_val, y_val)`` tuple evaluated after each epoch, which adds
                ``val_loss`` and ``val_accuracy`` to the history.
            shuffle: reshuffle the samples each epoch.
            seed: seed of the shuffling (and augmentation); None draws one from the global
                generator (``swiftcnn.manual_seed``). The same seed gives bit-identical results.
            progress: a tqdm bar per epoch if tqdm is installed, else one printed line per epoch;
                False prints nothing.
            scheduler: a learning-rate schedule (anything with ``step()``, e.g.
                ``swiftcnn.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)``);
                ``scheduler.step()`` is called after every completed epoch (API.md Version 2).
            augment: a callable ``augment(x_batch, rng) -> array`` applied to each training
                batch before its step (e.g. ``swiftcnn.training.random_shift``);
                ``rng`` is the call's ``numpy.random.Generator`` (seeded by ``seed``, shared with the
                shuffling), so augmented runs are reproducible. It must keep the batch's shape;
                the result is cast to the model's dtype. Validation data are never augmented.
            distributed: True (or an mpi4py communicator) for data-parallel training over MPI,
                ``batch_size`` samples per rank per step; see ``swiftcnn.distributed``.

        Returns:
            History: per-epoch ``loss``, ``accuracy`` (and ``val_loss``, ``val_accuracy``);
            ``History.seconds`` holds each epoch's training time (validation excluded).

        Raises:
            FloatingPointError: a batch's loss is not finite; the message names the epoch and the
                batch, and that step is not applied (every `.grad` holds that batch's gradients,
                as after a PyTorch loop that checks the loss after backward).

        Ctrl-C stops between batches: the model keeps the weights of the last completed step and
        the History of the completed epochs is returned, with ``interrupted`` set.
        """
        owner = "Sequential.fit"
        if not isinstance(loss, str) or loss != "cross_entropy":
            raise ValueError(f"{owner}: loss must be 'cross_entropy', got {loss!r}")
        epochs = check_int(epochs, "epochs", owner, minimum=0)
        batch_size = check_int(batch_size, "batch_size", owner)
        shuffle = check_bool(shuffle, "shuffle", owner)
        progress = check_bool(progress, "progress", owner)
        seed = next_seed() if seed is None else check_seed(seed, "seed", owner)
        if augment is not None and not callable(augment):
            raise TypeError(f"{owner}: augment must be a callable (x_batch, rng) -> x_batch or "
                            f"None, got {describe_type(augment)}")
        if scheduler is not None and not callable(getattr(scheduler, "step", None)):
            raise TypeError(f"{owner}: scheduler must have a step() method (e.g. "
                            f"swiftcnn.optim.lr_scheduler.StepLR) or be None, got "
                            f"{describe_type(scheduler)}")

        dtype = self.dtype
        x = as_cast_input(x, dtype, owner, "x")
        dtype = x.dtype
        labels = as_labels(y, owner, "y")
        if x.ndim < 1 or x.shape[0] != labels.shape[0]:
            raise ValueError(f"{owner}: x and y must hold the same number of samples, got x of "
                             f"shape {x.shape} and y of shape {labels.shape}")
        if x.shape[0] == 0:
            raise ValueError(f"{owner}: x holds no samples (shape {x.shape})")
        check_label_range(labels, _num_classes(self, x.shape, owner, "x"), owner, "y")

        validation = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise TypeError(f"{owner}: validation_data must be an (x_val, y_val) tuple, got "
                                f"{describe_type(validation_data)}")
            x_val = as_cast_input(validation_data[0], dtype, owner, "validation_data[0]")
            y_val = as_labels(validation_data[1], owner, "validation_data[1]")
            if x_val.ndim < 1 or x_val.shape[0] != y_val.shape[0]:
                raise ValueError(f"{owner}: validation_data's x and y must hold the same number of "
                                 f"samples, got shapes {x_val.shape} and {y_val.shape}")
            classes = _num_classes(self, x_val.shape, owner, "validation_data[0]")
            check_label_range(y_val, classes, owner, "validation_data[1]")
            validation = (x_val, y_val)

        if optimizer is None:
            optimizer = SGD(self.parameters(), lr=0.1)
        elif not (callable(getattr(optimizer, "zero_grad", None))
                  and callable(getattr(optimizer, "step", None))):
            raise TypeError(f"{owner}: optimizer must have zero_grad() and step() (e.g. "
                            f"swiftcnn.optim.SGD), got {describe_type(optimizer)}")

        if distributed is not False:  # data parallel over MPI: swiftcnn/distributed.py
            from .distributed import fit_distributed
            return fit_distributed(self, x, labels, distributed=distributed, epochs=epochs,
                                   batch_size=batch_size, optimizer=optimizer,
                                   validation=validation, shuffle=shuffle, seed=seed,
                                   progress=progress, scheduler=scheduler, augment=augment,
                                   owner=owner)

        fused = isinstance(optimizer, Optimizer) and optimizer.dtype == dtype
        step = self._fused_step if fused else self._python_step
        rng = np.random.default_rng(seed)
        count = x.shape[0]
        batches = -(-count // batch_size)
        keys = ["loss", "accuracy"] + (["val_loss", "val_accuracy"] if validation else [])
        history = History(keys)
        reporter = _Progress(progress, epochs, batches)
        epoch = 0
        try:
            for epoch in range(epochs):
                started = time.perf_counter()
                order = rng.permutation(count) if shuffle else None
                reporter.start_epoch(epoch)
                loss_sum, correct_sum, seen = 0.0, 0, 0
                for batch, start in enumerate(range(0, count, batch_size)):
                    if order is None:
                        x_batch = x[start:start + batch_size]
                        y_batch = labels[start:start + batch_size]
                    else:
                        chosen = order[start:start + batch_size]
                        x_batch, y_batch = x[chosen], labels[chosen]
                    if augment is not None:
                        x_batch = _applied_augment(augment, x_batch, rng, owner, epoch, batch)
                    batch_loss, correct = step(optimizer, x_batch, y_batch)
                    if not math.isfinite(batch_loss):
                        raise FloatingPointError(
                            f"{owner}: epoch {epoch + 1}, batch {batch + 1}: loss is {batch_loss}; "
                            f"that step was not applied (try a smaller learning rate)")
                    size = y_batch.shape[0]
                    loss_sum += batch_loss * size
                    correct_sum += correct
                    seen += size
                    reporter.batch_done(loss_sum / seen, correct_sum / seen)
                seconds = time.perf_counter() - started
                figures = {"loss": loss_sum / seen, "accuracy": correct_sum / seen}
                if validation is not None:
                    measured = self._evaluate_arrays(*validation, 256)
                    figures["val_loss"] = measured["loss"]
                    figures["val_accuracy"] = measured["accuracy"]
                history._record(epoch, figures, seconds)
                reporter.end_epoch(epoch, figures, seconds, seen)
                if scheduler is not None:
                    scheduler.step()
        except KeyboardInterrupt:
            history.interrupted = True
            reporter.interrupted(epoch, len(history.epoch))
        finally:
            reporter.close()
        return history

    def _fused_step(self, optimizer, x_batch, y_batch):
        """One canonical step as a single Swift call; returns (loss, number correct)."""
        dtype = x_batch.dtype
        loss, correct = _core.train_step_cross_entropy(self._handle_for(dtype), optimizer._handle,
                                                       x_batch, y_batch)
        self._inputs[dtype] = x_batch  # the Swift layers keep a view of it, like after forward
        self._last_dtype = dtype
        return loss, correct

    def _python_step(self, optimizer, x_batch, y_batch):
        """The canonical step through Python calls, for optimizers that are not swiftcnn's."""
        optimizer.zero_grad()
        logits = self.forward(x_batch)
        loss, grad = _core.softmax_cross_entropy(logits, y_batch)
        # As PyTorch's loop and the fused step: backward runs before the check, so after a
        # non-finite loss every .grad holds that batch's gradients; only the step is skipped.
        self.backward(grad)
        if math.isfinite(loss):
            optimizer.step()
        return loss, int(np.count_nonzero(np.argmax(logits, axis=1) == y_batch))

    def predict(self, x, batch_size=256):
        """Return the model's outputs (logits) for ``x`` as a new array, computed ``batch_size`` at a time.

        ``x`` is cast to the model's dtype.
        """
        owner = "Sequential.predict"
        batch_size = check_int(batch_size, "batch_size", owner)
        x = as_cast_input(x, self.dtype, owner, "x")
        return self._predict_array(x, batch_size)

    def _predict_array(self, x, batch_size):
        if x.ndim == 0:
            raise ValueError("Sequential.predict: x must have a batch dimension, got a scalar")
        count = x.shape[0]
        if count <= batch_size:
            return self.forward(x)
        outputs = [self.forward(x[start:start + batch_size]) for start in range(0, count, batch_size)]
        return np.concatenate(outputs, axis=0)

    def evaluate(self, x, y, batch_size=256):
        """Return ``{"loss": mean cross-entropy, "accuracy": fraction correct}`` on ``(x, y)``.

        ``x`` is cast to the model's dtype; ``y`` holds integer class labels (N,). With N = 0 both
        figures are nan.
        """
        owner = "Sequential.evaluate"
        batch_size = check_int(batch_size, "batch_size", owner)
        x = as_cast_input(x, self.dtype, owner, "x")
        labels = as_labels(y, owner, "y")
        if x.ndim < 1 or x.shape[0] != labels.shape[0]:
            raise ValueError(f"{owner}: x and y must hold the same number of samples, got x of "
                             f"shape {x.shape} and y of shape {labels.shape}")
        return self._evaluate_arrays(x, labels, batch_size)

    def _evaluate_arrays(self, x, labels, batch_size):
        logits = self._predict_array(x, batch_size)
        if logits.ndim != 2:
            raise ValueError(f"Sequential.evaluate: the model's output has shape {logits.shape}; "
                             f"the cross-entropy needs logits of shape (N, K)")
        check_label_range(labels, logits.shape[1], "Sequential.evaluate", "y")
        count = labels.shape[0]
        if count == 0:
            return {"loss": math.nan, "accuracy": math.nan}
        loss, _ = _core.softmax_cross_entropy(logits, labels)
        correct = int(np.count_nonzero(np.argmax(logits, axis=1) == labels))
        return {"loss": float(loss), "accuracy": correct / count}
