/*
 * _core.c: swiftcnn._core, the CPython extension over the Swift core's C ABI (swiftcnn.h).
 *
 * A thin shim in the spirit of CPython's Modules/xxlimited.c: one flat method table, every
 * function METH_FASTCALL | METH_KEYWORDS with its keywords matched by hand (parse_args), a
 * __text_signature__ on every docstring, and one cleanup path per function.
 *
 * The functional ops are rows of one table (OPS below): a row names the op, its arguments in the
 * Python signature's order (array operands, int pairs, modes, out=) and its ABI entry, all of one
 * type (scnn_op_fn). One driver, call_op, runs every row:
 *   1. parse the arguments; convert the array operands (zero copy when they are already
 *      C-contiguous, aligned, native-endian float32/float64 of the common dtype);
 *   2. call the ABI with compute = false: Swift validates everything and declares the results'
 *      shapes and dtypes (no shape rule lives here), unless the row's shape_memo already holds
 *      the declaration for these operand shapes and settings;
 *   3. allocate the results (or check `out=`);
 *   4. call the ABI again with compute = true and the GIL released;
 *   5. map a failed status to the Python exception it stands for.
 * Adding an op is one OP_ROW and one FOR_EACH_OP entry here (and its Swift function); see
 * docs/ARCHITECTURE.md, "Adding an op".
 *
 * Handles are PyCapsules owning one reference to a Swift object, released by the capsule's
 * destructor; a layer handle also keeps the array of its last forward alive (the Swift layer
 * holds a view of it). Parameter arrays view Swift memory; their base is a capsule holding its own
 * reference to the layer, so a parameter's data outlives the model object that gave it. The
 * handle functions are rows too (HANDLE_ROW): argument kinds that one parser (call_handle) checks
 * into the call's state, and a body that is only the ABI call and the result's conversion.
 *
 * The extension's files, one concern each (their shared declarations: _core.h):
 *   _core.c          this file: the op table and its driver, the module
 *   _core_args.c     argument parsing (keywords matched by hand) and status -> exception mapping
 *   _core_arrays.c   NumPy arrays as ABI operands (zero copy when possible) and results, labels
 *   _core_handles.c  the handle functions
 * The interface is python/swiftcnn/_core.pyi; the public behaviour is ../shared/API.md.
 */
#define SWIFTCNN_CORE_IMPORTS_NUMPY
#include "_core.h"

/* ==== Functional ops: the table and its driver ================================================== */

typedef enum {
    ARG_ARRAY,     /* a float array operand */
    ARG_ARRAY_OPT, /* a float array operand or None (passed as SCNN_ABSENT) */
    ARG_TARGET,    /* class labels (1-D, any integer dtype) or class probabilities */
    ARG_PAIR,      /* an int or (h, w): two ints */
    ARG_PAIR_OPT,  /* None or an int or (h, w): three ints (given, h, w) */
    ARG_MODE,      /* "valid", "same" or "full": one int (SCNN_MODE_*) */
    ARG_OUT,       /* keyword-only out= for the first result */
    ARG_REAL,      /* a float: one real */
    ARG_BOOL,      /* True or False: one int */
    ARG_STATE,     /* an array updated in place, or None: never converted (the caller's memory) */
    ARG_PADDING,   /* an int, (h, w), "valid" or "same": three ints (0 explicit / 1 same, h, w) */
    ARG_INT        /* an int: one int */
} arg_kind;

typedef struct {
    const char *name; /* first: parse_args reads the names through the rows */
    arg_kind kind;
    int64_t dflt;     /* the default of an optional pair, mode or bool */
    double rdflt;     /* the default of a real */
} arg_spec;

enum { OP_INPLACE = 1, OP_LOSS = 2 };

/* A row's last successful shape query: the call's key (every operand's ndim, shape and dtype, the
 * settings) and the results Swift declared for it. The results' shapes and dtypes are a function
 * of the key alone, so a call with the same key skips the query (one Swift call of two: ~0.05 us
 * of a tiny op's ~0.8). Nothing else is skipped: the compute call validates everything again and
 * checks the results against the declaration, so a stale entry could only fail a call, never
 * compute a wrong one. A failed query stores nothing. Read and written with the GIL held. */
