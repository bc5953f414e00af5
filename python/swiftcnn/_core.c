/*
 * _core.c: swiftcnn._core, the CPython extension over the Swift core's C ABI (swiftcnn.h).
 *
 * A thin shim in the spirit of CPython's Modules/xxlimited.c: one flat method table, every
 * function METH_FASTCALL | METH_KEYWORDS with its keywords matched by hand (parse_args), a
 * __text_signature__ on every docstring, and one cleanup path per function.
 *
 * Every functional op follows the same order:
 *   1. parse the arguments; convert the array operands (zero copy when they are already
 *      C-contiguous, aligned, native-endian float32/float64 of the common dtype);
 *   2. call the ABI with a NULL output, which validates everything and returns the output shape;
 *   3. allocate the result (or check `out=`);
 *   4. call the ABI again to compute, with the GIL released (CALL_WITHOUT_GIL);
 *   5. map a failed status to the Python exception it stands for.
 * Messages come from the ABI (they name the op and the argument) or from the checks here (which
 * name the function and the argument). Every message buffer is on the stack of its call.
 *
 * Handles are PyCapsules owning one reference to a Swift object, released by the capsule's
 * destructor; a layer handle also keeps the array of its last forward alive (the Swift layer
 * holds a view of it). Parameter arrays view Swift memory; their base is a capsule holding its own
 * reference to the layer, so a parameter's data outlives the model object that gave it.
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
#define LAYER_NDIM 8   /* room the ABI needs for a layer's input/output shape */
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

/* ============================================================================================ */
/* Argument parsing                                                                               */
/* ============================================================================================ */

/* A function's parameters: names[0..npos) may be given by position or keyword, names[npos..nall)
 * only by keyword; names[0..nreq) are required. */
typedef struct {
    const char *fname;
    const char *const *names;
    int npos;
    int nreq;
    int nall;
} argspec;

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
                if ((Py_ssize_t)strlen(s->names[i]) == len && memcmp(s->names[i], ks, (size_t)len) == 0) {
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
                             s->fname, s->names[found]);
                return -1;
            }
            v[found] = args[nargs + k];
        }
    }
    for (int i = 0; i < s->nreq; i++) {
        if (v[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s' (pos %d)",
                         s->fname, s->names[i], i + 1);
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
        if (idx == NULL) {
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
    if (PyTuple_Check(o) || PyList_Check(o)) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(o);
        if (n != 2) {
            PyErr_Format(PyExc_ValueError,
                         "%s: %s must be an int or a pair of ints (h, w), got a %s of length %zd",
                         fn, name, Py_TYPE(o)->tp_name, n);
            return -1;
        }
        PyObject **items = PySequence_Fast_ITEMS(o);
        for (int i = 0; i < 2; i++) {
            PyObject *item = items[i];
            if (!PyLong_CheckExact(item) && (PyBool_Check(item) || !PyIndex_Check(item) || PyArray_IsScalar(item, Bool))) {
                PyErr_Format(PyExc_TypeError, "%s: %s must be an int or a pair of ints (h, w), got a %s holding %s",
                             fn, name, Py_TYPE(o)->tp_name, Py_TYPE(item)->tp_name);
                return -1;
            }
            if (int64_arg(fn, name, item, &out[i]) < 0) {
                return -1;
            }
        }
        return 0;
    }
    if (!PyLong_CheckExact(o) && (PyBool_Check(o) || !PyIndex_Check(o) || PyArray_IsScalar(o, Bool))) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be an int or a pair of ints (h, w), got %s",
                     fn, name, Py_TYPE(o)->tp_name);
        return -1;
    }
    if (int64_arg(fn, name, o, &out[0]) < 0) {
        return -1;
    }
    out[1] = out[0];
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
        return -1;
    }
    *out = v;
    return 0;
}

static int
bool_arg(PyObject *o, bool *out)
{
    int t = PyObject_IsTrue(o);
    if (t < 0) {
        return -1;
    }
    *out = t != 0;
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

/* ============================================================================================ */
/* Errors                                                                                         */
/* ============================================================================================ */

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
    return typenum == NPY_FLOAT ? "float32" : "float64";
}

/* ============================================================================================ */
/* Array operands                                                                                 */
/* ============================================================================================ */

