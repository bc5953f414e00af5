/* _core_handles.c: the layer and optimizer handle functions of swiftcnn._core (see _core.h). */
#include "_core.h"

static const char LAYER_CAPSULE[] = "swiftcnn.LayerHandle";
static const char OPTIMIZER_CAPSULE[] = "swiftcnn.OptimizerHandle";
static const char LAYER_MEMORY_CAPSULE[] = "swiftcnn.LayerMemory";

/* ==== Handles =================================================================================== */

static void
layer_capsule_destructor(PyObject *capsule)
{
    scnn_layer *layer = (scnn_layer *)PyCapsule_GetPointer(capsule, LAYER_CAPSULE);
    PyObject *last_input = (PyObject *)PyCapsule_GetContext(capsule);
    if (layer != NULL) {
        scnn_layer_release(layer);
    }
    else {
        PyErr_Clear();
    }
    Py_XDECREF(last_input);
}

/* The Swift layer keeps a view of its last input: the handle keeps that array alive too (in the
 * capsule's context) until the next forward through it, so a caller that drops x cannot leave
 * the layer reading freed memory. After a failed call the layer may view either the previous
 * input or x, so both are kept. Called with the GIL held; never fails (keeps the old on error). */
static void
keep_last_input(PyObject *capsule, PyObject *x, int succeeded)
{
    PyObject *old = (PyObject *)PyCapsule_GetContext(capsule);
    PyObject *keep;
    if (old == NULL || old == x || succeeded) {
        Py_INCREF(x);
        keep = x;
    }
    else {
        keep = PyTuple_Pack(2, old, x);
        if (keep == NULL) {
            PyErr_Clear();
            return;
        }
    }
    if (PyCapsule_SetContext(capsule, keep) < 0) {
        Py_DECREF(keep);
        PyErr_Clear();
        return;
    }
    Py_XDECREF(old);
}

static void
optimizer_capsule_destructor(PyObject *capsule)
{
    scnn_optimizer *opt = (scnn_optimizer *)PyCapsule_GetPointer(capsule, OPTIMIZER_CAPSULE);
    if (opt != NULL) {
        scnn_optimizer_release(opt);
    }
    else {
        PyErr_Clear();
    }
}

static void
layer_memory_destructor(PyObject *capsule)
{
    scnn_layer *layer = (scnn_layer *)PyCapsule_GetPointer(capsule, LAYER_MEMORY_CAPSULE);
    if (layer != NULL) {
        scnn_layer_release(layer);
    }
    else {
        PyErr_Clear();
    }
}

/* The Swift object behind a handle of the capsule type `capsule` (`what` names it for the error). */
static void *
handle_arg(const char *fn, const char *name, PyObject *o, const char *capsule, const char *what)
{
    if (!PyCapsule_IsValid(o, capsule)) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be %s, got %s", fn, name, what, Py_TYPE(o)->tp_name);
        return NULL;
    }
    return PyCapsule_GetPointer(o, capsule);
}

/* An array a handle function takes as it is: an ndarray of `typenum` (int64: any 8-byte signed
 * integer), C-contiguous, aligned, native; writable when asked. The Python layer converts user
 * input before calling. `owner` names whose dtype it must have. */
static int
exact_array(const char *fn, const char *name, PyObject *o, int typenum, int writable, const char *owner,
            scnn_tensor *t)
{
    if (!PyArray_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be a numpy.ndarray, got %s", fn, name, Py_TYPE(o)->tp_name);
        return -1;
    }
    PyArrayObject *a = (PyArrayObject *)o;
    int matches = typenum == NPY_INT64 ? (PyArray_ISINTEGER(a) && PyArray_ISSIGNED(a) && PyArray_ITEMSIZE(a) == 8)
                                       : PyArray_TYPE(a) == typenum;
    if (!matches) {
        PyErr_Format(PyExc_TypeError, "%s: %s has dtype %S but the %s's dtype is %s", fn, name,
                     (PyObject *)PyArray_DESCR(a), owner, dtype_name(typenum));
        return -1;
    }
    if (!PyArray_ISNOTSWAPPED(a) || !PyArray_IS_C_CONTIGUOUS(a) || !PyArray_ISALIGNED(a)) {
        PyErr_Format(PyExc_ValueError, "%s: %s must be C-contiguous, aligned and in native byte order", fn, name);
        return -1;
    }
    if (writable && !PyArray_ISWRITEABLE(a)) {
        PyErr_Format(PyExc_ValueError, "%s: %s must be writable", fn, name);
        return -1;
    }
    describe_array(a, t);
    t->dtype = typenum == NPY_INT64 ? SCNN_INT64 : t->dtype;
    return 0;
}