typedef struct {
    int valid, nops, nints, nreals;
    scnn_tensor in[MAX_OPERANDS]; /* data not compared */
    int64_t ints[MAX_INTS];
    double reals[MAX_INTS];       /* compared bit for bit */
    scnn_tensor res[MAX_RESULTS];
} shape_memo;

typedef struct {
    const char *name;
    scnn_op_fn *fn;
    int npos, nreq, nargs; /* positional, required, all parameters (as parse_args) */
    int nresults;
    int flags;             /* OP_INPLACE: out may be the first input; OP_LOSS: result 0 is a float */
    shape_memo *memo;      /* the row's (mutable) memo */
    arg_spec args[MAX_ARGS];
} op_spec;

/* Whether the call's operands and settings are the memo's key (see shape_memo). */
static int
memo_matches(const shape_memo *m, const scnn_tensor *in, int nops, const int64_t *ints, int nints,
             const double *reals, int nreals)
{
    if (!m->valid || m->nops != nops || m->nints != nints || m->nreals != nreals ||
        memcmp(m->ints, ints, sizeof *ints * (size_t)nints) != 0 ||
        memcmp(m->reals, reals, sizeof *reals * (size_t)nreals) != 0) {
        return 0;
    }
    for (int i = 0; i < nops; i++) {
        if (m->in[i].ndim != in[i].ndim || m->in[i].dtype != in[i].dtype) {
            return 0;
        }
        for (int d = 0; d < in[i].ndim && d < SCNN_MAX_NDIM; d++) {
            if (m->in[i].shape[d] != in[i].shape[d]) {
                return 0;
            }
        }
    }
    return 1;
}

static void
memo_store(shape_memo *m, const scnn_tensor *in, int nops, const int64_t *ints, int nints, const double *reals,
           int nreals, const scnn_tensor *res, int nres)
{
    m->nops = nops, m->nints = nints, m->nreals = nreals;
    memcpy(m->in, in, sizeof *in * (size_t)nops);
    memcpy(m->ints, ints, sizeof *ints * (size_t)nints);
    memcpy(m->reals, reals, sizeof *reals * (size_t)nreals);
    memcpy(m->res, res, sizeof *res * (size_t)nres);
    m->valid = 1;
}

#define ARRAY(n) {n, ARG_ARRAY, 0}
#define ARRAY_OPT(n) {n, ARG_ARRAY_OPT, 0}
#define TARGET(n) {n, ARG_TARGET, 0}
#define PAIR(n, d) {n, ARG_PAIR, d}
#define PAIR_OPT(n) {n, ARG_PAIR_OPT, 0}
#define MODE(n) {n, ARG_MODE, SCNN_MODE_VALID}
#define OUT {"out", ARG_OUT, 0}
#define REAL(n, d) {n, ARG_REAL, 0, d}
#define BOOL(n, d) {n, ARG_BOOL, d}
#define STATE(n) {n, ARG_STATE, 0}
#define PADDING(n) {n, ARG_PADDING, 0}
#define INT(n, d) {n, ARG_INT, d}

static const char *const PADDINGS[] = {"valid", "same", NULL};

static const char *const MODES[] = {"valid", "same", "full", NULL};

/* The op's results as Python returns them: one array, a tuple of arrays, or (float, array). */
static PyObject *
op_result(const op_spec *s, PyArrayObject **res)
{
    if (s->flags & OP_LOSS) {
        double loss = *(const double *)PyArray_DATA(res[0]);
        Py_INCREF(res[1]);
        return pair_result(PyFloat_FromDouble(loss), (PyObject *)res[1]);
    }
    if (s->nresults == 1) {
        Py_INCREF(res[0]);
        return (PyObject *)res[0];
    }
    PyObject *t = PyTuple_New(s->nresults);
    for (int i = 0; t != NULL && i < s->nresults; i++) {
        Py_INCREF(res[i]);
        PyTuple_SET_ITEM(t, i, (PyObject *)res[i]);
    }
    return t;
}

