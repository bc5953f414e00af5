/*
 * swiftcnn.h: the C ABI of the SwiftCNN core, hand-written (see docs/ARCHITECTURE.md).
 *
 * This header is the one contract between the Swift core and C callers (the CPython extension in
 * python/swiftcnn/_core.c). It is implemented by the @_cdecl functions in Sources/SwiftCNNCAPI.
 *
 * Conventions
 * - Every function that can fail returns an int32_t status (SCNN_OK or an SCNN_*_ERROR) and takes,
 *   last, a caller-owned message buffer `msg` of `msg_cap` bytes. On failure a NUL-terminated UTF-8
 *   message (truncated to fit) is written there; it names the argument as the Python API names it
 *   ("x", "weight", "grad_out", "target", ...), the expected and the actual shape. msg may be NULL
 *   when msg_cap is 0. No global error state: calls from several threads at once are safe.
 * - A rejected call writes nothing else: outputs, parameters, gradients and optimizer state are
 *   unchanged.
 * - dtype is SCNN_FLOAT32 or SCNN_FLOAT64; every data pointer of one call points at that type.
 * - Tensors are passed as (data, shape, ndim): contiguous, row-major (NCHW for images, OIHW for
 *   conv weights, (out, in) for linear weights), shape an int64_t array of ndim entries.
 *   Data pointers must be aligned for the dtype and valid for the shape's element count; they may
 *   be NULL only when that count is 0.
 * - Outputs are written in full (never accumulated into), into caller-allocated buffers of the
 *   documented shape. Functions with a `*_shape_out` parameter compute the output shape: call them
 *   once with the output data pointer NULL to validate the arguments and learn the shape, allocate,
 *   then call again with the buffer.
 * - Class labels are int64_t.
 * - Handles (scnn_layer, scnn_optimizer) are reference counted. A create function returns a handle
 *   holding one reference; release it with the matching release function. A handle used by two
 *   threads at once makes the second call fail with SCNN_RUNTIME_ERROR (never corrupts state).
 * - Nothing traps on bad arguments: every argument is validated before any work.
 */
#ifndef SWIFTCNN_H
#define SWIFTCNN_H

#include <stdbool.h>
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

/* ---- dtypes ---------------------------------------------------------------------------------- */
enum { SCNN_FLOAT32 = 0, SCNN_FLOAT64 = 1 };

/* ---- library ----------------------------------------------------------------------------------- */
/* The library's version string, e.g. "0.1.0" (static storage). */
const char *scnn_version(void);
/* Worker threads used by compute calls (default: the number of cores). n < 1 is a value error. */
int32_t scnn_set_num_threads(int64_t n, char *msg, int64_t msg_cap);
int64_t scnn_get_num_threads(void);

/* ---- functional ops ------------------------------------------------------------------------ */
/*
 * Geometry arrays:
 *   conv:  conv_geometry[6] = {stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w}
 *   pool:  pool_geometry[6] = {kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w}
 * Checks: strides, dilations and kernel sizes >= 1; padding >= 0; max pool padding <= kernel/2;
 * output sizes >= 1; spatial sizes >= 1; channel counts >= 1; batch N >= 0 (N = 0 gives empty
 * results); element counts that fit in int64.
 */

/* y = conv2d(x, weight, bias): x (N,C,H,W), weight (K,C,kH,kW), bias (K) or NULL with bias_len -1.
 * y_shape_out[4] receives (N,K,Ho,Wo); y may be NULL to only validate and get the shape. */
int32_t scnn_conv2d_forward(int32_t dtype,
                            const void *x, const int64_t *x_shape, int64_t x_ndim,
                            const void *weight, const int64_t *weight_shape, int64_t weight_ndim,
                            const void *bias, int64_t bias_len,
                            const int64_t conv_geometry[6],
                            void *y, int64_t y_shape_out[4],
                            char *msg, int64_t msg_cap);

/* grad_x (shape of x), grad_weight (shape of weight), grad_bias (K) from grad_out (N,K,Ho,Wo).
 * Any of the three outputs may be NULL to skip it. */
