import Synchronization
import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport
@testable import SwiftCNNCAPI

/// Layer and Sequential handles through the descriptor ABI: create by every kind, forward/backward
/// against the core's ops, parameters as descriptors of layer memory, rejections, reference
/// counting and concurrent use.
final class LayerCAPITests: XCTestCase {

    override func tearDown() { Owned.drain() }

    func testCreateEveryKind() {
        let cases: [(String, [Int64], Int64)] = [
            ("conv2d", [2, 3, 3, 3, 1, 1, 0, 0, 1, 1, 1], 2), ("conv2d", [2, 3, 3, 3, 1, 1, 0, 0, 1, 1, 0], 1),
            ("linear", [4, 5, 1], 2), ("linear", [4, 5, 0], 1),
            ("max_pool2d", [2, 2, 0, 0, 0, 0, 0], 0), ("avg_pool2d", [3, 3, 1, 2, 2, 1, 1], 0),
            ("sigmoid", [], 0), ("relu", [], 0), ("flatten", [], 0), ("sequential", [], 0),
        ]
        for dt in [F32, F64] {
            for (kind, ints, params) in cases {
                let l = layer(kind, dt, ints)
                XCTAssertEqual(scnn_layer_dtype(l.raw), dt, kind)
                XCTAssertEqual(scnn_layer_parameter_count(l.raw), params, kind)
            }
        }
    }

    func testCreateRejections() {
        var out: OpaquePointer? = nil
        let c11: [Int64] = [1, 2, 3, 3, 1, 1, 0, 0, 1, 1, 1]
        func r(_ kind: String?, dt: Int32 = F32, ints: [Int64]? = [], children: [OpaquePointer?]? = [], nInts: Int32? = nil,
               nChildren: Int64? = nil, _ status: Int32, _ msg: String..., file: StaticString = #filePath, line: UInt = #line) {
            let o = createLayer(kind, dt, ints: ints, children: children, nInts: nInts, nChildren: nChildren, out: &out)
            assertStatus(o, status, file: file, line: line)
            for m in msg { XCTAssertTrue(o.message.contains(m), "\(o.message) lacks \(m)", file: file, line: line) }
            XCTAssertNil(out, "a rejected create writes no handle", file: file, line: line)
        }
        r(nil, VALUE, "layer_create: kind is NULL")
        r("bogus", VALUE, "layer_create: unknown layer kind 'bogus'")
        r("relu", dt: 5, TYPE, "layer_create: dtype must be SCNN_FLOAT32 (0) or SCNN_FLOAT64 (1), got 5")
        r("relu", dt: I64, TYPE, "got 2")
        r("conv2d", dt: F32, ints: Array(c11.dropLast()), VALUE, "Conv2d: takes 11 ints and 0 reals, got 10 and 0")
        r("linear", dt: F64, ints: [3, 3], VALUE, "Linear: takes 3 ints and 0 reals, got 2 and 0")
        r("relu", dt: F64, ints: [1], VALUE, "ReLU: takes 0 ints and 0 reals, got 1 and 0")
        r("max_pool2d", dt: F64, ints: [2, 2, 0, 0, 0, 0], VALUE, "MaxPool2d: takes 7 ints")
        r("conv2d", dt: F32, ints: nil, nInts: 11, VALUE, "layer_create: a settings array is NULL or a count is negative")
        r("conv2d", dt: F32, ints: c11, nInts: -1, VALUE, "a settings array is NULL or a count is negative")
        r("sequential", dt: F32, children: nil, nChildren: 2, VALUE, "a settings array is NULL or a count is negative")
        r("sequential", dt: F32, children: [nil], VALUE, "layer_create: children[0] is NULL")
        r("conv2d", dt: F32, ints: [0, 2, 3, 3, 1, 1, 0, 0, 1, 1, 1], VALUE, "Conv2d: in_channels must be >= 1, got 0")
        r("conv2d", dt: F32, ints: [1, -2, 3, 3, 1, 1, 0, 0, 1, 1, 1], VALUE, "Conv2d: out_channels must be >= 1, got -2")
        r("conv2d", dt: F32, ints: [1, 2, 0, 3, 1, 1, 0, 0, 1, 1, 1], VALUE, "kernel_size")
        r("conv2d", dt: F32, ints: [1, 2, 3, 3, 0, 1, 0, 0, 1, 1, 1], VALUE, "stride")
        r("conv2d", dt: F32, ints: [1, 2, 3, 3, 1, 1, -1, 0, 1, 1, 1], VALUE, "padding")
        r("conv2d", dt: F32, ints: [1, 2, 3, 3, 1, 1, 0, 0, 1, 0, 1], VALUE, "dilation")
        r("conv2d", dt: F32, ints: [1 << 40, 1 << 40, 3, 3, 1, 1, 0, 0, 1, 1, 1], OVERFLOW, "Conv2d")
        r("linear", dt: F64, ints: [0, 3, 1], VALUE, "Linear: in_features must be >= 1, got 0")
        r("linear", dt: F64, ints: [3, 0, 1], VALUE, "Linear: out_features must be >= 1, got 0")
        r("linear", dt: F64, ints: [1 << 40, 1 << 40, 1], OVERFLOW, "Linear")
        r("max_pool2d", dt: F32, ints: [2, 2, 0, 0, 0, 2, 0], VALUE, "MaxPool2d", "padding")
        r("avg_pool2d", dt: F32, ints: [0, 2, 0, 0, 0, 0, 0], VALUE, "AvgPool2d", "kernel_size")
        r("avg_pool2d", dt: F32, ints: [2, 2, 1, 0, 1, 0, 0], VALUE, "AvgPool2d", "stride")
        let l = layer("relu", F32)
        r("relu", dt: F32, children: [l.raw], VALUE, "ReLU: takes no child layers, got 1")
        let o = "relu".withCString { scnn_layer_create($0, F32, nil, 0, nil, 0, nil, 0, 0, nil, nil, 0) }
        XCTAssertEqual(o, VALUE, "layer_out NULL")
        assertStatus(call { m, c in "relu".withCString { scnn_layer_create($0, F32, nil, 0, nil, 0, nil, 0, 0, nil, m, c) } }, VALUE,
                     "layer_create: layer_out is NULL")
    }

