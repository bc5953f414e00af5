import XCTest
@_spi(Engine) @testable import SwiftCNN
import SwiftCNNTestSupport

/// A pooling problem.
private struct PoolCase: CustomStringConvertible {
    var n, c, h, w: Int
    var kernel: (Int, Int)
    var stride: (Int, Int)? = nil
    var padding = (0, 0)

    var xShape: [Int] { [n, c, h, w] }
    var description: String { "x \(describeShape(xShape)) kernel \(kernel) stride \(String(describing: stride)) padding \(padding)" }
    func geometry(_ kind: PoolKind) throws -> Pool2DGeometry {
        try Pool2DGeometry(op: "pool", kind: kind, xShape: xShape, kernelSize: kernel, stride: stride ?? kernel,
                           padding: padding)
    }
}

private let poolCases: [PoolCase] = [
    PoolCase(n: 1, c: 1, h: 4, w: 4, kernel: (2, 2)),
    PoolCase(n: 2, c: 3, h: 7, w: 5, kernel: (2, 2)),                                     // drops last row/col
    PoolCase(n: 2, c: 2, h: 6, w: 7, kernel: (3, 3), stride: (1, 1)),                     // overlapping
    PoolCase(n: 1, c: 2, h: 7, w: 6, kernel: (3, 2), stride: (2, 1), padding: (1, 1)),
    PoolCase(n: 2, c: 1, h: 5, w: 5, kernel: (3, 3), stride: (2, 2), padding: (1, 1)),
    PoolCase(n: 1, c: 3, h: 9, w: 8, kernel: (5, 4), stride: (3, 2), padding: (2, 2)),
    PoolCase(n: 3, c: 2, h: 1, w: 6, kernel: (1, 3), stride: (1, 2), padding: (0, 1)),
    PoolCase(n: 4, c: 6, h: 28, w: 28, kernel: (2, 2)),                                   // lecture, threaded
]

final class PoolingTests: XCTestCase {
    private func forward<T: CNNScalar>(_ kind: PoolKind, _ x: Tensor<T>, _ cs: PoolCase) throws -> Tensor<T> {
        kind == .max
            ? try maxPool2d(x, kernelSize: cs.kernel, stride: cs.stride, padding: cs.padding)
            : try avgPool2d(x, kernelSize: cs.kernel, stride: cs.stride, padding: cs.padding)
    }

    private func backward<T: CNNScalar>(_ kind: PoolKind, _ gy: Tensor<T>, _ x: Tensor<T>, _ cs: PoolCase) throws -> Tensor<T> {
        kind == .max
            ? try maxPool2dBackward(gradOut: gy, x: x, kernelSize: cs.kernel, stride: cs.stride, padding: cs.padding)
            : try avgPool2dBackward(gradOut: gy, x: x, kernelSize: cs.kernel, stride: cs.stride, padding: cs.padding)
    }

    // MARK: fast vs naive

    private func checkFastMatchesNaive<T: CNNScalar>(_: T.Type) throws {
        for (index, cs) in poolCases.enumerated() {
            for kind in [PoolKind.max, .average] {
                let g = try cs.geometry(kind)
                // Random values with ties on purpose (few distinct values): the first-max rule must agree.
                var rng = TestRNG(seed: UInt64(index))
                let x = try Tensor<T>(shape: cs.xShape,
                                      scalars: (0..<cs.xShape.reduce(1, *)).map { _ in T(rng.int(-3...3)) })
                let gy: Tensor<T> = randomTensor(g.outputShape, seed: UInt64(50 + index))
                let y = try forward(kind, x, cs)
                let yRef = try Tensor<T>(zeros: g.outputShape)
                let outCount = g.outputShape.reduce(1, *)
                var argmax = [Int32](repeating: -7, count: outCount), argmaxRef = argmax
                pool2dForwardNaive(g, kind: kind, x: x.pointer, y: yRef.pointer, argmax: &argmaxRef)
                XCTAssertEqual(y.scalars, yRef.scalars, "\(kind) forward \(cs)")
                let y2 = try Tensor<T>(zeros: g.outputShape)
                pool2dForward(g, kind: kind, x: x.pointer, y: y2.pointer, argmax: &argmax)
                XCTAssertEqual(y2.scalars, yRef.scalars)
                if kind == .max { XCTAssertEqual(argmax, argmaxRef, "argmax \(cs)") }

                let dx = try backward(kind, gy, x, cs)
                let dxRef = try Tensor<T>(zeros: g.inputShape)
                pool2dBackwardNaive(g, kind: kind, gradOut: gy.pointer, x: x.pointer, gradX: dxRef.pointer)
                assertRelativeError(dx.scalars, dxRef.scalars, T.self == Float.self ? 1e-6 : 1e-15, "\(kind) backward \(cs)")
                if kind == .max {
                    let dx2 = try Tensor<T>(zeros: g.inputShape)
                    dx2.pointer.update(repeating: 5, count: dx2.count)
                    maxPool2dBackward(g, gradOut: gy.pointer, argmax: argmax, gradX: dx2.pointer)
                    XCTAssertEqual(dx2.scalars, dx.scalars, "argmax backward \(cs)")
                }
            }
        }
    }

