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
 *      shapes and dtypes (no shape rule lives here);
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
 * The interface is python/swiftcnn/_core.pyi; the public behaviour is ../shared/API.md.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "swiftcnn.h"

#define MSG_CAP 512    /* the ABI's message buffer, one per call, on the stack */
#define MAX_DIMS 64    /* NumPy's largest ndim (NPY_MAXDIMS in NumPy 2) */
#define MAX_ARGS 10    /* the most parameters any function here has */
#define MAX_OPERANDS 6 /* the most array operands of an op (batch_norm: 5) */
#define MAX_RESULTS 3  /* the most results of an op */
#define MAX_INTS 16    /* the most int settings of an op */
#define MAX_SETTINGS 32 /* the most int or real settings of a layer or optimizer */
#define NAME_CAP 256   /* room for a parameter's name */

/* Runs `stmt` (the compute call) with the GIL released: API.md promises that every computation
 * lets other Python threads run. (Holding it for tiny ops would save ~0.1 us a call; the contract
 * wins.) */
#define CALL_WITHOUT_GIL(stmt)   \
    do {                         \
        Py_BEGIN_ALLOW_THREADS   \
        stmt;                    \
        Py_END_ALLOW_THREADS     \
    } while (0)

static const char LAYER_CAPSULE[] = "swiftcnn.LayerHandle";
static const char OPTIMIZER_CAPSULE[] = "swiftcnn.OptimizerHandle";
static const char LAYER_MEMORY_CAPSULE[] = "swiftcnn.LayerMemory";

/* ==== Argument parsing ========================================================================== */

/* A function's parameters: names[0..npos) may be given by position or keyword, names[npos..nall)
 * only by keyword; names[0..nreq) are required. The names are read `stride` bytes apart, so that
 * both a plain array of names and the op table's rows (whose first field is the name) serve. */
typedef struct {
    const char *fname;
    const void *names;
    size_t stride;
    int npos;
    int nreq;
    int nall;
} argspec;

static inline const char *
arg_name(const argspec *s, int i)
{
    return *(const char *const *)((const char *)s->names + s->stride * (size_t)i);
}

/* Fills v[0..nall) with borrowed references (NULL where not given). */
static int
parse_args(const argspec *s, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
           PyObject **v)
{
    for (int i = 0; i < s->nall; i++) {
        v[i] = NULL;
    }
    if (nargs > s->npos) {
        PyErr_Format(PyExc_TypeError, "%s() takes %s %d positional argument%s (%zd given)",
                     s->fname, s->npos == s->nreq ? "exactly" : "at most", s->npos,
                     s->npos == 1 ? "" : "s", nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        v[i] = args[i];
    }
    if (kwnames != NULL) {
        Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t k = 0; k < nkw; k++) {
            PyObject *key = PyTuple_GET_ITEM(kwnames, k);
            Py_ssize_t len;
            const char *ks = PyUnicode_AsUTF8AndSize(key, &len);
            if (ks == NULL) {
                return -1;
            }
            int found = -1;
            for (int i = 0; i < s->nall; i++) {
                const char *name = arg_name(s, i);
                if ((Py_ssize_t)strlen(name) == len && memcmp(name, ks, (size_t)len) == 0) {
                    found = i;
                    break;
                }
            }
            if (found < 0) {
                PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'",
                             s->fname, key);
                return -1;
            }
            if (v[found] != NULL) {
                PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'",
                             s->fname, arg_name(s, found));
                return -1;
            }
            v[found] = args[nargs + k];
        }
    }
    for (int i = 0; i < s->nreq; i++) {
        if (v[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s' (pos %d)",
                         s->fname, arg_name(s, i), i + 1);
            return -1;
        }
    }
    return 0;
}

/* The value of an optional argument: NULL when absent or None. */
static inline PyObject *
optional(PyObject *o)
{
    return (o == NULL || o == Py_None) ? NULL : o;
}