    func testNullHandles() {
        var x = TensorDesc(nil, [0], dtype: F32), y = TensorDesc.garbage
        assertStatus(call { scnn_layer_forward(nil, &x, &y, false, $0, $1) }, VALUE, "layer_forward: layer is NULL")
        assertStatus(call { scnn_layer_backward(nil, &x, &y, false, $0, $1) }, VALUE, "layer_backward: layer is NULL")
        assertStatus(call { scnn_layer_zero_grad(nil, $0, $1) }, VALUE, "layer_zero_grad: layer is NULL")
        assertStatus(call { scnn_layer_parameter(nil, 0, &x, &y, nil, 0, $0, $1) }, VALUE, "layer_parameter: layer is NULL")
        XCTAssertEqual(scnn_layer_dtype(nil), -1)
        XCTAssertEqual(scnn_layer_parameter_count(nil), -1)
        scnn_layer_retain(nil)
        scnn_layer_release(nil)
        var l = TensorDesc(nil, [0], dtype: I64)
        assertStatus(call { scnn_train_step_cross_entropy(nil, nil, &x, &l, nil, nil, $0, $1) }, VALUE, "train_step_cross_entropy: model is NULL")
        let relu = layer("relu", F32)
        assertStatus(call { scnn_layer_forward(relu.raw, nil, &y, false, $0, $1) }, VALUE, "ReLU: x or y is NULL")
        assertStatus(call { scnn_layer_forward(relu.raw, &x, nil, false, $0, $1) }, VALUE, "ReLU: x or y is NULL")
        assertStatus(call { scnn_layer_backward(relu.raw, nil, &y, false, $0, $1) }, VALUE, "ReLU: grad_out or grad_x is NULL")
        assertStatus(call { scnn_layer_parameter(relu.raw, 0, nil, &y, nil, 0, $0, $1) }, VALUE, "ReLU: data or grad is NULL")
    }

