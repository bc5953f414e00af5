// The one shape of every functional op of swiftcnn.h (`scnn_op_fn`): tensor operands, integer and
// real settings, results, and a flag that says whether to compute or only answer the shapes.
//
// An op is written once, as a body that validates (allocating nothing), declares its results and,
// when `call.compute` is true, runs the core:
//
//     @_cdecl("scnn_relu") public func scnn_relu(_ c: UnsafeRawPointer?) -> Int32 {
//         runOp("relu", expect: OpArity(inputs: 1, outputs: 1), c) { call in
//             let x = call.input(0, "x")
//             let dtype = try call.floatType(x)
//             try call.output(0, "out").declare(like: x, dtype: OperandType(dtype))
//             guard call.compute else { return }
//             ...
//         }
//     }
//
// The shape query and the computation are the same code path; there is no second validator.

@_spi(Engine) import SwiftCNN

/// How many operands and settings an op takes.
struct OpArity {
    var inputs = 0, ints = 0, reals = 0, outputs = 0
}

/// One call of a functional op, over the caller's arrays (valid for the call only).
struct OpCall {
    let op: StaticString
    let inputs: UnsafeRawPointer?
    let ints: UnsafePointer<Int64>?
    let reals: UnsafePointer<Double>?
    let outputs: UnsafeMutableRawPointer?
    let compute: Bool

    /// Input `i` (i < the op's input count, checked by runOp).
    @inline(__always) func input(_ i: Int, _ name: StaticString) -> Operand {
        Operand(base: inputs! + 80 * i, name: name, op: op)
    }

    /// Result `i`.
    @inline(__always) func output(_ i: Int, _ name: StaticString) -> ResultOperand {
        ResultOperand(base: outputs! + 80 * i, name: name, op: op, compute: compute)
    }

    /// Integer setting `i`.
    @inline(__always) func int(_ i: Int) -> Int { Int(truncatingIfNeeded: ints![i]) }

    /// The (h, w) pair at settings i, i+1.
    @inline(__always) func pair(_ i: Int) -> (Int, Int) { (int(i), int(i + 1)) }

    /// The optional pair at settings i (given: 0 or 1), i+1, i+2: nil when not given.
    @inline(__always) func optionalPair(_ i: Int) -> (Int, Int)? { int(i) == 0 ? nil : (int(i + 1), int(i + 2)) }

    /// Real setting `i`.
    @inline(__always) func real(_ i: Int) -> Double { reals![i] }

    /// The float dtype of `first`, the op's dtype: every other float operand must share it.
    func floatType(_ first: Operand) throws -> DType {
        let t = try first.dtype()
        guard let f = t.float else {
            throw SwiftCNNError.type("\(op): \(first.name) has dtype \(t.name); expected float32 or float64")
        }
        return f
    }

    /// Value error if result `out` overlaps input `a`, `b` or `c` (absent ones skipped). With
    /// `inPlace`, it may coincide exactly with an input (the elementwise ops: each element is read
    /// before it is written). Fixed arity rather than arrays: this runs on every call and must not
    /// allocate.
    @inline(__always)
    func checkDisjoint(_ out: Operand, from a: Operand, _ b: Operand? = nil, _ c: Operand? = nil,
                       inPlace: Bool = false) throws {
        let r = out.region()
        for input in [a, b, c] {   // a literal of optionals the optimizer keeps on the stack
            guard let input, !input.isAbsent else { continue }
            let other = input.region()
            guard r.overlaps(other) else { continue }
            if inPlace && r.identical(other) { continue }
            if inPlace {
                throw SwiftCNNError.value(
                    "\(op): \(out.name) must be \(input.name) itself or not share memory with it; it partially overlaps")
            }
            throw SwiftCNNError.value("\(op): \(out.name) must not share memory with \(input.name)")
        }
    }

    /// The same for the three results of a backward op: none may overlap an input or another.
    func checkDisjoint(results r0: Operand, _ r1: Operand, _ r2: Operand, from a: Operand, _ b: Operand, _ c: Operand)
        throws {
        try checkDisjoint(r0, from: a, b, c)
        try checkDisjoint(r1, from: a, b, c)
        try checkDisjoint(r2, from: a, b, c)
        try checkDisjoint(r0, from: r1, r2)
        try checkDisjoint(r1, from: r2)
    }
}

/// The fields of `scnn_op_call` (swiftcnn.h), by the byte offsets its `_Static_assert`s pin.
enum OpCallLayout {
    static let inputs = 0, ints = 8, reals = 16, outputs = 24, msg = 32, msgCap = 40
    static let nInputs = 48, nInts = 52, nReals = 56, nOutputs = 60, compute = 64
}

/// Runs one functional op on the caller's `scnn_op_call` `c`: checks the operand and setting
/// counts, then `body`, and turns a thrown `SwiftCNNError` into the status and message. A NULL
/// call (no message buffer to write to) is a value error without a message.
@inline(__always)
func runOp(_ op: StaticString, expect: OpArity, _ c: UnsafeRawPointer?, _ body: (OpCall) throws -> Void) -> Int32 {
    guard let c else { return Status.valueError }
    typealias L = OpCallLayout
    let msg = c.load(fromByteOffset: L.msg, as: UnsafeMutablePointer<CChar>?.self)
    return withStatus(msg, c.load(fromByteOffset: L.msgCap, as: Int64.self)) {
        let inputs = c.load(fromByteOffset: L.inputs, as: UnsafeRawPointer?.self)
        let ints = c.load(fromByteOffset: L.ints, as: UnsafePointer<Int64>?.self)
        let reals = c.load(fromByteOffset: L.reals, as: UnsafePointer<Double>?.self)
        let outputs = c.load(fromByteOffset: L.outputs, as: UnsafeMutableRawPointer?.self)
        let nInputs = c.load(fromByteOffset: L.nInputs, as: Int32.self), nInts = c.load(fromByteOffset: L.nInts, as: Int32.self)
        let nReals = c.load(fromByteOffset: L.nReals, as: Int32.self)
        let nOutputs = c.load(fromByteOffset: L.nOutputs, as: Int32.self)
        guard nInputs == Int32(expect.inputs), nInts == Int32(expect.ints), nReals == Int32(expect.reals),
              nOutputs == Int32(expect.outputs) else {
            throw SwiftCNNError.value(
                "\(op): takes \(expect.inputs) inputs, \(expect.ints) ints, \(expect.reals) reals and \(expect.outputs) outputs; got \(nInputs), \(nInts), \(nReals) and \(nOutputs)")
        }
        guard expect.inputs == 0 || inputs != nil, expect.ints == 0 || ints != nil,
              expect.reals == 0 || reals != nil, expect.outputs == 0 || outputs != nil else {
            throw SwiftCNNError.value("\(op): an operand or settings array is NULL")
        }
        try body(OpCall(op: op, inputs: inputs, ints: ints, reals: reals, outputs: outputs,
                        compute: c.load(fromByteOffset: L.compute, as: Int32.self) != 0))
    }
}