/* One array argument: what the caller passed and the C-contiguous, aligned, native array used. */
typedef struct {
    const char *name;
    PyObject *obj;           /* borrowed; NULL for an absent optional operand */
    PyArrayObject *arr;      /* owned; NULL until converted */
    int64_t shape[MAX_DIMS];
    int64_t ndim;
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

static inline void *
data_or_null(const operand *o)
{
    return o->arr != NULL ? PyArray_DATA(o->arr) : NULL;
}

static inline int32_t
scnn_dtype(int typenum)
{
    return typenum == NPY_FLOAT ? SCNN_FLOAT32 : SCNN_FLOAT64;
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
        if (o->obj == NULL || !PyArray_Check(o->obj)) {
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

static void
record_shape(operand *o)
{
    int nd = PyArray_NDIM(o->arr);
    const npy_intp *dims = PyArray_DIMS(o->arr);
    o->ndim = nd;
    for (int i = 0; i < nd; i++) {
        o->shape[i] = (int64_t)dims[i];
    }
}

/* Converts one operand to a C-contiguous, aligned, native array of typenum: ndarrays already in
 * that form are used in place; other ndarrays are copied once; lists, scalars and other
 * array-likes of numbers are converted once. resolve_dtype has checked the ndarray dtypes. */
static int
convert_operand(const char *fn, operand *o, int typenum)
{
    if (o->obj == NULL) {
        return 0;
    }
    if (PyArray_Check(o->obj)) {
        PyArrayObject *a = (PyArrayObject *)o->obj;
        if (is_usable_in_place(a, typenum)) {
            Py_INCREF(a);
            o->arr = a;
        }
        else {
            o->arr = (PyArrayObject *)PyArray_FromArray(
                a, PyArray_DescrFromType(typenum),
                NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_FORCECAST);
            if (o->arr == NULL) {
                prefix_pending_error(fn, o->name);
                return -1;
            }
        }
    }
    else {
        PyArrayObject *tmp = (PyArrayObject *)PyArray_FromAny(o->obj, NULL, 0, 0, 0, NULL);
        if (tmp == NULL) {
            prefix_pending_error(fn, o->name);
            return -1;
        }
        if (!(PyArray_ISBOOL(tmp) || PyArray_ISINTEGER(tmp) || PyArray_ISFLOAT(tmp))) {
            PyErr_Format(PyExc_TypeError,
                         "%s: %s must be a float32 or float64 array or a list of numbers, got %s (dtype %S)",
                         fn, o->name, Py_TYPE(o->obj)->tp_name, (PyObject *)PyArray_DESCR(tmp));
            Py_DECREF(tmp);
            return -1;
        }
        if (is_usable_in_place(tmp, typenum)) {
            o->arr = tmp;
        }
        else {
            o->arr = (PyArrayObject *)PyArray_FromArray(
                tmp, PyArray_DescrFromType(typenum),
                NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_FORCECAST);
            Py_DECREF(tmp);
            if (o->arr == NULL) {
                prefix_pending_error(fn, o->name);
                return -1;
            }
        }
    }
    record_shape(o);
    return 0;
}

/* Resolves the common dtype of ops[0..n) and converts them all. The first nreq operands are
 * required: None there is a TypeError. */
static int
prepare_operands(const char *fn, operand *ops, int n, int nreq, int *typenum)
{
    for (int i = 0; i < nreq; i++) {
        if (ops[i].obj == NULL || ops[i].obj == Py_None) {
            PyErr_Format(PyExc_TypeError, "%s: %s must be an array, not None", fn, ops[i].name);
            return -1;
        }
    }
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

/* A new C-contiguous array of the given ABI shape. */
static PyArrayObject *
new_array(const char *fn, int64_t ndim, const int64_t *shape, int typenum)
{
    npy_intp dims[MAX_DIMS];
    if (to_npy_dims(fn, ndim, shape, dims) < 0) {
        return NULL;
    }
    return (PyArrayObject *)PyArray_SimpleNew((int)ndim, dims, typenum);
}

/* The array to write the result into: a new one, or `out` after checking it (an ndarray of the
 * result's exact dtype and shape, C-contiguous, aligned, writable, not overlapping any input
 * ndarray; ops[inplace] may be `out` itself exactly, when inplace >= 0). Returns a new reference. */
static PyArrayObject *
result_array(const char *fn, PyObject *out, int64_t ndim, const int64_t *shape, int typenum,
             const operand *ops, int nops, int inplace)
{
    if (out == NULL) {
        return new_array(fn, ndim, shape, typenum);
    }
    if (!PyArray_Check(out)) {
        PyErr_Format(PyExc_TypeError, "%s: out must be a numpy.ndarray, got %s", fn, Py_TYPE(out)->tp_name);
        return NULL;
    }
    PyArrayObject *o = (PyArrayObject *)out;
    npy_intp dims[MAX_DIMS];
    if (to_npy_dims(fn, ndim, shape, dims) < 0) {
        return NULL;
    }
    if (PyArray_TYPE(o) != typenum || !PyArray_ISNOTSWAPPED(o)) {
        PyErr_Format(PyExc_TypeError, "%s: out has dtype %S but the result has dtype %s",
                     fn, (PyObject *)PyArray_DESCR(o), dtype_name(typenum));
        return NULL;
    }
    int same = PyArray_NDIM(o) == ndim;
    for (int i = 0; same && i < ndim; i++) {
        same = PyArray_DIMS(o)[i] == dims[i];
    }
    if (!same) {
        char want[160], got[160];
        format_shape(want, sizeof want, (int)ndim, dims);
        format_shape(got, sizeof got, PyArray_NDIM(o), PyArray_DIMS(o));
        PyErr_Format(PyExc_ValueError, "%s: out has shape %s but the result has shape %s", fn, got, want);
        return NULL;
    }
    if (!PyArray_IS_C_CONTIGUOUS(o)) {
        PyErr_Format(PyExc_ValueError, "%s: out must be C-contiguous", fn);
        return NULL;
    }
    if (!PyArray_ISALIGNED(o)) {
        PyErr_Format(PyExc_ValueError, "%s: out must be aligned", fn);
        return NULL;
    }
    if (!PyArray_ISWRITEABLE(o)) {
        PyErr_Format(PyExc_ValueError, "%s: out must be writable (it is read-only)", fn);
        return NULL;
    }
    for (int i = 0; i < nops; i++) {
        /* Compare with what the caller passed: an input that overlaps `out` is refused even when
         * it was copied, so the rule does not depend on the input's layout. */
        PyObject *given = ops[i].obj;
        if (given == NULL || !PyArray_Check(given)) {
            continue;
        }
        PyArrayObject *g = (PyArrayObject *)given;
        if (!arrays_overlap(o, g)) {
            continue;
        }
        if (i == inplace && ops[i].arr == g && PyArray_DATA(g) == PyArray_DATA(o)) {
            continue; /* out is the input itself: same start, same shape, both C-contiguous */
        }
        if (inplace >= 0) {
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

/* ValueError unless a and b have the same shape (ops that take a flat element count). */
static int
check_same_shape(const char *fn, const operand *a, const operand *b)
{
    int same = PyArray_NDIM(a->arr) == PyArray_NDIM(b->arr);
    for (int i = 0; same && i < PyArray_NDIM(a->arr); i++) {
        same = PyArray_DIMS(a->arr)[i] == PyArray_DIMS(b->arr)[i];
    }
    if (same) {
        return 0;
    }
    char sa[160], sb[160];
    format_shape(sa, sizeof sa, PyArray_NDIM(a->arr), PyArray_DIMS(a->arr));
    format_shape(sb, sizeof sb, PyArray_NDIM(b->arr), PyArray_DIMS(b->arr));
    PyErr_Format(PyExc_ValueError, "%s: %s must have the shape of %s %s, got shape %s",
                 fn, b->name, a->name, sa, sb);
    return -1;
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

/* ============================================================================================ */
/* Functional ops                                                                                 */
/* ============================================================================================ */

PyDoc_STRVAR(conv2d_doc,
"conv2d($module, /, x, weight, bias=None, stride=1, padding=0, dilation=1, *, out=None)\n--\n\n"
"2-D convolution (cross-correlation, as in PyTorch) of x (N, C, H, W) with weight\n"
"(K, C, kH, kW) plus bias (K,); returns y (N, K, Ho, Wo).\n\n"
"Ho = (H + 2*ph - dh*(kH-1) - 1) // sh + 1. stride, padding and dilation are an int or an\n"
"(h, w) pair. With out=, the result is written into out (C-contiguous, writable, of the\n"
"result's shape and dtype, not overlapping an input) and out is returned.");

static PyObject *
core_conv2d(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"x", "weight", "bias", "stride", "padding", "dilation", "out"};
    static const argspec spec = {"conv2d", names, 6, 2, 7};
    const char *fn = spec.fname;
    PyObject *v[MAX_ARGS];
    operand ops[3] = {{.name = "x"}, {.name = "weight"}, {.name = "bias"}};
    PyArrayObject *y = NULL;
    int64_t geometry[6] = {1, 1, 0, 0, 1, 1};
    int64_t yshape[4];
    char msg[MSG_CAP];
    int typenum;
    int32_t status;
    (void)module;

    msg[0] = '\0';
    if (parse_args(&spec, args, nargs, kwnames, v) < 0) {
        goto done;
    }
    ops[0].obj = v[0];
    ops[1].obj = v[1];
    ops[2].obj = optional(v[2]);
    if ((v[3] != NULL && pair_arg(fn, "stride", v[3], &geometry[0]) < 0) ||
        (v[4] != NULL && pair_arg(fn, "padding", v[4], &geometry[2]) < 0) ||
        (v[5] != NULL && pair_arg(fn, "dilation", v[5], &geometry[4]) < 0) ||
        prepare_operands(fn, ops, 3, 2, &typenum) < 0) {
        goto done;
    }
    int32_t dt = scnn_dtype(typenum);
    const void *bias = data_or_null(&ops[2]);
    int64_t bias_len = ops[2].arr != NULL ? (int64_t)PyArray_SIZE(ops[2].arr) : -1;
    if (ops[2].arr != NULL && ops[2].ndim != 1) {
        char s[160];
        format_shape(s, sizeof s, PyArray_NDIM(ops[2].arr), PyArray_DIMS(ops[2].arr));
        PyErr_Format(PyExc_ValueError, "%s: bias must be 1-D (K,), got shape %s", fn, s);
        goto done;
    }
    status = scnn_conv2d_forward(dt, data_or_null(&ops[0]), ops[0].shape, ops[0].ndim,
                                 data_or_null(&ops[1]), ops[1].shape, ops[1].ndim, bias, bias_len,
                                 geometry, NULL, yshape, msg, MSG_CAP);
    if (status != SCNN_OK) {
        raise_status(fn, status, msg);
        goto done;
    }
    y = result_array(fn, optional(v[6]), 4, yshape, typenum, ops, 3, -1);
    if (y == NULL) {
        goto done;
    }
    CALL_WITHOUT_GIL(status = scnn_conv2d_forward(dt, data_or_null(&ops[0]), ops[0].shape, ops[0].ndim,
                                     data_or_null(&ops[1]), ops[1].shape, ops[1].ndim, bias, bias_len,
                                     geometry, PyArray_DATA(y), yshape, msg, MSG_CAP));
    if (status != SCNN_OK) {
        raise_status(fn, status, msg);
        Py_CLEAR(y);
    }
done:
    release_operands(ops, 3);
    return (PyObject *)y;
}

PyDoc_STRVAR(conv2d_backward_doc,
"conv2d_backward($module, /, grad_out, x, weight, stride=1, padding=0, dilation=1)\n--\n\n"
"Gradients of conv2d: returns (grad_x, grad_weight, grad_bias), shaped as x, weight and (K,);\n"
"grad_bias is grad_out summed over N, H and W.");

static PyObject *
core_conv2d_backward(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"grad_out", "x", "weight", "stride", "padding", "dilation"};
    static const argspec spec = {"conv2d_backward", names, 6, 3, 6};
    const char *fn = spec.fname;
    PyObject *v[MAX_ARGS];
    operand ops[3] = {{.name = "grad_out"}, {.name = "x"}, {.name = "weight"}};
    PyArrayObject *gx = NULL, *gw = NULL, *gb = NULL;
    PyObject *result = NULL;
    int64_t geometry[6] = {1, 1, 0, 0, 1, 1};
    char msg[MSG_CAP];
    int typenum;
    int32_t status;
    (void)module;

    msg[0] = '\0';
    if (parse_args(&spec, args, nargs, kwnames, v) < 0) {
        goto done;
    }
    ops[0].obj = v[0];
    ops[1].obj = v[1];
    ops[2].obj = v[2];
    if ((v[3] != NULL && pair_arg(fn, "stride", v[3], &geometry[0]) < 0) ||
        (v[4] != NULL && pair_arg(fn, "padding", v[4], &geometry[2]) < 0) ||
        (v[5] != NULL && pair_arg(fn, "dilation", v[5], &geometry[4]) < 0) ||
        prepare_operands(fn, ops, 3, 3, &typenum) < 0) {
        goto done;
    }
    int32_t dt = scnn_dtype(typenum);
    /* All outputs NULL: validate only. */
    status = scnn_conv2d_backward(dt, data_or_null(&ops[0]), ops[0].shape, ops[0].ndim,
                                  data_or_null(&ops[1]), ops[1].shape, ops[1].ndim,
                                  data_or_null(&ops[2]), ops[2].shape, ops[2].ndim,
                                  geometry, NULL, NULL, NULL, msg, MSG_CAP);
    if (status != SCNN_OK) {
        raise_status(fn, status, msg);
        goto done;
    }
    if (ops[2].ndim < 1) { /* the core has validated a 4-D weight; never read past the shape */
        PyErr_Format(PyExc_ValueError, "%s: weight must be 4-D", fn);
        goto done;
    }
    gx = new_array(fn, ops[1].ndim, ops[1].shape, typenum);
    gw = gx ? new_array(fn, ops[2].ndim, ops[2].shape, typenum) : NULL;
    gb = gw ? new_array(fn, 1, ops[2].shape, typenum) : NULL;
    if (gb == NULL) {
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    status = scnn_conv2d_backward(dt, data_or_null(&ops[0]), ops[0].shape, ops[0].ndim,
                                  data_or_null(&ops[1]), ops[1].shape, ops[1].ndim,
                                  data_or_null(&ops[2]), ops[2].shape, ops[2].ndim,
                                  geometry, PyArray_DATA(gx), PyArray_DATA(gw), PyArray_DATA(gb),
                                  msg, MSG_CAP);
    Py_END_ALLOW_THREADS
    if (status != SCNN_OK) {
        raise_status(fn, status, msg);
        goto done;
    }
    result = PyTuple_Pack(3, (PyObject *)gx, (PyObject *)gw, (PyObject *)gb);
done:
    Py_XDECREF(gx);
    Py_XDECREF(gw);
    Py_XDECREF(gb);
    release_operands(ops, 3);
    return result;
}

/* Shared body of max_pool2d and avg_pool2d. */
static PyObject *
pool_forward(const argspec *spec, int32_t kind, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    const char *fn = spec->fname;
    PyObject *v[MAX_ARGS];
    operand ops[1] = {{.name = "x"}};
    PyArrayObject *y = NULL;
    int64_t geometry[6] = {0, 0, 0, 0, 0, 0}; /* kernel, stride, padding */
    int64_t yshape[4];
    char msg[MSG_CAP];
    int typenum;
    int32_t status;

    msg[0] = '\0';
    if (parse_args(spec, args, nargs, kwnames, v) < 0) {
        goto done;
    }
    ops[0].obj = v[0];
    if (pair_arg(fn, "kernel_size", v[1], &geometry[0]) < 0) {
        goto done;
    }
    if (optional(v[2]) != NULL) {
        if (pair_arg(fn, "stride", v[2], &geometry[2]) < 0) {
            goto done;
        }
    }
    else {
        geometry[2] = geometry[0];
        geometry[3] = geometry[1];
    }
    if ((v[3] != NULL && pair_arg(fn, "padding", v[3], &geometry[4]) < 0) ||
        prepare_operands(fn, ops, 1, 1, &typenum) < 0) {
        goto done;
    }
    int32_t dt = scnn_dtype(typenum);
    status = scnn_pool2d_forward(dt, kind, data_or_null(&ops[0]), ops[0].shape, ops[0].ndim,
                                 geometry, NULL, yshape, msg, MSG_CAP);
    if (status != SCNN_OK) {
        raise_status(fn, status, msg);
        goto done;
    }
    y = result_array(fn, optional(v[4]), 4, yshape, typenum, ops, 1, -1);
    if (y == NULL) {
        goto done;
    }
    CALL_WITHOUT_GIL(status = scnn_pool2d_forward(dt, kind, data_or_null(&ops[0]), ops[0].shape, ops[0].ndim,
                                     geometry, PyArray_DATA(y), yshape, msg, MSG_CAP));
    if (status != SCNN_OK) {
        raise_status(fn, status, msg);
        Py_CLEAR(y);
    }
done:
    release_operands(ops, 1);
    return (PyObject *)y;
}

/* Shared body of max_pool2d_backward and avg_pool2d_backward. */
static PyObject *
pool_backward(const argspec *spec, int32_t kind, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    const char *fn = spec->fname;
    PyObject *v[MAX_ARGS];
    operand ops[2] = {{.name = "grad_out"}, {.name = "x"}};
    PyArrayObject *gx = NULL;
    int64_t geometry[6] = {0, 0, 0, 0, 0, 0};
    char msg[MSG_CAP];
    int typenum;
    int32_t status;

    msg[0] = '\0';
    if (parse_args(spec, args, nargs, kwnames, v) < 0) {
        goto done;
    }
    ops[0].obj = v[0];
    ops[1].obj = v[1];
    if (pair_arg(fn, "kernel_size", v[2], &geometry[0]) < 0) {
        goto done;
    }
    if (optional(v[3]) != NULL) {
        if (pair_arg(fn, "stride", v[3], &geometry[2]) < 0) {
            goto done;
        }
    }
    else {
        geometry[2] = geometry[0];
        geometry[3] = geometry[1];
    }
    if ((v[4] != NULL && pair_arg(fn, "padding", v[4], &geometry[4]) < 0) ||
        prepare_operands(fn, ops, 2, 2, &typenum) < 0) {
        goto done;
    }
    int32_t dt = scnn_dtype(typenum);
    /* grad_x has x's shape; the core validates before writing anything. */
    gx = new_array(fn, ops[1].ndim, ops[1].shape, typenum);
    if (gx == NULL) {
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    status = scnn_pool2d_backward(dt, kind, data_or_null(&ops[0]), ops[0].shape, ops[0].ndim,
                                  data_or_null(&ops[1]), ops[1].shape, ops[1].ndim,
                                  geometry, PyArray_DATA(gx), msg, MSG_CAP);
    Py_END_ALLOW_THREADS
    if (status != SCNN_OK) {
        raise_status(fn, status, msg);
        Py_CLEAR(gx);
    }
done:
    release_operands(ops, 2);
    return (PyObject *)gx;
}

static const char *const pool_forward_names[] = {"x", "kernel_size", "stride", "padding", "out"};
static const char *const pool_backward_names[] = {"grad_out", "x", "kernel_size", "stride", "padding"};

PyDoc_STRVAR(max_pool2d_doc,
"max_pool2d($module, /, x, kernel_size, stride=None, padding=0, *, out=None)\n--\n\n"
"2-D max pooling of x (N, C, H, W). stride defaults to kernel_size; padding counts as -inf and\n"
"must be <= kernel_size // 2.");

static PyObject *
core_max_pool2d(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const argspec spec = {"max_pool2d", pool_forward_names, 4, 2, 5};
    (void)module;
    return pool_forward(&spec, SCNN_POOL_MAX, args, nargs, kwnames);
}

PyDoc_STRVAR(max_pool2d_backward_doc,
"max_pool2d_backward($module, /, grad_out, x, kernel_size, stride=None, padding=0)\n--\n\n"
"Gradient of max_pool2d for x: each window's gradient goes to its first maximum in row-major\n"
"order; overlapping windows accumulate.");

static PyObject *
core_max_pool2d_backward(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const argspec spec = {"max_pool2d_backward", pool_backward_names, 5, 3, 5};
    (void)module;
    return pool_backward(&spec, SCNN_POOL_MAX, args, nargs, kwnames);
}

PyDoc_STRVAR(avg_pool2d_doc,
"avg_pool2d($module, /, x, kernel_size, stride=None, padding=0, *, out=None)\n--\n\n"
"2-D average pooling of x (N, C, H, W). stride defaults to kernel_size; padded zeros count in\n"
"the divisor (PyTorch's count_include_pad=True).");

static PyObject *
core_avg_pool2d(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const argspec spec = {"avg_pool2d", pool_forward_names, 4, 2, 5};
    (void)module;
    return pool_forward(&spec, SCNN_POOL_AVG, args, nargs, kwnames);
}

PyDoc_STRVAR(avg_pool2d_backward_doc,
"avg_pool2d_backward($module, /, grad_out, x, kernel_size, stride=None, padding=0)\n--\n\n"
"Gradient of avg_pool2d for x.");

static PyObject *
core_avg_pool2d_backward(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const argspec spec = {"avg_pool2d_backward", pool_backward_names, 5, 3, 5};
    (void)module;
    return pool_backward(&spec, SCNN_POOL_AVG, args, nargs, kwnames);
}

PyDoc_STRVAR(linear_doc,
"linear($module, /, x, weight, bias=None, *, out=None)\n--\n\n"
"y = x @ weight.T + bias, with x (N, in), weight (out, in), bias (out,); returns y (N, out).");

static PyObject *
core_linear(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"x", "weight", "bias", "out"};
    static const argspec spec = {"linear", names, 3, 2, 4};
    const char *fn = spec.fname;
    PyObject *v[MAX_ARGS];
    operand ops[3] = {{.name = "x"}, {.name = "weight"}, {.name = "bias"}};
    PyArrayObject *y = NULL;
    int64_t yshape[2];
    char msg[MSG_CAP];
    int typenum;
    int32_t status;
    (void)module;

    msg[0] = '\0';
    if (parse_args(&spec, args, nargs, kwnames, v) < 0) {
        goto done;
    }
    ops[0].obj = v[0];
    ops[1].obj = v[1];
    ops[2].obj = optional(v[2]);
    if (prepare_operands(fn, ops, 3, 2, &typenum) < 0) {
        goto done;
    }
    int32_t dt = scnn_dtype(typenum);
    const void *bias = data_or_null(&ops[2]);
    int64_t bias_len = ops[2].arr != NULL ? (int64_t)PyArray_SIZE(ops[2].arr) : -1;
    if (ops[2].arr != NULL && ops[2].ndim != 1) {
        char s[160];
        format_shape(s, sizeof s, PyArray_NDIM(ops[2].arr), PyArray_DIMS(ops[2].arr));
        PyErr_Format(PyExc_ValueError, "%s: bias must be 1-D (out_features,), got shape %s", fn, s);
        goto done;
    }
    status = scnn_linear_forward(dt, data_or_null(&ops[0]), ops[0].shape, ops[0].ndim,
                                 data_or_null(&ops[1]), ops[1].shape, ops[1].ndim, bias, bias_len,
                                 NULL, yshape, msg, MSG_CAP);
    if (status != SCNN_OK) {
        raise_status(fn, status, msg);
        goto done;
    }
    y = result_array(fn, optional(v[3]), 2, yshape, typenum, ops, 3, -1);
    if (y == NULL) {
        goto done;
    }
    CALL_WITHOUT_GIL(status = scnn_linear_forward(dt, data_or_null(&ops[0]), ops[0].shape, ops[0].ndim,
                                     data_or_null(&ops[1]), ops[1].shape, ops[1].ndim, bias, bias_len,
                                     PyArray_DATA(y), yshape, msg, MSG_CAP));
    if (status != SCNN_OK) {
        raise_status(fn, status, msg);
        Py_CLEAR(y);
    }
done:
    release_operands(ops, 3);
    return (PyObject *)y;
}

PyDoc_STRVAR(linear_backward_doc,
"linear_backward($module, /, grad_out, x, weight)\n--\n\n"
"Gradients of linear: returns (grad_x, grad_weight, grad_bias), shaped (N, in), (out, in), (out,).");

static PyObject *
core_linear_backward(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"grad_out", "x", "weight"};
    static const argspec spec = {"linear_backward", names, 3, 3, 3};
    const char *fn = spec.fname;
    PyObject *v[MAX_ARGS];
    operand ops[3] = {{.name = "grad_out"}, {.name = "x"}, {.name = "weight"}};
    PyArrayObject *gx = NULL, *gw = NULL, *gb = NULL;
    PyObject *result = NULL;
    char msg[MSG_CAP];
    int typenum;
    int32_t status;
    (void)module;

    msg[0] = '\0';
    if (parse_args(&spec, args, nargs, kwnames, v) < 0) {
        goto done;
    }
    ops[0].obj = v[0];
    ops[1].obj = v[1];
    ops[2].obj = v[2];
    if (prepare_operands(fn, ops, 3, 3, &typenum) < 0) {
        goto done;
    }
    int32_t dt = scnn_dtype(typenum);
    status = scnn_linear_backward(dt, data_or_null(&ops[0]), ops[0].shape, ops[0].ndim,
                                  data_or_null(&ops[1]), ops[1].shape, ops[1].ndim,
                                  data_or_null(&ops[2]), ops[2].shape, ops[2].ndim,
                                  NULL, NULL, NULL, msg, MSG_CAP);
    if (status != SCNN_OK) {
        raise_status(fn, status, msg);
        goto done;
    }
    if (ops[2].ndim < 1) {
        PyErr_Format(PyExc_ValueError, "%s: weight must be 2-D", fn);
        goto done;
    }
    gx = new_array(fn, ops[1].ndim, ops[1].shape, typenum);
    gw = gx ? new_array(fn, ops[2].ndim, ops[2].shape, typenum) : NULL;
    gb = gw ? new_array(fn, 1, ops[2].shape, typenum) : NULL;
    if (gb == NULL) {
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    status = scnn_linear_backward(dt, data_or_null(&ops[0]), ops[0].shape, ops[0].ndim,
                                  data_or_null(&ops[1]), ops[1].shape, ops[1].ndim,
                                  data_or_null(&ops[2]), ops[2].shape, ops[2].ndim,
                                  PyArray_DATA(gx), PyArray_DATA(gw), PyArray_DATA(gb), msg, MSG_CAP);
    Py_END_ALLOW_THREADS
    if (status != SCNN_OK) {
        raise_status(fn, status, msg);
        goto done;
    }
    result = PyTuple_Pack(3, (PyObject *)gx, (PyObject *)gw, (PyObject *)gb);
done:
    Py_XDECREF(gx);
    Py_XDECREF(gw);
    Py_XDECREF(gb);
    release_operands(ops, 3);
    return result;
}

/* Shared body of sigmoid and relu: y = act(x), elementwise; out may be x itself. */
static PyObject *
activation_forward(const argspec *spec, int32_t kind, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    const char *fn = spec->fname;
    PyObject *v[MAX_ARGS];
    operand ops[1] = {{.name = "x"}};
    PyArrayObject *y = NULL;
    char msg[MSG_CAP];
    int typenum;
    int32_t status;

    msg[0] = '\0';
    if (parse_args(spec, args, nargs, kwnames, v) < 0) {
        goto done;
    }
    ops[0].obj = v[0];
    if (prepare_operands(fn, ops, 1, 1, &typenum) < 0) {
        goto done;
    }
    y = result_array(fn, optional(v[1]), ops[0].ndim, ops[0].shape, typenum, ops, 1, 0);
    if (y == NULL) {
        goto done;
    }
    int32_t dt = scnn_dtype(typenum);
    const void *x = data_or_null(&ops[0]);
    int64_t count = (int64_t)PyArray_SIZE(ops[0].arr);
    void *yd = PyArray_DATA(y);
    CALL_WITHOUT_GIL(status = scnn_activation_forward(dt, kind, x, count, yd, msg, MSG_CAP));
    if (status != SCNN_OK) {
        raise_status(fn, status, msg);
        Py_CLEAR(y);
    }
done:
    release_operands(ops, 1);
    return (PyObject *)y;
}

/* Shared body of sigmoid_backward and relu_backward. */
static PyObject *
activation_backward(const argspec *spec, int32_t kind, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    const char *fn = spec->fname;
    PyObject *v[MAX_ARGS];
    operand ops[2] = {{.name = "grad_out"}, {.name = spec->names[1]}};
    PyArrayObject *gx = NULL;
    char msg[MSG_CAP];
    int typenum;
    int32_t status;

    msg[0] = '\0';
    if (parse_args(spec, args, nargs, kwnames, v) < 0) {
        goto done;
    }
    ops[0].obj = v[0];
    ops[1].obj = v[1];
    if (prepare_operands(fn, ops, 2, 2, &typenum) < 0 || check_same_shape(fn, &ops[0], &ops[1]) < 0) {
        goto done;
    }
    gx = new_array(fn, ops[0].ndim, ops[0].shape, typenum);
    if (gx == NULL) {
        goto done;
    }
    int32_t dt = scnn_dtype(typenum);
    const void *g = data_or_null(&ops[0]);
    const void *saved = data_or_null(&ops[1]);
    int64_t count = (int64_t)PyArray_SIZE(ops[0].arr);
    void *gxd = PyArray_DATA(gx);
    CALL_WITHOUT_GIL(status = scnn_activation_backward(dt, kind, g, saved, count, gxd, msg, MSG_CAP));
    if (status != SCNN_OK) {
        raise_status(fn, status, msg);
        Py_CLEAR(gx);
    }
done:
    release_operands(ops, 2);
    return (PyObject *)gx;
}

static const char *const activation_names[] = {"x", "out"};

PyDoc_STRVAR(sigmoid_doc,
"sigmoid($module, /, x, *, out=None)\n--\n\n"
"Elementwise logistic sigmoid 1 / (1 + exp(-x)). out may be x itself (in place).");

static PyObject *
core_sigmoid(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const argspec spec = {"sigmoid", activation_names, 1, 1, 2};
    (void)module;
    return activation_forward(&spec, SCNN_ACT_SIGMOID, args, nargs, kwnames);
}

PyDoc_STRVAR(relu_doc,
"relu($module, /, x, *, out=None)\n--\n\n"
"Elementwise max(x, 0). out may be x itself (in place).");

static PyObject *
core_relu(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const argspec spec = {"relu", activation_names, 1, 1, 2};
    (void)module;
    return activation_forward(&spec, SCNN_ACT_RELU, args, nargs, kwnames);
}

PyDoc_STRVAR(sigmoid_backward_doc,
"sigmoid_backward($module, /, grad_out, y)\n--\n\n"
"grad_out * y * (1 - y), where y is sigmoid's OUTPUT.");

static PyObject *
core_sigmoid_backward(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"grad_out", "y"};
    static const argspec spec = {"sigmoid_backward", names, 2, 2, 2};
    (void)module;
    return activation_backward(&spec, SCNN_ACT_SIGMOID, args, nargs, kwnames);
}

PyDoc_STRVAR(relu_backward_doc,
"relu_backward($module, /, grad_out, x)\n--\n\n"
"grad_out * (x > 0), where x is relu's INPUT.");

static PyObject *
core_relu_backward(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"grad_out", "x"};
    static const argspec spec = {"relu_backward", names, 2, 2, 2};
    (void)module;
    return activation_backward(&spec, SCNN_ACT_RELU, args, nargs, kwnames);
}

PyDoc_STRVAR(softmax_doc,
"softmax($module, /, logits)\n--\n\n"
"Probabilities over axis 1 of logits (N, K), computed stably.");

static PyObject *
core_softmax(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"logits"};
    static const argspec spec = {"softmax", names, 1, 1, 1};
    const char *fn = spec.fname;
    PyObject *v[MAX_ARGS];
    operand ops[1] = {{.name = "logits"}};
    PyArrayObject *probs = NULL;
    char msg[MSG_CAP];
    int typenum;
    int32_t status;
    (void)module;

    msg[0] = '\0';
    if (parse_args(&spec, args, nargs, kwnames, v) < 0) {
        goto done;
    }
    ops[0].obj = v[0];
    if (prepare_operands(fn, ops, 1, 1, &typenum) < 0) {
        goto done;
    }
    probs = new_array(fn, ops[0].ndim, ops[0].shape, typenum);
    if (probs == NULL) {
        goto done;
    }
    int32_t dt = scnn_dtype(typenum);
    void *pd = PyArray_DATA(probs);
    CALL_WITHOUT_GIL(status = scnn_softmax(dt, data_or_null(&ops[0]), ops[0].shape, ops[0].ndim, pd, msg, MSG_CAP));
    if (status != SCNN_OK) {
        raise_status(fn, status, msg);
        Py_CLEAR(probs);
    }
done:
    release_operands(ops, 1);
    return (PyObject *)probs;
}

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

PyDoc_STRVAR(softmax_cross_entropy_doc,
"softmax_cross_entropy($module, /, logits, target)\n--\n\n"
"Softmax cross-entropy, batch mean. target is class indices (N,) of an integer dtype, or class\n"
"probabilities of the logits' shape (N, K). Returns (loss, grad_logits): loss a Python float\n"
"(nan when N = 0), grad_logits = (softmax(logits) - onehot) / N.");

static PyObject *
core_softmax_cross_entropy(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"logits", "target"};
    static const argspec spec = {"softmax_cross_entropy", names, 2, 2, 2};
    const char *fn = spec.fname;
    PyObject *v[MAX_ARGS];
    operand ops[2] = {{.name = "logits"}, {.name = "target"}}; /* ops[1]: probabilities only */
    PyArrayObject *labels = NULL, *target_tmp = NULL, *grad = NULL;
    PyObject *result = NULL;
    char msg[MSG_CAP];
    int typenum;
    int32_t status;
    double loss = 0.0;
    (void)module;

    msg[0] = '\0';
    if (parse_args(&spec, args, nargs, kwnames, v) < 0) {
        goto done;
    }
    ops[0].obj = v[0];
    PyObject *target = v[1];
    if (target == Py_None) {
        PyErr_Format(PyExc_TypeError, "%s: target must be an array, not None", fn);
        goto done;
    }
    /* A 1-D target is class labels; anything else is class probabilities. */
    PyArrayObject *ta = NULL;
    if (PyArray_Check(target)) {
        ta = (PyArrayObject *)target;
    }
    else {
        target_tmp = (PyArrayObject *)PyArray_FromAny(target, NULL, 0, 0, 0, NULL);
        if (target_tmp == NULL) {
            prefix_pending_error(fn, "target");
            goto done;
        }
        ta = target_tmp;
        if (PyArray_NDIM(ta) == 1 && PyArray_SIZE(ta) == 0) {
            npy_intp dims0[1] = {0};
            /* [] is an empty list of labels (NumPy would call it float64) */
            Py_DECREF(target_tmp);
            target_tmp = (PyArrayObject *)PyArray_SimpleNew(1, dims0, NPY_INT64);
            if (target_tmp == NULL) {
                goto done;
            }
            ta = target_tmp;
        }
    }
    if (PyArray_NDIM(ta) == 1) {
        labels = labels_array(fn, "target", ta);
        if (labels == NULL) {
            goto done;
        }
    }
    else {
        /* Probabilities take part in the dtype rules as given (the list-converted array adopts). */
        ops[1].obj = target;
    }
    if (prepare_operands(fn, ops, 2, 1, &typenum) < 0) {
        goto done;
    }
    grad = new_array(fn, ops[0].ndim, ops[0].shape, typenum);
    if (grad == NULL) {
        goto done;
    }
    int32_t dt = scnn_dtype(typenum);
    const int64_t *lab = labels ? (const int64_t *)PyArray_DATA(labels) : NULL;
    int64_t lab_len = labels ? (int64_t)PyArray_SIZE(labels) : 0;
    void *gd = PyArray_DATA(grad);
    CALL_WITHOUT_GIL(status = scnn_softmax_cross_entropy(dt, data_or_null(&ops[0]), ops[0].shape, ops[0].ndim,
                                            lab, lab_len,
                                            data_or_null(&ops[1]), ops[1].shape, ops[1].ndim,
                                            &loss, gd, msg, MSG_CAP));
    if (status != SCNN_OK) {
        raise_status(fn, status, msg);
        goto done;
    }
    Py_INCREF(grad);
    result = pair_result(PyFloat_FromDouble(loss), (PyObject *)grad);
done:
    Py_XDECREF(labels);
    Py_XDECREF(target_tmp);
    Py_XDECREF(grad);
    release_operands(ops, 2);
    return result;
}

PyDoc_STRVAR(bce_doc,
"binary_cross_entropy_with_logits($module, /, logits, target)\n--\n\n"
"Binary cross-entropy on logits, mean over all elements; target is floats of the logits' shape.\n"
"Returns (loss, grad_logits): loss a Python float, grad = (sigmoid(logits) - target) / numel.");

static PyObject *
core_bce_with_logits(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"logits", "target"};
    static const argspec spec = {"binary_cross_entropy_with_logits", names, 2, 2, 2};
    const char *fn = spec.fname;
    PyObject *v[MAX_ARGS];
    operand ops[2] = {{.name = "logits"}, {.name = "target"}};
    PyArrayObject *grad = NULL;
    PyObject *result = NULL;
    char msg[MSG_CAP];
    int typenum;
    int32_t status;
    double loss = 0.0;
    (void)module;

    msg[0] = '\0';
    if (parse_args(&spec, args, nargs, kwnames, v) < 0) {
        goto done;
    }
    ops[0].obj = v[0];
    ops[1].obj = v[1];
    if (prepare_operands(fn, ops, 2, 2, &typenum) < 0 || check_same_shape(fn, &ops[0], &ops[1]) < 0) {
        goto done;
    }
    grad = new_array(fn, ops[0].ndim, ops[0].shape, typenum);
    if (grad == NULL) {
        goto done;
    }
    int32_t dt = scnn_dtype(typenum);
    const void *z = data_or_null(&ops[0]);
    const void *t = data_or_null(&ops[1]);
    int64_t count = (int64_t)PyArray_SIZE(ops[0].arr);
    void *gd = PyArray_DATA(grad);
    CALL_WITHOUT_GIL(status = scnn_bce_with_logits(dt, z, t, count, &loss, gd, msg, MSG_CAP));
    if (status != SCNN_OK) {
        raise_status(fn, status, msg);
        goto done;
    }
    Py_INCREF(grad);
    result = pair_result(PyFloat_FromDouble(loss), (PyObject *)grad);
done:
    Py_XDECREF(grad);
    release_operands(ops, 2);
    return result;
}

/* Shared body of correlate2d and convolve2d. */
static PyObject *
signal2d(const argspec *spec, int32_t flip, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const modes[] = {"valid", "same", "full", NULL};
    static const int32_t mode_codes[] = {SCNN_MODE_VALID, SCNN_MODE_SAME, SCNN_MODE_FULL};
    const char *fn = spec->fname;
    PyObject *v[MAX_ARGS];
    operand ops[2] = {{.name = "image"}, {.name = "kernel"}};
    PyArrayObject *out = NULL;
    int64_t oshape[2];
    char msg[MSG_CAP];
    int typenum;
    int32_t status, mode = SCNN_MODE_VALID;

    msg[0] = '\0';
    if (parse_args(spec, args, nargs, kwnames, v) < 0) {
        goto done;
    }
    ops[0].obj = v[0];
    ops[1].obj = v[1];
    if (v[2] != NULL) {
        int m = choice_arg(fn, "mode", v[2], modes, "'valid', 'same' or 'full'");
        if (m < 0) {
            goto done;
        }
        mode = mode_codes[m];
    }
    if (prepare_operands(fn, ops, 2, 2, &typenum) < 0) {
        goto done;
    }
    int32_t dt = scnn_dtype(typenum);
    status = scnn_correlate2d(dt, mode, flip, data_or_null(&ops[0]), ops[0].shape, ops[0].ndim,
                              data_or_null(&ops[1]), ops[1].shape, ops[1].ndim, NULL, oshape, msg, MSG_CAP);
    if (status != SCNN_OK) {
        raise_status(fn, status, msg);
        goto done;
    }
    out = new_array(fn, 2, oshape, typenum);
    if (out == NULL) {
        goto done;
    }
    void *od = PyArray_DATA(out);
    Py_BEGIN_ALLOW_THREADS
    status = scnn_correlate2d(dt, mode, flip, data_or_null(&ops[0]), ops[0].shape, ops[0].ndim,
                              data_or_null(&ops[1]), ops[1].shape, ops[1].ndim, od, oshape, msg, MSG_CAP);
    Py_END_ALLOW_THREADS
    if (status != SCNN_OK) {
        raise_status(fn, status, msg);
        Py_CLEAR(out);
    }
done:
    release_operands(ops, 2);
    return (PyObject *)out;
}

static const char *const signal_names[] = {"image", "kernel", "mode"};

PyDoc_STRVAR(correlate2d_doc,
"correlate2d($module, /, image, kernel, mode='valid')\n--\n\n"
"2-D single-channel cross-correlation of image (H, W) with kernel (kH, kW), zero fill, as\n"
"scipy.signal.correlate2d; mode is 'valid', 'same' or 'full'. In 'valid' mode a kernel larger\n"
"than the image raises ValueError.");

static PyObject *
core_correlate2d(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const argspec spec = {"correlate2d", signal_names, 3, 2, 3};
    (void)module;
    return signal2d(&spec, 0, args, nargs, kwnames);
}

PyDoc_STRVAR(convolve2d_doc,
"convolve2d($module, /, image, kernel, mode='valid')\n--\n\n"
"2-D single-channel true convolution (flipped kernel), zero fill, as scipy.signal.convolve2d;\n"
"mode is 'valid', 'same' or 'full'.");

static PyObject *
core_convolve2d(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const argspec spec = {"convolve2d", signal_names, 3, 2, 3};
    (void)module;
    return signal2d(&spec, 1, args, nargs, kwnames);
}

/* ============================================================================================ */
/* Library                                                                                        */
/* ============================================================================================ */

PyDoc_STRVAR(set_num_threads_doc,
"set_num_threads($module, /, n)\n--\n\n"
"Sets the number of worker threads compute calls use (n >= 1).");

static PyObject *
core_set_num_threads(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"n"};
    static const argspec spec = {"set_num_threads", names, 1, 1, 1};
    const char *fn = spec.fname;
    PyObject *v[MAX_ARGS];
    char msg[MSG_CAP];
    int64_t n;
    (void)module;

    msg[0] = '\0';
    if (parse_args(&spec, args, nargs, kwnames, v) < 0 || int64_arg(fn, "n", v[0], &n) < 0) {
        return NULL;
    }
    if (n < 1) {
        PyErr_Format(PyExc_ValueError, "%s: n must be >= 1, got %lld", fn, (long long)n);
        return NULL;
    }
    int32_t status = scnn_set_num_threads(n, msg, MSG_CAP);
    if (status != SCNN_OK) {
        return raise_status(fn, status, msg);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(get_num_threads_doc,
"get_num_threads($module, /)\n--\n\n"
"The number of worker threads compute calls use.");

static PyObject *
core_get_num_threads(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyLong_FromLongLong((long long)scnn_get_num_threads());
}

PyDoc_STRVAR(version_doc,
"version($module, /)\n--\n\n"
"The Swift core's version string.");

static PyObject *
core_version(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    const char *s = scnn_version();
    if (s == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "version: the core returned no version");
        return NULL;
    }
    return PyUnicode_FromString(s);
}

/* ============================================================================================ */
/* Layer handles                                                                                  */
/* ============================================================================================ */

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

/* A capsule owning the reference `layer` holds (released on failure). */
static PyObject *
wrap_layer(scnn_layer *layer, const char *name)
{
    if (layer == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the core returned a NULL layer");
        return NULL;
    }
    PyObject *cap = PyCapsule_New(layer, name, layer_capsule_destructor);
    if (cap == NULL) {
        scnn_layer_release(layer);
    }
    return cap;
}

static scnn_layer *
layer_arg(const char *fn, const char *name, PyObject *o)
{
    if (!PyCapsule_IsValid(o, LAYER_CAPSULE)) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be a LayerHandle, got %s", fn, name, Py_TYPE(o)->tp_name);
        return NULL;
    }
    return (scnn_layer *)PyCapsule_GetPointer(o, LAYER_CAPSULE);
}

static scnn_optimizer *
optimizer_arg(const char *fn, const char *name, PyObject *o)
{
    if (!PyCapsule_IsValid(o, OPTIMIZER_CAPSULE)) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be an OptimizerHandle, got %s", fn, name, Py_TYPE(o)->tp_name);
        return NULL;
    }
    return (scnn_optimizer *)PyCapsule_GetPointer(o, OPTIMIZER_CAPSULE);
}

