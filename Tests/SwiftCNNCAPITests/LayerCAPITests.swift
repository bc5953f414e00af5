import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport
@testable import SwiftCNNCAPI

/// Layer and Sequential handles: creation, forward/backward against the functional exports,
/// parameters, rejections, reference counting and concurrent use.
final class LayerCAPITests: XCTestCase {

    func testCreateRejections() {
        var out: OpaquePointer? = nil
        let g8: [Int64] = [3, 3, 1, 1, 0, 0, 1, 1]
        assertStatus(call { scnn_conv2d_layer_create(5, 1, 2, g8, true, 0, &out, $0, $1) }, TYPE, "dtype")
        assertStatus(call { scnn_conv2d_layer_create(F32, 0, 2, g8, true, 0, &out, $0, $1) }, VALUE, "in_channels")
        assertStatus(call { scnn_conv2d_layer_create(F32, 1, -2, g8, true, 0, &out, $0, $1) }, VALUE, "out_channels")
        assertStatus(call { scnn_conv2d_layer_create(F32, 1, 2, nil, true, 0, &out, $0, $1) }, VALUE, "conv_layer_geometry")
        assertStatus(call { scnn_conv2d_layer_create(F32, 1, 2, [0, 3, 1, 1, 0, 0, 1, 1], true, 0, &out, $0, $1) }, VALUE, "kernel_size")
        assertStatus(call { scnn_conv2d_layer_create(F32, 1, 2, [3, 3, 0, 1, 0, 0, 1, 1], true, 0, &out, $0, $1) }, VALUE, "stride")
        assertStatus(call { scnn_conv2d_layer_create(F32, 1, 2, [3, 3, 1, 1, -1, 0, 1, 1], true, 0, &out, $0, $1) }, VALUE, "padding")
        assertStatus(call { scnn_conv2d_layer_create(F32, 1, 2, [3, 3, 1, 1, 0, 0, 1, 0], true, 0, &out, $0, $1) }, VALUE, "dilation")
        assertStatus(call { scnn_conv2d_layer_create(F32, 1 << 40, 1 << 40, g8, true, 0, &out, $0, $1) }, OVERFLOW)
        assertStatus(call { scnn_conv2d_layer_create(F32, 1, 2, g8, true, 0, nil, $0, $1) }, VALUE, "layer_out")
        assertStatus(call { scnn_linear_layer_create(F64, 0, 3, true, 0, &out, $0, $1) }, VALUE, "in_features")
        assertStatus(call { scnn_linear_layer_create(F64, 3, 0, true, 0, &out, $0, $1) }, VALUE, "out_features")
        assertStatus(call { scnn_linear_layer_create(F64, 1 << 40, 1 << 40, true, 0, &out, $0, $1) }, OVERFLOW)
        assertStatus(call { scnn_linear_layer_create(-1, 3, 3, true, 0, &out, $0, $1) }, TYPE)
        assertStatus(call { scnn_linear_layer_create(F64, 3, 3, true, 0, nil, $0, $1) }, VALUE, "layer_out")
        assertStatus(call { scnn_pool2d_layer_create(F32, 2, [2, 2, 2, 2, 0, 0], &out, $0, $1) }, VALUE, "pool_kind")
        assertStatus(call { scnn_pool2d_layer_create(F32, 0, [2, 2, 2, 2, 2, 0], &out, $0, $1) }, VALUE, "MaxPool2d", "padding")
        assertStatus(call { scnn_pool2d_layer_create(F32, 1, [0, 2, 2, 2, 0, 0], &out, $0, $1) }, VALUE, "AvgPool2d", "kernel_size")
        assertStatus(call { scnn_pool2d_layer_create(F32, 1, nil, &out, $0, $1) }, VALUE, "pool_geometry")
        assertStatus(call { scnn_simple_layer_create(F32, 3, &out, $0, $1) }, VALUE, "layer_kind")
        assertStatus(call { scnn_simple_layer_create(F32, -1, &out, $0, $1) }, VALUE, "layer_kind")
        assertStatus(call { scnn_simple_layer_create(9, 0, &out, $0, $1) }, TYPE, "dtype")
        assertStatus(call { scnn_simple_layer_create(F32, 0, nil, $0, $1) }, VALUE, "layer_out")
        XCTAssertNil(out, "a rejected create writes no handle")
    }

