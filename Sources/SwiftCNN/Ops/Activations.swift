// Elementwise activations: sigmoid and ReLU, each a forward/backward pair.
//
// Pointer level: no validation, `count` elements, `y` may be `x` (in place) and `gradX` may be
// `gradOut`. Each element is read before it is written, so exact aliasing is safe. Large tensors
// are split into contiguous chunks over the worker threads; each element is computed by one thread
// with the same formula, so results do not depend on the thread count.
// Tensor level: shapes checked, errors name the Python arguments.

// MARK: - Sigmoid

/// y = sigmoid(x) = 1 / (1 + e^-x), elementwise; x (count), y (count), `y` may be `x`.
///
/// Evaluated as 1 / (1 + e) for x >= 0 and e / (1 + e) for x < 0, with e = e^-|x| in (0, 1]: the
/// exponent is never positive, so nothing overflows for any |x| (x = -1e4 gives 0, not 0/inf), and for
/// very negative x the result keeps full relative precision instead of underflowing through 1 - tiny.
/// NaN propagates.
@_spi(Engine) @inlinable
public func sigmoidForward<T: CNNScalar>(count: Int, x: UnsafePointer<T>, y: UnsafeMutablePointer<T>) {
    // Float takes the 16-lane path: scalar expf (a libm call per element) was ~15-20% of the lecture
    // network's time. Double keeps libm's exp (its gradient checks want ~1e-7 relative accuracy).
    // The type test is resolved at compile time in each specialization.
    if T.self == Float.self {
        let xf = UnsafeRawPointer(x).assumingMemoryBound(to: Float.self)
        let yf = UnsafeMutableRawPointer(y).assumingMemoryBound(to: Float.self)
        // 16 lanes on AVX2 too: an 8-lane form (one register per value) measured 16% slower on the
        // AVX2 EPYC (the two independent halves of each 16-lane operation hide the latency of the
        // exp polynomial's dependent chain).
        forEachChunk(count: count, costPerElement: 2) { range in sigmoidForwardFloat16(range, x: xf, y: yf) }
        return
    }
    forEachChunk(count: count, costPerElement: 16) { range in
        for i in range { y[i] = stableSigmoid(x[i]) }
    }
}

/// Float sigmoid over `range`, 16 lanes at a time, with `expNegativeFloat16` for e^-|x|.
///
/// Each element's result depends only on that element (the ragged tail goes through the same vector
/// code via a padded copy; out-of-range lanes are patched per lane), so chunking and thread count
/// never change a result. Lanes with |x| > 80 or NaN use the scalar `stableSigmoid`, which keeps the
/// deep-tail values (down to denormals) and NaN propagation exactly as before.
@inlinable
func sigmoidForwardFloat16(_ range: Range<Int>, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
    typealias V = SIMD16<Float>
    @inline(__always) func block(_ v: V) -> V {
        let m = v.replacing(with: -v, where: v .< 0)                  // |x| (NaN stays NaN)
        let safe = m .<= 80                                            // false for NaN too
        let e = expNegativeFloat16(-m.replacing(with: 0, where: .!safe))
        let d = 1 / (1 + e)
        // x >= 0: 1/(1+e); x < 0: e/(1+e), taken as e * (1/(1+e)) to share the one division.
        var r = d.replacing(with: e * d, where: v .< 0)
        if any(.!safe) {
            for l in 0..<16 where !safe[l] { r[l] = stableSigmoid(v[l]) }
        }
        return r
    }
    var i = range.lowerBound
    while i + 16 <= range.upperBound {
        let v = UnsafeRawPointer(x + i).loadUnaligned(as: V.self)
        UnsafeMutableRawPointer(y + i).storeBytes(of: block(v), as: V.self)
        i += 16
    }
    let rest = range.upperBound - i
    if rest > 0 {
        var v = V(repeating: 0)
        for l in 0..<rest { v[l] = x[i + l] }
        let r = block(v)
        for l in 0..<rest { y[i + l] = r[l] }
    }
}