    func testRetainRelease() {
        weak var weakHandle: LayerHandle?
        var out: OpaquePointer? = nil
        XCTAssertEqual(createLayer("relu", F64, out: &out).status, OK)
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
        let dt = dtypeCode(T.self)
        let l = conv(dt, 3, 4, k: 3, stride: 2, pad: 1, seed: 42)
        let params = parameters(l)
        XCTAssertEqual(params.map(\.name), ["weight", "bias"])
        XCTAssertEqual(params.map(\.shape), [[4, 3, 3, 3], [4]])
        XCTAssertEqual(params.map(\.data.dtype), [dt, dt])
        XCTAssertEqual(params.map(\.grad.dtype), [dt, dt])
        XCTAssertEqual(params.map(\.grad.dims), params.map(\.data.dims))
        // The descriptors point at the layer's memory and stay valid: asking again gives the same.
        XCTAssertEqual(parameters(l).map(\.data.data), params.map(\.data.data))
        // Default init: U(-1/sqrt(27), 1/sqrt(27)), reproducible by seed, grads zero.
        let bound = 1 / Double(27).squareRoot()
        XCTAssertTrue(params[0].values(T.self).allSatisfy { abs(Double($0)) <= bound })
        XCTAssertTrue(params[0].grads(T.self).allSatisfy { $0 == 0 })
        let same = conv(dt, 3, 4, k: 3, stride: 2, pad: 1, seed: 42), other = conv(dt, 3, 4, k: 3, stride: 2, pad: 1, seed: 43)
        XCTAssertEqual(parameters(same)[0].values(T.self), params[0].values(T.self))
        XCTAssertNotEqual(parameters(other)[0].values(T.self), params[0].values(T.self))

        let xt: Tensor<T> = randomTensor([2, 3, 7, 6], seed: 5)
        let x = Owned(xt)
        let w = try Tensor<T>(shape: params[0].shape, scalars: params[0].values(T.self))
        let b = try Tensor<T>(shape: [4], scalars: params[1].values(T.self))
        let expected = try conv2d(xt, weight: w, bias: b, stride: (2, 2), padding: (1, 1))
        // The shape query declares y and writes nothing else.
        var xd = x.desc, yq = TensorDesc.garbage
        assertStatus(layerForward(l, &xd, &yq, compute: false), OK)
        XCTAssertEqual(yq.dims, expected.shape.map(Int64.init))
        XCTAssertEqual(yq.dtype, dt)
        XCTAssertNil(yq.data)
        XCTAssertEqual(Array(yq.allDims[4...]), [-77, -77, -77, -77])
        let y = forward(l, x)
        XCTAssertEqual(y.shape, expected.shape)
        XCTAssertEqual(y.values(T.self), expected.scalars)

        // Backward twice: parameter grads accumulate.
        let gyt: Tensor<T> = randomTensor(expected.shape, seed: 6)
        let gy = Owned(gyt)
        var gd = gy.desc, gxq = TensorDesc.garbage
        assertStatus(layerBackward(l, &gd, &gxq, compute: false), OK)
        XCTAssertEqual(gxq.dims, [2, 3, 7, 6]); XCTAssertEqual(gxq.dtype, dt); XCTAssertNil(gxq.data)
        let (ex, ew, eb) = try conv2dBackward(gradOut: gyt, x: xt, weight: w, stride: (2, 2), padding: (1, 1))
        let gx = backward(l, gy)
        XCTAssertLessThan(relErr(gx.values(T.self), ex.scalars), tol(T.self))
        XCTAssertLessThan(relErr(params[0].grads(T.self), ew.scalars), tol(T.self))
        XCTAssertLessThan(relErr(params[1].grads(T.self), eb.scalars), tol(T.self))
        _ = backward(l, gy)
        XCTAssertLessThan(relErr(params[0].grads(T.self), ew.scalars.map { $0 * 2 }), tol(T.self) * 2)
        assertStatus(call { scnn_layer_zero_grad(l.raw, $0, $1) }, OK)
        XCTAssertTrue(params[0].grads(T.self).allSatisfy { $0 == 0 })
        XCTAssertTrue(params[1].grads(T.self).allSatisfy { $0 == 0 })

        // Parameter memory is the layer's: writing through the descriptor changes the next forward.
        params[1].data.data!.assumingMemoryBound(to: T.self).update(repeating: 0, count: 4)
        let expected2 = try conv2d(xt, weight: w, stride: (2, 2), padding: (1, 1))
        XCTAssertEqual(forward(l, x).values(T.self), expected2.scalars)
    }

