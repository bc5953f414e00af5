/*
 * swiftcnn.h: the C ABI of the SwiftCNN core, hand-written (see docs/ARCHITECTURE.md).
 *
 * This header is the one contract between the Swift core and C callers (the CPython extension in
 * python/swiftcnn/_core.c). It is implemented by the @_cdecl functions in Sources/SwiftCNNCAPI.
 *
 * Conventions
 * - Every function that can fail returns an int32_t status (SCNN_OK or an SCNN_*_ERROR) and takes,
 *   last, a caller-owned message buffer `msg` of `msg_cap` bytes. On failure a NUL-terminated UTF-8
 *   message (truncated to fit) is written there; it names the op and the argument as the Python API
 *   names them ("conv2d: x must be 4-D (N, C, H, W), got shape (2, 3)"). msg may be NULL when
 *   msg_cap is 0. No global error state: calls from several threads at once are safe.
 * - A rejected call writes nothing else: outputs, parameters, gradients and optimizer state are
 *   unchanged. Nothing traps on bad arguments: every argument is validated before any work.
 * - Every tensor operand is one scnn_tensor: a data pointer, the shape inline, ndim and dtype.
 *   Data is contiguous and row-major (NCHW images, OIHW conv weights, (out, in) linear weights),
 *   aligned for its dtype, and may be NULL only when the element count is 0.
 * - Handles (scnn_layer, scnn_optimizer) are reference counted. A create function returns a handle
 *   holding one reference; release it with the matching release function. A handle used by two
 *   threads at once makes the second call fail with SCNN_RUNTIME_ERROR (never corrupts state).
 */
#ifndef SWIFTCNN_H
#define SWIFTCNN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status codes (map to Python exceptions) ---------------------------------------------- */
enum {
    SCNN_OK = 0,
    SCNN_VALUE_ERROR = 1,    /* ValueError: wrong shape, size or value */
    SCNN_TYPE_ERROR = 2,     /* TypeError: wrong dtype or kind of argument */
    SCNN_OVERFLOW_ERROR = 3, /* OverflowError: size arithmetic beyond int64 */
    SCNN_MEMORY_ERROR = 4,   /* MemoryError: allocation failed */
    SCNN_RUNTIME_ERROR = 5   /* RuntimeError: backward before forward, handle busy in another thread */
};

/* ---- tensors --------------------------------------------------------------------------------- */
enum { SCNN_FLOAT32 = 0, SCNN_FLOAT64 = 1, SCNN_INT64 = 2 };
#define SCNN_MAX_NDIM 8
#define SCNN_ABSENT (-1) /* ndim of an optional operand that was not given (a bias of None) */

/* One operand. For inputs the caller fills every field. For outputs the callee writes ndim, shape
 * and dtype when asked for shapes (see scnn_op_fn) and the caller then sets data. */
typedef struct scnn_tensor {
    void *data;
    int64_t shape[SCNN_MAX_NDIM];
    int32_t ndim;  /* 0..SCNN_MAX_NDIM, or SCNN_ABSENT */
    int32_t dtype; /* SCNN_FLOAT32, SCNN_FLOAT64 or SCNN_INT64 */
} scnn_tensor;

/* The Swift side reads this struct by these offsets (Sources/SwiftCNNCAPI/TensorDescriptor.swift). */
#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(scnn_tensor) == 80, "scnn_tensor is 80 bytes");
_Static_assert(offsetof(scnn_tensor, shape) == 8, "scnn_tensor.shape at 8");
_Static_assert(offsetof(scnn_tensor, ndim) == 72, "scnn_tensor.ndim at 72");
_Static_assert(offsetof(scnn_tensor, dtype) == 76, "scnn_tensor.dtype at 76");
#endif

/* ---- library ----------------------------------------------------------------------------------- */
/* The library's version string, e.g. "0.2.0" (static storage): the one version of the project. */
const char *scnn_version(void);
/* Worker threads used by compute calls (default: the number of cores). n < 1 is a value error. */
int32_t scnn_set_num_threads(int64_t n, char *msg, int64_t msg_cap);
int64_t scnn_get_num_threads(void);

/* ---- functional ops ---------------------------------------------------------------------------- */
/*
 * Every functional op has this one signature, `int32_t scnn_<name>(const scnn_op_call *call)`:
 *   inputs[n_inputs]    the tensor operands, in the Python signature's order (absent optional
 *                       ones with ndim SCNN_ABSENT)
 *   ints[n_ints]        integer settings, reals[n_reals] floating-point settings (listed per op)
 *   outputs[n_outputs]  the results
 *   compute             0: validate everything and write each output's ndim, shape and dtype
 *                       (data untouched); 1: validate again, check that every output has exactly
 *                       that shape and dtype and non-overlapping memory, and compute.
 *   msg[msg_cap]        room for the error message of a failed call (NUL-terminated)
 * Both modes run the same validation, which allocates nothing. A caller allocates between the two.
 * Outputs must not overlap inputs (elementwise ops: an output may BE its first input, exactly).
 * A loss is a 0-d SCNN_FLOAT64 output. One struct rather than eleven parameters: every op's
 * exported function is then one line of Swift, and the call can grow a field without a new ABI.
 */
