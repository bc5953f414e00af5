import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport
@testable import SwiftCNNCAPI

// Helpers for the C ABI tests: calling an export with a message buffer, status names, raw buffers
// and handle wrappers. Seeded data and the generic checks come from SwiftCNNTestSupport.

let OK: Int32 = 0
let VALUE: Int32 = 1
let TYPE: Int32 = 2
let OVERFLOW: Int32 = 3
let MEMORY: Int32 = 4
let RUNTIME: Int32 = 5

let F32: Int32 = 0
let F64: Int32 = 1

/// The result of one export call: its status and the message it wrote (empty if none).
struct Outcome: CustomStringConvertible {
    let status: Int32
    let message: String
    var description: String { "status \(status): \(message)" }
}

/// Calls `body(msg, msgCap)` with a zeroed message buffer of `cap` bytes and decodes the message.
func call(cap: Int = 1024, _ body: (UnsafeMutablePointer<CChar>, Int64) -> Int32) -> Outcome {
    var buffer = [CChar](repeating: 0, count: max(cap, 1))
    let status = buffer.withUnsafeMutableBufferPointer { body($0.baseAddress!, Int64(cap)) }
    let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
    return Outcome(status: status, message: String(decoding: bytes, as: UTF8.self))
}

/// Asserts the exact status and that the message contains each of `contains` (case-sensitive).
func assertStatus(_ outcome: Outcome, _ expected: Int32, _ contains: String..., file: StaticString = #filePath,
                  line: UInt = #line) {
    XCTAssertEqual(outcome.status, expected, "unexpected status, message: \(outcome.message)", file: file, line: line)
    for part in contains {
        XCTAssertTrue(outcome.message.contains(part), "message \"\(outcome.message)\" does not contain \"\(part)\"",
                      file: file, line: line)
    }
    if expected != OK {
        XCTAssertFalse(outcome.message.isEmpty, "a failure must write a message", file: file, line: line)
    }
}

/// The C ABI tests' name for the shared seeded generator (SwiftCNNTestSupport's TestRNG).
typealias SeededRNG = TestRNG

extension TestRNG {
    init(_ seed: UInt64) { self.init(seed: seed) }
}

/// Int64 shape for the C calls.
func s64(_ shape: [Int]) -> [Int64] { shape.map(Int64.init) }

/// max|a - b| / max|b| (SwiftCNNTestSupport's relativeError), under the name these tests use.
func relErr<T: CNNScalar>(_ a: [T], _ b: [T]) -> Double { relativeError(a, b) }

func tol<T: CNNScalar>(_: T.Type) -> Double { T.self == Float.self ? 1e-5 : 1e-12 }

/// A retained layer handle released at deinit.
final class LayerRef {
    let raw: OpaquePointer
    init(_ raw: OpaquePointer) { self.raw = raw }
    deinit { scnn_layer_release(raw) }
}

func makeLayer(_ body: (UnsafeMutablePointer<OpaquePointer?>, UnsafeMutablePointer<CChar>, Int64) -> Int32,
               file: StaticString = #filePath, line: UInt = #line) -> LayerRef {
    var out: OpaquePointer? = nil
    let o = call { body(&out, $0, $1) }
    XCTAssertEqual(o.status, OK, o.message, file: file, line: line)
    return LayerRef(out!)
}

func conv(_ dtype: Int32, _ cin: Int, _ cout: Int, k: Int, stride: Int = 1, pad: Int = 0, dil: Int = 1,
          bias: Bool = true, seed: UInt64 = 1) -> LayerRef {
    let g: [Int64] = [Int64(k), Int64(k), Int64(stride), Int64(stride), Int64(pad), Int64(pad), Int64(dil), Int64(dil)]
    return makeLayer { scnn_conv2d_layer_create(dtype, Int64(cin), Int64(cout), g, bias, seed, $0, $1, $2) }
}

func linearLayer(_ dtype: Int32, _ i: Int, _ o: Int, bias: Bool = true, seed: UInt64 = 2) -> LayerRef {
    makeLayer { scnn_linear_layer_create(dtype, Int64(i), Int64(o), bias, seed, $0, $1, $2) }
}

func pool(_ dtype: Int32, max isMax: Bool = true, k: Int = 2, stride: Int? = nil, pad: Int = 0) -> LayerRef {
    let s = stride ?? k
    let g: [Int64] = [Int64(k), Int64(k), Int64(s), Int64(s), Int64(pad), Int64(pad)]
    return makeLayer { scnn_pool2d_layer_create(dtype, isMax ? 0 : 1, g, $0, $1, $2) }
}

func simple(_ dtype: Int32, _ kind: Int32) -> LayerRef {
    makeLayer { scnn_simple_layer_create(dtype, kind, $0, $1, $2) }
}