int32_t scnn_conv2d_backward(int32_t dtype,
                             const void *grad_out, const int64_t *grad_out_shape, int64_t grad_out_ndim,
                             const void *x, const int64_t *x_shape, int64_t x_ndim,
                             const void *weight, const int64_t *weight_shape, int64_t weight_ndim,
                             const int64_t conv_geometry[6],
                             void *grad_x, void *grad_weight, void *grad_bias,
                             char *msg, int64_t msg_cap);

/* pool_kind: SCNN_POOL_MAX (padding counts as -inf; gradient to the first maximum in row-major
 * order of each window) or SCNN_POOL_AVG (padded zeros count in the divisor). */
enum { SCNN_POOL_MAX = 0, SCNN_POOL_AVG = 1 };

int32_t scnn_pool2d_forward(int32_t dtype, int32_t pool_kind,
                            const void *x, const int64_t *x_shape, int64_t x_ndim,
                            const int64_t pool_geometry[6],
                            void *y, int64_t y_shape_out[4],
                            char *msg, int64_t msg_cap);

/* grad_x has x's shape; overlapping windows accumulate. */
int32_t scnn_pool2d_backward(int32_t dtype, int32_t pool_kind,
                             const void *grad_out, const int64_t *grad_out_shape, int64_t grad_out_ndim,
                             const void *x, const int64_t *x_shape, int64_t x_ndim,
                             const int64_t pool_geometry[6],
                             void *grad_x,
                             char *msg, int64_t msg_cap);

/* y = x @ weight.T + bias: x (N,in), weight (out,in), bias (out) or NULL with bias_len -1. */
int32_t scnn_linear_forward(int32_t dtype,
                            const void *x, const int64_t *x_shape, int64_t x_ndim,
                            const void *weight, const int64_t *weight_shape, int64_t weight_ndim,
                            const void *bias, int64_t bias_len,
                            void *y, int64_t y_shape_out[2],
                            char *msg, int64_t msg_cap);

/* grad_x (N,in), grad_weight (out,in), grad_bias (out); any may be NULL to skip. */
int32_t scnn_linear_backward(int32_t dtype,
                             const void *grad_out, const int64_t *grad_out_shape, int64_t grad_out_ndim,
                             const void *x, const int64_t *x_shape, int64_t x_ndim,
                             const void *weight, const int64_t *weight_shape, int64_t weight_ndim,
                             void *grad_x, void *grad_weight, void *grad_bias,
                             char *msg, int64_t msg_cap);

/* Elementwise activations over `count` elements. y may equal x (in place). */
enum { SCNN_ACT_SIGMOID = 0, SCNN_ACT_RELU = 1 };
int32_t scnn_activation_forward(int32_t dtype, int32_t act_kind,
                                const void *x, int64_t count, void *y,
                                char *msg, int64_t msg_cap);
/* sigmoid: grad_x = grad_out * y * (1 - y), `saved` is the forward OUTPUT y.
 * relu:    grad_x = grad_out * (x > 0),     `saved` is the forward INPUT x.
 * grad_x may equal grad_out. */
int32_t scnn_activation_backward(int32_t dtype, int32_t act_kind,
                                 const void *grad_out, const void *saved, int64_t count, void *grad_x,
                                 char *msg, int64_t msg_cap);

/* probs = softmax(logits) over axis 1, logits (N,K), K >= 1. */
int32_t scnn_softmax(int32_t dtype,
                     const void *logits, const int64_t *logits_shape, int64_t logits_ndim,
                     void *probs,
                     char *msg, int64_t msg_cap);

/* Softmax cross-entropy, batch mean. Exactly one of `labels` (int64, length labels_len == N, values
 * in [0,K)) and `target_probs` (dtype, shape (N,K), target_ndim 2) is non-NULL.
 * loss_out = mean_n -sum_k t[n,k] * log_softmax(z)[n,k]  (NaN when N = 0);
 * grad_logits (N,K) = (softmax(z) * sum_k t[n,k] - t) / N  (= (softmax - onehot)/N for labels). */