typedef struct {
    const scnn_tensor *inputs;
    const int64_t *ints;
    const double *reals;
    scnn_tensor *outputs;
    char *msg;
    int64_t msg_cap;
    int32_t n_inputs, n_ints, n_reals, n_outputs;
    int32_t compute;
    int32_t reserved; /* 0 */
} scnn_op_call;

typedef int32_t scnn_op_fn(const scnn_op_call *call);

/* The Swift side reads this struct by these offsets (Sources/SwiftCNNCAPI/OpCall.swift). */
#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(scnn_op_call) == 72, "scnn_op_call is 72 bytes");
_Static_assert(offsetof(scnn_op_call, msg) == 32 && offsetof(scnn_op_call, msg_cap) == 40, "msg at 32, msg_cap at 40");
_Static_assert(offsetof(scnn_op_call, n_inputs) == 48 && offsetof(scnn_op_call, n_outputs) == 60, "counts at 48..63");
_Static_assert(offsetof(scnn_op_call, compute) == 64, "compute at 64");
#endif

/*
 * The ops are the library's exported symbols `scnn_<name>`, each a scnn_op_fn: conv2d,
 * conv2d_backward, max_pool2d(_backward), avg_pool2d(_backward), linear(_backward),
 * sigmoid(_backward), relu(_backward), softmax, softmax_cross_entropy,
 * binary_cross_entropy_with_logits, correlate2d, convolve2d, tanh(_backward), leaky_relu(_backward),
 * batch_norm(_backward), adaptive_avg_pool2d(_backward). Each one's operands, settings and results
 * are documented at its definition (Sources/SwiftCNNCAPI/Functional*.swift, "in (...) ints (...)
 * out (...)") and its Python signature in python/swiftcnn/_core.c's table, whose rows declare
 * the symbols they call (`extern scnn_op_fn scnn_<name>;`): adding an op adds no line here.
 * Conventions of the settings: a "pair" is two ints (h, w); an "optional pair" three, (given, h, w),
 * given = 0 meaning the op's default (a pooling stride defaults to the kernel size); a conv padding
 * is (mode, h, w) with mode 0 = (h, w) zeros on each side and 1 = "same"; a mode of correlate2d is
 * one of the SCNN_MODE_* values below; booleans are 0/1 ints; reals are doubles.
 */
enum { SCNN_MODE_VALID = 0, SCNN_MODE_SAME = 1, SCNN_MODE_FULL = 2 };

/* ---- layers and models ------------------------------------------------------------------------- */
/*
 * A layer handle is a Swift layer object. forward(x) keeps a view of x (NOT a copy: the caller keeps
 * x alive and unchanged until the next forward or until backward) and of its own intermediate
 * results. backward(grad_out) needs a preceding forward, writes the gradient for that forward's
 * input, and ADDS the parameter gradients into each parameter's grad buffer.
 */
typedef struct scnn_layer scnn_layer;

/*
 * One constructor for every kind (dtype SCNN_FLOAT32/SCNN_FLOAT64; seed draws the initial weights,
 * PyTorch's U(-1/sqrt(fan_in), 1/sqrt(fan_in))):
 *   "conv2d"      ints (in_channels, out_channels, kernel pair, stride pair, padding pair,
 *                 dilation pair, bias 0/1)
 *   "grouped_conv2d" ints (in_channels, out_channels, kernel pair, stride pair, padding (mode, h, w)
 *                 as scnn_conv2d, dilation pair, groups, bias 0/1): fan_in = in/groups*kH*kW
 *   "linear"      ints (in_features, out_features, bias 0/1)
 *   "max_pool2d", "avg_pool2d"   ints (kernel pair, stride optional pair, padding pair)
 *   "sigmoid", "relu", "flatten" no settings
 *   "sequential"  children: the layers, in order (retained; the same objects, so parameters are
 *                 shared with the children's handles); every child must have `dtype`
 *   "tanh"; "leaky_relu" reals (negative_slope); "dropout" reals (p), seed draws the masks
 *   "batch_norm1d", "batch_norm2d"  ints (num_features, affine 0/1, track_running_stats 0/1),
 *                 reals (eps, momentum; NaN for None = the cumulative average)
 *   "adaptive_avg_pool2d" ints (output pair); "residual" children: y = x + f(x), f the children
 */
int32_t scnn_layer_create(const char *kind, int32_t dtype,
                          const int64_t *ints, int32_t n_ints, const double *reals, int32_t n_reals,
                          scnn_layer *const *children, int64_t n_children, uint64_t seed,
                          scnn_layer **layer_out, char *msg, int64_t msg_cap);