/* Runs one row of the table on a Python call (see the file's header for the steps). */
static PyObject *
call_op(const op_spec *s, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    const char *fn = s->name;
    const argspec spec = {fn, s->args, sizeof(arg_spec), s->npos, s->nreq, s->nargs};
    PyObject *v[MAX_ARGS], *out = NULL, *result = NULL;
    operand ops[MAX_OPERANDS];
    scnn_tensor in[MAX_OPERANDS], res[MAX_RESULTS];
    PyArrayObject *res_arr[MAX_RESULTS] = {NULL};
    int64_t ints[MAX_INTS];
    double reals[MAX_INTS];
    int nops = 0, nints = 0, nreals = 0, typenum;
    char msg[MSG_CAP];
    int32_t status;

    msg[0] = '\0';
    if (parse_args(&spec, args, nargs, kwnames, v) < 0) {
        return NULL;
    }
    for (int i = 0; i < s->nargs; i++) {
        const arg_spec *a = &s->args[i];
        PyObject *o = v[i];
        switch (a->kind) {
        case ARG_ARRAY:
            if (o == NULL || o == Py_None) {
                PyErr_Format(PyExc_TypeError, "%s: %s must be an array, not None", fn, a->name);
                goto done;
            }
            ops[nops] = (operand){.name = a->name, .obj = o, .t = &in[nops]};
            nops++;
            break;
        case ARG_ARRAY_OPT:
            ops[nops] = (operand){.name = a->name, .obj = optional(o), .t = &in[nops]};
            nops++;
            break;
        case ARG_TARGET:
            ops[nops] = (operand){.name = a->name, .obj = o, .t = &in[nops]};
            if (target_operand(fn, &ops[nops++]) < 0) {
                goto done;
            }
            break;
        case ARG_PAIR:
            if (o == NULL) {
                ints[nints] = ints[nints + 1] = a->dflt;
            }
            else if (pair_arg(fn, a->name, o, &ints[nints]) < 0) {
                goto done;
            }
            nints += 2;
            break;
        case ARG_PAIR_OPT:
            ints[nints] = optional(o) != NULL;
            ints[nints + 1] = ints[nints + 2] = 0;
            if (ints[nints] && pair_arg(fn, a->name, o, &ints[nints + 1]) < 0) {
                goto done;
            }
            nints += 3;
            break;
        case ARG_MODE:
            ints[nints] = a->dflt;
            if (o != NULL && (ints[nints] = choice_arg(fn, a->name, o, MODES, "'valid', 'same' or 'full'")) < 0) {
                goto done;
            }
            nints += 1;
            break;
        case ARG_OUT:
            out = optional(o);
            break;
        case ARG_REAL:
            reals[nreals] = a->rdflt;
            if (o != NULL && double_arg(fn, a->name, o, &reals[nreals]) < 0) {
                goto done;
            }
            nreals += 1;
            break;
        case ARG_BOOL:
            ints[nints] = a->dflt;
            if (o != NULL && (ints[nints] = PyObject_IsTrue(o)) < 0) {
                goto done;
            }
            nints += 1;
            break;
        case ARG_PADDING:
            ints[nints] = ints[nints + 1] = ints[nints + 2] = 0;
            if (o != NULL && PyUnicode_Check(o)) {
                int which = choice_arg(fn, a->name, o, PADDINGS, "an int, a pair (h, w), 'valid' or 'same'");
                if (which < 0) {
                    goto done;
                }
                ints[nints] = which; /* "valid" = explicit zeros; "same" = mode 1 */
            }
            else if (o != NULL && pair_arg(fn, a->name, o, &ints[nints + 1]) < 0) {
                goto done;
            }
            nints += 3;
            break;
        case ARG_INT:
            ints[nints] = a->dflt;
            if (o != NULL && int64_arg(fn, a->name, o, &ints[nints]) < 0) {
                goto done;
            }
            nints += 1;
            break;
        case ARG_STATE:
            ops[nops] = (operand){.name = a->name, .obj = optional(o), .t = &in[nops], .is_state = 1};
            nops++;
            break;
        }
    }
    if (prepare_operands(fn, ops, nops, &typenum) < 0) {
        goto done;
    }
    /* The shape query: Swift validates everything and declares the results. */
    scnn_op_call call = {.inputs = in, .ints = ints, .reals = reals, .outputs = res, .msg = msg, .msg_cap = MSG_CAP,
                         .n_inputs = nops, .n_ints = nints, .n_reals = nreals, .n_outputs = s->nresults};
    if (memo_matches(s->memo, in, nops, ints, nints, reals, nreals)) {
        memcpy(res, s->memo->res, sizeof *res * (size_t)s->nresults);
    }
    else {
        s->memo->valid = 0;
        status = s->fn(&call);
        if (status != SCNN_OK) {
            raise_status(fn, status, msg);
            goto done;
        }
        memo_store(s->memo, in, nops, ints, nints, reals, nreals, res, s->nresults);
    }
    for (int i = 0; i < s->nresults; i++) {
        res_arr[i] = (i == 0 && out != NULL) ? out_array(fn, out, &res[i], ops, nops, s->flags & OP_INPLACE)
                                             : new_result(fn, &res[i]);
        if (res_arr[i] == NULL) {
            goto done;
        }
        res[i].data = PyArray_DATA(res_arr[i]);
    }
    call.compute = 1;
    CALL_WITHOUT_GIL(status = s->fn(&call));
    if (status != SCNN_OK) {
        raise_status(fn, status, msg);
        goto done;
    }
    result = op_result(s, res_arr);
done:
    for (int i = 0; i < MAX_RESULTS; i++) {
        Py_XDECREF(res_arr[i]);
    }
    release_operands(ops, nops);
    return result;
}