/// e^t for 16 lanes with -80 <= t <= 0 (callers guarantee the range; no special cases inside).
///
/// Cephes' expf scheme: t = n ln2 + r with n = round(t / ln2) and |r| <= ln2/2 (ln2 split in a
/// high part exact in Float and a low part, so n * ln2_hi is exact), e^r = 1 + r + r^2 p(r) with
/// Cephes' degree-5 minimax p, then the 2^n scaling built directly in the exponent bits (n >= -116,
/// so 2^n is a normal Float). Measured: sigmoid within 3.5 ulp of the float64 value over [-80, 80],
/// well inside the Float-vs-Double tolerance.
@inlinable @inline(__always)
func expNegativeFloat16(_ t: SIMD16<Float>) -> SIMD16<Float> {
    typealias V = SIMD16<Float>
    // n = round(t / ln2) by the 1.5 * 2^23 trick: adding it leaves n in the low mantissa bits of
    // `shifted` (round-to-nearest-even by the addition itself). SIMD16<Int32>(floats) and .rounded()
    // compile to generic per-lane library calls, which made this slower than scalar expf.
    let magic = V(repeating: 12582912)
    let shifted = multiplyAdd(t, V(repeating: 1.44269504088896341), magic)
    let n = shifted - magic
    var r = multiplyAdd(n, V(repeating: -0.693359375), t)
    r = multiplyAdd(n, V(repeating: 2.12194440e-4), r)
    var p = V(repeating: 1.9875691500e-4)
    p = multiplyAdd(p, r, V(repeating: 1.3981999507e-3))
    p = multiplyAdd(p, r, V(repeating: 8.3334519073e-3))
    p = multiplyAdd(p, r, V(repeating: 4.1665795894e-2))
    p = multiplyAdd(p, r, V(repeating: 1.6666665459e-1))
    p = multiplyAdd(p, r, V(repeating: 5.0000001201e-1))
    p = multiplyAdd(p, r * r, r + 1)                                   // 1 + r + r^2 * p
    // bits(shifted) = 0x4B400000 + n, so 2^n has the bits (bits(shifted) - 0x4B400000 + 127) << 23.
    let bits = (unsafeBitCast(shifted, to: SIMD16<Int32>.self) &- (0x4B40_0000 - 127)) &<< 23
    return p * unsafeBitCast(bits, to: V.self)
}

/// gradX = gradOut * y * (1 - y), elementwise, where y = sigmoid(x) is the forward OUTPUT.
///
/// The lecture's identity sigma'(x) = sigma(x) (1 - sigma(x)): the derivative needs only the output,
/// so the layer keeps y, not x. `gradX` may be `gradOut`.
@_spi(Engine) @inlinable
public func sigmoidBackward<T: CNNScalar>(count: Int, gradOut: UnsafePointer<T>, y: UnsafePointer<T>,
                                          gradX: UnsafeMutablePointer<T>) {
    forEachChunk(count: count, costPerElement: 2) { range in
        var i = range.lowerBound
        if T.self == Float.self {
            // 8 lanes (one AVX2 register): the generic loop compiled to scalar code (the compiler
            // cannot rule out partial overlap of gradX with y and gradOut), ~3% of the lecture
            // network's training step. Lane by lane the same three roundings, so the same bits.
            typealias V = SIMD8<Float>
            let g = UnsafeRawPointer(gradOut), ys = UnsafeRawPointer(y), dst = UnsafeMutableRawPointer(gradX)
            let one = V(repeating: 1)
            while i + 8 <= range.upperBound {
                let yv = ys.loadUnaligned(fromByteOffset: i * 4, as: V.self)
                let gv = g.loadUnaligned(fromByteOffset: i * 4, as: V.self)
                dst.storeBytes(of: gv * (yv * (one - yv)), toByteOffset: i * 4, as: V.self)
                i += 8
            }
        }
        while i < range.upperBound {
            let yi = y[i]
            gradX[i] = gradOut[i] * (yi * (1 - yi))
            i += 1
        }
    }
}

/// One stable sigmoid (see `sigmoidForward`).
@inlinable @inline(__always)
func stableSigmoid<T: CNNScalar>(_ x: T) -> T {
    let e = T.exp(-x.magnitude)
    return x >= 0 ? 1 / (1 + e) : e / (1 + e)
}

// MARK: - ReLU

/// y = max(x, 0), elementwise; `y` may be `x`. NaN propagates (as PyTorch's relu).
@_spi(Engine) @inlinable
public func reluForward<T: CNNScalar>(count: Int, x: UnsafePointer<T>, y: UnsafeMutablePointer<T>) {
    forEachChunk(count: count, costPerElement: 1) { range in
        var i = range.lowerBound
        if T.self == Float.self {
            // Concrete 16-lane selects: the generic scalar loop may compile to a branch per element.
            let src = UnsafeRawPointer(x), dst = UnsafeMutableRawPointer(y), zero = SIMD16<Float>(repeating: 0)
            while i + 16 <= range.upperBound {
                let v = src.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
                dst.storeBytes(of: v.replacing(with: zero, where: v .< zero), toByteOffset: i * 4, as: SIMD16<Float>.self)
                i += 16
            }
        }
        while i < range.upperBound {
            let xi = x[i]
            y[i] = xi < 0 ? 0 : xi
            i += 1
        }
    }
}

