/* _core_arrays.c: NumPy arrays as ABI operands and results, class labels (see _core.h). */
#include "_core.h"

/* ==== Array operands ============================================================================ */

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
void
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
int
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

void
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

PyObject *
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
PyArrayObject *
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
PyArrayObject *
new_result(const char *fn, const scnn_tensor *t)
{
    return declared_array(fn, t, NULL, "declared an invalid result");
}

/* `out=` checked against the declared result: an ndarray of its exact dtype and shape,
 * C-contiguous, aligned, writable, sharing no memory with an input ndarray as the caller passed
 * it (so the rule does not depend on whether that input was copied); with `inplace`, ops[0] may
 * be `out` itself exactly. Returns a new reference. */
PyArrayObject *
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
int
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