/* ---- the handle functions: a table of argument kinds, one parser, bodies that only call ------ */

/* Every handle function takes all its arguments by position or keyword, all required. An argument
 * kind says how it is checked and where the parsed value goes in the call's state (hcall). */
typedef enum {
    H_LAYER,             /* a LayerHandle: c->layer (its name is the owner of an H_ARRAY's dtype) */
    H_OPTIMIZER,         /* an OptimizerHandle: c->opt */
    H_OPTIMIZER_OR_NONE, /* an OptimizerHandle or None (c->opt stays NULL) */
    H_ARRAY,             /* an ndarray of the (earlier) H_LAYER's dtype, taken as it is: c->t[next] */
    H_INT64_ARRAY,       /* an int64 ndarray, taken as it is: c->t[next] */
    H_INTS,              /* a sequence of at most MAX_SETTINGS ints: c->ints, c->nints */
    H_REALS,             /* a sequence of at most MAX_SETTINGS floats: c->reals, c->nreals */
    H_LAYERS,            /* a sequence of LayerHandles: c->layers, c->nlayers */
    H_ARRAYS,            /* a sequence of writable ndarrays of one float dtype: c->arrays[next], c->narrays */
    H_STR,               /* a str: c->str (UTF-8, owned by the argument) */
    H_DTYPE,             /* "float32" or "float64": c->dtype */
    H_BOOL,              /* anything with a truth value: c->flag */
    H_SEED,              /* an int in [0, 2**64): c->seed */
    H_INT,               /* an int: c->i */
    H_REAL               /* a float: c->real */
} handle_kind;

typedef struct {
    const char *name; /* first: parse_args reads the names through the rows */
    handle_kind kind;
} handle_arg_spec;

/* One call's parsed arguments and the ABI's message buffer. */
typedef struct {
    const char *fn;
    PyObject *v[MAX_ARGS];   /* the arguments as given (borrowed) */
    scnn_layer *layer;
    const char *owner;       /* the H_LAYER argument's name */
    scnn_optimizer *opt;
    scnn_tensor t[2];
    int nt;
    PyObject *seqs[4];       /* the sequence arguments as lists or tuples (owned: their items are borrowed) */
    scnn_layer **layers;     /* PyMem */
    scnn_tensor *arrays[2];  /* PyMem */
    Py_ssize_t nlayers, narrays, nints, nreals;
    int nseqs, typenum;      /* typenum: the H_ARRAYS' dtype */
    const char *arrays_name; /* the first H_ARRAYS argument's name */
    const char *str;
    int32_t dtype;
    int flag;
    uint64_t seed;
    int64_t i;
    double real;
    int64_t ints[MAX_SETTINGS]; /* from here on written before read: call_handle zeroes only the above */
    double reals[MAX_SETTINGS];
    char msg[MSG_CAP];
} hcall;

typedef struct {
    const char *name;
    PyObject *(*body)(hcall *c); /* the ABI call and the result's conversion */
    int nargs;
    handle_arg_spec args[MAX_ARGS];
} handle_spec;

/* A sequence argument: H_INTS or H_REALS (settings: at most MAX_SETTINGS), H_LAYERS, or H_ARRAYS of
 * the first array's dtype (a second H_ARRAYS pairs with the first item by item, so it must have the
 * same length). */