    func testNullHandles() {
        var y = [Float](repeating: 0, count: 4)
        var shape = [Int64](repeating: 0, count: 8)
        var ndim: Int64 = 0
        assertStatus(call { scnn_layer_forward(nil, y, [4], 1, &y, $0, $1) }, VALUE, "layer", "NULL")
        assertStatus(call { scnn_layer_backward(nil, y, [4], 1, &y, [4], 1, $0, $1) }, VALUE, "layer", "NULL")
        assertStatus(call { scnn_layer_output_shape(nil, [4], 1, &shape, &ndim, $0, $1) }, VALUE, "NULL")
        assertStatus(call { scnn_layer_input_shape(nil, &shape, &ndim, $0, $1) }, VALUE, "NULL")
        assertStatus(call { scnn_layer_zero_grad(nil, $0, $1) }, VALUE, "NULL")
        assertStatus(call { scnn_layer_parameter(nil, 0, nil, nil, nil, nil, nil, 0, $0, $1) }, VALUE, "NULL")
        XCTAssertEqual(scnn_layer_dtype(nil), -1)
        XCTAssertEqual(scnn_layer_parameter_count(nil), -1)
        scnn_layer_retain(nil)
        scnn_layer_release(nil)
        var out: OpaquePointer? = nil
        assertStatus(call { scnn_sequential_create(F32, [nil], 1, &out, $0, $1) }, VALUE, "layers[0]", "NULL")
        assertStatus(call { scnn_sequential_create(F32, nil, 2, &out, $0, $1) }, VALUE, "layers", "NULL")
        assertStatus(call { scnn_sequential_create(F32, nil, -1, &out, $0, $1) }, VALUE, "count")
        assertStatus(call { scnn_train_step_cross_entropy(nil, nil, y, [1, 4], 2, [0], 1, nil, nil, $0, $1) }, VALUE, "model", "NULL")
    }

    func testRetainRelease() {
        weak var weakHandle: LayerHandle?
        var out: OpaquePointer? = nil
        XCTAssertEqual(scnn_simple_layer_create(F64, 1, &out, nil, 0), OK)
        let raw = out!
        weakHandle = Unmanaged<LayerHandle>.fromOpaque(UnsafeRawPointer(raw)).takeUnretainedValue()
        XCTAssertNotNil(weakHandle)
        scnn_layer_retain(raw)
        scnn_layer_release(raw)
        XCTAssertNotNil(weakHandle)
        XCTAssertEqual(scnn_layer_dtype(raw), F64)
        scnn_layer_release(raw)
        XCTAssertNil(weakHandle, "the last release frees the handle")
    }

