#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The element types SwiftCNN computes in: `Float` and `Double`.
///
/// Everything numeric in the core is generic over `CNNScalar` and `@inlinable`, so callers in other
/// modules (the C ABI) get code specialized for each type. The transcendental functions come from
/// the C math library because the core does not import Foundation.
///
/// `Codable` is not used by SwiftCNN: it is stated because `SIMDScalar` already implies it (its
/// `SIMD2Storage.Scalar == Self` constraint requires `Self: Codable`, since `SIMDStorage.Scalar`
/// is `Codable`), and a protocol that leaves such an implied conformance unstated gets a compiler
/// warning in every module that uses it. `Float` and `Double` are `Codable` in the standard library.
public protocol CNNScalar: BinaryFloatingPoint, SIMDScalar, Codable, Sendable, CustomStringConvertible
where Self.RawSignificand: FixedWidthInteger {
    /// e^x
    static func exp(_ x: Self) -> Self
    /// natural log
    static func log(_ x: Self) -> Self
    /// log(1 + x), accurate for small x
    static func log1p(_ x: Self) -> Self
    /// square root
    static func squareRoot(of x: Self) -> Self
    /// This type's tag in the C ABI and in error messages.
    static var dtype: DType { get }
}

/// The two element types, as the C ABI numbers them (`SCNN_FLOAT32`, `SCNN_FLOAT64`).
public enum DType: Int32, Sendable, CustomStringConvertible {
    case float32 = 0
    case float64 = 1

    public var description: String { self == .float32 ? "float32" : "float64" }
    /// Bytes per element.
    public var size: Int { self == .float32 ? 4 : 8 }
}

extension Float: CNNScalar {
    @inlinable @inline(__always) public static func exp(_ x: Float) -> Float { expf(x) }
    @inlinable @inline(__always) public static func log(_ x: Float) -> Float { logf(x) }
    @inlinable @inline(__always) public static func log1p(_ x: Float) -> Float { log1pf(x) }
    @inlinable @inline(__always) public static func squareRoot(of x: Float) -> Float { x.squareRoot() }
    public static var dtype: DType { .float32 }
}

extension Double: CNNScalar {
    @inlinable @inline(__always) public static func exp(_ x: Double) -> Double { libmExp(x) }
    @inlinable @inline(__always) public static func log(_ x: Double) -> Double { libmLog(x) }
    @inlinable @inline(__always) public static func log1p(_ x: Double) -> Double { libmLog1p(x) }
    @inlinable @inline(__always) public static func squareRoot(of x: Double) -> Double { x.squareRoot() }
    public static var dtype: DType { .float64 }
}

// The C library's double-precision functions, named so that Double's `exp`, `log` and `log1p`
// above can call them without a module-qualified name (Glibc.exp exists only on Linux; these
// resolve to Glibc, Musl or Darwin, whichever was imported at the top of this file).
@inlinable @inline(__always) func libmExp(_ x: Double) -> Double { exp(x) }
@inlinable @inline(__always) func libmLog(_ x: Double) -> Double { log(x) }
@inlinable @inline(__always) func libmLog1p(_ x: Double) -> Double { log1p(x) }
