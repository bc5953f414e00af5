/* swiftcnn._cpu: what this x86-64 CPU and its operating system let a program execute.
 *
 * The wheel carries the Swift core compiled for several instruction-set levels (see _loader.py);
 * the loader asks this module which of them can run here. Two things must both hold for a
 * level to run:
 *
 *   1. the CPU implements its instructions: CPUID leaf 1 (ECX), leaf 7 subleaf 0 (EBX) and leaf
 *      0x80000001 (ECX) report them bit by bit;
 *   2. the operating system saves and restores the registers they use on a context switch:
 *      CPUID.1:ECX.OSXSAVE says the OS enabled XSAVE, and XGETBV(0) reads XCR0, whose bits say
 *      which register states it manages (bit 1 SSE/xmm, bit 2 AVX/upper ymm, bits 5-7 AVX-512
 *      opmask/upper zmm0-15/zmm16-31). A CPU with AVX-512 under an OS (or hypervisor) that does
 *      not enable those states faults on the first zmm instruction, so the CPUID bits alone are
 *      not enough.
 *
 * features() returns a dict {name: bool} with the CPUID bits under their /proc/cpuinfo names and
 * two derived entries, "os_avx" (XCR0 bits 1-2) and "os_avx512" (XCR0 bits 1-2 and 5-7); vendor()
 * and brand() return the CPUID vendor and brand strings. On a CPU that is not x86 every feature
 * is False and the strings are empty. This module does no policy: which features each level needs
 * is written down once, in _loader.py.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define SWIFTCNN_X86 1
#include <cpuid.h>

/* XGETBV with ECX = 0 (XCR0). Encoded as bytes so no -mxsave is needed; only executed after
 * CPUID said OSXSAVE, otherwise the instruction itself would fault. */