    func checkConvLayer<T: CNNScalar>(_: T.Type) throws {
        let dt: Int32 = T.self == Float.self ? F32 : F64
        let layer = conv(dt, 3, 4, k: 3, stride: 2, pad: 1, seed: 42)
        XCTAssertEqual(scnn_layer_dtype(layer.raw), dt)
        let params = parameters(layer)
        XCTAssertEqual(params.map(\.name), ["weight", "bias"])
        XCTAssertEqual(params.map(\.shape), [[4, 3, 3, 3], [4]])
        // Default init: U(-1/sqrt(27), 1/sqrt(27)), reproducible by seed, grads zero.
        let bound = 1 / Double(27).squareRoot()
        XCTAssertTrue(params[0].values(T.self).allSatisfy { abs(Double($0)) <= bound })
        XCTAssertTrue(params[0].grads(T.self).allSatisfy { $0 == 0 })
        let same = conv(dt, 3, 4, k: 3, stride: 2, pad: 1, seed: 42), other = conv(dt, 3, 4, k: 3, stride: 2, pad: 1, seed: 43)
        XCTAssertEqual(parameters(same)[0].values(T.self), params[0].values(T.self))
        XCTAssertNotEqual(parameters(other)[0].values(T.self), params[0].values(T.self))

        let x: Tensor<T> = randomTensor([2, 3, 7, 6], seed: 5)
        let w = try Tensor<T>(shape: params[0].shape, scalars: params[0].values(T.self))
        let b = try Tensor<T>(shape: [4], scalars: params[1].values(T.self))
        let expected = try conv2d(x, weight: w, bias: b, stride: (2, 2), padding: (1, 1))
        let y: Tensor<T> = forward(layer, x)
        XCTAssertEqual(y.shape, expected.shape)
        XCTAssertEqual(y.scalars, expected.scalars)

        // Input shape, then backward twice: parameter grads accumulate.
        var inShape = [Int64](repeating: 0, count: 8)
        var ndim: Int64 = 0
        assertStatus(call { scnn_layer_input_shape(layer.raw, &inShape, &ndim, $0, $1) }, OK)
        XCTAssertEqual(Array(inShape.prefix(Int(ndim))), [2, 3, 7, 6])
        let go: Tensor<T> = randomTensor(y.shape, seed: 6)
        let (ex, ew, eb) = try conv2dBackward(gradOut: go, x: x, weight: w, stride: (2, 2), padding: (1, 1))
        let gx: Tensor<T> = backward(layer, go)
        XCTAssertLessThan(relErr(gx.scalars, ex.scalars), tol(T.self))
        XCTAssertLessThan(relErr(params[0].grads(T.self), ew.scalars), tol(T.self))
        XCTAssertLessThan(relErr(params[1].grads(T.self), eb.scalars), tol(T.self))
        _ = backward(layer, go)
        XCTAssertLessThan(relErr(params[0].grads(T.self), ew.scalars.map { $0 * 2 }), tol(T.self) * 2)
        assertStatus(call { scnn_layer_zero_grad(layer.raw, $0, $1) }, OK)
        XCTAssertTrue(params[0].grads(T.self).allSatisfy { $0 == 0 })
        XCTAssertTrue(params[1].grads(T.self).allSatisfy { $0 == 0 })

        // Parameter memory is the layer's: writing through the pointer changes the next forward.
        params[1].data.assumingMemoryBound(to: T.self).update(repeating: 0, count: 4)
        let y2: Tensor<T> = forward(layer, x)
        let expected2 = try conv2d(x, weight: w, stride: (2, 2), padding: (1, 1))
        XCTAssertEqual(y2.scalars, expected2.scalars)
    }

    func testConvLayer() throws {
        try checkConvLayer(Float.self)
        try checkConvLayer(Double.self)
    }

    func testSimpleLayers() throws {
        let x: Tensor<Double> = randomTensor([2, 3, 4, 4], seed: 8, -2, 2)
        let s = simple(F64, 0), r = simple(F64, 1), f = simple(F64, 2)
        XCTAssertEqual(forward(s, x).scalars, try sigmoid(x).scalars)
        XCTAssertEqual(forward(r, x).scalars, try relu(x).scalars)
        let flat: Tensor<Double> = forward(f, x)
        XCTAssertEqual(flat.shape, [2, 48])
        XCTAssertEqual(flat.scalars, x.scalars)
        let gflat: Tensor<Double> = randomTensor([2, 48], seed: 9)
        let gx: Tensor<Double> = backward(f, gflat)
        XCTAssertEqual(gx.shape, [2, 3, 4, 4])
        XCTAssertEqual(gx.scalars, gflat.scalars)
        let mp = pool(F64, max: true, k: 2), ap = pool(F64, max: false, k: 3, stride: 1, pad: 1)
        XCTAssertEqual(forward(mp, x).scalars, try maxPool2d(x, kernelSize: (2, 2)).scalars)
        XCTAssertEqual(forward(ap, x).scalars, try avgPool2d(x, kernelSize: (3, 3), stride: (1, 1), padding: (1, 1)).scalars)
        XCTAssertEqual(scnn_layer_parameter_count(mp.raw), 0)
        XCTAssertEqual(scnn_layer_parameter_count(s.raw), 0)
        // Zero-element input with NULL data.
        var shape = [Int64](repeating: 0, count: 8)
        var ndim: Int64 = 0
        assertStatus(call { scnn_layer_output_shape(f.raw, [0, 3, 4], 3, &shape, &ndim, $0, $1) }, OK)
        XCTAssertEqual(Array(shape.prefix(Int(ndim))), [0, 12])
        assertStatus(call { scnn_layer_forward(f.raw, nil, [0, 3, 4], 3, nil, $0, $1) }, OK)
        assertStatus(call { scnn_layer_backward(f.raw, nil, [0, 12], 2, nil, [0, 3, 4], 3, $0, $1) }, OK)
    }