int32_t scnn_softmax_cross_entropy(int32_t dtype,
                                   const void *logits, const int64_t *logits_shape, int64_t logits_ndim,
                                   const int64_t *labels, int64_t labels_len,
                                   const void *target_probs, const int64_t *target_shape, int64_t target_ndim,
                                   double *loss_out, void *grad_logits,
                                   char *msg, int64_t msg_cap);

/* BCE with logits over `count` elements: loss_out = mean(max(z,0) - z*t + log1p(exp(-|z|)))
 * (NaN when count = 0); grad_logits = (sigmoid(z) - t) / count. */
int32_t scnn_bce_with_logits(int32_t dtype,
                             const void *logits, const void *target, int64_t count,
                             double *loss_out, void *grad_logits,
                             char *msg, int64_t msg_cap);

/* Single-channel 2-D correlation (flip_kernel = 0) or true convolution (flip_kernel = 1), as
 * scipy.signal.correlate2d / convolve2d with zero fill. image (H,W), kernel (kH,kW).
 * mode: SCNN_MODE_VALID (kernel larger than image in either dim is a value error), SCNN_MODE_SAME
 * (output (H,W)), SCNN_MODE_FULL (output (H+kH-1, W+kW-1)). */
enum { SCNN_MODE_VALID = 0, SCNN_MODE_SAME = 1, SCNN_MODE_FULL = 2 };
int32_t scnn_correlate2d(int32_t dtype, int32_t mode, int32_t flip_kernel,
                         const void *image, const int64_t *image_shape, int64_t image_ndim,
                         const void *kernel, const int64_t *kernel_shape, int64_t kernel_ndim,
                         void *out, int64_t out_shape_out[2],
                         char *msg, int64_t msg_cap);

/* ---- layers and models -------------------------------------------------------------------------- */
/*
 * A layer handle is a Swift layer object: Conv2d, Linear (with parameters), MaxPool2d, AvgPool2d,
 * Sigmoid, ReLU, Flatten, or a Sequential of other handles (which it retains; the same objects,
 * so parameters are shared with the handles given).
 *
 * forward(x) keeps a view of x (NOT a copy: the caller keeps x alive and unchanged until the next
 * forward or until backward) and of its own intermediate results; it writes the output into y.
 * backward(grad_out) needs a preceding forward, writes the gradient for that forward's input into
 * grad_x, and ADDS the parameter gradients into each parameter's grad buffer.
 */
typedef struct scnn_layer scnn_layer;

/* conv_layer_geometry[8] = {kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w}.
 * Weight and bias are drawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in*kH*kW, with a
 * generator seeded by `seed` (same seed, same weights); grads start at zero. */
int32_t scnn_conv2d_layer_create(int32_t dtype, int64_t in_channels, int64_t out_channels,
                                 const int64_t conv_layer_geometry[8], bool has_bias, uint64_t seed,
                                 scnn_layer **layer_out, char *msg, int64_t msg_cap);
/* fan_in = in_features. */
int32_t scnn_linear_layer_create(int32_t dtype, int64_t in_features, int64_t out_features,
                                 bool has_bias, uint64_t seed,
                                 scnn_layer **layer_out, char *msg, int64_t msg_cap);
int32_t scnn_pool2d_layer_create(int32_t dtype, int32_t pool_kind, const int64_t pool_geometry[6],
                                 scnn_layer **layer_out, char *msg, int64_t msg_cap);
/* layer_kind: SCNN_LAYER_SIGMOID, SCNN_LAYER_RELU, SCNN_LAYER_FLATTEN ((N, ...) -> (N, prod ...)). */
enum { SCNN_LAYER_SIGMOID = 0, SCNN_LAYER_RELU = 1, SCNN_LAYER_FLATTEN = 2 };
int32_t scnn_simple_layer_create(int32_t dtype, int32_t layer_kind,
                                 scnn_layer **layer_out, char *msg, int64_t msg_cap);
/* All layers must have `dtype` (else a type error naming the position and both dtypes). count may be 0. */
int32_t scnn_sequential_create(int32_t dtype, scnn_layer *const *layers, int64_t count,
                               scnn_layer **layer_out, char *msg, int64_t msg_cap);

void scnn_layer_retain(scnn_layer *layer);
void scnn_layer_release(scnn_layer *layer);
int32_t scnn_layer_dtype(const scnn_layer *layer);