    func testConvLayer() throws {
        try checkConvLayer(Float.self)
        try checkConvLayer(Double.self)
    }

    func testLinearLayer() throws {
        for dt in [F32, F64] {
            let l = linearLayer(dt, 6, 3, seed: 9)
            let p = parameters(l)
            XCTAssertEqual(p.map(\.name), ["weight", "bias"])
            XCTAssertEqual(p.map(\.shape), [[3, 6], [3]])
            if dt == F64 {
                let xt: Tensor<Double> = randomTensor([4, 6], seed: 1)
                let w = try Tensor<Double>(shape: [3, 6], scalars: p[0].values(Double.self))
                let b = try Tensor<Double>(shape: [3], scalars: p[1].values(Double.self))
                let x = Owned(xt)
                XCTAssertEqual(forward(l, x).values(Double.self), try linear(xt, weight: w, bias: b).scalars)
                let gyt: Tensor<Double> = randomTensor([4, 3], seed: 2)
                let (ex, ew, eb) = try linearBackward(gradOut: gyt, x: xt, weight: w)
                XCTAssertLessThan(relErr(backward(l, Owned(gyt)).values(Double.self), ex.scalars), 1e-12)
                XCTAssertLessThan(relErr(p[0].grads(Double.self), ew.scalars), 1e-12)
                XCTAssertLessThan(relErr(p[1].grads(Double.self), eb.scalars), 1e-12)
            }
        }
        XCTAssertEqual(parameters(linearLayer(F32, 2, 2, bias: false)).map(\.name), ["weight"])
    }