void scnn_layer_retain(scnn_layer *layer);
void scnn_layer_release(scnn_layer *layer);
int32_t scnn_layer_dtype(const scnn_layer *layer);

/* y = layer(x). compute = false: validate x and write y's ndim/shape/dtype (the shape query);
 * compute = true: y must have exactly that shape. */
int32_t scnn_layer_forward(scnn_layer *layer, const scnn_tensor *x, scnn_tensor *y, bool compute,
                           char *msg, int64_t msg_cap);
/* grad_x for the last forward's input. compute = false: write grad_x's ndim/shape/dtype (the last
 * input's; runtime error before any forward); compute = true: grad_x must have exactly that shape,
 * checked while the layer is held, so a forward by another thread in between gives
 * SCNN_RUNTIME_ERROR instead of a write past the buffer. */
int32_t scnn_layer_backward(scnn_layer *layer, const scnn_tensor *grad_out, scnn_tensor *grad_x,
                            bool compute, char *msg, int64_t msg_cap);

/* Parameters in PyTorch's order: weight then bias for a layer; for a Sequential its layers' in order,
 * named "0.weight", "0.bias", "3.weight", ... ("2.0.weight" when nested). data and grad describe
 * memory the layer owns and keeps for its whole life (grad->data is NULL for a buffer). */
int64_t scnn_layer_parameter_count(scnn_layer *layer);
int32_t scnn_layer_parameter(scnn_layer *layer, int64_t index, scnn_tensor *data, scnn_tensor *grad,
                             char *name_out, int64_t name_cap, char *msg, int64_t msg_cap);
int32_t scnn_layer_zero_grad(scnn_layer *layer, char *msg, int64_t msg_cap);
/* Training (true, as created) or evaluation mode; containers pass it to every child. */
int32_t scnn_layer_set_training(scnn_layer *layer, bool training, char *msg, int64_t msg_cap);
/* Buffers (BatchNorm's running_mean, running_var, num_batches_tracked; named like parameters):
 * memory the layer owns for its life, updated in place by training mode forwards. */
int64_t scnn_layer_buffer_count(scnn_layer *layer);
int32_t scnn_layer_buffer(scnn_layer *layer, int64_t index, scnn_tensor *data, char *name_out, int64_t name_cap,
                          char *msg, int64_t msg_cap);

/* ---- optimizers ------------------------------------------------------------------------------ */
/*
 * An optimizer updates parameters given as (data, grad) pairs of equal shape and dtype, with
 * PyTorch's update rules step for step. It does not keep the memory alive: the caller does.
 * step() writes data in place and never changes grad. One constructor for every kind:
 *   "sgd"   reals (lr, momentum, dampening, weight_decay, nesterov 0/1)
 *   "adam"  reals (lr, beta1, beta2, eps, weight_decay)  (L2: weight_decay * p added to the gradient)
 *   "adamw" reals (lr, beta1, beta2, eps, weight_decay)  (decoupled: p *= 1 - lr * weight_decay first)
 * PyTorch's checks: lr, momentum, weight_decay, eps >= 0; nesterov needs momentum > 0 and
 * dampening == 0; 0 <= beta < 1.
 */
typedef struct scnn_optimizer scnn_optimizer;
int32_t scnn_optimizer_create(const char *kind, const scnn_tensor *data, const scnn_tensor *grads,
                              int64_t n_params, const double *reals, int32_t n_reals,
                              scnn_optimizer **optimizer_out, char *msg, int64_t msg_cap);
int32_t scnn_optimizer_step(scnn_optimizer *optimizer, char *msg, int64_t msg_cap);
int32_t scnn_optimizer_set_lr(scnn_optimizer *optimizer, double lr, char *msg, int64_t msg_cap);
double scnn_optimizer_get_lr(const scnn_optimizer *optimizer);
/* Sets every parameter's grad to zero. */
int32_t scnn_optimizer_zero_grad(scnn_optimizer *optimizer, char *msg, int64_t msg_cap);
void scnn_optimizer_release(scnn_optimizer *optimizer);

/* ---- fused training step ------------------------------------------------------------------- */
/*
 * One canonical step in one call: optimizer zero_grad; logits = model.forward(x);
 * (loss, g) = softmax_cross_entropy(logits, labels); model.backward(g); optimizer step.
 * x has the model's dtype; labels SCNN_INT64 (N,). Writes the batch-mean loss and the number of rows
 * whose argmax logit equals the label. If the loss is not finite, nothing is updated (the
 * gradients are computed, the step is not taken) and the status is SCNN_OK with the loss written:
 * the caller decides. optimizer may be NULL (no zero_grad, no step).
 */
int32_t scnn_train_step_cross_entropy(scnn_layer *model, scnn_optimizer *optimizer,
                                      const scnn_tensor *x, const scnn_tensor *labels,
                                      double *loss_out, int64_t *correct_out,
                                      char *msg, int64_t msg_cap);

#ifdef __cplusplus
}
#endif
#endif /* SWIFTCNN_H */