    func testFastMatchesNaiveDouble() throws { try checkFastMatchesNaive(Double.self) }
    func testFastMatchesNaiveFloat() throws { try checkFastMatchesNaive(Float.self) }

    // MARK: finite differences

    func testBackwardMatchesFiniteDifferences() throws {
        for (index, cs) in poolCases.enumerated() where cs.xShape.reduce(1, *) <= 500 {
            for kind in [PoolKind.max, .average] {
                let g = try cs.geometry(kind)
                // Distinct values (gaps >= 0.005 >> eps): no max-pool ties within +-eps.
                let x: Tensor<Double> = distinctRandomTensor(cs.xShape, seed: UInt64(60 + index))
                let r: [Double] = randomArray(g.outputShape.reduce(1, *), seed: UInt64(70 + index))
                let analytic = try backward(kind, try Tensor(shape: g.outputShape, scalars: r), x, cs)
                let numeric = try numericalGradient(of: { weightedSum(try forward(kind, $0, cs), r) }, at: x)
                assertRelativeError(analytic.scalars, numeric, 1e-7, "\(kind) \(cs)")
            }
        }
    }

    func testFloatMatchesDouble() throws {
        for (index, cs) in poolCases.enumerated() {
            for kind in [PoolKind.max, .average] {
                let xf: Tensor<Float> = distinctRandomTensor(cs.xShape, seed: UInt64(80 + index))
                let xd = converted(xf, to: Double.self)
                let g = try cs.geometry(kind)
                let gyf: Tensor<Float> = randomTensor(g.outputShape, seed: UInt64(90 + index))
                let gyd = converted(gyf, to: Double.self)
                assertRelativeError(try forward(kind, xf, cs).scalars, try forward(kind, xd, cs).scalars, 1e-6)
                assertRelativeError(try backward(kind, gyf, xf, cs).scalars, try backward(kind, gyd, xd, cs).scalars, 1e-6)
            }
        }
    }

    // MARK: semantics

    /// Ties go to the first maximum in row-major order; overlapping windows accumulate.
    func testMaxTiesAndOverlap() throws {
        let x = try Tensor<Double>(shape: [1, 1, 3, 3], scalars: [1, 5, 5,
                                                                   5, 2, 0,
                                                                   0, 5, 1])
        // kernel 2, stride 1: windows {1,5,5,2} {5,5,2,0} {5,2,0,5} {2,0,5,1}
        let y = try maxPool2d(x, kernelSize: (2, 2), stride: (1, 1))
        XCTAssertEqual(y.scalars, [5, 5, 5, 5])
        let gy = try Tensor<Double>(shape: [1, 1, 2, 2], scalars: [1, 10, 100, 1000])
        let dx = try maxPool2dBackward(gradOut: gy, x: x, kernelSize: (2, 2), stride: (1, 1))
        // window 0 -> (0,1); window 1 -> (0,1); window 2 -> (1,0); window 3 -> (2,1)
        XCTAssertEqual(dx.scalars, [0, 11, 0,
                                    100, 0, 0,
                                    0, 1000, 0])
    }