static int
sequence_arg(hcall *c, const handle_arg_spec *a, PyObject *o)
{
    const char *fn = c->fn, *name = a->name;
    int settings = a->kind == H_INTS || a->kind == H_REALS, k = c->arrays[0] != NULL;
    char what[NAME_CAP];
    snprintf(what, sizeof what, "%s must be a sequence of %s", name, a->kind == H_LAYERS ? "LayerHandles" : "arrays");
    PyObject *seq = c->seqs[c->nseqs++] = PySequence_Fast(o, what);
    if (seq == NULL) {
        if (settings) {
            PyErr_Format(PyExc_TypeError, "%s: %s must be a sequence, got %s", fn, name, Py_TYPE(o)->tp_name);
        }
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    if (settings && n > MAX_SETTINGS) {
        PyErr_Format(PyExc_ValueError, "%s: %s has %zd items; at most %d", fn, name, n, MAX_SETTINGS);
        return -1;
    }
    if (a->kind == H_ARRAYS && k == 0) {
        c->narrays = n;
        c->arrays_name = name;
        c->typenum = n > 0 && PyArray_Check(items[0]) ? PyArray_TYPE((PyArrayObject *)items[0]) : NPY_FLOAT;
    }
    else if (a->kind == H_ARRAYS && n != c->narrays) {
        PyErr_Format(PyExc_ValueError, "%s: %s and %s must have the same length", fn, c->arrays_name, name);
        return -1;
    }
    if ((a->kind == H_LAYERS && (c->layers = PyMem_Calloc((size_t)n + 1, sizeof *c->layers)) == NULL) ||
        (a->kind == H_ARRAYS && (c->arrays[k] = PyMem_Calloc((size_t)n + 1, sizeof(scnn_tensor))) == NULL)) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t *count = a->kind == H_INTS ? &c->nints : a->kind == H_REALS ? &c->nreals
                        : a->kind == H_LAYERS ? &c->nlayers : &c->narrays;
    *count = n;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = items[i];
        int failed =
            a->kind == H_INTS     ? int64_arg(fn, name, item, &c->ints[i]) < 0
            : a->kind == H_REALS  ? double_arg(fn, name, item, &c->reals[i]) < 0
            : a->kind == H_ARRAYS ? exact_array(fn, name, item, c->typenum, 1, "optimizer", &c->arrays[k][i]) < 0
                                  : (c->layers[i] = handle_arg(fn, name, item, LAYER_CAPSULE, "a LayerHandle")) == NULL;
        if (failed) {
            return -1;
        }
    }
    return 0;
}

/* layer_create (is_layer) or optimizer_create: the new Swift object's handle, or the exception for
 * a failed status; the object is released if its capsule cannot be made. */
static PyObject *
create_handle(hcall *c, int is_layer)
{
    scnn_layer *layer = NULL;
    scnn_optimizer *opt = NULL;
    int32_t status = is_layer ? scnn_layer_create(c->str, c->dtype, c->ints, (int32_t)c->nints, c->reals,
                                                  (int32_t)c->nreals, c->layers, (int64_t)c->nlayers, c->seed,
                                                  &layer, c->msg, MSG_CAP)
                              : scnn_optimizer_create(c->str, c->arrays[0], c->arrays[1], (int64_t)c->narrays,
                                                      c->reals, (int32_t)c->nreals, &opt, c->msg, MSG_CAP);
    if (status != SCNN_OK) {
        return raise_status(c->fn, status, c->msg);
    }
    PyObject *handle = is_layer ? PyCapsule_New(layer, LAYER_CAPSULE, layer_capsule_destructor)
                                : PyCapsule_New(opt, OPTIMIZER_CAPSULE, optimizer_capsule_destructor);
    if (handle == NULL && is_layer) {
        scnn_layer_release(layer);
    }
    else if (handle == NULL) {
        scnn_optimizer_release(opt);
    }
    return handle;
}

static int
layer_typenum(scnn_layer *layer)
{
    return scnn_layer_dtype(layer) == SCNN_FLOAT32 ? NPY_FLOAT : NPY_DOUBLE;
}