/* An int argument (a Python int or anything with __index__, not a bool) as int64. */
static int
int64_arg(const char *fn, const char *name, PyObject *o, int64_t *out)
{
    int overflow = 0;
    long long v;
    if (PyLong_CheckExact(o)) { /* the common case, without the __index__ round trip */
        v = PyLong_AsLongLongAndOverflow(o, &overflow);
    }
    else {
        if (PyBool_Check(o) || !PyIndex_Check(o) || PyArray_IsScalar(o, Bool)) {
            PyErr_Format(PyExc_TypeError, "%s: %s must be an int, got %s", fn, name, Py_TYPE(o)->tp_name);
            return -1;
        }
        PyObject *idx = PyNumber_Index(o);
        if (idx == NULL) { /* e.g. a 1-D ndarray: NumPy's message would not name the argument */
            if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError, "%s: %s must be an int, got %s", fn, name, Py_TYPE(o)->tp_name);
            }
            return -1;
        }
        v = PyLong_AsLongLongAndOverflow(idx, &overflow);
        Py_DECREF(idx);
    }
    if (overflow != 0) {
        PyErr_Format(PyExc_OverflowError, "%s: %s does not fit in a 64-bit integer", fn, name);
        return -1;
    }
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

/* An int or an (h, w) pair (tuple or list of two ints) into out[0], out[1]. */
static int
pair_arg(const char *fn, const char *name, PyObject *o, int64_t out[2])
{
    int is_pair = PyTuple_Check(o) || PyList_Check(o);
    Py_ssize_t n = is_pair ? PySequence_Fast_GET_SIZE(o) : 1;
    PyObject **items = is_pair ? PySequence_Fast_ITEMS(o) : &o;
    if (is_pair && n != 2) {
        PyErr_Format(PyExc_ValueError,
                     "%s: %s must be an int or a pair of ints (h, w), got a %s of length %zd",
                     fn, name, Py_TYPE(o)->tp_name, n);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyLong_CheckExact(items[i]) && (PyBool_Check(items[i]) || !PyIndex_Check(items[i]) ||
                                             PyArray_IsScalar(items[i], Bool))) {
            if (is_pair) {
                PyErr_Format(PyExc_TypeError, "%s: %s must be an int or a pair of ints (h, w), got a %s holding %s",
                             fn, name, Py_TYPE(o)->tp_name, Py_TYPE(items[i])->tp_name);
            }
            else {
                PyErr_Format(PyExc_TypeError, "%s: %s must be an int or a pair of ints (h, w), got %s",
                             fn, name, Py_TYPE(o)->tp_name);
            }
            return -1;
        }
        if (int64_arg(fn, name, items[i], &out[i]) < 0) {
            return -1;
        }
    }
    out[1] = out[is_pair];
    return 0;
}

/* A float argument (a Python float, int, or anything with __float__). */
static int
double_arg(const char *fn, const char *name, PyObject *o, double *out)
{
    double v = PyFloat_AsDouble(o);
    if (v == -1.0 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "%s: %s must be a float, got %s", fn, name, Py_TYPE(o)->tp_name);
        }
        else if (PyErr_ExceptionMatches(PyExc_OverflowError)) { /* an int beyond a double: 10**400 */
            PyErr_Clear();
            PyErr_Format(PyExc_OverflowError, "%s: %s is too large for a float", fn, name);
        }
        return -1;
    }
    *out = v;
    return 0;
}