    /// Padding is -inf for max (a negative input stays the max) and 0 in the average's kH*kW divisor.
    func testPaddingSemantics() throws {
        let x = try Tensor<Double>(shape: [1, 1, 2, 2], scalars: [-1, -2, -3, -4])
        let ym = try maxPool2d(x, kernelSize: (3, 3), stride: (1, 1), padding: (1, 1))
        XCTAssertEqual(ym.scalars, [-1, -1, -1, -1])
        let ones = try Tensor<Double>(shape: [1, 1, 3, 3], scalars: [Double](repeating: 1, count: 9))
        let ya = try avgPool2d(ones, kernelSize: (3, 3), stride: (1, 1), padding: (1, 1))
        XCTAssertEqual(ya.scalars[0], 4.0 / 9.0, accuracy: 1e-15)   // corner: 4 real pixels / 9
        XCTAssertEqual(ya.scalars[1], 6.0 / 9.0, accuracy: 1e-15)   // edge
        XCTAssertEqual(ya.scalars[4], 1.0, accuracy: 1e-15)         // centre
        XCTAssertEqual(ya.shape, [1, 1, 3, 3])
        XCTAssertEqual(try maxPool2d(ones, kernelSize: (2, 2)).shape, [1, 1, 1, 1])  // stride nil -> kernel
    }

    func testEmptyBatchAndOut() throws {
        let x = try Tensor<Float>(zeros: [0, 2, 4, 4])
        XCTAssertEqual(try maxPool2d(x, kernelSize: (2, 2)).shape, [0, 2, 2, 2])
        XCTAssertEqual(try avgPool2dBackward(gradOut: try Tensor<Float>(zeros: [0, 2, 2, 2]), x: x,
                                             kernelSize: (2, 2)).shape, [0, 2, 4, 4])
        let x2: Tensor<Float> = randomTensor([1, 2, 4, 4], seed: 3)
        let out = try Tensor<Float>(zeros: [1, 2, 2, 2])
        XCTAssertEqual(try avgPool2d(x2, kernelSize: (2, 2), into: out).pointer, out.pointer)
        assertThrowsKind(.value, contains: "avg_pool2d: out must have shape (1, 2, 2, 2)") {
            try avgPool2d(x2, kernelSize: (2, 2), into: try Tensor<Float>(zeros: [1, 2, 2, 3]))
        }
        assertThrowsKind(.value, contains: "overlap x") {
            try maxPool2d(x2, kernelSize: (2, 2), into: try Tensor(borrowing: x2.pointer + 3, shape: [1, 2, 2, 2]))
        }
    }

    func testValidationErrors() {
        let x = try! Tensor<Double>(zeros: [2, 3, 8, 8])
        assertThrowsKind(.value, contains: "max_pool2d: x must be 4-D") {
            try maxPool2d(try Tensor<Double>(zeros: [3, 8, 8]), kernelSize: (2, 2))
        }
        assertThrowsKind(.value, contains: "kernel_size") { try maxPool2d(x, kernelSize: (0, 2)) }
        assertThrowsKind(.value, contains: "stride") { try avgPool2d(x, kernelSize: (2, 2), stride: (2, 0)) }
        assertThrowsKind(.value, contains: "padding") { try avgPool2d(x, kernelSize: (2, 2), padding: (-1, 0)) }
        assertThrowsKind(.value, contains: "at most half") { try maxPool2d(x, kernelSize: (3, 3), padding: (2, 1)) }
        assertThrowsKind(.value, contains: "at most half") { try avgPool2d(x, kernelSize: (2, 2), padding: (0, 2)) }
        assertThrowsKind(.value, contains: "larger than the padded input") { try maxPool2d(x, kernelSize: (9, 2)) }
        assertThrowsKind(.value, contains: "at least 1 channel") {
            try maxPool2d(try Tensor<Double>(zeros: [2, 0, 8, 8]), kernelSize: (2, 2))
        }
        assertThrowsKind(.value, contains: "max_pool2d_backward: grad_out must have shape (2, 3, 4, 4), got (2, 3, 4, 5)") {
            try maxPool2dBackward(gradOut: try Tensor<Double>(zeros: [2, 3, 4, 5]), x: x, kernelSize: (2, 2))
        }
        assertThrowsKind(.overflow) {
            try Pool2DGeometry(op: "max_pool2d", kind: .average, xShape: [1 << 32, 1 << 32, 2, 2], kernelSize: (2, 2),
                               stride: (2, 2), padding: (0, 0))
        }
        assertThrowsKind(.overflow, contains: "argmax") {
            try Pool2DGeometry(op: "max_pool2d", kind: .max, xShape: [1, 1, 1 << 16, 1 << 16], kernelSize: (2, 2),
                               stride: (2, 2), padding: (0, 0))
        }
    }
}