    func testSimpleLayers() throws {
        let xt: Tensor<Double> = randomTensor([2, 3, 4, 4], seed: 8, -2, 2)
        let x = Owned(xt)
        let s = layer("sigmoid", F64), r = layer("relu", F64), f = layer("flatten", F64)
        XCTAssertEqual(forward(s, x).values(Double.self), try sigmoid(xt).scalars)
        XCTAssertEqual(forward(r, x).values(Double.self), try relu(xt).scalars)
        let flat = forward(f, x)
        XCTAssertEqual(flat.shape, [2, 48])
        XCTAssertEqual(flat.values(Double.self), xt.scalars)
        let gflatT: Tensor<Double> = randomTensor([2, 48], seed: 9)
        let gx = backward(f, Owned(gflatT))
        XCTAssertEqual(gx.shape, [2, 3, 4, 4])
        XCTAssertEqual(gx.values(Double.self), gflatT.scalars)
        let gs: Tensor<Double> = randomTensor([2, 3, 4, 4], seed: 10)
        XCTAssertEqual(backward(r, Owned(gs)).values(Double.self), try reluBackward(gradOut: gs, x: xt).scalars)
        _ = forward(s, x)
        XCTAssertEqual(backward(s, Owned(gs)).values(Double.self), try sigmoidBackward(gradOut: gs, y: sigmoid(xt)).scalars)
        let mp = pool(F64, max: true, k: 2), ap = pool(F64, max: false, k: 3, stride: 1, pad: 1)
        XCTAssertEqual(forward(mp, x).values(Double.self), try maxPool2d(xt, kernelSize: (2, 2)).scalars)
        XCTAssertEqual(forward(ap, x).values(Double.self), try avgPool2d(xt, kernelSize: (3, 3), stride: (1, 1), padding: (1, 1)).scalars)
        let gp: Tensor<Double> = randomTensor([2, 3, 2, 2], seed: 11)
        XCTAssertEqual(backward(mp, Owned(gp)).values(Double.self), try maxPool2dBackward(gradOut: gp, x: xt, kernelSize: (2, 2)).scalars)
        XCTAssertEqual(scnn_layer_parameter_count(mp.raw), 0)
        XCTAssertEqual(scnn_layer_parameter_count(s.raw), 0)
        // Zero-element input with NULL data.
        var e = TensorDesc(nil, [0, 3, 4], dtype: F64), y = TensorDesc.garbage
        assertStatus(layerForward(f, &e, &y, compute: false), OK)
        XCTAssertEqual(y.dims, [0, 12])
        y.data = nil
        assertStatus(layerForward(f, &e, &y, compute: true), OK)
        var g = TensorDesc(nil, [0, 12], dtype: F64), gxd = TensorDesc(nil, [0, 3, 4], dtype: F64)
        assertStatus(layerBackward(f, &g, &gxd, compute: true), OK)
    }