    func testLayerRejections() throws {
        let layer = conv(F32, 2, 3, k: 3, seed: 1)
        var shape = [Int64](repeating: 0, count: 8)
        var ndim: Int64 = 0
        var gx = [Float](repeating: 1, count: 2 * 2 * 5 * 5)
        let go = [Float](repeating: 1, count: 2 * 3 * 3 * 3)
        // Before any forward.
        assertStatus(call { scnn_layer_input_shape(layer.raw, &shape, &ndim, $0, $1) }, RUNTIME, "Conv2d", "before forward")
        assertStatus(call { scnn_layer_backward(layer.raw, go, [2, 3, 3, 3], 4, &gx, [2, 2, 5, 5], 4, $0, $1) }, RUNTIME, "before forward")
        XCTAssertTrue(parameters(layer)[0].grads(Float.self).allSatisfy { $0 == 0 })

        let x: Tensor<Float> = randomTensor([2, 2, 5, 5], seed: 1)
        let sentinel = [Float](repeating: -3, count: 54)
        var y = sentinel
        assertStatus(call { scnn_layer_forward(layer.raw, x.pointer, [2, 3, 5, 5], 4, &y, $0, $1) }, VALUE, "Conv2d", "weight", "channels")
        assertStatus(call { scnn_layer_forward(layer.raw, x.pointer, [2, 2, 5], 3, &y, $0, $1) }, VALUE, "x", "4-D")
        assertStatus(call { scnn_layer_forward(layer.raw, x.pointer, [2, 2, 2, 2], 4, &y, $0, $1) }, VALUE, "kernel", "larger")
        assertStatus(call { scnn_layer_forward(layer.raw, nil, [2, 2, 5, 5], 4, &y, $0, $1) }, VALUE, "x", "NULL")
        assertStatus(call { scnn_layer_forward(layer.raw, x.pointer, [2, 2, 5, 5], 4, nil, $0, $1) }, VALUE, "out", "NULL")
        assertStatus(call { scnn_layer_forward(layer.raw, x.pointer, [1 << 40, 1 << 40, 5, 5], 4, &y, $0, $1) }, OVERFLOW)
        assertStatus(call { scnn_layer_forward(layer.raw, x.pointer, [2, 2, 5, 5], 9, &y, $0, $1) }, VALUE, "x", "8")
        assertStatus(call { scnn_layer_forward(layer.raw, x.pointer, [2, 2, 5, 5], -1, &y, $0, $1) }, VALUE, "x")
        assertStatus(call { scnn_layer_forward(layer.raw, x.pointer, nil, 4, &y, $0, $1) }, VALUE, "x", "NULL")
        assertStatus(call { scnn_layer_output_shape(layer.raw, [2, 3, 5, 5], 4, &shape, &ndim, $0, $1) }, VALUE, "channels")
        XCTAssertEqual(y, sentinel)
        assertStatus(call { scnn_layer_input_shape(layer.raw, &shape, &ndim, $0, $1) }, RUNTIME)
        // out over x is refused (the layer keeps a view of x).
        let overlapping = try Tensor<Float>(zeros: [2 * 2 * 5 * 5])
        assertStatus(call { scnn_layer_forward(layer.raw, overlapping.pointer, [2, 2, 5, 5], 4, overlapping.pointer, $0, $1) },
                     VALUE, "out", "overlap")

        // A good forward, then bad backward calls change nothing.
        assertStatus(call { scnn_layer_forward(layer.raw, x.pointer, [2, 2, 5, 5], 4, &y, $0, $1) }, OK)
        XCTAssertNotEqual(y, sentinel)
        let gxBefore = gx
        assertStatus(call { scnn_layer_backward(layer.raw, go, [2, 3, 3, 2], 4, &gx, [2, 2, 5, 5], 4, $0, $1) }, VALUE, "grad_out", "(2, 3, 3, 3)")
        assertStatus(call { scnn_layer_backward(layer.raw, go, [2, 3, 3, 3], 4, nil, [2, 2, 5, 5], 4, $0, $1) }, VALUE, "grad_x", "NULL")
        assertStatus(call { scnn_layer_backward(layer.raw, nil, [2, 3, 3, 3], 4, &gx, [2, 2, 5, 5], 4, $0, $1) }, VALUE, "grad_out", "NULL")
        assertStatus(call { scnn_layer_backward(layer.raw, go, [2, 3, 3, 3], 99, &gx, [2, 2, 5, 5], 4, $0, $1) }, VALUE, "grad_out")
        // A grad_x buffer described with another shape than the last input (as after a forward by
        // another thread between input_shape and backward) is refused, not overrun.
        assertStatus(call { scnn_layer_backward(layer.raw, go, [2, 3, 3, 3], 4, &gx, [2, 2, 4, 5], 4, $0, $1) },
                     RUNTIME, "grad_x", "(2, 2, 4, 5)", "(2, 2, 5, 5)")
        XCTAssertEqual(gx, gxBefore)
        XCTAssertTrue(parameters(layer).allSatisfy { $0.grads(Float.self).allSatisfy { $0 == 0 } })
        // A rejected forward does not lose the previous forward's state.
        assertStatus(call { scnn_layer_forward(layer.raw, x.pointer, [2, 9, 5, 5], 4, &y, $0, $1) }, VALUE)
        assertStatus(call { scnn_layer_backward(layer.raw, go, [2, 3, 3, 3], 4, &gx, [2, 2, 5, 5], 4, $0, $1) }, OK)

        // Parameter queries.
        assertStatus(call { scnn_layer_parameter(layer.raw, 2, nil, nil, nil, nil, nil, 0, $0, $1) }, VALUE, "index", "2")
        assertStatus(call { scnn_layer_parameter(layer.raw, -1, nil, nil, nil, nil, nil, 0, $0, $1) }, VALUE, "index")
        var name = [CChar](repeating: 65, count: 8)
        assertStatus(call { scnn_layer_parameter(layer.raw, 0, nil, nil, nil, nil, &name, 4, $0, $1) }, OK)
        XCTAssertEqual(String(cString: name), "wei")
        assertStatus(call { scnn_layer_parameter(layer.raw, 1, nil, nil, nil, nil, nil, 0, $0, $1) }, OK)
    }