static int
layer_typenum(scnn_layer *layer)
{
    return scnn_layer_dtype(layer) == SCNN_FLOAT32 ? NPY_FLOAT : NPY_DOUBLE;
}

/* An array a handle function takes as is: an ndarray of typenum, C-contiguous, aligned, native
 * (writable too when `writable`). The Python layer converts user input before calling. `owner`
 * ("layer", "optimizer") names whose dtype it must have; NULL for int64 labels. */
static int
check_exact_array(const char *fn, const char *name, PyObject *o, int typenum, int writable, const char *owner)
{
    if (!PyArray_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be a numpy.ndarray, got %s", fn, name, Py_TYPE(o)->tp_name);
        return -1;
    }
    PyArrayObject *a = (PyArrayObject *)o;
    int matches = typenum == NPY_INT64
        ? (PyArray_ISINTEGER(a) && PyArray_ISSIGNED(a) && PyArray_ITEMSIZE(a) == 8) /* long or long long */
        : PyArray_TYPE(a) == typenum;
    if (!matches && owner != NULL) {
        PyErr_Format(PyExc_TypeError, "%s: %s has dtype %S but the %s's dtype is %s", fn, name,
                     (PyObject *)PyArray_DESCR(a), owner, dtype_name(typenum));
        return -1;
    }
    if (!matches) {
        PyErr_Format(PyExc_TypeError, "%s: %s has dtype %S; expected int64", fn, name, (PyObject *)PyArray_DESCR(a));
        return -1;
    }
    if (!PyArray_ISNOTSWAPPED(a)) {
        PyErr_Format(PyExc_ValueError, "%s: %s must be in native byte order", fn, name);
        return -1;
    }
    if (!PyArray_IS_C_CONTIGUOUS(a) || !PyArray_ISALIGNED(a)) {
        PyErr_Format(PyExc_ValueError, "%s: %s must be C-contiguous and aligned", fn, name);
        return -1;
    }
    if (writable && !PyArray_ISWRITEABLE(a)) {
        PyErr_Format(PyExc_ValueError, "%s: %s must be writable", fn, name);
        return -1;
    }
    return 0;
}