/// gradX = gradOut where x > 0, else 0; x is the forward INPUT. `gradX` may be `gradOut`.
///
/// At the kink x = 0 the subgradient 0 is used, as PyTorch does.
@_spi(Engine) @inlinable
public func reluBackward<T: CNNScalar>(count: Int, gradOut: UnsafePointer<T>, x: UnsafePointer<T>,
                                       gradX: UnsafeMutablePointer<T>) {
    forEachChunk(count: count, costPerElement: 1) { range in
        var i = range.lowerBound
        if T.self == Float.self {
            let g = UnsafeRawPointer(gradOut), xs = UnsafeRawPointer(x), dst = UnsafeMutableRawPointer(gradX)
            let zero = SIMD16<Float>(repeating: 0)
            while i + 16 <= range.upperBound {
                let v = xs.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
                let gv = g.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
                dst.storeBytes(of: zero.replacing(with: gv, where: v .> zero), toByteOffset: i * 4, as: SIMD16<Float>.self)
                i += 16
            }
        }
        while i < range.upperBound { gradX[i] = x[i] > 0 ? gradOut[i] : 0; i += 1 }
    }
}

/// Runs `body` on contiguous chunks covering 0..<count, in parallel when count * costPerElement
/// is worth several threads (see `parallelChunks`).
@inlinable
func forEachChunk(count: Int, costPerElement: Int, _ body: (Range<Int>) -> Void) {
    let (work, overflow) = count.multipliedReportingOverflow(by: costPerElement)
    let chunks = parallelChunks(work: overflow ? Int.max : work)
    if chunks == 1 { return body(0..<count) }
    parallelFor(chunks) { chunk in body(chunkRange(chunk, of: chunks, total: count)) }
}

// MARK: - Fused into a convolution's output

/// An activation applied by a convolution to its own output (`Sequential` fuses Conv2d + ReLU or
/// Conv2d + Sigmoid this way): each image's output is activated right after it is computed, while
/// it is in cache, instead of in a separate pass over the whole batch.
@usableFromInline
enum ConvEpilogue: Sendable {
    case none, relu, sigmoid
}

/// y = activation(y) in place, for `count` elements (serial for a cache-sized slice of one image;
/// the same formulas as `reluForward` / `sigmoidForward`, so fused and separate layers agree
/// exactly). Not inlinable (it calls the C ABI's SPI kernels), so pre-specialized.
@usableFromInline @_specialize(where T == Float) @_specialize(where T == Double)
func applyEpilogue<T: CNNScalar>(_ epilogue: ConvEpilogue, _ y: UnsafeMutablePointer<T>, count: Int) {
    switch epilogue {
    case .none:
        return
    case .relu:
        // 16 lanes with a select: the scalar loop compiled to a branch per element (store zero if
        // negative), mispredicted half the time on a layer's outputs.
        // (Concrete SIMD16<Float> with a vector operand: the generic form, and a scalar `with:`,
        // compiled to a loop over the lanes.)
        var i = 0
        if T.self == Float.self {
            let raw = UnsafeMutableRawPointer(y), zero = SIMD16<Float>(repeating: 0)
            while i + 16 <= count {
                let v = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
                raw.storeBytes(of: v.replacing(with: zero, where: v .< zero), toByteOffset: i * 4, as: SIMD16<Float>.self)
                i += 16
            }
        }
        while i < count { let v = y[i]; y[i] = v < 0 ? 0 : v; i += 1 }
    case .sigmoid:
        sigmoidForward(count: count, x: UnsafePointer(y), y: y)
    }
}

/// `applyEpilogue` over a whole batch's output, split over the threads like the activations.
@usableFromInline @_specialize(where T == Float) @_specialize(where T == Double)
func applyEpilogueInParallel<T: CNNScalar>(_ epilogue: ConvEpilogue, _ y: UnsafeMutablePointer<T>, count: Int) {
    switch epilogue {
    case .none: return
    case .relu: reluForward(count: count, x: UnsafePointer(y), y: y)
    case .sigmoid: sigmoidForward(count: count, x: UnsafePointer(y), y: y)
    }
}

// MARK: - Tensor level