    func testSequentialNamesAndSharing() throws {
        let c = conv(F32, 1, 2, k: 3, seed: 3)
        let inner = sequential(F32, [linearLayer(F32, 8, 4, seed: 4), simple(F32, 1), linearLayer(F32, 4, 3, bias: false, seed: 5)])
        let model = sequential(F32, [c, simple(F32, 0), simple(F32, 2), inner])
        let params = parameters(model)
        XCTAssertEqual(params.map(\.name), ["0.weight", "0.bias", "3.0.weight", "3.0.bias", "3.2.weight"])
        // Shared, not copied: the child handle's parameters are the model's.
        XCTAssertEqual(parameters(c)[0].data, params[0].data)
        XCTAssertEqual(parameters(inner)[0].name, "0.weight")
        XCTAssertEqual(parameters(inner)[0].data, params[2].data)

        // Nested name "2.0.weight".
        let nested = sequential(F64, [linearLayer(F64, 2, 2), simple(F64, 1), sequential(F64, [linearLayer(F64, 2, 2)])])
        XCTAssertEqual(parameters(nested).map(\.name), ["0.weight", "0.bias", "2.0.weight", "2.0.bias"])

        // Output shape and a forward/backward through the whole model.
        var shape = [Int64](repeating: 0, count: 8)
        var ndim: Int64 = 0
        assertStatus(call { scnn_layer_output_shape(model.raw, [5, 1, 4, 4], 4, &shape, &ndim, $0, $1) }, OK)
        XCTAssertEqual(Array(shape.prefix(Int(ndim))), [5, 3])
        let x: Tensor<Float> = randomTensor([5, 1, 4, 4], seed: 10)
        let y: Tensor<Float> = forward(model, x)
        XCTAssertEqual(y.shape, [5, 3])
        let gx: Tensor<Float> = backward(model, try Tensor<Float>(shape: [5, 3], scalars: [Float](repeating: 1, count: 15)))
        XCTAssertEqual(gx.shape, [5, 1, 4, 4])
        XCTAssertTrue(params[0].grads(Float.self).contains { $0 != 0 })
        assertStatus(call { scnn_layer_zero_grad(model.raw, $0, $1) }, OK)
        XCTAssertTrue(params.allSatisfy { $0.grads(Float.self).allSatisfy { $0 == 0 } })

        // The model's shape mismatch names the layer.
        assertStatus(call { scnn_layer_output_shape(model.raw, [5, 1, 5, 5], 4, &shape, &ndim, $0, $1) }, VALUE, "layer 3")
        // Empty Sequential: identity.
        var out: OpaquePointer? = nil
        assertStatus(call { scnn_sequential_create(F32, nil, 0, &out, $0, $1) }, OK)
        let empty = LayerRef(out!)
        XCTAssertEqual(forward(empty, x).scalars, x.scalars)
    }