static void
shape_of(PyArrayObject *a, int64_t *shape)
{
    for (int i = 0; i < PyArray_NDIM(a); i++) {
        shape[i] = (int64_t)PyArray_DIMS(a)[i];
    }
}

PyDoc_STRVAR(conv2d_layer_doc,
"conv2d_layer($module, /, dtype, in_channels, out_channels, kernel_size, stride, padding, dilation, bias, seed)\n--\n\n"
"A new Conv2d layer handle (private; see layers.py).");

static PyObject *
core_conv2d_layer(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"dtype", "in_channels", "out_channels", "kernel_size", "stride",
                                        "padding", "dilation", "bias", "seed"};
    static const argspec spec = {"conv2d_layer", names, 9, 9, 9};
    const char *fn = spec.fname;
    PyObject *v[MAX_ARGS];
    char msg[MSG_CAP];
    int32_t dtype;
    int64_t in_ch, out_ch, geometry[8];
    bool bias;
    scnn_layer *layer = NULL;
    (void)module;

    msg[0] = '\0';
    if (parse_args(&spec, args, nargs, kwnames, v) < 0 || dtype_arg(fn, v[0], &dtype) < 0 ||
        int64_arg(fn, "in_channels", v[1], &in_ch) < 0 || int64_arg(fn, "out_channels", v[2], &out_ch) < 0 ||
        pair_arg(fn, "kernel_size", v[3], &geometry[0]) < 0 || pair_arg(fn, "stride", v[4], &geometry[2]) < 0 ||
        pair_arg(fn, "padding", v[5], &geometry[4]) < 0 || pair_arg(fn, "dilation", v[6], &geometry[6]) < 0 ||
        bool_arg(v[7], &bias) < 0) {
        return NULL;
    }
    if (!PyLong_Check(v[8]) && !PyIndex_Check(v[8])) {
        PyErr_Format(PyExc_TypeError, "%s: seed must be an int, got %s", fn, Py_TYPE(v[8])->tp_name);
        return NULL;
    }
    PyObject *seed_obj = PyNumber_Index(v[8]);
    if (seed_obj == NULL) {
        return NULL;
    }
    uint64_t seed = (uint64_t)PyLong_AsUnsignedLongLongMask(seed_obj); /* any int, modulo 2**64 */
    Py_DECREF(seed_obj);
    if (PyErr_Occurred()) {
        return NULL;
    }
    int32_t status = scnn_conv2d_layer_create(dtype, in_ch, out_ch, geometry, bias, seed, &layer, msg, MSG_CAP);
    if (status != SCNN_OK) {
        return raise_status(fn, status, msg);
    }
    return wrap_layer(layer, LAYER_CAPSULE);
}