    func testLayerRejections() throws {
        let l = conv(F32, 2, 3, k: 3, seed: 1)
        let x = Owned(randomTensor([2, 2, 5, 5], seed: 1) as Tensor<Float>)
        let y = Owned(shape: [2, 3, 3, 3], dtype: F32), go = Owned(shape: [2, 3, 3, 3], dtype: F32)
        let gx = Owned(shape: [2, 2, 5, 5], dtype: F32)
        go.fill(Float(1))
        // Before any forward: a runtime error in both modes.
        var gd = go.desc, gxd = gx.desc
        assertStatus(layerBackward(l, &gd, &gxd, compute: false), RUNTIME, "Conv2d: backward called before forward")
        assertStatus(layerBackward(l, &gd, &gxd, compute: true), RUNTIME, "Conv2d: backward called before forward")
        XCTAssertTrue(parameters(l)[0].grads(Float.self).allSatisfy { $0 == 0 })

        y.fill(Float(-3))
        let sentinel = y.values(Float.self)
        func fwd(_ xd: TensorDesc, _ yd: TensorDesc? = nil, compute: Bool = true) -> Outcome {
            var a = xd, b = yd ?? y.desc
            return layerForward(l, &a, &b, compute: compute)
        }
        for compute in [false, true] {
            assertStatus(fwd(TensorDesc(x.raw, [2, 3, 5, 5], dtype: F32), compute: compute), VALUE, "Conv2d", "weight", "channels")
            assertStatus(fwd(TensorDesc(x.raw, [2, 2, 5], dtype: F32), compute: compute), VALUE, "x", "4-D")
            assertStatus(fwd(TensorDesc(x.raw, [2, 2, 2, 2], dtype: F32), compute: compute), VALUE, "kernel", "larger")
            assertStatus(fwd(TensorDesc(x.raw, [1 << 40, 1 << 40, 5, 5], dtype: F32), compute: compute), OVERFLOW, "layer_forward: x")
            assertStatus(fwd(TensorDesc(x.raw, [2, 2, 5, 5], dtype: F32, ndim: 9), compute: compute), VALUE,
                         "layer_forward: x must have at most 8 dimensions, got ndim 9")
            assertStatus(fwd(TensorDesc(x.raw, [2, 2, 5, 5], dtype: F32, ndim: ABSENT), compute: compute), TYPE,
                         "layer_forward: x must be an array, not None")
            assertStatus(fwd(TensorDesc(x.raw, [2, 2, 5, 5], dtype: F64), compute: compute), TYPE,
                         "layer_forward: the layer has dtype float32 but x has dtype float64")
            assertStatus(fwd(TensorDesc(x.raw, [2, 2, 5, 5], dtype: I64), compute: compute), TYPE, "x has dtype int64")
        }
        // Compute-mode checks of data and of the result descriptor.
        assertStatus(fwd(TensorDesc(nil, [2, 2, 5, 5], dtype: F32)), VALUE, "layer_forward: x is NULL but has shape (2, 2, 5, 5)")
        assertStatus(fwd(TensorDesc(x.raw + 2, [2, 2, 5, 5], dtype: F32)), VALUE, "layer_forward: x is not aligned")
        assertStatus(fwd(x.desc, TensorDesc(y.raw, [2, 3, 3, 4], dtype: F32)), VALUE,
                     "layer_forward: out must be a float32 array of shape (2, 3, 3, 3), got float32 of shape (2, 3, 3, 4)")
        assertStatus(fwd(x.desc, TensorDesc(y.raw, [2, 3, 3, 3], dtype: F64)), VALUE, "out must be a float32 array", "got float64")
        assertStatus(fwd(x.desc, TensorDesc(nil, [2, 3, 3, 3], dtype: F32)), VALUE, "layer_forward: out is NULL")
        XCTAssertEqual(y.values(Float.self), sentinel)
        // A rejected forward records nothing: backward still says "before forward".
        assertStatus(layerBackward(l, &gd, &gxd, compute: false), RUNTIME, "before forward")
        // out over x is refused (the layer keeps a view of x).
        let both = Owned(shape: [2 * 2 * 5 * 5], dtype: F32)
        assertStatus(fwd(TensorDesc(both.raw, [2, 2, 5, 5], dtype: F32), TensorDesc(both.raw + 8, [2, 3, 3, 3], dtype: F32)),
                     VALUE, "out must not share memory with x")

        // A good forward, then bad backward calls change nothing.
        assertStatus(fwd(x.desc), OK)
        XCTAssertNotEqual(y.values(Float.self), sentinel)
        gx.fill(Float(9))
        let gxBefore = gx.values(Float.self)
        func bwd(_ g: TensorDesc, _ out: TensorDesc, compute: Bool = true) -> Outcome {
            var a = g, b = out
            return layerBackward(l, &a, &b, compute: compute)
        }
        assertStatus(bwd(TensorDesc(go.raw, [2, 3, 3, 2], dtype: F32), gx.desc), VALUE, "grad_out", "(2, 3, 3, 3)")
        assertStatus(bwd(TensorDesc(go.raw, [2, 3, 3, 3], dtype: F32, ndim: 99), gx.desc), VALUE, "layer_backward: grad_out must have at most 8")
        assertStatus(bwd(TensorDesc(go.raw, [2, 3, 3, 3], dtype: F64), gx.desc), TYPE, "layer_backward: the layer has dtype float32 but grad_out has dtype float64")
        assertStatus(bwd(TensorDesc(nil, [2, 3, 3, 3], dtype: F32), gx.desc), VALUE, "grad_out is NULL")
        assertStatus(bwd(go.desc, TensorDesc(nil, [2, 2, 5, 5], dtype: F32)), VALUE, "grad_x is NULL")
        assertStatus(bwd(go.desc, TensorDesc(go.raw, [2, 2, 5, 5], dtype: F32)), VALUE, "grad_x must not share memory with grad_out")
        // A grad_x of another shape than the last input (as after a forward by another thread
        // between the query and backward) is a runtime error, not an overrun.
        let o = bwd(go.desc, TensorDesc(gx.raw, [2, 2, 4, 5], dtype: F32))
        assertStatus(o, RUNTIME, "grad_x has shape (2, 2, 4, 5) but the last forward's input has shape (2, 2, 5, 5)")
        assertStatus(bwd(go.desc, TensorDesc(gx.raw, [2, 2, 5, 5], dtype: F64)), VALUE, "grad_x must be a float32 array", "got float64")
        XCTAssertEqual(gx.values(Float.self), gxBefore)
        XCTAssertTrue(parameters(l).allSatisfy { $0.grads(Float.self).allSatisfy { $0 == 0 } })
        // A rejected forward does not lose the previous forward's state.
        assertStatus(fwd(TensorDesc(x.raw, [2, 9, 5, 5], dtype: F32)), VALUE)
        assertStatus(bwd(go.desc, gx.desc), OK)

        // Parameter queries.
        var d = TensorDesc.garbage, g = TensorDesc.garbage
        assertStatus(call { scnn_layer_parameter(l.raw, 2, &d, &g, nil, 0, $0, $1) }, VALUE,
                     "Conv2d: parameter index 2 is out of range for 2 parameters")
        assertStatus(call { scnn_layer_parameter(l.raw, -1, &d, &g, nil, 0, $0, $1) }, VALUE, "index -1")
        XCTAssertEqual(d.bytes, TensorDesc.garbage.bytes)
        var name = [CChar](repeating: 65, count: 8)
        assertStatus(call { scnn_layer_parameter(l.raw, 0, &d, &g, &name, 4, $0, $1) }, OK)
        XCTAssertEqual(name.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }, "wei")
        assertStatus(call { scnn_layer_parameter(l.raw, 1, &d, &g, nil, 0, $0, $1) }, OK)
        XCTAssertEqual(d.dims, [3])
    }

    func testSequentialNamesAndSharing() throws {
        let c = conv(F32, 1, 2, k: 3, seed: 3)
        let inner = sequential(F32, [linearLayer(F32, 8, 4, seed: 4), layer("relu", F32), linearLayer(F32, 4, 3, bias: false, seed: 5)])
        let model = sequential(F32, [c, layer("sigmoid", F32), layer("flatten", F32), inner])
        let params = parameters(model)
        XCTAssertEqual(params.map(\.name), ["0.weight", "0.bias", "3.0.weight", "3.0.bias", "3.2.weight"])
        // Shared, not copied: the child handle's parameters are the model's.
        XCTAssertEqual(parameters(c)[0].data.data, params[0].data.data)
        XCTAssertEqual(parameters(c)[0].grad.data, params[0].grad.data)
        XCTAssertEqual(parameters(inner)[0].name, "0.weight")
        XCTAssertEqual(parameters(inner)[0].data.data, params[2].data.data)

        let nested = sequential(F64, [linearLayer(F64, 2, 2), layer("relu", F64), sequential(F64, [linearLayer(F64, 2, 2)])])
        XCTAssertEqual(parameters(nested).map(\.name), ["0.weight", "0.bias", "2.0.weight", "2.0.bias"])

        // The shape query through the whole model, then forward/backward.
        var xq = TensorDesc(nil, [5, 1, 4, 4], dtype: F32), yq = TensorDesc.garbage
        assertStatus(layerForward(model, &xq, &yq, compute: false), OK)
        XCTAssertEqual(yq.dims, [5, 3])
        let x = Owned(randomTensor([5, 1, 4, 4], seed: 10) as Tensor<Float>)
        let y = forward(model, x)
        XCTAssertEqual(y.shape, [5, 3])
        let ones = Owned([Float](repeating: 1, count: 15), shape: [5, 3])
        XCTAssertEqual(backward(model, ones).shape, [5, 1, 4, 4])
        XCTAssertTrue(params[0].grads(Float.self).contains { $0 != 0 })
        // The child's handle sees the gradient the model wrote (same memory).
        XCTAssertEqual(parameters(c)[0].grads(Float.self), params[0].grads(Float.self))
        assertStatus(call { scnn_layer_zero_grad(model.raw, $0, $1) }, OK)
        XCTAssertTrue(params.allSatisfy { $0.grads(Float.self).allSatisfy { $0 == 0 } })

        // A shape mismatch names the layer.
        xq = TensorDesc(nil, [5, 1, 5, 5], dtype: F32)
        assertStatus(layerForward(model, &xq, &yq, compute: false), VALUE, "layer 3")
        // Empty Sequential: identity.
        let empty = sequential(F32, [])
        XCTAssertEqual(forward(empty, x).values(Float.self), x.values(Float.self))
    }

    func testSequentialRejections() {
        let a = linearLayer(F32, 2, 2), b = linearLayer(F64, 2, 2)
        var out: OpaquePointer? = nil
        assertStatus(createLayer("sequential", F32, children: [a.raw, b.raw], out: &out), TYPE,
                     "Sequential: layer 1 (Linear) has dtype float64, but the model's dtype is float32")
        assertStatus(createLayer("sequential", F64, children: [a.raw, b.raw], out: &out), TYPE, "layer 0", "float32", "float64")
        assertStatus(createLayer("sequential", F32, children: [a.raw, a.raw], out: &out), VALUE, "same object")
        assertStatus(createLayer("sequential", F32, children: [a.raw], nChildren: -1, out: &out), VALUE, "count is negative")
        assertStatus(createLayer("sequential", F32, ints: [1], children: [a.raw], out: &out), VALUE, "Sequential: takes 0 ints")
        XCTAssertNil(out)
    }

    /// Two threads hammering one handle: every call succeeds or fails with SCNN_RUNTIME_ERROR, and
    /// every successful forward returns exactly the single-threaded result.
    func testConcurrentUseNeverCorrupts() throws {
        let model = sequential(F64, [conv(F64, 1, 3, k: 3, pad: 1, seed: 1), layer("relu", F64), layer("flatten", F64),
                                     linearLayer(F64, 3 * 6 * 6, 4, seed: 2)])
        let x = Owned(randomTensor([3, 1, 6, 6], seed: 3) as Tensor<Double>)
        let expected = forward(model, x).values(Double.self)
        let g = Owned([Double](repeating: 0.1, count: 12), shape: [3, 4])
        // A second input of another batch size, so a forward by the other thread changes the shape
        // backward must produce.
        let x2 = Owned(randomTensor([2, 1, 6, 6], seed: 4) as Tensor<Double>)
        let counts = Mutex((ok: 0, busy: 0, other: [String]()))
        DispatchQueue.concurrentPerform(iterations: 4) { t in
            for _ in 0..<150 {
                let y = Owned(shape: [3, 4], dtype: F64), gx = Owned(shape: [3, 1, 6, 6], dtype: F64)
                var xd = x.desc, yd = y.desc, gd = g.desc, gxd = gx.desc
                let o1 = layerForward(model, &xd, &yd, compute: true)
                let o2 = layerBackward(model, &gd, &gxd, compute: true)
                var o3 = Outcome(status: OK, message: "")
                if t == 0 {
                    o3 = call { scnn_layer_zero_grad(model.raw, $0, $1) }
                } else if t == 1 {
                    let y2 = Owned(shape: [2, 4], dtype: F64)
                    var x2d = x2.desc, y2d = y2.desc
                    o3 = layerForward(model, &x2d, &y2d, compute: true)
                }
                let corrupt = o1.status == OK && y.values(Double.self) != expected
                counts.withLock { c in
                    for o in [o1, o2, o3] {
                        if o.status == OK { c.ok += 1 } else if o.status == RUNTIME { c.busy += 1 } else { c.other.append(o.message) }
                    }
                    if corrupt { c.other.append("corrupt forward output") }
                }
            }
        }
        let (okCount, busyCount, other) = counts.withLock { $0 }
        XCTAssertEqual(other, [])
        XCTAssertGreaterThan(okCount, 0)
        // Still consistent afterwards.
        XCTAssertEqual(forward(model, x).values(Double.self), expected)
        _ = backward(model, g)
        print("concurrent: \(okCount) ok, \(busyCount) busy")
    }
}