/* ---- the table: one row per op; docstrings carry the signature (__text_signature__) ---------- */

/* A row declares the ABI symbol it calls (scnn_<id>, a scnn_op_fn), defines the op's spec and the
 * METH_FASTCALL function that runs it. */
#define OP_ROW(id, npos_, nreq_, nargs_, nres_, flags_, ...)                                         \
    extern scnn_op_fn scnn_##id;                                                                     \
    static shape_memo id##_memo;                                                                     \
    static const op_spec id##_spec = {#id, scnn_##id, npos_, nreq_, nargs_, nres_, flags_, &id##_memo, {__VA_ARGS__}}; \
    static PyObject *op_##id(PyObject *m, PyObject *const *a, Py_ssize_t n, PyObject *k)             \
    {                                                                                                \
        (void)m;                                                                                     \
        return call_op(&id##_spec, a, n, k);                                                         \
    }

PyDoc_STRVAR(conv2d_doc,
"conv2d($module, /, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, out=None)\n--\n\n"
"2-D convolution (cross-correlation) of x (N, C, H, W) with weight (K, C/groups, kH, kW) plus bias (K):\n"
"y[n,k,i,j] = b[k] + sum_{c,r,s} x[n, c, i*sh - ph + r*dh, j*sw - pw + s*dw] * w[k,c,r,s] (within k's\n"
"group); padding is an int, a pair, 'valid' or 'same' (stride 1; the odd zero row at the bottom/right).");
OP_ROW(conv2d, 7, 2, 8, 1, 0,
       ARRAY("x"), ARRAY("weight"), ARRAY_OPT("bias"), PAIR("stride", 1), PADDING("padding"),
       PAIR("dilation", 1), INT("groups", 1), OUT)

PyDoc_STRVAR(conv2d_backward_doc,
"conv2d_backward($module, /, grad_out, x, weight, stride=1, padding=0, dilation=1, groups=1)\n--\n\n"
"(grad_x, grad_weight, grad_bias) of conv2d: grad_x is the full correlation of grad_out with the\n"
"filter rotated by 180 degrees, grad_weight the correlation of x with grad_out, grad_bias the\n"
"sum of grad_out over N, H, W.");
OP_ROW(conv2d_backward, 7, 3, 7, 3, 0,
       ARRAY("grad_out"), ARRAY("x"), ARRAY("weight"), PAIR("stride", 1), PADDING("padding"),
       PAIR("dilation", 1), INT("groups", 1))

PyDoc_STRVAR(max_pool2d_doc,
"max_pool2d($module, /, x, kernel_size, stride=None, padding=0, *, out=None)\n--\n\n"
"Max pooling over (N, C, H, W); stride defaults to kernel_size; padding counts as -inf and is at\n"
"most kernel_size // 2.");
OP_ROW(max_pool2d, 4, 2, 5, 1, 0,
       ARRAY("x"), PAIR("kernel_size", 0), PAIR_OPT("stride"), PAIR("padding", 0), OUT)

PyDoc_STRVAR(max_pool2d_backward_doc,
"max_pool2d_backward($module, /, grad_out, x, kernel_size, stride=None, padding=0)\n--\n\n"
"grad_x of max_pool2d: each window's gradient goes to its first maximum in row-major order;\n"
"overlapping windows accumulate.");
OP_ROW(max_pool2d_backward, 5, 3, 5, 1, 0,
       ARRAY("grad_out"), ARRAY("x"), PAIR("kernel_size", 0), PAIR_OPT("stride"), PAIR("padding", 0))

PyDoc_STRVAR(avg_pool2d_doc,
"avg_pool2d($module, /, x, kernel_size, stride=None, padding=0, *, out=None)\n--\n\n"
"Average pooling over (N, C, H, W); padded zeros count in the divisor (count_include_pad=True).");
OP_ROW(avg_pool2d, 4, 2, 5, 1, 0,
       ARRAY("x"), PAIR("kernel_size", 0), PAIR_OPT("stride"), PAIR("padding", 0), OUT)

PyDoc_STRVAR(avg_pool2d_backward_doc,
"avg_pool2d_backward($module, /, grad_out, x, kernel_size, stride=None, padding=0)\n--\n\n"
"grad_x of avg_pool2d.");
OP_ROW(avg_pool2d_backward, 5, 3, 5, 1, 0,
       ARRAY("grad_out"), ARRAY("x"), PAIR("kernel_size", 0), PAIR_OPT("stride"), PAIR("padding", 0))

PyDoc_STRVAR(linear_doc,
"linear($module, /, x, weight, bias=None, *, out=None)\n--\n\n"
"y = x @ weight.T + bias, x (N, in_features), weight (out_features, in_features).");
OP_ROW(linear, 3, 2, 4, 1, 0, ARRAY("x"), ARRAY("weight"), ARRAY_OPT("bias"), OUT)

PyDoc_STRVAR(linear_backward_doc,
"linear_backward($module, /, grad_out, x, weight)\n--\n\n"
"(grad_x, grad_weight, grad_bias) of linear.");
OP_ROW(linear_backward, 3, 3, 3, 3, 0, ARRAY("grad_out"), ARRAY("x"), ARRAY("weight"))

PyDoc_STRVAR(sigmoid_doc,
"sigmoid($module, /, x, *, out=None)\n--\n\n"
"1 / (1 + exp(-x)), elementwise; out may be x itself.");
OP_ROW(sigmoid, 1, 1, 2, 1, OP_INPLACE, ARRAY("x"), OUT)

PyDoc_STRVAR(sigmoid_backward_doc,
"sigmoid_backward($module, /, grad_out, y)\n--\n\n"
"grad_out * y * (1 - y), where y is the forward's OUTPUT.");
OP_ROW(sigmoid_backward, 2, 2, 2, 1, 0, ARRAY("grad_out"), ARRAY("y"))

PyDoc_STRVAR(relu_doc,
"relu($module, /, x, *, out=None)\n--\n\n"
"max(x, 0), elementwise; out may be x itself.");
OP_ROW(relu, 1, 1, 2, 1, OP_INPLACE, ARRAY("x"), OUT)

PyDoc_STRVAR(relu_backward_doc,
"relu_backward($module, /, grad_out, x)\n--\n\n"
"grad_out * (x > 0), where x is the forward's INPUT.");
OP_ROW(relu_backward, 2, 2, 2, 1, 0, ARRAY("grad_out"), ARRAY("x"))

PyDoc_STRVAR(softmax_doc,
"softmax($module, /, logits)\n--\n\n"
"Probabilities over axis 1 of logits (N, K), computed stably.");
OP_ROW(softmax, 1, 1, 1, 1, 0, ARRAY("logits"))

PyDoc_STRVAR(softmax_cross_entropy_doc,
"softmax_cross_entropy($module, /, logits, target)\n--\n\n"
"Softmax cross-entropy, batch mean. target is class indices (N,) of an integer dtype, or class\n"
"probabilities of the logits' shape (N, K). Returns (loss, grad_logits): loss a Python float\n"
"(nan when N = 0), grad_logits = (softmax(logits) - onehot) / N.");
OP_ROW(softmax_cross_entropy, 2, 2, 2, 2, OP_LOSS, ARRAY("logits"), TARGET("target"))

PyDoc_STRVAR(binary_cross_entropy_with_logits_doc,
"binary_cross_entropy_with_logits($module, /, logits, target)\n--\n\n"
"Binary cross-entropy on logits, mean over all elements; target is floats of the logits' shape.\n"
"Returns (loss, grad_logits): grad = (sigmoid(logits) - target) / numel; stable for large |z|.");
OP_ROW(binary_cross_entropy_with_logits, 2, 2, 2, 2, OP_LOSS,
       ARRAY("logits"), ARRAY("target"))

PyDoc_STRVAR(correlate2d_doc,
"correlate2d($module, /, image, kernel, mode='valid')\n--\n\n"
"2-D single-channel cross-correlation, as scipy.signal.correlate2d with zero fill; mode 'valid',\n"
"'same' or 'full' (a kernel larger than the image in 'valid' mode is a ValueError).");
OP_ROW(correlate2d, 3, 2, 3, 1, 0, ARRAY("image"), ARRAY("kernel"), MODE("mode"))

PyDoc_STRVAR(convolve2d_doc,
"convolve2d($module, /, image, kernel, mode='valid')\n--\n\n"
"2-D single-channel true convolution (the kernel flipped), as scipy.signal.convolve2d.");
OP_ROW(convolve2d, 3, 2, 3, 1, 0, ARRAY("image"), ARRAY("kernel"), MODE("mode"))

PyDoc_STRVAR(tanh_doc,
"tanh($module, /, x, *, out=None)\n--\n\n"
"tanh(x), elementwise; out may be x itself.");
OP_ROW(tanh, 1, 1, 2, 1, OP_INPLACE, ARRAY("x"), OUT)

PyDoc_STRVAR(tanh_backward_doc,
"tanh_backward($module, /, grad_out, y)\n--\n\n"
"grad_out * (1 - y**2), where y is the forward's OUTPUT.");
OP_ROW(tanh_backward, 2, 2, 2, 1, 0, ARRAY("grad_out"), ARRAY("y"))

PyDoc_STRVAR(leaky_relu_doc,
"leaky_relu($module, /, x, negative_slope=0.01, *, out=None)\n--\n\n"
"where(x > 0, x, negative_slope * x), elementwise; out may be x itself.");
OP_ROW(leaky_relu, 2, 1, 3, 1, OP_INPLACE, ARRAY("x"), REAL("negative_slope", 0.01), OUT)

PyDoc_STRVAR(leaky_relu_backward_doc,
"leaky_relu_backward($module, /, grad_out, x, negative_slope=0.01)\n--\n\n"
"grad_out * where(x > 0, 1, negative_slope), where x is the forward's INPUT.");
OP_ROW(leaky_relu_backward, 3, 2, 3, 1, 0, ARRAY("grad_out"), ARRAY("x"),
       REAL("negative_slope", 0.01))

PyDoc_STRVAR(batch_norm_doc,
"batch_norm($module, /, x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-05)\n--\n\n"
"Batch normalization over every axis but 1, as torch.nn.functional.batch_norm: in training mode\n"
"the batch mean and biased variance normalize, and running_mean/running_var (when given) move\n"
"in place toward the batch mean and the UNBIASED variance by momentum; otherwise the running\n"
"statistics normalize.");
OP_ROW(batch_norm, 8, 3, 8, 1, 0, ARRAY("x"), STATE("running_mean"), STATE("running_var"),
       ARRAY_OPT("weight"), ARRAY_OPT("bias"), BOOL("training", 0), REAL("momentum", 0.1), REAL("eps", 1e-5))

PyDoc_STRVAR(batch_norm_backward_doc,
"batch_norm_backward($module, /, grad_out, x, weight=None, eps=1e-05)\n--\n\n"
"(grad_x, grad_weight, grad_bias) of training-mode batch norm, through the batch mean and\n"
"variance; weight None counts as ones.");
OP_ROW(batch_norm_backward, 4, 2, 4, 3, 0, ARRAY("grad_out"), ARRAY("x"),
       ARRAY_OPT("weight"), REAL("eps", 1e-5))

PyDoc_STRVAR(adaptive_avg_pool2d_doc,
"adaptive_avg_pool2d($module, /, x, output_size, *, out=None)\n--\n\n"
"Adaptive average pooling to output_size (int or (h, w)): cell (i, j) averages rows\n"
"floor(i*H/Ho) .. ceil((i+1)*H/Ho) - 1 and the columns likewise (PyTorch's bins).");
OP_ROW(adaptive_avg_pool2d, 2, 2, 3, 1, 0, ARRAY("x"), PAIR("output_size", 0), OUT)

PyDoc_STRVAR(adaptive_avg_pool2d_backward_doc,
"adaptive_avg_pool2d_backward($module, /, grad_out, x, output_size)\n--\n\n"
"grad_x of adaptive_avg_pool2d.");
OP_ROW(adaptive_avg_pool2d_backward, 3, 3, 3, 1, 0, ARRAY("grad_out"), ARRAY("x"),
       PAIR("output_size", 0))

/* Every op, in the order of op_table() and of the method table. Adding an op: its OP_ROW above and
 * its name here. */
#define FOR_EACH_OP(X)                                                                                     \
    X(conv2d) X(conv2d_backward) X(max_pool2d) X(max_pool2d_backward) X(avg_pool2d) X(avg_pool2d_backward) \
    X(linear) X(linear_backward) X(sigmoid) X(sigmoid_backward) X(relu) X(relu_backward) X(softmax)        \
    X(softmax_cross_entropy) X(binary_cross_entropy_with_logits) X(correlate2d) X(convolve2d) X(tanh)      \
    X(tanh_backward) X(leaky_relu) X(leaky_relu_backward) X(batch_norm) X(batch_norm_backward)             \
    X(adaptive_avg_pool2d) X(adaptive_avg_pool2d_backward)

/* Every row, for op_table(): the reliability sweep and the fuzzer read the same table the
 * methods are built from, so a new row is swept and fuzzed with no case written by hand. */
#define OP_SPEC_ADDRESS(id) &id##_spec,
static const op_spec *const OPS[] = {FOR_EACH_OP(OP_SPEC_ADDRESS)};

static const char *const ARG_KINDS[] = {"array", "array_or_none", "target", "pair", "pair_or_none", "mode", "out",
                                        "real", "bool", "state", "padding", "int"};

PyDoc_STRVAR(op_table_doc,
"op_table($module, /)\n--\n\n"
"The functional ops' table: [(name, [(argument, kind, default), ...], positional, required,\n"
"results)], kind one of 'array', 'array_or_none', 'target', 'pair', 'pair_or_none', 'mode', 'out'.");

static PyObject *
core_op_table(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    Py_ssize_t n = (Py_ssize_t)(sizeof OPS / sizeof OPS[0]);
    PyObject *rows = PyList_New(n);
    for (Py_ssize_t r = 0; rows != NULL && r < n; r++) {
        const op_spec *s = OPS[r];
        PyObject *args = PyList_New(s->nargs);
        for (int i = 0; args != NULL && i < s->nargs; i++) {
            const arg_spec *a = &s->args[i];
            PyObject *item = a->kind == ARG_REAL ? Py_BuildValue("(ssd)", a->name, ARG_KINDS[a->kind], a->rdflt)
                                                 : Py_BuildValue("(ssL)", a->name, ARG_KINDS[a->kind], (long long)a->dflt);
            if (item == NULL) {
                Py_CLEAR(args);
                break;
            }
            PyList_SET_ITEM(args, i, item);
        }
        PyObject *row = args ? Py_BuildValue("(sNiii)", s->name, args, s->npos, s->nreq, s->nresults) : NULL;
        if (row == NULL) {
            Py_CLEAR(rows);
            break;
        }
        PyList_SET_ITEM(rows, r, row);
    }
    return rows;
}

/* ==== Library =================================================================================== */

PyDoc_STRVAR(get_num_threads_doc,
"get_num_threads($module, /)\n--\n\n"
"The number of worker threads of compute calls.");

static PyObject *
core_get_num_threads(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyLong_FromLongLong((long long)scnn_get_num_threads());
}

PyDoc_STRVAR(version_doc,
"version($module, /)\n--\n\n"
"The Swift core's version string: the one version of swiftcnn.");

static PyObject *
core_version(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyUnicode_FromString(scnn_version());
}

/* ==== Module ==================================================================================== */

#define OP_METHOD(id) {#id, (PyCFunction)(void (*)(void))op_##id, METH_FASTCALL | METH_KEYWORDS, id##_doc},

static PyMethodDef core_methods[] = {
    FOR_EACH_OP(OP_METHOD) /* functional ops (public): the rows of the table above */
    {"get_num_threads", core_get_num_threads, METH_NOARGS, get_num_threads_doc},
    {"version", core_version, METH_NOARGS, version_doc},
    {"op_table", core_op_table, METH_NOARGS, op_table_doc},
    {NULL, NULL, 0, NULL}
};

static int
core_exec(PyObject *module)
{
    if (_import_array() < 0) {
        return -1;
    }
    /* call_op keeps a row's operands, ints and results in fixed arrays: a row that outgrows them
     * (batch_norm's five operands once overflowed MAX_OPERANDS = 4, found by UBSan) fails the
     * import instead of writing past the stack arrays. */
    for (size_t r = 0; r < sizeof OPS / sizeof OPS[0]; r++) {
        int operands = 0, ints = 0;
        for (int i = 0; i < OPS[r]->nargs; i++) {
            arg_kind k = OPS[r]->args[i].kind;
            operands += k == ARG_ARRAY || k == ARG_ARRAY_OPT || k == ARG_TARGET || k == ARG_STATE;
            ints += k == ARG_PAIR ? 2 : (k == ARG_PAIR_OPT || k == ARG_PADDING) ? 3
                    : (k == ARG_MODE || k == ARG_BOOL || k == ARG_INT || k == ARG_REAL);
        }
        if (operands > MAX_OPERANDS || ints > MAX_INTS || OPS[r]->nresults > MAX_RESULTS) {
            PyErr_Format(PyExc_SystemError, "swiftcnn._core: op row %s outgrows the driver's arrays", OPS[r]->name);
            return -1;
        }
    }
    /* set_num_threads and the (private) handle functions live in _core_handles.c. */
    if (PyModule_AddFunctions(module, handle_methods) < 0) {
        return -1;
    }
    /* Handles are PyCapsules: LayerHandle / OptimizerHandle name their type for annotations. */
    static const char *const aliases[] = {"LayerHandle", "OptimizerHandle"};
    for (int i = 0; i < 2; i++) {
        Py_INCREF(&PyCapsule_Type);
        if (PyModule_AddObject(module, aliases[i], (PyObject *)&PyCapsule_Type) < 0) {
            Py_DECREF(&PyCapsule_Type);
            return -1;
        }
    }
    return 0;
}

static PyModuleDef_Slot core_slots[] = {
    {Py_mod_exec, core_exec},
    {0, NULL}
};

PyDoc_STRVAR(core_doc,
"swiftcnn._core: the CPython extension over the Swift core's C ABI (swiftcnn.h).\n\n"
"The functional ops are public (re-exported by swiftcnn.functional); the handle functions are\n"
"private plumbing for the layers, optimizers and training loop.");

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "swiftcnn._core",
    .m_doc = core_doc,
    .m_size = 0,
    .m_methods = core_methods,
    .m_slots = core_slots,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    return PyModuleDef_Init(&core_module);
}