/* A keyword string out of a fixed list: returns its index, or -1 with ValueError/TypeError set. */
static int
choice_arg(const char *fn, const char *name, PyObject *o, const char *const *choices, const char *expected)
{
    if (!PyUnicode_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be a str (%s), got %s", fn, name, expected,
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    const char *s = PyUnicode_AsUTF8(o);
    if (s == NULL) {
        return -1;
    }
    for (int i = 0; choices[i] != NULL; i++) {
        if (strcmp(s, choices[i]) == 0) {
            return i;
        }
    }
    PyErr_Format(PyExc_ValueError, "%s: %s must be %s, got %R", fn, name, expected, o);
    return -1;
}

/* "float32" / "float64" as SCNN_FLOAT32 / SCNN_FLOAT64. */
static int
dtype_arg(const char *fn, PyObject *o, int32_t *dtype)
{
    static const char *const names[] = {"float32", "float64", NULL};
    int i = choice_arg(fn, "dtype", o, names, "'float32' or 'float64'");
    if (i < 0) {
        return -1;
    }
    *dtype = i == 0 ? SCNN_FLOAT32 : SCNN_FLOAT64;
    return 0;
}

/* ==== Errors ==================================================================================== */

static PyObject *
status_exception(int32_t status)
{
    switch (status) {
    case SCNN_VALUE_ERROR: return PyExc_ValueError;
    case SCNN_TYPE_ERROR: return PyExc_TypeError;
    case SCNN_OVERFLOW_ERROR: return PyExc_OverflowError;
    case SCNN_MEMORY_ERROR: return PyExc_MemoryError;
    default: return PyExc_RuntimeError;
    }
}

/* True when msg already starts with an op name and a colon ("conv2d: ...", "Conv2d.forward: ..."). */
static int
has_op_prefix(const char *msg)
{
    const char *p = msg;
    while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
           *p == '_' || *p == '.') {
        p++;
    }
    return p > msg && p[0] == ':' && p[1] == ' ';
}

/* Raises the exception for a failed ABI status, with the ABI's message (prefixed with the
 * function name unless it already names an op). Always returns NULL. */
static PyObject *
raise_status(const char *fn, int32_t status, char *msg)
{
    msg[MSG_CAP - 1] = '\0';
    PyObject *exc = status_exception(status);
    PyObject *text = PyUnicode_DecodeUTF8(msg, (Py_ssize_t)strlen(msg), "replace");
    if (text == NULL) {
        return NULL;
    }
    if (PyUnicode_GET_LENGTH(text) == 0) {
        PyErr_Format(exc, "%s: failed (status %d)", fn, (int)status);
    }
    else if (has_op_prefix(msg)) {
        PyErr_SetObject(exc, text);
    }
    else {
        PyErr_Format(exc, "%s: %U", fn, text);
    }
    Py_DECREF(text);
    return NULL;
}

