/// The one error type of SwiftCNN. Every public function and initializer that takes user input
/// validates it and throws this instead of trapping; the C ABI maps `kind` to a status code and the
/// Python extension maps that to the exception API.md names.
public struct SwiftCNNError: Error, CustomStringConvertible, Sendable {
    /// What went wrong, in the categories the Python API distinguishes.
    public enum Kind: Int32, Sendable {
        /// A wrong shape, size or value (Python `ValueError`).
        case value = 1
        /// A wrong dtype or kind of argument (Python `TypeError`).
        case type = 2
        /// A size whose arithmetic overflows Int (Python `OverflowError`).
        case overflow = 3
        /// An allocation that failed (Python `MemoryError`).
        case memory = 4
        /// Misuse of state: backward before forward, a model busy in another thread (Python `RuntimeError`).
        case runtime = 5
    }

    public let kind: Kind
    /// A message that names the argument, what was expected and what was given.
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }

    @inlinable public static func value(_ message: String) -> SwiftCNNError { SwiftCNNError(.value, message) }
    @inlinable public static func type(_ message: String) -> SwiftCNNError { SwiftCNNError(.type, message) }
    @inlinable public static func overflow(_ message: String) -> SwiftCNNError { SwiftCNNError(.overflow, message) }
    @inlinable public static func memory(_ message: String) -> SwiftCNNError { SwiftCNNError(.memory, message) }
    @inlinable public static func runtime(_ message: String) -> SwiftCNNError { SwiftCNNError(.runtime, message) }
}

extension SwiftCNNError {
    /// The Swift argument labels that the layer and optimizer initializers' messages name, with
    /// the Python (PyTorch) argument names they stand for. Swift users read `inChannels`, Python
    /// users `in_channels`: the C ABI passes its errors through `withPythonArgumentNames()`.
    @_spi(Engine) public static let pythonArgumentNames: [(swift: String, python: String)] = [
        ("inChannels", "in_channels"), ("outChannels", "out_channels"), ("kernelSize", "kernel_size"),
        ("inFeatures", "in_features"), ("outFeatures", "out_features"), ("numFeatures", "num_features"),
        ("outputSize", "output_size"), ("learningRate", "lr"), ("weightDecay", "weight_decay"),
        ("epsilon", "eps"),
    ]

    /// This error with the Swift argument labels in its message replaced by the Python names.
    @_spi(Engine) public func withPythonArgumentNames() -> SwiftCNNError {
        var text = message
        for (swift, python) in SwiftCNNError.pythonArgumentNames where text.contains(swift) {
            text = text.replacing(swift, with: python)
        }
        return SwiftCNNError(kind, text)
    }
}

/// Formats a shape the way NumPy prints it: `(2, 3)`, `(5,)`, `()`.
@_spi(Engine) public func describeShape(_ shape: [Int]) -> String {
    if shape.count == 1 { return "(\(shape[0]),)" }
    return "(" + shape.map(String.init).joined(separator: ", ") + ")"
}

/// The product of `dims`, or `SwiftCNNError.overflow` naming `what` if it does not fit in Int.
/// Negative dims are a value error: sizes come from users.
///
/// `what` (like the message arguments of `checkedMultiply` / `checkedAdd`) is an autoclosure: the
/// callers pass interpolations such as `"\(op): \(name)"`, and building those eagerly cost more than
/// the whole check on the hot path of a small functional call. They are built only when throwing.
@_spi(Engine) @inlinable
public func checkedElementCount(_ dims: [Int], what: @autoclosure () -> String) throws -> Int {
    var product = 1
    for d in dims {
        guard d >= 0 else {
            throw SwiftCNNError.value("\(what()): sizes must be >= 0, got shape \(describeShape(dims))")
        }
        let (p, overflow) = product.multipliedReportingOverflow(by: d)
        guard !overflow else {
            throw SwiftCNNError.overflow("\(what()): the element count of shape \(describeShape(dims)) overflows a 64-bit integer")
        }
        product = p
    }
    return product
}

/// `a * b`, or an overflow error naming `what`.
@_spi(Engine) @inlinable
public func checkedMultiply(_ a: Int, _ b: Int, what: @autoclosure () -> String) throws -> Int {
    let (p, overflow) = a.multipliedReportingOverflow(by: b)
    guard !overflow else { throw SwiftCNNError.overflow("\(what()): \(a) * \(b) overflows a 64-bit integer") }
    return p
}

/// `a + b`, or an overflow error naming `what`.
@inlinable
func checkedAdd(_ a: Int, _ b: Int, what: @autoclosure () -> String) throws -> Int {
    let (s, overflow) = a.addingReportingOverflow(b)
    guard !overflow else { throw SwiftCNNError.overflow("\(what()): \(a) + \(b) overflows a 64-bit integer") }
    return s
}