/* Checks one argument and stores it in the call's state (see handle_kind). */
static int
handle_arg_value(hcall *c, const handle_arg_spec *a, PyObject *o)
{
    const char *fn = c->fn, *name = a->name;
    switch (a->kind) {
    case H_LAYER:
        c->owner = name;
        return (c->layer = handle_arg(fn, name, o, LAYER_CAPSULE, "a LayerHandle")) == NULL ? -1 : 0;
    case H_OPTIMIZER_OR_NONE:
        if (o == Py_None) {
            return 0;
        }
        /* fall through */
    case H_OPTIMIZER:
        return (c->opt = handle_arg(fn, name, o, OPTIMIZER_CAPSULE, "an OptimizerHandle")) == NULL ? -1 : 0;
    case H_ARRAY:
        return exact_array(fn, name, o, layer_typenum(c->layer), 0, c->owner, &c->t[c->nt++]);
    case H_INT64_ARRAY:
        return exact_array(fn, name, o, NPY_INT64, 0, name, &c->t[c->nt++]);
    case H_INTS:
    case H_REALS:
    case H_LAYERS:
    case H_ARRAYS:
        return sequence_arg(c, a, o);
    case H_STR:
        if ((c->str = PyUnicode_Check(o) ? PyUnicode_AsUTF8(o) : NULL) == NULL && !PyErr_Occurred()) {
            PyErr_Format(PyExc_TypeError, "%s: %s must be a str", fn, name);
        }
        return c->str == NULL ? -1 : 0;
    case H_DTYPE:
        return dtype_arg(fn, o, &c->dtype);
    case H_BOOL:
        return (c->flag = PyObject_IsTrue(o)) < 0 ? -1 : 0;
    case H_SEED:
        if (!PyLong_Check(o)) {
            PyErr_Format(PyExc_TypeError, "%s: %s must be an int, got %s", fn, name, Py_TYPE(o)->tp_name);
            return -1;
        }
        c->seed = (uint64_t)PyLong_AsUnsignedLongLong(o); /* swiftcnn._random.check_seed normalized it */
        if (PyErr_Occurred()) {
            PyErr_Clear();
            PyErr_Format(PyExc_OverflowError, "%s: %s must be in [0, 2**64)", fn, name);
            return -1;
        }
        return 0;
    case H_INT:
        return int64_arg(fn, name, o, &c->i);
    case H_REAL:
        return double_arg(fn, name, o, &c->real);
    }
    return 0;
}

/* Runs one handle function: parse, check every argument, the body, then the one cleanup. */
static PyObject *
call_handle(const handle_spec *s, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    const argspec spec = {s->name, s->args, sizeof(handle_arg_spec), s->nargs, s->nargs, s->nargs};
    hcall c;
    PyObject *result = NULL;

    memset(&c, 0, offsetof(hcall, ints));
    c.fn = s->name;
    c.msg[0] = '\0';
    if (parse_args(&spec, args, nargs, kwnames, c.v) < 0) {
        return NULL;
    }
    for (int i = 0; i < s->nargs; i++) {
        if (handle_arg_value(&c, &s->args[i], c.v[i]) < 0) {
            goto done;
        }
    }
    result = s->body(&c);
done:
    PyMem_Free(c.layers);
    PyMem_Free(c.arrays[0]);
    PyMem_Free(c.arrays[1]);
    for (int i = 0; i < c.nseqs; i++) {
        Py_XDECREF(c.seqs[i]);
    }
    return result;
}

/* A row declares the function's spec, its body (`body`, an expression over the parsed call `c`:
 * the ABI call and the result's conversion) and its METH_FASTCALL entry. The argument count is the
 * number of {name, kind} pairs given. */