func sequential(_ dtype: Int32, _ layers: [LayerRef]) -> LayerRef {
    let raws: [OpaquePointer?] = layers.map { $0.raw }
    return makeLayer { scnn_sequential_create(dtype, raws, Int64(raws.count), $0, $1, $2) }
}

/// The lecture's network (Sigmoid, or ReLU with `relu`).
func lectureNetwork(_ dtype: Int32, relu: Bool = false, seed: UInt64 = 7) -> LayerRef {
    let act: Int32 = relu ? 1 : 0
    return sequential(dtype, [
        conv(dtype, 1, 6, k: 5, pad: 2, seed: seed), simple(dtype, act), pool(dtype),
        conv(dtype, 6, 16, k: 5, seed: seed + 1), simple(dtype, act), pool(dtype),
        simple(dtype, 2),
        linearLayer(dtype, 400, 120, seed: seed + 2), simple(dtype, act),
        linearLayer(dtype, 120, 84, seed: seed + 3), simple(dtype, act),
        linearLayer(dtype, 84, 10, seed: seed + 4),
    ])
}

/// (name, data, grad, shape) of every parameter of a layer handle.
struct ParamView {
    let name: String
    let data: UnsafeMutableRawPointer
    let grad: UnsafeMutableRawPointer
    let shape: [Int]
    var count: Int { shape.reduce(1, *) }
    func values<T: CNNScalar>(_: T.Type) -> [T] { Array(UnsafeBufferPointer(start: data.assumingMemoryBound(to: T.self), count: count)) }
    func grads<T: CNNScalar>(_: T.Type) -> [T] { Array(UnsafeBufferPointer(start: grad.assumingMemoryBound(to: T.self), count: count)) }
}

func parameters(_ layer: LayerRef, file: StaticString = #filePath, line: UInt = #line) -> [ParamView] {
    let n = scnn_layer_parameter_count(layer.raw)
    var result: [ParamView] = []
    for i in 0..<n {
        var data: UnsafeMutableRawPointer? = nil, grad: UnsafeMutableRawPointer? = nil
        var shape = [Int64](repeating: -1, count: 4)
        var ndim: Int64 = -1
        var name = [CChar](repeating: 0, count: 64)
        let o = call { scnn_layer_parameter(layer.raw, i, &data, &grad, &shape, &ndim, &name, 64, $0, $1) }
        XCTAssertEqual(o.status, OK, o.message, file: file, line: line)
        let nameBytes = name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        result.append(ParamView(name: String(decoding: nameBytes, as: UTF8.self), data: data!, grad: grad!,
                                shape: shape.prefix(Int(ndim)).map { Int($0) }))
    }
    return result
}

/// Every parameter's data and grad values (for "unchanged" checks).
func snapshot<T: CNNScalar>(_ layer: LayerRef, _: T.Type) -> [[T]] {
    parameters(layer).flatMap { [$0.values(T.self), $0.grads(T.self)] }
}

/// Runs forward through a handle, returning the output.
func forward<T: CNNScalar>(_ layer: LayerRef, _ x: Tensor<T>, file: StaticString = #filePath, line: UInt = #line) -> Tensor<T> {
    var outShape = [Int64](repeating: 0, count: 8)
    var ndim: Int64 = 0
    let xs = s64(x.shape)
    var o = call { scnn_layer_output_shape(layer.raw, xs, Int64(xs.count), &outShape, &ndim, $0, $1) }
    XCTAssertEqual(o.status, OK, o.message, file: file, line: line)
    let y = try! Tensor<T>(zeros: outShape.prefix(Int(ndim)).map { Int($0) })
    o = call { scnn_layer_forward(layer.raw, x.pointer, xs, Int64(xs.count), y.pointer, $0, $1) }
    XCTAssertEqual(o.status, OK, o.message, file: file, line: line)
    return y
}

/// Runs backward through a handle, returning grad_x.
func backward<T: CNNScalar>(_ layer: LayerRef, _ g: Tensor<T>, file: StaticString = #filePath, line: UInt = #line) -> Tensor<T> {
    var inShape = [Int64](repeating: 0, count: 8)
    var ndim: Int64 = 0
    var o = call { scnn_layer_input_shape(layer.raw, &inShape, &ndim, $0, $1) }
    XCTAssertEqual(o.status, OK, o.message, file: file, line: line)
    let gx = try! Tensor<T>(zeros: inShape.prefix(Int(ndim)).map { Int($0) })
    let gs = s64(g.shape)
    o = call { scnn_layer_backward(layer.raw, g.pointer, gs, Int64(gs.count), gx.pointer, inShape, ndim, $0, $1) }
    XCTAssertEqual(o.status, OK, o.message, file: file, line: line)
    return gx
}