PyDoc_STRVAR(linear_layer_doc,
"linear_layer($module, /, dtype, in_features, out_features, bias, seed)\n--\n\n"
"A new Linear layer handle (private; see layers.py).");

static PyObject *
core_linear_layer(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"dtype", "in_features", "out_features", "bias", "seed"};
    static const argspec spec = {"linear_layer", names, 5, 5, 5};
    const char *fn = spec.fname;
    PyObject *v[MAX_ARGS];
    char msg[MSG_CAP];
    int32_t dtype;
    int64_t in_f, out_f;
    bool bias;
    scnn_layer *layer = NULL;
    (void)module;

    msg[0] = '\0';
    if (parse_args(&spec, args, nargs, kwnames, v) < 0 || dtype_arg(fn, v[0], &dtype) < 0 ||
        int64_arg(fn, "in_features", v[1], &in_f) < 0 || int64_arg(fn, "out_features", v[2], &out_f) < 0 ||
        bool_arg(v[3], &bias) < 0) {
        return NULL;
    }
    if (!PyIndex_Check(v[4])) {
        PyErr_Format(PyExc_TypeError, "%s: seed must be an int, got %s", fn, Py_TYPE(v[4])->tp_name);
        return NULL;
    }
    PyObject *seed_obj = PyNumber_Index(v[4]);
    if (seed_obj == NULL) {
        return NULL;
    }
    uint64_t seed = (uint64_t)PyLong_AsUnsignedLongLongMask(seed_obj);
    Py_DECREF(seed_obj);
    if (PyErr_Occurred()) {
        return NULL;
    }
    int32_t status = scnn_linear_layer_create(dtype, in_f, out_f, bias, seed, &layer, msg, MSG_CAP);
    if (status != SCNN_OK) {
        return raise_status(fn, status, msg);
    }
    return wrap_layer(layer, LAYER_CAPSULE);
}