    func testSequentialRejections() {
        let a = linearLayer(F32, 2, 2), b = linearLayer(F64, 2, 2)
        var out: OpaquePointer? = nil
        let raws: [OpaquePointer?] = [a.raw, b.raw]
        assertStatus(call { scnn_sequential_create(F32, raws, 2, &out, $0, $1) }, TYPE, "layer 1", "float64", "float32")
        assertStatus(call { scnn_sequential_create(F64, raws, 2, &out, $0, $1) }, TYPE, "layer 0", "float32", "float64")
        let twice: [OpaquePointer?] = [a.raw, a.raw]
        assertStatus(call { scnn_sequential_create(F32, twice, 2, &out, $0, $1) }, VALUE, "same object")
        assertStatus(call { scnn_sequential_create(F32, raws, 1, nil, $0, $1) }, VALUE, "layer_out")
        assertStatus(call { scnn_sequential_create(3, raws, 1, &out, $0, $1) }, TYPE, "dtype")
        XCTAssertNil(out)
    }

    /// Two threads hammering one handle: every call succeeds or fails with SCNN_RUNTIME_ERROR, and
    /// every successful forward returns exactly the single-threaded result.
    func testConcurrentUseNeverCorrupts() throws {
        let model = sequential(F64, [conv(F64, 1, 3, k: 3, pad: 1, seed: 1), simple(F64, 1), simple(F64, 2),
                                     linearLayer(F64, 3 * 6 * 6, 4, seed: 2)])
        let x: Tensor<Double> = randomTensor([3, 1, 6, 6], seed: 3)
        let expected: Tensor<Double> = forward(model, x)
        let g = try Tensor<Double>(shape: [3, 4], scalars: [Double](repeating: 0.1, count: 12))
        let lock = NSLock()
        var okCount = 0, busyCount = 0, other: [String] = []
        DispatchQueue.concurrentPerform(iterations: 4) { t in
            for _ in 0..<150 {
                let y = try! Tensor<Double>(zeros: [3, 4])
                let gx = try! Tensor<Double>(zeros: [3, 1, 6, 6])
                let o1 = call { scnn_layer_forward(model.raw, x.pointer, [3, 1, 6, 6], 4, y.pointer, $0, $1) }
                let o2 = call { scnn_layer_backward(model.raw, g.pointer, [3, 4], 2, gx.pointer, [3, 1, 6, 6], 4, $0, $1) }
                let o3 = t == 0 ? call { scnn_layer_zero_grad(model.raw, $0, $1) } : Outcome(status: OK, message: "")
                lock.lock()
                for o in [o1, o2, o3] {
                    if o.status == OK { okCount += 1 } else if o.status == RUNTIME { busyCount += 1 } else { other.append(o.message) }
                }
                if o1.status == OK && y.scalars != expected.scalars { other.append("corrupt forward output") }
                lock.unlock()
            }
        }
        XCTAssertEqual(other, [])
        XCTAssertGreaterThan(okCount, 0)
        // Still consistent afterwards.
        XCTAssertEqual(forward(model, x).scalars, expected.scalars)
        _ = backward(model, g)
        print("concurrent: \(okCount) ok, \(busyCount) busy")
    }
}