/* Prefixes the pending ValueError/TypeError (from NumPy's conversion) with "fn: name: ". */
static void
prefix_pending_error(const char *fn, const char *name)
{
    if (!PyErr_ExceptionMatches(PyExc_ValueError) && !PyErr_ExceptionMatches(PyExc_TypeError)) {
        return;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    PyObject *text = value != NULL ? PyObject_Str(value) : NULL;
    if (text == NULL) {
        PyErr_Clear();
        PyErr_Restore(type, value, tb);
        return;
    }
    PyErr_Format(type, "%s: %s: %U", fn, name, text);
    Py_DECREF(text);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

/* "(2, 3)", "(5,)", "()", as NumPy prints shapes. */
static void
format_shape(char *buf, size_t cap, int ndim, const npy_intp *dims)
{
    size_t n = 0;
    int w = snprintf(buf, cap, "(");
    n = w > 0 ? (size_t)w : 0;
    for (int i = 0; i < ndim && n < cap; i++) {
        w = snprintf(buf + n, cap - n, i == 0 ? "%lld" : ", %lld", (long long)dims[i]);
        if (w < 0) {
            break;
        }
        n += (size_t)w;
    }
    if (n < cap) {
        snprintf(buf + n, cap - n, ndim == 1 ? ",)" : ")");
    }
}

static const char *
dtype_name(int typenum)
{
    return typenum == NPY_FLOAT ? "float32" : typenum == NPY_DOUBLE ? "float64" : "int64";
}

/* ==== Array operands ============================================================================ */

/* One array argument: what the caller passed, the C-contiguous, aligned, native array used, and
 * its descriptor for the ABI. */
typedef struct {
    const char *name;
    PyObject *obj;           /* borrowed; NULL for an absent optional operand */
    PyArrayObject *arr;      /* owned; NULL until converted */
    int is_labels;           /* class labels: converted to int64, outside the float dtype rules */
    int is_state;            /* updated in place: used as it is or refused, never converted */
    scnn_tensor *t;          /* its descriptor, in the array the ABI is given */
} operand;

static inline int
is_float_type(int t)
{
    return t == NPY_FLOAT || t == NPY_DOUBLE;
}

static inline int
is_usable_in_place(PyArrayObject *a, int typenum)
{
    return PyArray_TYPE(a) == typenum && PyArray_ISCARRAY_RO(a) && PyArray_ISNOTSWAPPED(a);
}

static inline int32_t
scnn_dtype(int typenum)
{
    return typenum == NPY_FLOAT ? SCNN_FLOAT32 : typenum == NPY_DOUBLE ? SCNN_FLOAT64 : SCNN_INT64;
}

static inline int
npy_type(int32_t dtype)
{
    return dtype == SCNN_FLOAT32 ? NPY_FLOAT : dtype == SCNN_FLOAT64 ? NPY_DOUBLE : NPY_INT64;
}

/* The descriptor of a converted array. An ndim beyond SCNN_MAX_NDIM is passed as it is (with the
 * first sizes): Swift rejects it with a message naming the operand. */
static void
describe_array(PyArrayObject *a, scnn_tensor *t)
{
    int nd = PyArray_NDIM(a);
    t->data = PyArray_DATA(a);
    t->ndim = nd;
    t->dtype = scnn_dtype(PyArray_TYPE(a));
    for (int i = 0; i < nd && i < SCNN_MAX_NDIM; i++) {
        t->shape[i] = (int64_t)PyArray_DIMS(a)[i];
    }
}

/* Checks that every ndarray operand is float32 or float64 and that they all share one dtype;
 * *typenum gets it (float64 when no operand is an ndarray: lists and scalars adopt the dtype of
 * the ndarrays). Operands with obj == NULL (absent optional ones) are skipped. */
static int
resolve_dtype(const char *fn, operand *ops, int n, int *typenum)
{
    const operand *first = NULL;
    int t = NPY_DOUBLE;
    for (int i = 0; i < n; i++) {
        operand *o = &ops[i];
        if (o->obj == NULL || o->is_labels || !PyArray_Check(o->obj)) {
            continue;
        }
        PyArrayObject *a = (PyArrayObject *)o->obj;
        int ti = PyArray_TYPE(a);
        if (!is_float_type(ti)) {
            PyErr_Format(PyExc_TypeError, "%s: %s has dtype %S; expected float32 or float64",
                         fn, o->name, (PyObject *)PyArray_DESCR(a));
            return -1;
        }
        if (first == NULL) {
            first = o;
            t = ti;
        }
        else if (ti != t) {
            PyErr_Format(PyExc_TypeError, "%s: %s has dtype %s but %s has dtype %s",
                         fn, first->name, dtype_name(t), o->name, dtype_name(ti));
            return -1;
        }
    }
    *typenum = t;
    return 0;
}

/* o itself when it is an ndarray (a new reference), else NumPy's array of it (lists, scalars,
 * array-likes), with NumPy's error prefixed by the argument's name. */
static PyArrayObject *
as_array(const char *fn, const char *name, PyObject *o)
{
    if (PyArray_Check(o)) {
        Py_INCREF(o);
        return (PyArrayObject *)o;
    }
    PyArrayObject *a = (PyArrayObject *)PyArray_FromAny(o, NULL, 0, 0, 0, NULL);
    if (a == NULL) {
        prefix_pending_error(fn, name);
    }
    return a;
}

/* Converts one operand to a C-contiguous, aligned, native array of typenum: ndarrays already in
 * that form are used in place; other ndarrays are copied once; lists, scalars and other
 * array-likes of numbers are converted once. resolve_dtype has checked the ndarray dtypes. */
static int
convert_operand(const char *fn, operand *o, int typenum)
{
    if (o->obj == NULL) {
        o->t->ndim = SCNN_ABSENT;
        o->t->data = NULL;
        return 0;
    }
    if (o->is_labels) {
        return 0; /* converted by labels_operand */
    }
    /* A state operand is written in place: a copy would lose the update, so it must be usable as it
     * is (and then takes the in-place path below). */
    if (o->is_state && (!PyArray_Check(o->obj) || PyArray_TYPE((PyArrayObject *)o->obj) != typenum ||
                        !PyArray_ISCARRAY((PyArrayObject *)o->obj) || !PyArray_ISNOTSWAPPED((PyArrayObject *)o->obj))) {
        PyErr_Format(PyExc_TypeError, "%s: %s is updated in place and must be a writable, C-contiguous "
                     "%s ndarray (or None), got %s", fn, o->name, dtype_name(typenum), Py_TYPE(o->obj)->tp_name);
        return -1;
    }
    PyArrayObject *a = as_array(fn, o->name, o->obj);
    if (a == NULL) {
        return -1;
    }
    if (!PyArray_Check(o->obj) && !(PyArray_ISBOOL(a) || PyArray_ISINTEGER(a) || PyArray_ISFLOAT(a))) {
        PyErr_Format(PyExc_TypeError,
                     "%s: %s must be a float32 or float64 array or a list of numbers, got %s (dtype %S)",
                     fn, o->name, Py_TYPE(o->obj)->tp_name, (PyObject *)PyArray_DESCR(a));
        Py_DECREF(a);
        return -1;
    }
    if (is_usable_in_place(a, typenum)) {
        o->arr = a;
    }
    else {
        o->arr = (PyArrayObject *)PyArray_FromArray(
            a, PyArray_DescrFromType(typenum), NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_FORCECAST);
        Py_DECREF(a);
        if (o->arr == NULL) {
            prefix_pending_error(fn, o->name);
            return -1;
        }
    }
    describe_array(o->arr, o->t);
    return 0;
}

/* Resolves the common dtype of ops[0..n) and converts them all (labels are converted already). */
static int
prepare_operands(const char *fn, operand *ops, int n, int *typenum)
{
    if (resolve_dtype(fn, ops, n, typenum) < 0) {
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (convert_operand(fn, &ops[i], *typenum) < 0) {
            return -1;
        }
    }
    return 0;
}

static void
release_operands(operand *ops, int n)
{
    for (int i = 0; i < n; i++) {
        Py_CLEAR(ops[i].arr);
    }
}

/* The byte range [lo, hi) an array's elements span (lo == hi when it has no elements). */
static void
memory_bounds(PyArrayObject *a, uintptr_t *lo, uintptr_t *hi)
{
    uintptr_t start = (uintptr_t)PyArray_DATA(a);
    uintptr_t low = start, high = start;
    int nd = PyArray_NDIM(a);
    const npy_intp *dims = PyArray_DIMS(a);
    const npy_intp *strides = PyArray_STRIDES(a);
    for (int i = 0; i < nd; i++) {
        if (dims[i] == 0) {
            *lo = *hi = start;
            return;
        }
    }
    for (int i = 0; i < nd; i++) {
        npy_intp extent = strides[i] * (dims[i] - 1);
        if (extent > 0) {
            high += (uintptr_t)extent;
        }
        else {
            low -= (uintptr_t)(-extent);
        }
    }
    *lo = low;
    *hi = high + (uintptr_t)PyArray_ITEMSIZE(a);
}

static int
arrays_overlap(PyArrayObject *a, PyArrayObject *b)
{
    uintptr_t alo, ahi, blo, bhi;
    memory_bounds(a, &alo, &ahi);
    memory_bounds(b, &blo, &bhi);
    return alo < ahi && blo < bhi && alo < bhi && blo < ahi;
}

/* Shape from the ABI (int64) to NumPy (npy_intp), checking the range. */
static int
to_npy_dims(const char *fn, int64_t ndim, const int64_t *shape, npy_intp *dims)
{
    if (ndim < 0 || ndim > MAX_DIMS) {
        PyErr_Format(PyExc_RuntimeError, "%s: the core returned an invalid ndim %lld", fn, (long long)ndim);
        return -1;
    }
    for (int64_t i = 0; i < ndim; i++) {
        if (shape[i] < 0) {
            PyErr_Format(PyExc_RuntimeError, "%s: the core returned a negative size", fn);
            return -1;
        }
        if ((uint64_t)shape[i] > (uint64_t)NPY_MAX_INTP) {
            PyErr_Format(PyExc_OverflowError, "%s: result size %lld does not fit in this platform's index type",
                         fn, (long long)shape[i]);
            return -1;
        }
        dims[i] = (npy_intp)shape[i];
    }
    return 0;
}

static PyObject *
pair_result(PyObject *a, PyObject *b)
{
    if (a == NULL || b == NULL) {
        Py_XDECREF(a);
        Py_XDECREF(b);
        return NULL;
    }
    PyObject *t = PyTuple_New(2);
    if (t == NULL) {
        Py_DECREF(a);
        Py_DECREF(b);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, a);
    PyTuple_SET_ITEM(t, 1, b);
    return t;
}

/* ==== Results =================================================================================== */

/* An array of the shape and dtype t declares: over `data` (Swift memory) when given, else new and
 * C-contiguous. `what` says what the core got wrong when the declaration is invalid. */
static PyArrayObject *
declared_array(const char *fn, const scnn_tensor *t, void *data, const char *what)
{
    npy_intp dims[SCNN_MAX_NDIM];
    if (t->ndim < 0 || t->ndim > SCNN_MAX_NDIM || to_npy_dims(fn, t->ndim, t->shape, dims) < 0) {
        if (!PyErr_Occurred()) {
            PyErr_Format(PyExc_RuntimeError, "%s: the core %s", fn, what);
        }
        return NULL;
    }
    return (PyArrayObject *)(data == NULL ? PyArray_SimpleNew(t->ndim, dims, npy_type(t->dtype))
                                          : PyArray_SimpleNewFromData(t->ndim, dims, npy_type(t->dtype), data));
}

/* A new C-contiguous array for a result the ABI declared. */
static inline PyArrayObject *
new_result(const char *fn, const scnn_tensor *t)
{
    return declared_array(fn, t, NULL, "declared an invalid result");
}

/* `out=` checked against the declared result: an ndarray of its exact dtype and shape,
 * C-contiguous, aligned, writable, sharing no memory with an input ndarray as the caller passed
 * it (so the rule does not depend on whether that input was copied); with `inplace`, ops[0] may
 * be `out` itself exactly. Returns a new reference. */
static PyArrayObject *
out_array(const char *fn, PyObject *out, const scnn_tensor *t, const operand *ops, int nops, int inplace)
{
    if (!PyArray_Check(out)) {
        PyErr_Format(PyExc_TypeError, "%s: out must be a numpy.ndarray, got %s", fn, Py_TYPE(out)->tp_name);
        return NULL;
    }
    PyArrayObject *o = (PyArrayObject *)out;
    int typenum = npy_type(t->dtype);
    npy_intp dims[SCNN_MAX_NDIM];
    if (to_npy_dims(fn, t->ndim, t->shape, dims) < 0) {
        return NULL;
    }
    if (PyArray_TYPE(o) != typenum || !PyArray_ISNOTSWAPPED(o)) {
        PyErr_Format(PyExc_TypeError, "%s: out has dtype %S but the result has dtype %s",
                     fn, (PyObject *)PyArray_DESCR(o), dtype_name(typenum));
        return NULL;
    }
    int same = PyArray_NDIM(o) == t->ndim;
    for (int i = 0; same && i < t->ndim; i++) {
        same = PyArray_DIMS(o)[i] == dims[i];
    }
    if (!same) {
        char want[160], got[160];
        format_shape(want, sizeof want, t->ndim, dims);
        format_shape(got, sizeof got, PyArray_NDIM(o), PyArray_DIMS(o));
        PyErr_Format(PyExc_ValueError, "%s: out has shape %s but the result has shape %s", fn, got, want);
        return NULL;
    }
    if (!PyArray_IS_C_CONTIGUOUS(o) || !PyArray_ISALIGNED(o)) {
        PyErr_Format(PyExc_ValueError, "%s: out must be C-contiguous and aligned", fn);
        return NULL;
    }
    if (!PyArray_ISWRITEABLE(o)) {
        PyErr_Format(PyExc_ValueError, "%s: out must be writable (it is read-only)", fn);
        return NULL;
    }
    for (int i = 0; i < nops; i++) {
        PyObject *given = ops[i].obj;
        if (given == NULL || !PyArray_Check(given) || !arrays_overlap(o, (PyArrayObject *)given)) {
            continue;
        }
        PyArrayObject *g = (PyArrayObject *)given;
        if (inplace && i == 0 && ops[i].arr == g && PyArray_DATA(g) == PyArray_DATA(o)) {
            continue; /* out is the input itself: same start, same shape, both C-contiguous */
        }
        if (inplace && i == 0) {
            PyErr_Format(PyExc_ValueError,
                         "%s: out overlaps %s; out must be %s itself or not share memory with it",
                         fn, ops[i].name, ops[i].name);
        }
        else {
            PyErr_Format(PyExc_ValueError, "%s: out must not share memory with %s", fn, ops[i].name);
        }
        return NULL;
    }
    Py_INCREF(o);
    return o;
}

/* ==== Class labels ============================================================================== */

/* Class labels (N,) of any integer dtype (not bool) as a C-contiguous native int64 array. */
static PyArrayObject *
labels_array(const char *fn, const char *name, PyArrayObject *a)
{
    if (!PyArray_ISINTEGER(a)) {
        char s[160];
        format_shape(s, sizeof s, PyArray_NDIM(a), PyArray_DIMS(a));
        PyErr_Format(PyExc_TypeError,
                     "%s: %s of shape %s holds class labels and must have an integer dtype, got %S "
                     "(class probabilities must have the logits' shape)",
                     fn, name, s, (PyObject *)PyArray_DESCR(a));
        return NULL;
    }
    if (PyArray_ISSIGNED(a) && PyArray_ITEMSIZE(a) == 8 && PyArray_ISCARRAY_RO(a) && PyArray_ISNOTSWAPPED(a)) {
        Py_INCREF(a);
        return a;
    }
    if (PyArray_ISUNSIGNED(a) && PyArray_ITEMSIZE(a) == 8 && PyArray_SIZE(a) > 0) {
        /* uint64 labels above INT64_MAX would wrap to negatives: report the real value instead. */
        PyArrayObject *u = (PyArrayObject *)PyArray_FromArray(
            a, PyArray_DescrFromType(NPY_UINT64), NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED);
        if (u == NULL) {
            return NULL;
        }
        const uint64_t *p = (const uint64_t *)PyArray_DATA(u);
        npy_intp n = PyArray_SIZE(u);
        for (npy_intp i = 0; i < n; i++) {
            if (p[i] > (uint64_t)INT64_MAX) {
                PyErr_Format(PyExc_ValueError, "%s: %s[%zd] = %llu is not a valid class index",
                             fn, name, (Py_ssize_t)i, (unsigned long long)p[i]);
                Py_DECREF(u);
                return NULL;
            }
        }
        Py_DECREF(u);
    }
    PyArrayObject *r = (PyArrayObject *)PyArray_FromArray(
        a, PyArray_DescrFromType(NPY_INT64), NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_FORCECAST);
    if (r == NULL) {
        prefix_pending_error(fn, name);
    }
    return r;
}

/* A loss target: a 1-D target (or []) is class labels, converted to int64 here; anything else is
 * class probabilities, which take part in the float dtype rules like any operand. */
static int
target_operand(const char *fn, operand *o)
{
    if (o->obj == NULL || o->obj == Py_None) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be an array, not None", fn, o->name);
        return -1;
    }
    PyArrayObject *a = as_array(fn, o->name, o->obj);
    if (a != NULL && !PyArray_Check(o->obj) && PyArray_NDIM(a) == 1 && PyArray_SIZE(a) == 0) {
        npy_intp zero = 0; /* [] is no labels (NumPy says float64) */
        Py_DECREF(a);
        a = (PyArrayObject *)PyArray_SimpleNew(1, &zero, NPY_INT64);
    }
    if (a == NULL) {
        return -1;
    }
    if (PyArray_NDIM(a) == 1) {
        o->is_labels = 1;
        o->arr = labels_array(fn, o->name, a);
        Py_DECREF(a);
        if (o->arr == NULL) {
            return -1;
        }
        describe_array(o->arr, o->t);
        return 0;
    }
    Py_DECREF(a);
    return 0;
}

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

typedef struct {
    const char *name;
    scnn_op_fn *fn;
    int npos, nreq, nargs; /* positional, required, all parameters (as parse_args) */
    int nresults;
    int flags;             /* OP_INPLACE: out may be the first input; OP_LOSS: result 0 is a float */
    arg_spec args[MAX_ARGS];
} op_spec;

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
    status = s->fn(in, nops, ints, nints, reals, nreals, res, s->nresults, false, msg, MSG_CAP);
    if (status != SCNN_OK) {
        raise_status(fn, status, msg);
        goto done;
    }
    for (int i = 0; i < s->nresults; i++) {
        res_arr[i] = (i == 0 && out != NULL) ? out_array(fn, out, &res[i], ops, nops, s->flags & OP_INPLACE)
                                             : new_result(fn, &res[i]);
        if (res_arr[i] == NULL) {
            goto done;
        }
        res[i].data = PyArray_DATA(res_arr[i]);
    }
    CALL_WITHOUT_GIL(status = s->fn(in, nops, ints, nints, reals, nreals, res, s->nresults, true, msg, MSG_CAP));
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
    static const op_spec id##_spec = {#id, scnn_##id, npos_, nreq_, nargs_, nres_, flags_, {__VA_ARGS__}}; \
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

/* ==== Module ==================================================================================== */

#define OP_METHOD(id) {#id, (PyCFunction)(void (*)(void))op_##id, METH_FASTCALL | METH_KEYWORDS, id##_doc},
#define FASTCALL(id) {#id, (PyCFunction)(void (*)(void))core_##id, METH_FASTCALL | METH_KEYWORDS, id##_doc},
/* The handle functions (private), in the order of the method table. */
#define FOR_EACH_HANDLE(X)                                                                                \
    X(layer_create) X(layer_dtype) X(layer_output_shape) X(layer_forward) X(layer_backward)               \
    X(layer_parameters) X(layer_zero_grad) X(layer_buffers) X(layer_set_training) X(optimizer_create)     \
    X(optimizer_step) X(optimizer_set_lr) X(optimizer_get_lr) X(train_step_cross_entropy)

static PyMethodDef core_methods[] = {
    FOR_EACH_OP(OP_METHOD) /* functional ops (public): the rows of the table above */
    FASTCALL(set_num_threads)
    {"get_num_threads", core_get_num_threads, METH_NOARGS, get_num_threads_doc},
    {"version", core_version, METH_NOARGS, version_doc},
    {"op_table", core_op_table, METH_NOARGS, op_table_doc},
    FOR_EACH_HANDLE(FASTCALL) /* handles (private) */
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