PyDoc_STRVAR(pool2d_layer_doc,
"pool2d_layer($module, /, dtype, kind, kernel_size, stride, padding)\n--\n\n"
"A new MaxPool2d (kind 'max') or AvgPool2d (kind 'avg') layer handle (private).");

static PyObject *
core_pool2d_layer(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"dtype", "kind", "kernel_size", "stride", "padding"};
    static const argspec spec = {"pool2d_layer", names, 5, 5, 5};
    static const char *const kinds[] = {"max", "avg", NULL};
    const char *fn = spec.fname;
    PyObject *v[MAX_ARGS];
    char msg[MSG_CAP];
    int32_t dtype;
    int64_t geometry[6];
    scnn_layer *layer = NULL;
    int kind;
    (void)module;

    msg[0] = '\0';
    if (parse_args(&spec, args, nargs, kwnames, v) < 0 || dtype_arg(fn, v[0], &dtype) < 0 ||
        (kind = choice_arg(fn, "kind", v[1], kinds, "'max' or 'avg'")) < 0 ||
        pair_arg(fn, "kernel_size", v[2], &geometry[0]) < 0) {
        return NULL;
    }
    if (v[3] == Py_None) {
        geometry[2] = geometry[0];
        geometry[3] = geometry[1];
    }
    else if (pair_arg(fn, "stride", v[3], &geometry[2]) < 0) {
        return NULL;
    }
    if (pair_arg(fn, "padding", v[4], &geometry[4]) < 0) {
        return NULL;
    }
    int32_t status = scnn_pool2d_layer_create(dtype, kind == 0 ? SCNN_POOL_MAX : SCNN_POOL_AVG, geometry,
                                              &layer, msg, MSG_CAP);
    if (status != SCNN_OK) {
        return raise_status(fn, status, msg);
    }
    return wrap_layer(layer, LAYER_CAPSULE);
}

PyDoc_STRVAR(simple_layer_doc,
"simple_layer($module, /, dtype, kind)\n--\n\n"
"A new Sigmoid, ReLU or Flatten layer handle (kind 'sigmoid', 'relu' or 'flatten'; private).");

static PyObject *
core_simple_layer(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"dtype", "kind"};
    static const argspec spec = {"simple_layer", names, 2, 2, 2};
    static const char *const kinds[] = {"sigmoid", "relu", "flatten", NULL};
    static const int32_t codes[] = {SCNN_LAYER_SIGMOID, SCNN_LAYER_RELU, SCNN_LAYER_FLATTEN};
    const char *fn = spec.fname;
    PyObject *v[MAX_ARGS];
    char msg[MSG_CAP];
    int32_t dtype;
    scnn_layer *layer = NULL;
    int kind;
    (void)module;

    msg[0] = '\0';
    if (parse_args(&spec, args, nargs, kwnames, v) < 0 || dtype_arg(fn, v[0], &dtype) < 0 ||
        (kind = choice_arg(fn, "kind", v[1], kinds, "'sigmoid', 'relu' or 'flatten'")) < 0) {
        return NULL;
    }
    int32_t status = scnn_simple_layer_create(dtype, codes[kind], &layer, msg, MSG_CAP);
    if (status != SCNN_OK) {
        return raise_status(fn, status, msg);
    }
    return wrap_layer(layer, LAYER_CAPSULE);
}

PyDoc_STRVAR(sequential_layer_doc,
"sequential_layer($module, /, dtype, layers)\n--\n\n"
"A new Sequential handle over the given layer handles (shared, not copied; private).");

static PyObject *
core_sequential_layer(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"dtype", "layers"};
    static const argspec spec = {"sequential_layer", names, 2, 2, 2};
    const char *fn = spec.fname;
    PyObject *v[MAX_ARGS];
    PyObject *seq = NULL, *result = NULL;
    scnn_layer **layers = NULL;
    scnn_layer *layer = NULL;
    char msg[MSG_CAP];
    int32_t dtype;
    (void)module;

    msg[0] = '\0';
    if (parse_args(&spec, args, nargs, kwnames, v) < 0 || dtype_arg(fn, v[0], &dtype) < 0) {
        goto done;
    }
    seq = PySequence_Fast(v[1], "sequential_layer: layers must be a sequence of LayerHandles");
    if (seq == NULL) {
        goto done;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    layers = PyMem_Malloc(sizeof(scnn_layer *) * (size_t)(n > 0 ? n : 1));
    if (layers == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        char name[40];
        snprintf(name, sizeof name, "layers[%zd]", i);
        layers[i] = layer_arg(fn, name, PySequence_Fast_GET_ITEM(seq, i));
        if (layers[i] == NULL) {
            goto done;
        }
    }
    /* seq holds the capsules (and so the layers) alive through the call; Swift retains them. */
    int32_t status = scnn_sequential_create(dtype, layers, (int64_t)n, &layer, msg, MSG_CAP);
    if (status != SCNN_OK) {
        raise_status(fn, status, msg);
        goto done;
    }
    result = wrap_layer(layer, LAYER_CAPSULE);
done:
    PyMem_Free(layers);
    Py_XDECREF(seq);
    return result;
}

PyDoc_STRVAR(layer_dtype_doc,
"layer_dtype($module, /, layer)\n--\n\n"
"The layer's dtype, 'float32' or 'float64'.");

static PyObject *
core_layer_dtype(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"layer"};
    static const argspec spec = {"layer_dtype", names, 1, 1, 1};
    PyObject *v[MAX_ARGS];
    scnn_layer *layer;
    (void)module;

    if (parse_args(&spec, args, nargs, kwnames, v) < 0 || (layer = layer_arg(spec.fname, "layer", v[0])) == NULL) {
        return NULL;
    }
    return PyUnicode_FromString(scnn_layer_dtype(layer) == SCNN_FLOAT32 ? "float32" : "float64");
}

PyDoc_STRVAR(layer_forward_doc,
"layer_forward($module, /, layer, x)\n--\n\n"
"Runs the layer on x (C-contiguous ndarray of the layer's dtype); returns a new array. The\n"
"layer keeps a view of x: the caller keeps x alive until the next forward.");

static PyObject *
core_layer_forward(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"layer", "x"};
    static const argspec spec = {"layer_forward", names, 2, 2, 2};
    const char *fn = spec.fname;
    PyObject *v[MAX_ARGS];
    PyArrayObject *y = NULL;
    scnn_layer *layer;
    int64_t xshape[MAX_DIMS], yshape[LAYER_NDIM], yndim = -1;
    char msg[MSG_CAP];
    int32_t status;
    (void)module;

    msg[0] = '\0';
    if (parse_args(&spec, args, nargs, kwnames, v) < 0 || (layer = layer_arg(fn, "layer", v[0])) == NULL) {
        return NULL;
    }
    int typenum = layer_typenum(layer);
    if (check_exact_array(fn, "x", v[1], typenum, 0, "layer") < 0) {
        return NULL;
    }
    PyArrayObject *x = (PyArrayObject *)v[1];
    int64_t xndim = PyArray_NDIM(x);
    shape_of(x, xshape);
    status = scnn_layer_output_shape(layer, xshape, xndim, yshape, &yndim, msg, MSG_CAP);
    if (status != SCNN_OK) {
        return raise_status(fn, status, msg);
    }
    if (yndim < 0 || yndim > LAYER_NDIM) {
        PyErr_Format(PyExc_RuntimeError, "%s: the core returned an invalid output ndim %lld", fn, (long long)yndim);
        return NULL;
    }
    y = new_array(fn, yndim, yshape, typenum);
    if (y == NULL) {
        return NULL;
    }
    const void *xd = PyArray_DATA(x);
    void *yd = PyArray_DATA(y);
    Py_BEGIN_ALLOW_THREADS
    status = scnn_layer_forward(layer, xd, xshape, xndim, yd, msg, MSG_CAP);
    Py_END_ALLOW_THREADS
    keep_last_input(v[0], v[1], status == SCNN_OK);
    if (status != SCNN_OK) {
        Py_DECREF(y);
        return raise_status(fn, status, msg);
    }
    return (PyObject *)y;
}

PyDoc_STRVAR(layer_backward_doc,
"layer_backward($module, /, layer, grad_out)\n--\n\n"
"Backward through the layer's last forward: returns the gradient for its input (a new array) and\n"
"adds the parameter gradients into the parameters' grad arrays. RuntimeError before any forward.");