static unsigned long long
read_xcr0(void)
{
    unsigned int eax, edx;
    __asm__ volatile(".byte 0x0f, 0x01, 0xd0" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}
#endif

typedef struct {
    const char *name;
    unsigned int leaf; /* 1, 7 (subleaf 0) or 0x80000001 */
    char reg;         /* 'b', 'c' or 'd' */
    int bit;
} feature_bit;

/* CPUID bits, named as in Linux's /proc/cpuinfo (abm = LZCNT, bmi1 = BMI). */
static const feature_bit FEATURES[] = {
    {"sse2", 1, 'd', 26},
    {"sse3", 1, 'c', 0},
    {"ssse3", 1, 'c', 9},
    {"fma", 1, 'c', 12},
    {"cx16", 1, 'c', 13},
    {"sse4_1", 1, 'c', 19},
    {"sse4_2", 1, 'c', 20},
    {"movbe", 1, 'c', 22},
    {"popcnt", 1, 'c', 23},
    {"osxsave", 1, 'c', 27},
    {"avx", 1, 'c', 28},
    {"f16c", 1, 'c', 29},
    {"bmi1", 7, 'b', 3},
    {"avx2", 7, 'b', 5},
    {"bmi2", 7, 'b', 8},
    {"avx512f", 7, 'b', 16},
    {"avx512dq", 7, 'b', 17},
    {"avx512ifma", 7, 'b', 21},
    {"avx512cd", 7, 'b', 28},
    {"avx512bw", 7, 'b', 30},
    {"avx512vl", 7, 'b', 31},
    {"avx512vbmi", 7, 'c', 1},
    {"avx512_vnni", 7, 'c', 11},
    {"abm", 0x80000001u, 'c', 5},
};

#define XCR0_SSE_AVX 0x06ULL      /* bits 1 (xmm) and 2 (upper ymm) */
#define XCR0_AVX512 0xE0ULL       /* bits 5 (opmask), 6 (upper zmm0-15), 7 (zmm16-31) */

static PyObject *
cpu_features(PyObject *self, PyObject *unused)
{
    unsigned int r1[4] = {0}, r7[4] = {0}, rx[4] = {0};  /* eax, ebx, ecx, edx */
    int os_avx = 0, os_avx512 = 0;
#ifdef SWIFTCNN_X86
    unsigned int max_leaf = __get_cpuid_max(0, NULL);
    if (max_leaf >= 1)
        __cpuid_count(1, 0, r1[0], r1[1], r1[2], r1[3]);
    if (max_leaf >= 7)
        __cpuid_count(7, 0, r7[0], r7[1], r7[2], r7[3]);
    if (__get_cpuid_max(0x80000000u, NULL) >= 0x80000001u)
        __cpuid_count(0x80000001u, 0, rx[0], rx[1], rx[2], rx[3]);
    if (r1[2] & (1u << 27)) {  /* OSXSAVE: XGETBV is available */
        unsigned long long xcr0 = read_xcr0();
        os_avx = (xcr0 & XCR0_SSE_AVX) == XCR0_SSE_AVX;
        os_avx512 = os_avx && (xcr0 & XCR0_AVX512) == XCR0_AVX512;
    }
#endif
    PyObject *out = PyDict_New();
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof FEATURES / sizeof FEATURES[0]; i++) {
        const feature_bit *f = &FEATURES[i];
        const unsigned int *regs = f->leaf == 1 ? r1 : f->leaf == 7 ? r7 : rx;
        unsigned int value = f->reg == 'b' ? regs[1] : f->reg == 'c' ? regs[2] : regs[3];
        if (PyDict_SetItemString(out, f->name, (value >> f->bit) & 1u ? Py_True : Py_False) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    if (PyDict_SetItemString(out, "os_avx", os_avx ? Py_True : Py_False) < 0 ||
        PyDict_SetItemString(out, "os_avx512", os_avx512 ? Py_True : Py_False) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

static PyObject *
cpu_vendor(PyObject *self, PyObject *unused)
{
    char vendor[13] = {0};
#ifdef SWIFTCNN_X86
    unsigned int a, b, c, d;
    if (__get_cpuid(0, &a, &b, &c, &d)) {  /* the 12 characters are in EBX, EDX, ECX */
        memcpy(vendor, &b, 4);
        memcpy(vendor + 4, &d, 4);
        memcpy(vendor + 8, &c, 4);
    }
#endif
    return PyUnicode_DecodeASCII(vendor, (Py_ssize_t)strlen(vendor), "replace");
}

static PyObject *
cpu_brand(PyObject *self, PyObject *unused)
{
    char brand[49] = {0};
#ifdef SWIFTCNN_X86
    if (__get_cpuid_max(0x80000000u, NULL) >= 0x80000004u) {
        for (unsigned int i = 0; i < 3; i++) {  /* 16 characters in each of leaves 0x80000002-4 */
            unsigned int r[4];
            __cpuid(0x80000002u + i, r[0], r[1], r[2], r[3]);
            memcpy(brand + 16 * i, r, 16);
        }
    }
#endif
    /* Brand strings are padded with spaces (and NULs); the caller strips. */
    return PyUnicode_DecodeASCII(brand, (Py_ssize_t)strlen(brand), "replace");
}

static PyMethodDef cpu_methods[] = {
    {"features", cpu_features, METH_NOARGS,
     "features() -> dict[str, bool]: CPUID feature bits (named as in /proc/cpuinfo) and whether the\n"
     "OS enabled the AVX ('os_avx') and AVX-512 ('os_avx512') register states (XCR0)."},
    {"vendor", cpu_vendor, METH_NOARGS, "vendor() -> str: the CPUID vendor string ('' if not x86)."},
    {"brand", cpu_brand, METH_NOARGS, "brand() -> str: the CPUID brand string ('' if not x86 or absent)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef cpu_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "swiftcnn._cpu",
    .m_doc = "CPUID and XGETBV: which instruction-set levels of the Swift core this machine runs.",
    .m_size = 0,
    .m_methods = cpu_methods,
};

PyMODINIT_FUNC
PyInit__cpu(void)
{
    return PyModuleDef_Init(&cpu_module);
}
