/*
 * _core.h: what the files of the swiftcnn._core extension share (private; see _core.c).
 *
 *   _core.c          the module: the functional ops' table and its driver, the method table
 *   _core_args.c     argument parsing (METH_FASTCALL keywords matched by hand) and error mapping
 *   _core_arrays.c   NumPy arrays as ABI operands and results, class labels
 *   _core_handles.c  the layer / optimizer handle functions (private plumbing for layers.py)
 */
#ifndef SWIFTCNN_CORE_H
#define SWIFTCNN_CORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
/* One NumPy C-API table for the whole extension: _core.c imports it, the other files use it. */
#define PY_ARRAY_UNIQUE_SYMBOL swiftcnn_ARRAY_API
#ifndef SWIFTCNN_CORE_IMPORTS_NUMPY
#define NO_IMPORT_ARRAY
#endif
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

/* The value of an optional argument: NULL when absent or None. */
static inline PyObject *
optional(PyObject *o)
{
    return (o == NULL || o == Py_None) ? NULL : o;
}

static inline int
is_float_type(int t)
{
    return t == NPY_FLOAT || t == NPY_DOUBLE;
}

/* Shared between the files, not exported from the shared object. */
#pragma GCC visibility push(hidden)
/* _core_args.c */
int parse_args(const argspec *s, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **v);
int int64_arg(const char *fn, const char *name, PyObject *o, int64_t *out);
int pair_arg(const char *fn, const char *name, PyObject *o, int64_t out[2]);
int double_arg(const char *fn, const char *name, PyObject *o, double *out);
int choice_arg(const char *fn, const char *name, PyObject *o, const char *const *choices, const char *expected);
int dtype_arg(const char *fn, PyObject *o, int32_t *dtype);
PyObject *raise_status(const char *fn, int32_t status, char *msg);
void prefix_pending_error(const char *fn, const char *name);
void format_shape(char *buf, size_t cap, int ndim, const npy_intp *dims);
const char *dtype_name(int typenum);

/* _core_arrays.c */
void describe_array(PyArrayObject *a, scnn_tensor *t);
int prepare_operands(const char *fn, operand *ops, int n, int *typenum);
void release_operands(operand *ops, int n);
int target_operand(const char *fn, operand *o);
PyArrayObject *declared_array(const char *fn, const scnn_tensor *t, void *data, const char *what);
PyArrayObject *new_result(const char *fn, const scnn_tensor *t);
PyArrayObject *out_array(const char *fn, PyObject *out, const scnn_tensor *t, const operand *ops, int nops, int inplace);
PyObject *pair_result(PyObject *a, PyObject *b);

/* _core_handles.c: its functions, added to the module by core_exec */
extern PyMethodDef handle_methods[];
#pragma GCC visibility pop

#endif /* SWIFTCNN_CORE_H */