static PyObject *
core_layer_backward(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"layer", "grad_out"};
    static const argspec spec = {"layer_backward", names, 2, 2, 2};
    const char *fn = spec.fname;
    PyObject *v[MAX_ARGS];
    PyArrayObject *gx = NULL;
    scnn_layer *layer;
    int64_t gshape[MAX_DIMS], xshape[LAYER_NDIM], xndim = -1;
    char msg[MSG_CAP];
    int32_t status;
    (void)module;

    msg[0] = '\0';
    if (parse_args(&spec, args, nargs, kwnames, v) < 0 || (layer = layer_arg(fn, "layer", v[0])) == NULL) {
        return NULL;
    }
    int typenum = layer_typenum(layer);
    if (check_exact_array(fn, "grad_out", v[1], typenum, 0, "layer") < 0) {
        return NULL;
    }
    PyArrayObject *g = (PyArrayObject *)v[1];
    int64_t gndim = PyArray_NDIM(g);
    shape_of(g, gshape);
    status = scnn_layer_input_shape(layer, xshape, &xndim, msg, MSG_CAP);
    if (status != SCNN_OK) {
        return raise_status(fn, status, msg);
    }
    if (xndim < 0 || xndim > LAYER_NDIM) {
        PyErr_Format(PyExc_RuntimeError, "%s: the core returned an invalid input ndim %lld", fn, (long long)xndim);
        return NULL;
    }
    gx = new_array(fn, xndim, xshape, typenum);
    if (gx == NULL) {
        return NULL;
    }
    const void *gd = PyArray_DATA(g);
    void *gxd = PyArray_DATA(gx);
    Py_BEGIN_ALLOW_THREADS
    /* The ABI re-checks xshape against the layer's last input while it holds the layer, so a
     * forward by another thread since scnn_layer_input_shape gives RuntimeError, not an overrun. */
    status = scnn_layer_backward(layer, gd, gshape, gndim, gxd, xshape, xndim, msg, MSG_CAP);
    Py_END_ALLOW_THREADS
    if (status != SCNN_OK) {
        Py_DECREF(gx);
        return raise_status(fn, status, msg);
    }
    return (PyObject *)gx;
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

/* An ndarray over Swift memory whose base is `keeper` (a capsule owning a layer reference). */
static PyObject *
view_array(const char *fn, void *data, int64_t ndim, const int64_t *shape, int typenum, PyObject *keeper)
{
    npy_intp dims[MAX_DIMS];
    if (to_npy_dims(fn, ndim, shape, dims) < 0) {
        return NULL;
    }
    npy_intp count = 1;
    for (int64_t i = 0; i < ndim; i++) {
        count *= dims[i];
    }
    if (data == NULL && count != 0) {
        PyErr_Format(PyExc_RuntimeError, "%s: the core returned a NULL parameter buffer", fn);
        return NULL;
    }
    PyObject *arr;
    if (data == NULL) {
        arr = PyArray_SimpleNew((int)ndim, dims, typenum); /* empty: nothing to share */
    }
    else {
        arr = PyArray_SimpleNewFromData((int)ndim, dims, typenum, data);
    }
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

PyDoc_STRVAR(layer_parameters_doc,
"layer_parameters($module, /, layer)\n--\n\n"
"[(name, data, grad)]: writable ndarrays viewing the layer's parameter memory (no copy); each\n"
"array keeps the Swift layer alive.");

static PyObject *
core_layer_parameters(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"layer"};
    static const argspec spec = {"layer_parameters", names, 1, 1, 1};
    const char *fn = spec.fname;
    PyObject *v[MAX_ARGS];
    PyObject *list = NULL, *keeper = NULL, *result = NULL;
    scnn_layer *layer;
    char msg[MSG_CAP];
    (void)module;

    msg[0] = '\0';
    if (parse_args(&spec, args, nargs, kwnames, v) < 0 || (layer = layer_arg(fn, "layer", v[0])) == NULL) {
        goto done;
    }
    int typenum = layer_typenum(layer);
    int64_t count = scnn_layer_parameter_count(layer);
    if (count < 0) {
        PyErr_Format(PyExc_RuntimeError, "%s: the core returned a negative parameter count", fn);
        goto done;
    }
    list = PyList_New(0);
    if (list == NULL) {
        goto done;
    }
    scnn_layer_retain(layer);
    keeper = PyCapsule_New(layer, LAYER_MEMORY_CAPSULE, layer_memory_destructor);
    if (keeper == NULL) {
        scnn_layer_release(layer);
        goto done;
    }
    for (int64_t i = 0; i < count; i++) {
        void *data = NULL, *grad = NULL;
        int64_t shape[4], ndim = -1;
        char name[NAME_CAP];
        name[0] = '\0';
        int32_t status = scnn_layer_parameter(layer, i, &data, &grad, shape, &ndim, name, NAME_CAP, msg, MSG_CAP);
        if (status != SCNN_OK) {
            raise_status(fn, status, msg);
            goto done;
        }
        name[NAME_CAP - 1] = '\0';
        if (ndim < 0 || ndim > 4) {
            PyErr_Format(PyExc_RuntimeError, "%s: the core returned an invalid parameter ndim %lld", fn, (long long)ndim);
            goto done;
        }
        PyObject *pname = PyUnicode_DecodeUTF8(name, (Py_ssize_t)strlen(name), "replace");
        PyObject *pdata = pname ? view_array(fn, data, ndim, shape, typenum, keeper) : NULL;
        PyObject *pgrad = pdata ? view_array(fn, grad, ndim, shape, typenum, keeper) : NULL;
        PyObject *item = pgrad ? PyTuple_Pack(3, pname, pdata, pgrad) : NULL;
        Py_XDECREF(pname);
        Py_XDECREF(pdata);
        Py_XDECREF(pgrad);
        if (item == NULL) {
            goto done;
        }
        int rc = PyList_Append(list, item);
        Py_DECREF(item);
        if (rc < 0) {
            goto done;
        }
    }
    result = list;
    list = NULL;
done:
    Py_XDECREF(keeper);
    Py_XDECREF(list);
    return result;
}

PyDoc_STRVAR(layer_zero_grad_doc,
"layer_zero_grad($module, /, layer)\n--\n\n"
"Fills every parameter gradient of the layer with zeros.");

static PyObject *
core_layer_zero_grad(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"layer"};
    static const argspec spec = {"layer_zero_grad", names, 1, 1, 1};
    const char *fn = spec.fname;
    PyObject *v[MAX_ARGS];
    scnn_layer *layer;
    char msg[MSG_CAP];
    int32_t status;
    (void)module;

    msg[0] = '\0';
    if (parse_args(&spec, args, nargs, kwnames, v) < 0 || (layer = layer_arg(fn, "layer", v[0])) == NULL) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    status = scnn_layer_zero_grad(layer, msg, MSG_CAP);
    Py_END_ALLOW_THREADS
    if (status != SCNN_OK) {
        return raise_status(fn, status, msg);
    }
    Py_RETURN_NONE;
}

/* ============================================================================================ */
/* Optimizers                                                                                     */
/* ============================================================================================ */

/* The (data, grad, count) triples of an optimizer: pointer arrays (PyMem) the caller frees. */
typedef struct {
    void **data;
    void **grad;
    int64_t *counts;
    Py_ssize_t n;
} param_arrays;

static void
param_arrays_free(param_arrays *p)
{
    PyMem_Free(p->data);
    PyMem_Free(p->grad);
    PyMem_Free(p->counts);
}

static int
collect_params(const char *fn, PyObject *data_obj, PyObject *grad_obj, int typenum, param_arrays *p)
{
    int rc = -1;
    PyObject *ds = PySequence_Fast(data_obj, "data must be a sequence of ndarrays");
    PyObject *gs = ds ? PySequence_Fast(grad_obj, "grads must be a sequence of ndarrays") : NULL;
    if (gs == NULL) {
        goto done;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(ds);
    if (PySequence_Fast_GET_SIZE(gs) != n) {
        PyErr_Format(PyExc_ValueError, "%s: data and grads must have the same length, got %zd and %zd",
                     fn, n, PySequence_Fast_GET_SIZE(gs));
        goto done;
    }
    size_t room = (size_t)(n > 0 ? n : 1);
    p->data = PyMem_Malloc(room * sizeof(void *));
    p->grad = PyMem_Malloc(room * sizeof(void *));
    p->counts = PyMem_Malloc(room * sizeof(int64_t));
    p->n = n;
    if (p->data == NULL || p->grad == NULL || p->counts == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *d = PySequence_Fast_GET_ITEM(ds, i);
        PyObject *g = PySequence_Fast_GET_ITEM(gs, i);
        char dname[40], gname[40];
        snprintf(dname, sizeof dname, "data[%zd]", i);
        snprintf(gname, sizeof gname, "grads[%zd]", i);
        if (check_exact_array(fn, dname, d, typenum, 1, "optimizer") < 0 ||
            check_exact_array(fn, gname, g, typenum, 1, "optimizer") < 0) {
            goto done;
        }
        npy_intp nd = PyArray_SIZE((PyArrayObject *)d), ng = PyArray_SIZE((PyArrayObject *)g);
        if (nd != ng) {
            PyErr_Format(PyExc_ValueError, "%s: data[%zd] has %zd elements but grads[%zd] has %zd",
                         fn, i, (Py_ssize_t)nd, i, (Py_ssize_t)ng);
            goto done;
        }
        p->data[i] = PyArray_DATA((PyArrayObject *)d);
        p->grad[i] = PyArray_DATA((PyArrayObject *)g);
        p->counts[i] = (int64_t)nd;
    }
    rc = 0;
done:
    Py_XDECREF(ds);
    Py_XDECREF(gs);
    return rc;
}

static PyObject *
wrap_optimizer(scnn_optimizer *opt)
{
    if (opt == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the core returned a NULL optimizer");
        return NULL;
    }
    PyObject *cap = PyCapsule_New(opt, OPTIMIZER_CAPSULE, optimizer_capsule_destructor);
    if (cap == NULL) {
        scnn_optimizer_release(opt);
    }
    return cap;
}

PyDoc_STRVAR(sgd_doc,
"sgd($module, /, dtype, data, grads, lr, momentum, dampening, weight_decay, nesterov)\n--\n\n"
"A new SGD optimizer handle over the given (data, grad) arrays, which the caller keeps alive.");

static PyObject *
core_sgd(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"dtype", "data", "grads", "lr", "momentum", "dampening",
                                        "weight_decay", "nesterov"};
    static const argspec spec = {"sgd", names, 8, 8, 8};
    const char *fn = spec.fname;
    PyObject *v[MAX_ARGS];
    PyObject *result = NULL;
    param_arrays p = {NULL, NULL, NULL, 0};
    scnn_optimizer *opt = NULL;
    char msg[MSG_CAP];
    int32_t dtype;
    double lr, momentum, dampening, weight_decay;
    bool nesterov;
    (void)module;

    msg[0] = '\0';
    if (parse_args(&spec, args, nargs, kwnames, v) < 0 || dtype_arg(fn, v[0], &dtype) < 0 ||
        double_arg(fn, "lr", v[3], &lr) < 0 || double_arg(fn, "momentum", v[4], &momentum) < 0 ||
        double_arg(fn, "dampening", v[5], &dampening) < 0 ||
        double_arg(fn, "weight_decay", v[6], &weight_decay) < 0 || bool_arg(v[7], &nesterov) < 0 ||
        collect_params(fn, v[1], v[2], dtype == SCNN_FLOAT32 ? NPY_FLOAT : NPY_DOUBLE, &p) < 0) {
        goto done;
    }
    int32_t status = scnn_sgd_create(dtype, p.data, p.grad, p.counts, (int64_t)p.n, lr, momentum, dampening,
                                     weight_decay, nesterov, &opt, msg, MSG_CAP);
    if (status != SCNN_OK) {
        raise_status(fn, status, msg);
        goto done;
    }
    result = wrap_optimizer(opt);
done:
    param_arrays_free(&p);
    return result;
}

