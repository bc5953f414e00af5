/* _core_args.c: argument parsing and error mapping for swiftcnn._core (see _core.h). */
#include "_core.h"

/* ==== Argument parsing ========================================================================== */

static inline const char *
arg_name(const argspec *s, int i)
{
    return *(const char *const *)((const char *)s->names + s->stride * (size_t)i);
}

/* Fills v[0..nall) with borrowed references (NULL where not given). */
int
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


/* An int argument (a Python int or anything with __index__, not a bool) as int64. */
int
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
int
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
int
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
int
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
int
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
PyObject *
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
void
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
void
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

const char *
dtype_name(int typenum)
{
    return typenum == NPY_FLOAT ? "float32" : typenum == NPY_DOUBLE ? "float64" : "int64";
}

