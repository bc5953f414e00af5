/// The one multiply-add of SwiftCNN's kernels.
///
/// Every `a * b + c` in a hot loop goes through `multiplyAdd`, so one compile-time switch decides
/// between a fused multiply-add (one rounding) and a separate multiply and add (two roundings):
///
/// - `-DSWIFTCNN_FMA` (set by setup.py together with `-target-cpu native`): `c.addingProduct(a, b)`,
///   which compiles to `vfmadd231ps/pd`. Without a target CPU that has FMA it would become a call to
///   `fmaf` per lane (~100x slower), which is why it is opt-in.
/// - otherwise: `a * b + c`. Swift never contracts this into an FMA by itself, so results are the
///   same on every machine.
///
/// Either way the result is deterministic for a given build.

/// `a * b + c`, lane-wise.
@inlinable @inline(__always)
func multiplyAdd<V: SIMD>(_ a: V, _ b: V, _ c: V) -> V where V.Scalar: FloatingPoint {
    #if SWIFTCNN_FMA
    return c.addingProduct(a, b)
    #else
    return a * b + c
    #endif
}

/// `a * b + c` for scalars.
@inlinable @inline(__always)
func multiplyAdd<T: FloatingPoint>(_ a: T, _ b: T, _ c: T) -> T {
    #if SWIFTCNN_FMA
    return c.addingProduct(a, b)
    #else
    return a * b + c
    #endif
}