PyDoc_STRVAR(adam_doc,
"adam($module, /, dtype, data, grads, lr, beta1, beta2, eps, weight_decay)\n--\n\n"
"A new Adam optimizer handle over the given (data, grad) arrays, which the caller keeps alive.");

static PyObject *
core_adam(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"dtype", "data", "grads", "lr", "beta1", "beta2", "eps", "weight_decay"};
    static const argspec spec = {"adam", names, 8, 8, 8};
    const char *fn = spec.fname;
    PyObject *v[MAX_ARGS];
    PyObject *result = NULL;
    param_arrays p = {NULL, NULL, NULL, 0};
    scnn_optimizer *opt = NULL;
    char msg[MSG_CAP];
    int32_t dtype;
    double lr, beta1, beta2, eps, weight_decay;
    (void)module;

    msg[0] = '\0';
    if (parse_args(&spec, args, nargs, kwnames, v) < 0 || dtype_arg(fn, v[0], &dtype) < 0 ||
        double_arg(fn, "lr", v[3], &lr) < 0 || double_arg(fn, "beta1", v[4], &beta1) < 0 ||
        double_arg(fn, "beta2", v[5], &beta2) < 0 || double_arg(fn, "eps", v[6], &eps) < 0 ||
        double_arg(fn, "weight_decay", v[7], &weight_decay) < 0 ||
        collect_params(fn, v[1], v[2], dtype == SCNN_FLOAT32 ? NPY_FLOAT : NPY_DOUBLE, &p) < 0) {
        goto done;
    }
    int32_t status = scnn_adam_create(dtype, p.data, p.grad, p.counts, (int64_t)p.n, lr, beta1, beta2, eps,
                                      weight_decay, &opt, msg, MSG_CAP);
    if (status != SCNN_OK) {
        raise_status(fn, status, msg);
        goto done;
    }
    result = wrap_optimizer(opt);
done:
    param_arrays_free(&p);
    return result;
}

PyDoc_STRVAR(optimizer_step_doc,
"optimizer_step($module, /, optimizer)\n--\n\n"
"One update of every parameter (writes data in place; never changes grad).");

/* optimizer_step and optimizer_zero_grad: one optimizer argument, one ABI call without the GIL. */
static PyObject *
call_on_optimizer(const argspec *spec, int32_t (*abi_call)(scnn_optimizer *, char *, int64_t),
                  PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    const char *fn = spec->fname;
    PyObject *v[MAX_ARGS];
    scnn_optimizer *opt;
    char msg[MSG_CAP];
    int32_t status;

    msg[0] = '\0';
    if (parse_args(spec, args, nargs, kwnames, v) < 0 || (opt = optimizer_arg(fn, "optimizer", v[0])) == NULL) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    status = abi_call(opt, msg, MSG_CAP);
    Py_END_ALLOW_THREADS
    if (status != SCNN_OK) {
        return raise_status(fn, status, msg);
    }
    Py_RETURN_NONE;
}

static PyObject *
core_optimizer_step(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"optimizer"};
    static const argspec spec = {"optimizer_step", names, 1, 1, 1};
    (void)module;
    return call_on_optimizer(&spec, scnn_optimizer_step, args, nargs, kwnames);
}

PyDoc_STRVAR(optimizer_zero_grad_doc,
"optimizer_zero_grad($module, /, optimizer)\n--\n\n"
"Fills every parameter's grad with zeros.");

static PyObject *
core_optimizer_zero_grad(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"optimizer"};
    static const argspec spec = {"optimizer_zero_grad", names, 1, 1, 1};
    (void)module;
    return call_on_optimizer(&spec, scnn_optimizer_zero_grad, args, nargs, kwnames);
}

PyDoc_STRVAR(optimizer_set_lr_doc,
"optimizer_set_lr($module, /, optimizer, lr)\n--\n\n"
"Sets the learning rate used from the next step on (lr >= 0).");

static PyObject *
core_optimizer_set_lr(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"optimizer", "lr"};
    static const argspec spec = {"optimizer_set_lr", names, 2, 2, 2};
    const char *fn = spec.fname;
    PyObject *v[MAX_ARGS];
    scnn_optimizer *opt;
    char msg[MSG_CAP];
    double lr;
    (void)module;

    msg[0] = '\0';
    if (parse_args(&spec, args, nargs, kwnames, v) < 0 || (opt = optimizer_arg(fn, "optimizer", v[0])) == NULL ||
        double_arg(fn, "lr", v[1], &lr) < 0) {
        return NULL;
    }
    int32_t status = scnn_optimizer_set_lr(opt, lr, msg, MSG_CAP);
    if (status != SCNN_OK) {
        return raise_status(fn, status, msg);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(optimizer_get_lr_doc,
"optimizer_get_lr($module, /, optimizer)\n--\n\n"
"The current learning rate.");

static PyObject *
core_optimizer_get_lr(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"optimizer"};
    static const argspec spec = {"optimizer_get_lr", names, 1, 1, 1};
    PyObject *v[MAX_ARGS];
    scnn_optimizer *opt;
    (void)module;

    if (parse_args(&spec, args, nargs, kwnames, v) < 0 || (opt = optimizer_arg(spec.fname, "optimizer", v[0])) == NULL) {
        return NULL;
    }
    return PyFloat_FromDouble(scnn_optimizer_get_lr(opt));
}

PyDoc_STRVAR(train_step_doc,
"train_step_cross_entropy($module, /, model, optimizer, x, labels)\n--\n\n"
"The fused canonical step: zero_grad, forward, softmax cross-entropy, backward, step (only if\n"
"the loss is finite). x: C-contiguous ndarray of the model's dtype; labels: C-contiguous int64\n"
"(N,); optimizer may be None. Returns (mean loss, number correct).");

static PyObject *
core_train_step_cross_entropy(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"model", "optimizer", "x", "labels"};
    static const argspec spec = {"train_step_cross_entropy", names, 4, 4, 4};
    const char *fn = spec.fname;
    PyObject *v[MAX_ARGS];
    scnn_layer *model;
    scnn_optimizer *opt = NULL;
    int64_t xshape[MAX_DIMS];
    char msg[MSG_CAP];
    int32_t status;
    double loss = 0.0;
    int64_t correct = 0;
    (void)module;

    msg[0] = '\0';
    if (parse_args(&spec, args, nargs, kwnames, v) < 0 || (model = layer_arg(fn, "model", v[0])) == NULL) {
        return NULL;
    }
    if (v[1] != Py_None && (opt = optimizer_arg(fn, "optimizer", v[1])) == NULL) {
        return NULL;
    }
    if (check_exact_array(fn, "x", v[2], layer_typenum(model), 0, "model") < 0 ||
        check_exact_array(fn, "labels", v[3], NPY_INT64, 0, NULL) < 0) {
        return NULL;
    }
    PyArrayObject *x = (PyArrayObject *)v[2], *labels = (PyArrayObject *)v[3];
    if (PyArray_NDIM(labels) != 1) {
        PyErr_Format(PyExc_ValueError, "%s: labels must be 1-D (N,), got %d dimensions", fn, PyArray_NDIM(labels));
        return NULL;
    }
    int64_t xndim = PyArray_NDIM(x);
    shape_of(x, xshape);
    const void *xd = PyArray_DATA(x);
    const int64_t *ld = (const int64_t *)PyArray_DATA(labels);
    int64_t nl = (int64_t)PyArray_SIZE(labels);
    Py_BEGIN_ALLOW_THREADS
    status = scnn_train_step_cross_entropy(model, opt, xd, xshape, xndim, ld, nl, &loss, &correct, msg, MSG_CAP);
    Py_END_ALLOW_THREADS
    keep_last_input(v[0], v[2], status == SCNN_OK);
    if (status != SCNN_OK) {
        return raise_status(fn, status, msg);
    }
    return pair_result(PyFloat_FromDouble(loss), PyLong_FromLongLong((long long)correct));
}

/* ============================================================================================ */
/* Module                                                                                         */
/* ============================================================================================ */

#define FASTCALL(name, doc) {#name, (PyCFunction)(void (*)(void))core_##name, METH_FASTCALL | METH_KEYWORDS, doc}

static PyMethodDef core_methods[] = {
    /* functional ops (public) */
    FASTCALL(conv2d, conv2d_doc),
    FASTCALL(conv2d_backward, conv2d_backward_doc),
    FASTCALL(max_pool2d, max_pool2d_doc),
    FASTCALL(max_pool2d_backward, max_pool2d_backward_doc),
    FASTCALL(avg_pool2d, avg_pool2d_doc),
    FASTCALL(avg_pool2d_backward, avg_pool2d_backward_doc),
    FASTCALL(linear, linear_doc),
    FASTCALL(linear_backward, linear_backward_doc),
    FASTCALL(sigmoid, sigmoid_doc),
    FASTCALL(sigmoid_backward, sigmoid_backward_doc),
    FASTCALL(relu, relu_doc),
    FASTCALL(relu_backward, relu_backward_doc),
    FASTCALL(softmax, softmax_doc),
    FASTCALL(softmax_cross_entropy, softmax_cross_entropy_doc),
    {"binary_cross_entropy_with_logits", (PyCFunction)(void (*)(void))core_bce_with_logits,
     METH_FASTCALL | METH_KEYWORDS, bce_doc},
    FASTCALL(correlate2d, correlate2d_doc),
    FASTCALL(convolve2d, convolve2d_doc),
    FASTCALL(set_num_threads, set_num_threads_doc),
    {"get_num_threads", core_get_num_threads, METH_NOARGS, get_num_threads_doc},
    {"version", core_version, METH_NOARGS, version_doc},
    /* handles (private) */
    FASTCALL(conv2d_layer, conv2d_layer_doc),
    FASTCALL(linear_layer, linear_layer_doc),
    FASTCALL(pool2d_layer, pool2d_layer_doc),
    FASTCALL(simple_layer, simple_layer_doc),
    FASTCALL(sequential_layer, sequential_layer_doc),
    FASTCALL(layer_dtype, layer_dtype_doc),
    FASTCALL(layer_forward, layer_forward_doc),
    FASTCALL(layer_backward, layer_backward_doc),
    FASTCALL(layer_parameters, layer_parameters_doc),
    FASTCALL(layer_zero_grad, layer_zero_grad_doc),
    FASTCALL(sgd, sgd_doc),
    FASTCALL(adam, adam_doc),
    FASTCALL(optimizer_step, optimizer_step_doc),
    FASTCALL(optimizer_zero_grad, optimizer_zero_grad_doc),
    FASTCALL(optimizer_set_lr, optimizer_set_lr_doc),
    FASTCALL(optimizer_get_lr, optimizer_get_lr_doc),
    FASTCALL(train_step_cross_entropy, train_step_doc),
    {NULL, NULL, 0, NULL}
};

static int
core_exec(PyObject *module)
{
    if (_import_array() < 0) {
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