/* The output shape forward would give for an input of in_shape; out_shape_out has room for 8. */
int32_t scnn_layer_output_shape(scnn_layer *layer, const int64_t *in_shape, int64_t in_ndim,
                                int64_t *out_shape_out, int64_t *out_ndim_out,
                                char *msg, int64_t msg_cap);
int32_t scnn_layer_forward(scnn_layer *layer, const void *x, const int64_t *x_shape, int64_t x_ndim,
                           void *y, char *msg, int64_t msg_cap);
/* The shape of the last forward's input (what backward's grad_x will have); room for 8.
 * Runtime error before any forward. */
int32_t scnn_layer_input_shape(scnn_layer *layer, int64_t *shape_out, int64_t *ndim_out,
                               char *msg, int64_t msg_cap);
/* grad_out must have the last forward's output shape. grad_x is a buffer of grad_x_shape, which
 * must be the last forward's input shape (as scnn_layer_input_shape reported it): it is checked
 * while the layer is held, so a forward by another thread between the two calls gives
 * SCNN_RUNTIME_ERROR instead of a write past the buffer. */
int32_t scnn_layer_backward(scnn_layer *layer,
                            const void *grad_out, const int64_t *grad_out_shape, int64_t grad_out_ndim,
                            void *grad_x, const int64_t *grad_x_shape, int64_t grad_x_ndim,
                            char *msg, int64_t msg_cap);

/* Parameters, in PyTorch's order: weight then bias for a layer; for a Sequential, its layers' in
 * order with names "0.weight", "0.bias", "3.weight", ... ("2.0.weight" when nested).
 * data/grad point into memory the layer owns and keeps for its whole life. shape_out has room for 4. */
int64_t scnn_layer_parameter_count(scnn_layer *layer);
int32_t scnn_layer_parameter(scnn_layer *layer, int64_t index,
                             void **data_out, void **grad_out,
                             int64_t *shape_out, int64_t *ndim_out,
                             char *name_out, int64_t name_cap,
                             char *msg, int64_t msg_cap);
int32_t scnn_layer_zero_grad(scnn_layer *layer, char *msg, int64_t msg_cap);

/* ---- optimizers ------------------------------------------------------------------------------ */
/*
 * An optimizer updates parameters given as raw (data, grad, count) triples, with PyTorch's update
 * rules step for step. It does not keep the memory alive: the caller does (the Python Optimizer
 * holds the Parameter objects). step() writes data in place and never changes grad.
 */
typedef struct scnn_optimizer scnn_optimizer;

/* PyTorch's checks: lr, momentum, dampening(any), weight_decay >= 0; nesterov needs momentum > 0
 * and dampening == 0. */
int32_t scnn_sgd_create(int32_t dtype, void *const *data, void *const *grad, const int64_t *counts,
                        int64_t param_count, double lr, double momentum, double dampening,
                        double weight_decay, bool nesterov,
                        scnn_optimizer **optimizer_out, char *msg, int64_t msg_cap);
/* lr, eps, weight_decay >= 0; 0 <= beta1, beta2 < 1. */
int32_t scnn_adam_create(int32_t dtype, void *const *data, void *const *grad, const int64_t *counts,
                         int64_t param_count, double lr, double beta1, double beta2, double eps,
                         double weight_decay,
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
 * x has the model's dtype; labels int64 (N). Writes the batch-mean loss and the number of rows
 * whose argmax logit equals the label. If the loss is not finite, nothing is updated (the
 * gradients are computed, the step is not taken) and the status is SCNN_OK with the loss written:
 * the caller decides. optimizer may be NULL (no zero_grad, no step).
 */
int32_t scnn_train_step_cross_entropy(scnn_layer *model, scnn_optimizer *optimizer,
                                      const void *x, const int64_t *x_shape, int64_t x_ndim,
                                      const int64_t *labels, int64_t labels_len,
                                      double *loss_out, int64_t *correct_out,
                                      char *msg, int64_t msg_cap);

#ifdef __cplusplus
}
#endif
#endif /* SWIFTCNN_H */