/// `sigmoid(x, out=None)`: a new tensor, or `out` (which may be `x` itself).
@_specialize(where T == Float) @_specialize(where T == Double)
public func sigmoid<T: CNNScalar>(_ x: Tensor<T>, into out: Tensor<T>? = nil) throws -> Tensor<T> {
    let y = try makeOutput(out, shape: x.shape, op: "sigmoid", inputs: [("x", x)], allowInPlace: true)
    sigmoidForward(count: x.count, x: x.pointer, y: y.pointer)
    return y
}

/// `sigmoid_backward(grad_out, y)`: grad_out * y * (1 - y); `y` is sigmoid's output.
@_specialize(where T == Float) @_specialize(where T == Double)
public func sigmoidBackward<T: CNNScalar>(gradOut: Tensor<T>, y: Tensor<T>, into out: Tensor<T>? = nil) throws -> Tensor<T> {
    try requireSameShape(op: "sigmoid_backward", "grad_out", gradOut, "y", y)
    let gradX = try makeOutput(out, shape: y.shape, op: "sigmoid_backward", inputs: [("grad_out", gradOut), ("y", y)],
                               allowInPlace: true)
    sigmoidBackward(count: y.count, gradOut: gradOut.pointer, y: y.pointer, gradX: gradX.pointer)
    return gradX
}

/// `relu(x, out=None)`: a new tensor, or `out` (which may be `x` itself).
@_specialize(where T == Float) @_specialize(where T == Double)
public func relu<T: CNNScalar>(_ x: Tensor<T>, into out: Tensor<T>? = nil) throws -> Tensor<T> {
    let y = try makeOutput(out, shape: x.shape, op: "relu", inputs: [("x", x)], allowInPlace: true)
    reluForward(count: x.count, x: x.pointer, y: y.pointer)
    return y
}

/// `relu_backward(grad_out, x)`: grad_out * (x > 0); `x` is relu's input.
@_specialize(where T == Float) @_specialize(where T == Double)
public func reluBackward<T: CNNScalar>(gradOut: Tensor<T>, x: Tensor<T>, into out: Tensor<T>? = nil) throws -> Tensor<T> {
    try requireSameShape(op: "relu_backward", "grad_out", gradOut, "x", x)
    let gradX = try makeOutput(out, shape: x.shape, op: "relu_backward", inputs: [("grad_out", gradOut), ("x", x)],
                               allowInPlace: true)
    reluBackward(count: x.count, gradOut: gradOut.pointer, x: x.pointer, gradX: gradX.pointer)
    return gradX
}

// MARK: - Shared argument checks of the Tensor-level ops in this file, Linear, Losses and Signal2D

/// `out` checked against the result's shape and against overlap with the inputs, or a new zero tensor.
///
/// Overlap is refused because the kernels read inputs after writing parts of the output. Only the
/// elementwise ops (`allowInPlace`) accept `out` identical to an input: same first element, same count.
@usableFromInline
func makeOutput<T: CNNScalar>(_ out: Tensor<T>?, shape: [Int], op: String, inputs: [(String, Tensor<T>)],
                              allowInPlace: Bool = false) throws -> Tensor<T> {
    guard let out else { return try Tensor<T>(zeros: shape) }
    guard out.shape == shape else {
        throw SwiftCNNError.value("\(op): out must have shape \(describeShape(shape)), got \(describeShape(out.shape))")
    }
    for (name, t) in inputs where memoryOverlaps(out, t) {
        let identical = out.pointer == t.pointer && out.count == t.count
        guard allowInPlace && identical else {
            throw SwiftCNNError.value("\(op): out must not overlap \(name)")
        }
    }
    return out
}

/// Whether two tensors share at least one element of memory.
@usableFromInline
func memoryOverlaps<T: CNNScalar>(_ a: Tensor<T>, _ b: Tensor<T>) -> Bool {
    guard a.count > 0, b.count > 0 else { return false }
    return a.pointer < b.pointer + b.count && b.pointer < a.pointer + a.count
}

/// Throws unless `a` and `b` have one shape: "op: grad_out must have the shape of y (2, 3), got (3, 2)".
@usableFromInline
func requireSameShape<T: CNNScalar>(op: String, _ aName: String, _ a: Tensor<T>, _ bName: String, _ b: Tensor<T>) throws {
    guard a.shape == b.shape else {
        throw SwiftCNNError.value(
            "\(op): \(aName) must have the shape of \(bName) \(describeShape(b.shape)), got \(describeShape(a.shape))")
    }
}