#define HANDLE_ROW(id, body, ...)                                                                    \
    static PyObject *h_##id(hcall *c) { return body; }                                               \
    static const handle_spec id##_spec = {                                                           \
        #id, h_##id, (int)(sizeof((handle_arg_spec[]){__VA_ARGS__}) / sizeof(handle_arg_spec)), {__VA_ARGS__}}; \
    static PyObject *core_##id(PyObject *m, PyObject *const *a, Py_ssize_t n, PyObject *k)           \
    {                                                                                                \
        (void)m;                                                                                     \
        return call_handle(&id##_spec, a, n, k);                                                     \
    }

/* None, or the exception for a failed status. */
static PyObject *
none_or_raise(hcall *c, int32_t status)
{
    if (status != SCNN_OK) {
        return raise_status(c->fn, status, c->msg);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(set_num_threads_doc,
"set_num_threads($module, /, n)\n--\n\n"
"Sets the number of worker threads of compute calls (n >= 1).");
HANDLE_ROW(set_num_threads, none_or_raise(c, scnn_set_num_threads(c->i, c->msg, MSG_CAP)), {"n", H_INT})

PyDoc_STRVAR(layer_create_doc,
"layer_create($module, /, kind, dtype, ints, reals, children, seed)\n--\n\n"
"A new layer handle of `kind` (see swiftcnn.h, scnn_layer_create): ints and reals are the\n"
"settings in the ABI's order, children the LayerHandles of a container, seed in [0, 2**64).");
HANDLE_ROW(layer_create, create_handle(c, 1),
           {"kind", H_STR}, {"dtype", H_DTYPE}, {"ints", H_INTS}, {"reals", H_REALS},
           {"children", H_LAYERS}, {"seed", H_SEED})

PyDoc_STRVAR(layer_dtype_doc,
"layer_dtype($module, /, layer)\n--\n\n"
"'float32' or 'float64'.");
HANDLE_ROW(layer_dtype, PyUnicode_FromString(dtype_name(layer_typenum(c->layer))),
           {"layer", H_LAYER})

/* The shape of a descriptor as a tuple. */
static PyObject *
shape_tuple(const scnn_tensor *t)
{
    PyObject *tuple = PyTuple_New(t->ndim);
    for (int i = 0; tuple != NULL && i < t->ndim; i++) {
        PyObject *d = PyLong_FromLongLong((long long)t->shape[i]);
        if (d == NULL) {
            Py_CLEAR(tuple);
            break;
        }
        PyTuple_SET_ITEM(tuple, i, d);
    }
    return tuple;
}

static PyObject *
output_shape(hcall *c)
{
    scnn_tensor x = {.ndim = (int32_t)c->nints, .dtype = scnn_layer_dtype(c->layer)}, y = {0};
    for (Py_ssize_t i = 0; i < c->nints && i < SCNN_MAX_NDIM; i++) {
        x.shape[i] = c->ints[i];
    }
    int32_t status = scnn_layer_forward(c->layer, &x, &y, false, c->msg, MSG_CAP);
    return status != SCNN_OK ? raise_status(c->fn, status, c->msg) : shape_tuple(&y);
}

PyDoc_STRVAR(layer_output_shape_doc,
"layer_output_shape($module, /, layer, shape)\n--\n\n"
"The output shape the layer gives for an input of `shape` (a tuple); ValueError if it cannot\n"
"take it. Swift answers: no other language computes a layer's shapes.");
HANDLE_ROW(layer_output_shape, output_shape(c), {"layer", H_LAYER}, {"shape", H_INTS})

/* forward (backward = 0) or backward (1) through a layer handle: the shape query, the result
 * array, then the computation with the GIL released. */
static PyObject *
layer_pass(hcall *c, int backward)
{
    scnn_tensor res = {0};
    int32_t status = backward ? scnn_layer_backward(c->layer, &c->t[0], &res, false, c->msg, MSG_CAP)
                              : scnn_layer_forward(c->layer, &c->t[0], &res, false, c->msg, MSG_CAP);
    if (status != SCNN_OK) {
        return raise_status(c->fn, status, c->msg);
    }
    PyArrayObject *out = new_result(c->fn, &res);
    if (out == NULL) {
        return NULL;
    }
    res.data = PyArray_DATA(out);
    /* Swift re-checks the shapes while it holds the layer, so a forward by another thread since
     * the query gives RuntimeError, not an overrun. */
    CALL_WITHOUT_GIL(status = backward ? scnn_layer_backward(c->layer, &c->t[0], &res, true, c->msg, MSG_CAP)
                                       : scnn_layer_forward(c->layer, &c->t[0], &res, true, c->msg, MSG_CAP));
    if (!backward) {
        keep_last_input(c->v[0], c->v[1], status == SCNN_OK);
    }
    if (status != SCNN_OK) {
        Py_DECREF(out);
        return raise_status(c->fn, status, c->msg);
    }
    return (PyObject *)out;
}

PyDoc_STRVAR(layer_forward_doc,
"layer_forward($module, /, layer, x)\n--\n\n"
"Runs the layer on x (C-contiguous ndarray of the layer's dtype); returns a new array. The\n"
"layer keeps a view of x: the caller keeps x alive until the next forward.");
HANDLE_ROW(layer_forward, layer_pass(c, 0), {"layer", H_LAYER}, {"x", H_ARRAY})

PyDoc_STRVAR(layer_backward_doc,
"layer_backward($module, /, layer, grad_out)\n--\n\n"
"Backward through the layer's last forward: returns the gradient for its input (a new array) and\n"
"adds the parameter gradients into the parameters' grad arrays. RuntimeError before any forward.");
HANDLE_ROW(layer_backward, layer_pass(c, 1), {"layer", H_LAYER}, {"grad_out", H_ARRAY})

/* An ndarray over Swift memory described by t, whose base is `keeper` (a capsule owning a layer
 * reference). */
static PyObject *
view_array(const char *fn, const scnn_tensor *t, PyObject *keeper)
{
    PyObject *arr = (PyObject *)declared_array(fn, t, t->data, "described an invalid parameter");
    if (arr == NULL) {
        return NULL;
    }
    Py_INCREF(keeper);
    if (PyArray_SetBaseObject((PyArrayObject *)arr, keeper) < 0) { /* steals keeper, even on failure */
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

/* [(name, data, grad)] of the layer's parameters (with_grad) or [(name, data)] of its buffers:
 * views of Swift memory (no copy) whose base is one capsule holding its own layer reference. */
static PyObject *
layer_memory(hcall *c, int with_grad)
{
    int64_t count = with_grad ? scnn_layer_parameter_count(c->layer) : scnn_layer_buffer_count(c->layer);
    PyObject *list = PyList_New(0), *keeper = NULL;
    if (list == NULL) {
        return NULL;
    }
    scnn_layer_retain(c->layer);
    if ((keeper = PyCapsule_New(c->layer, LAYER_MEMORY_CAPSULE, layer_memory_destructor)) == NULL) {
        scnn_layer_release(c->layer);
        Py_CLEAR(list);
    }
    for (int64_t i = 0; list != NULL && i < count; i++) {
        scnn_tensor data = {0}, grad = {0};
        PyObject *parts[3] = {NULL, NULL, NULL}, *item = NULL;
        char name[NAME_CAP];
        name[0] = '\0';
        int32_t status = with_grad ? scnn_layer_parameter(c->layer, i, &data, &grad, name, NAME_CAP, c->msg, MSG_CAP)
                                   : scnn_layer_buffer(c->layer, i, &data, name, NAME_CAP, c->msg, MSG_CAP);
        name[NAME_CAP - 1] = '\0';
        if (status != SCNN_OK) {
            raise_status(c->fn, status, c->msg);
        }
        else if ((parts[0] = PyUnicode_DecodeUTF8(name, (Py_ssize_t)strlen(name), "replace")) != NULL &&
                 (parts[1] = view_array(c->fn, &data, keeper)) != NULL &&
                 (!with_grad || (parts[2] = view_array(c->fn, &grad, keeper)) != NULL)) {
            item = PyTuple_Pack(2 + with_grad, parts[0], parts[1], parts[2]);
        }
        for (int k = 0; k < 3; k++) {
            Py_XDECREF(parts[k]);
        }
        if (item == NULL || PyList_Append(list, item) < 0) {
            Py_CLEAR(list);
        }
        Py_XDECREF(item);
    }
    Py_XDECREF(keeper);
    return list;
}

PyDoc_STRVAR(layer_parameters_doc,
"layer_parameters($module, /, layer)\n--\n\n"
"[(name, data, grad)]: writable ndarrays viewing the layer's parameter memory (no copy); each\n"
"array keeps the Swift layer alive.");
HANDLE_ROW(layer_parameters, layer_memory(c, 1), {"layer", H_LAYER})

PyDoc_STRVAR(layer_buffers_doc,
"layer_buffers($module, /, layer)\n--\n\n"
"[(name, data)]: ndarrays viewing the layer's buffers (BatchNorm's running statistics and\n"
"num_batches_tracked, int64), written in place by training; each keeps the Swift layer alive.");
HANDLE_ROW(layer_buffers, layer_memory(c, 0), {"layer", H_LAYER})

PyDoc_STRVAR(layer_set_training_doc,
"layer_set_training($module, /, layer, training)\n--\n\n"
"Training (True) or evaluation (False) mode; containers pass it to every child.");
HANDLE_ROW(layer_set_training, none_or_raise(c, scnn_layer_set_training(c->layer, c->flag, c->msg, MSG_CAP)),
           {"layer", H_LAYER}, {"training", H_BOOL})

static PyObject *
zero_grad_layer(hcall *c)
{
    int32_t status;
    CALL_WITHOUT_GIL(status = scnn_layer_zero_grad(c->layer, c->msg, MSG_CAP));
    return none_or_raise(c, status);
}

PyDoc_STRVAR(layer_zero_grad_doc,
"layer_zero_grad($module, /, layer)\n--\n\n"
"Fills every parameter gradient of the layer with zeros.");
HANDLE_ROW(layer_zero_grad, zero_grad_layer(c), {"layer", H_LAYER})

/* ==== Optimizers ================================================================================ */

PyDoc_STRVAR(optimizer_create_doc,
"optimizer_create($module, /, kind, data, grads, reals)\n--\n\n"
"A new optimizer handle of `kind` (see swiftcnn.h, scnn_optimizer_create) over the (data[i],\n"
"grads[i]) arrays (C-contiguous, writable, one float dtype), which the caller keeps alive.");
HANDLE_ROW(optimizer_create, create_handle(c, 0),
           {"kind", H_STR}, {"data", H_ARRAYS}, {"grads", H_ARRAYS}, {"reals", H_REALS})

static PyObject *
step_optimizer(hcall *c)
{
    int32_t status;
    CALL_WITHOUT_GIL(status = c->flag ? scnn_optimizer_zero_grad(c->opt, c->msg, MSG_CAP)
                                      : scnn_optimizer_step(c->opt, c->msg, MSG_CAP));
    return none_or_raise(c, status);
}

PyDoc_STRVAR(optimizer_step_doc,
"optimizer_step($module, /, optimizer, zero_grad)\n--\n\n"
"One update of every parameter's data (zero_grad False), or every grad set to zero (True).");
HANDLE_ROW(optimizer_step, step_optimizer(c), {"optimizer", H_OPTIMIZER}, {"zero_grad", H_BOOL})

PyDoc_STRVAR(optimizer_get_lr_doc,
"optimizer_get_lr($module, /, optimizer)\n--\n\n"
"The current learning rate.");
HANDLE_ROW(optimizer_get_lr, PyFloat_FromDouble(scnn_optimizer_get_lr(c->opt)), {"optimizer", H_OPTIMIZER})

PyDoc_STRVAR(optimizer_set_lr_doc,
"optimizer_set_lr($module, /, optimizer, lr)\n--\n\n"
"Sets the learning rate used from the next step (lr >= 0).");
HANDLE_ROW(optimizer_set_lr, none_or_raise(c, scnn_optimizer_set_lr(c->opt, c->real, c->msg, MSG_CAP)),
           {"optimizer", H_OPTIMIZER}, {"lr", H_REAL})

static PyObject *
train_step(hcall *c)
{
    double loss = 0.0;
    int64_t correct = 0;
    int32_t status;
    CALL_WITHOUT_GIL(status = scnn_train_step_cross_entropy(c->layer, c->opt, &c->t[0], &c->t[1], &loss, &correct,
                                                            c->msg, MSG_CAP));
    keep_last_input(c->v[0], c->v[2], status == SCNN_OK);
    if (status != SCNN_OK) {
        return raise_status(c->fn, status, c->msg);
    }
    return pair_result(PyFloat_FromDouble(loss), PyLong_FromLongLong((long long)correct));
}

PyDoc_STRVAR(train_step_cross_entropy_doc,
"train_step_cross_entropy($module, /, model, optimizer, x, labels)\n--\n\n"
"The fused canonical step: zero_grad, forward, softmax cross-entropy, backward, step (only if\n"
"the loss is finite). x: C-contiguous ndarray of the model's dtype; labels: C-contiguous int64\n"
"(N,); optimizer may be None. Returns (mean loss, number correct).");
HANDLE_ROW(train_step_cross_entropy, train_step(c),
           {"model", H_LAYER}, {"optimizer", H_OPTIMIZER_OR_NONE}, {"x", H_ARRAY}, {"labels", H_INT64_ARRAY})


#define FASTCALL(id) {#id, (PyCFunction)(void (*)(void))core_##id, METH_FASTCALL | METH_KEYWORDS, id##_doc},

/* set_num_threads (public) and the handle functions (private), added to the module by core_exec. */
PyMethodDef handle_methods[] = {
    FASTCALL(set_num_threads) FASTCALL(layer_create) FASTCALL(layer_dtype) FASTCALL(layer_output_shape)
    FASTCALL(layer_forward) FASTCALL(layer_backward) FASTCALL(layer_parameters) FASTCALL(layer_zero_grad)
    FASTCALL(layer_buffers) FASTCALL(layer_set_training) FASTCALL(optimizer_create) FASTCALL(optimizer_step)
    FASTCALL(optimizer_set_lr) FASTCALL(optimizer_get_lr) FASTCALL(train_step_cross_entropy)
    {NULL, NULL, 0, NULL}
};
