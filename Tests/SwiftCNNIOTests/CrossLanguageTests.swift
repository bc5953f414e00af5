import Foundation
import XCTest
@_spi(Engine) import SwiftCNN
import SwiftCNNIO
import SwiftCNNTestSupport

/// The cross-language round trip: a model saved by Swift loads in Python's `swiftcnn.load` with the
/// same parameters and predictions, and a model saved by Python (`save`, and `np.savez_compressed`
/// of the same arrays) loads in Swift with the same parameters and predictions.
///
/// Runs `python3` (or `$SWIFTCNN_PYTHON`). When it cannot `import swiftcnn` the tests are skipped
/// with the reason, unless `SWIFTCNN_REQUIRE_PYTHON=1` (scripts/test.sh sets it), which makes that a failure.
final class CrossLanguageTests: XCTestCase {
    var directory = ""

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "swiftcnn-cross-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try requirePython()
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    func path(_ name: String) -> String { directory + "/" + name }

    var python: String { ProcessInfo.processInfo.environment["SWIFTCNN_PYTHON"] ?? "python3" }

    /// Runs `python -c code args...` in the temporary directory; returns (exit status, stdout + stderr).
    func runPython(_ code: String, _ args: [String] = []) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [python, "-c", code] + args
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }

    func requirePython() throws {
        let (status, output) = try runPython("import numpy, swiftcnn")
        guard status != 0 else { return }
        let reason = "\(python) cannot import swiftcnn (exit \(status)): \(output.suffix(300))"
        if ProcessInfo.processInfo.environment["SWIFTCNN_REQUIRE_PYTHON"] == "1" {
            throw SwiftCNNError.runtime("SWIFTCNN_REQUIRE_PYTHON=1 but \(reason)")
        }
        throw XCTSkip("\(reason); pip install the package (or set SWIFTCNN_PYTHON) to run the cross-language tests")
    }

    func runPythonOrFail(_ code: String, _ args: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let (status, output) = try runPython(code, args)
        guard status == 0 else {
            XCTFail("python failed (exit \(status)):\n\(output)", file: file, line: line)
            throw SwiftCNNError.runtime("python failed")
        }
    }

    func writeNpy<T: CNNScalar>(_ t: Tensor<T>, _ name: String) throws {
        let array = try NpyArray(shape: t.shape, floating: t.scalars.map { Double($0) }, single: T.self == Float.self)
        XCTAssertTrue(FileManager.default.createFile(atPath: path(name), contents: Data(try array.encoded())))
    }

    func readNpy(_ name: String) throws -> NpyArray {
        try NpyArray.decode(Array(try Data(contentsOf: URL(fileURLWithPath: path(name)))))
    }

    func floats(_ a: NpyArray) -> [Double] {
        if case .floating(let v) = a.values { return v }
        XCTFail("not a float array: \(a.dtype)")
        return []
    }

    /// ModelFileTests.richModel: every layer kind; the Python model below builds the same.
    static func richModel<T: CNNScalar>(_: T.Type) throws -> Sequential<T> {
        try ModelFileTests.richModel(T.self)
    }

    static let pythonReads = """
        import sys, numpy as np, swiftcnn
        model_path, x_path, out_path, names_path, resaved = sys.argv[1:6]
        m = swiftcnn.load(model_path)
        x = np.load(x_path)
        assert x.dtype == m.dtype, (x.dtype, m.dtype)
        np.save(out_path, m.predict(x))
        # The parameters Python holds are the file's, exactly.
        stored = np.load(model_path)
        for name, value in m.state_dict().items():
            assert value.dtype == stored[name].dtype and np.array_equal(value, stored[name]), name
        open(names_path, "w").write("\\n".join(m.state_dict().keys()))
        swiftcnn.save(m, resaved)
        """

    func checkSwiftSavesPythonLoads<T: CNNScalar>(_: T.Type, tolerance: Double) throws {
        let model = try Self.richModel(T.self)
        let x = try Tensor<T>.random(shape: [8, 1, 6, 6], seed: 1, distribution: .normal(mean: 0, standardDeviation: 1))
        try model.fit(x, [0, 1, 2, 0, 1, 2, 0, 1], epochs: 2, batchSize: 4, seed: 2)  // weights and running statistics move
        try model.save(to: path("swift.npz"))
        try writeNpy(x, "x.npy")
        try runPythonOrFail(Self.pythonReads, [path("swift.npz"), path("x.npy"), path("py.npy"), path("names.txt"), path("resaved.npz")])
        let theirs = try readNpy("py.npy")
        let ours = try model.predict(x)
        XCTAssertEqual(theirs.shape, ours.shape)
        XCTAssertEqual(theirs.dtype, T.dtype.description)
        assertRelativeError(floats(theirs), ours.scalars, tolerance, "Python's predictions of the Swift-saved model")
        let names = try String(contentsOfFile: path("names.txt"), encoding: .utf8).split(separator: "\n").map(String.init)
        XCTAssertEqual(names, try model.stateDict().names, "Python's state_dict() keys are Swift's stateDict() names, in order")
        // What Python saves back loads in Swift with identical state.
        let back = try Sequential<T>.load(from: path("resaved.npz"))
        for (a, b) in zip(try model.stateDict(), try back.stateDict()) {
            XCTAssertEqual(a.name, b.name)
            XCTAssertEqual(a.value.tensor?.scalars, b.value.tensor?.scalars, a.name)
            XCTAssertEqual(a.value.integers, b.value.integers, a.name)
        }
    }

    func testSwiftSavesPythonLoadsFloat() throws { try checkSwiftSavesPythonLoads(Float.self, tolerance: 1e-5) }
    func testSwiftSavesPythonLoadsDouble() throws { try checkSwiftSavesPythonLoads(Double.self, tolerance: 1e-12) }

    static let pythonWrites = """
        import sys, numpy as np, swiftcnn as sc
        dtype, out_dir = sys.argv[1], sys.argv[2]
        sc.manual_seed(5)
        d = dict(dtype=dtype)
        m = sc.Sequential(
            sc.Conv2d(1, 4, 3, padding=1, **d), sc.BatchNorm2d(4, **d), sc.LeakyReLU(negative_slope=0.02),
            sc.Residual(sc.Conv2d(4, 4, 3, padding="same", groups=2, **d), sc.Tanh()),
            sc.Sequential(sc.AvgPool2d(2), sc.ReLU()), sc.AdaptiveAvgPool2d((2, 2)), sc.MaxPool2d(2, stride=1),
            sc.Flatten(), sc.Dropout(0.25), sc.Linear(4, 6, **d), sc.Sigmoid(),
            sc.BatchNorm1d(6, eps=1e-3, momentum=None, affine=False, **d), sc.Linear(6, 3, bias=False, **d))
        rng = np.random.default_rng(3)
        x = rng.standard_normal((8, 1, 6, 6)).astype(dtype)
        m.fit(x, np.arange(8) % 3, epochs=2, batch_size=4, seed=1, progress=False)
        m.save(out_dir + "/py.npz")
        with np.load(out_dir + "/py.npz") as f:
            np.savez_compressed(out_dir + "/py_compressed.npz", **{k: f[k] for k in f.files})
        np.save(out_dir + "/x.npy", x)
        np.save(out_dir + "/pred.npy", m.predict(x))
        open(out_dir + "/names.txt", "w").write("\\n".join(m.state_dict().keys()))
        """

    func checkPythonSavesSwiftLoads<T: CNNScalar>(_: T.Type, tolerance: Double) throws {
        try runPythonOrFail(Self.pythonWrites, [T.dtype.description, directory])
        let x = try readNpy("x.npy")
        let xt = try Tensor<T>(shape: x.shape, scalars: floats(x).map { T($0) })
        let expected = floats(try readNpy("pred.npy"))
        let stored = try NPZ.read(from: path("py.npz"))
        let names = try String(contentsOfFile: path("names.txt"), encoding: .utf8).split(separator: "\n").map(String.init)
        for file in ["py.npz", "py_compressed.npz"] {
            let model = try Sequential<T>.load(from: path(file))
            let state = try model.stateDict()
            XCTAssertEqual(state.names, names, file)
            for (name, value) in state {
                guard let array = stored.first(where: { $0.name == name })?.array else { return XCTFail("\(name) missing") }
                switch (value, array.values) {
                case (.floating(let t), .floating(let v)): XCTAssertEqual(t.scalars.map { Double($0) }, v, name)
                case (.int64(_, let a), .integer(let b)): XCTAssertEqual(a, b, name)
                default: XCTFail("\(name): kinds differ")
                }
            }
            XCTAssertEqual(state["1.num_batches_tracked"]?.integers, [4])
            assertRelativeError(try model.predict(xt).scalars, expected, tolerance, "Swift's predictions of the Python-saved \(file)")
        }
    }

    func testPythonSavesSwiftLoadsFloat() throws { try checkPythonSavesSwiftLoads(Float.self, tolerance: 1e-5) }
    func testPythonSavesSwiftLoadsDouble() throws { try checkPythonSavesSwiftLoads(Double.self, tolerance: 1e-12) }

    /// NumPy reads what NPZ.write writes (dtypes, shapes, strings, values), and NPZ.read reads
    /// what NumPy writes, including arrays in Fortran order and other integer widths.
    func testNumPyAgreesOnTheArchiveFormat() throws {
        try NPZ.write([("f", try NpyArray(shape: [2, 3], floating: [1, 2, 3, 4, 5, 6.5], single: true)),
                       ("i", try NpyArray(shape: [], int64: [-3])), ("s", NpyArray(string: "héllo"))], to: path("a.npz"))
        try runPythonOrFail("""
            import sys, numpy as np, zipfile
            f = np.load(sys.argv[1])
            assert f["f"].dtype == np.float32 and f["f"].shape == (2, 3) and f["f"][1, 2] == 6.5, f["f"]
            assert f["i"].dtype == np.int64 and f["i"].shape == () and int(f["i"]) == -3
            assert str(f["s"]) == "héllo", f["s"]
            archive = zipfile.ZipFile(sys.argv[1])
            assert archive.testzip() is None
            # Each member is byte for byte what np.save writes for the same array.
            import io
            for key in ("f", "i", "s"):
                buffer = io.BytesIO()
                np.save(buffer, f[key])
                assert archive.read(key + ".npy") == buffer.getvalue(), key
            np.savez(sys.argv[2], a=np.asfortranarray(np.arange(6.0).reshape(2, 3)), b=np.array([1, -2], np.int16),
                     c=np.array([True, False]), u=np.array([7, 255], np.uint8))
            """, [path("a.npz"), path("b.npz")])
        let b = try NPZ.read(from: path("b.npz"))
        XCTAssertEqual(b.map(\.name), ["a", "b", "c", "u"])
        XCTAssertEqual(b[0].array.values, .floating([0, 1, 2, 3, 4, 5]))
        XCTAssertEqual(b[1].array.values, .integer([1, -2]))
        XCTAssertEqual(b[2].array.values, .integer([1, 0]))
        XCTAssertEqual(b[3].array.values, .integer([7, 255]))
    }
}
