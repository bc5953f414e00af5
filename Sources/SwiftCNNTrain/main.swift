// swiftcnn-train: trains the lecture's network (its ReLU variant, the architecture of Python's
// `python -m swiftcnn train --arch lenet`) on MNIST IDX files and saves a model that Python's
// `swiftcnn.load` reads.
//
//   swift run -c release swiftcnn-train --train-images train-images-idx3-ubyte \
//       --train-labels train-labels-idx1-ubyte --test-images t10k-images-idx3-ubyte \
//       --test-labels t10k-labels-idx1-ubyte --epochs 8 --output lenet.npz
//
// The recipe follows the Python CLI's defaults: He (Kaiming uniform) initialization with zero
// biases, Adam with lr 4e-3 decayed by a cosine over the epochs (per epoch), batch 128, seed 0;
// pixels scaled to [0, 1]. Unlike the Python CLI it does not augment (no random shifts).
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import SwiftCNN
import SwiftCNNIO

let usage = """
    usage: swiftcnn-train --train-images PATH --train-labels PATH [--test-images PATH --test-labels PATH]
                          [--epochs 8] [--batch-size 128] [--lr 0.004] [--seed 0] [--output lenet.npz] [--quiet]
    Trains the lecture's network (ReLU) on MNIST IDX files (not gzipped) and saves it for swiftcnn.load.
    """

/// Writes `text` to standard error (file descriptor 2: the C `stderr` global is shared mutable
/// state that Swift 6's concurrency checking refuses).
func printError(_ text: String) {
    var line = text + "\n"
    line.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
}

func fail(_ message: String) -> Never {
    printError("swiftcnn-train: \(message)")
    exit(2)
}

struct Options {
    var trainImages = "", trainLabels = "", testImages: String?, testLabels: String?
    var epochs = 8, batchSize = 128, seed: UInt64 = 0
    var lr = 4e-3
    var output = "lenet.npz"
    var quiet = false
}

func parseOptions(_ args: [String]) -> Options {
    var o = Options()
    var i = 0
    func value(_ name: String) -> String {
        i += 1
        guard i < args.count else { fail("\(name) needs a value\n\(usage)") }
        return args[i]
    }
    func number<N: LosslessStringConvertible>(_ name: String, _ text: String) -> N {
        guard let v = N(text) else { fail("\(name) must be a number, got '\(text)'") }
        return v
    }
    while i < args.count {
        var arg = args[i]
        var inline: String?
        if let eq = arg.firstIndex(of: "="), arg.hasPrefix("--") {
            inline = String(arg[arg.index(after: eq)...])
            arg = String(arg[..<eq])
        }
        let v = { inline ?? value(arg) }
        switch arg {
        case "--train-images": o.trainImages = v()
        case "--train-labels": o.trainLabels = v()
        case "--test-images": o.testImages = v()
        case "--test-labels": o.testLabels = v()
        case "--epochs": o.epochs = number(arg, v())
        case "--batch-size": o.batchSize = number(arg, v())
        case "--lr": o.lr = number(arg, v())
        case "--seed": o.seed = number(arg, v())
        case "--output": o.output = v()
        case "--quiet": o.quiet = true
        case "-h", "--help":
            print(usage)
            exit(0)
        default: fail("unknown argument '\(args[i])'\n\(usage)")
        }
        i += 1
    }
    if o.trainImages.isEmpty || o.trainLabels.isEmpty { fail("--train-images and --train-labels are required\n\(usage)") }
    if (o.testImages == nil) != (o.testLabels == nil) { fail("give both --test-images and --test-labels, or neither") }
    if o.epochs < 0 { fail("--epochs must be >= 0, got \(o.epochs)") }
    if o.batchSize < 1 { fail("--batch-size must be >= 1, got \(o.batchSize)") }
    if !(o.lr >= 0) || !o.lr.isFinite { fail("--lr must be a finite number >= 0, got \(o.lr)") }
    return o
}

/// MNIST images (N, 28, 28) as (N, 1, 28, 28) floats in [0, 1], and their labels.
func loadSplit(_ imagesPath: String, _ labelsPath: String) throws -> (Tensor<Float>, [Int]) {
    let images = try IDXFile(path: imagesPath), labels = try IDXFile(path: labelsPath)
    guard images.shape.count == 3 else {
        throw SwiftCNNError.value("\(imagesPath) should hold 3-D images (N, H, W), got shape \(images.shape)")
    }
    guard labels.shape.count == 1, labels.shape[0] == images.shape[0] else {
        throw SwiftCNNError.value("\(labelsPath) should hold \(images.shape[0]) labels (N,), got shape \(labels.shape)")
    }
    let (n, h, w) = (images.shape[0], images.shape[1], images.shape[2])
    let x = try Tensor<Float>(zeros: [n, 1, h, w])
    for i in 0..<images.bytes.count { x.pointer[i] = Float(images.bytes[i]) / 255 }
    return (x, labels.bytes.map { Int($0) })
}

/// The lecture's network with ReLU (API.md), as `build_lenet("relu")` in python/swiftcnn/__main__.py.
func lenet(seed: UInt64) throws -> Sequential<Float> {
    try Sequential<Float>(
        Conv2d(inChannels: 1, outChannels: 6, kernelSize: (5, 5), padding: (2, 2), seed: seed &+ 1), ReLU(),
        MaxPool2d(kernelSize: (2, 2)),
        Conv2d(inChannels: 6, outChannels: 16, kernelSize: (5, 5), seed: seed &+ 2), ReLU(),
        MaxPool2d(kernelSize: (2, 2)),
        Flatten(),
        Linear(inFeatures: 400, outFeatures: 120, seed: seed &+ 3), ReLU(),
        Linear(inFeatures: 120, outFeatures: 84, seed: seed &+ 4), ReLU(),
        Linear(inFeatures: 84, outFeatures: 10, seed: seed &+ 5))
}

/// He (Kaiming uniform) initialization, as the Python CLI's `--init he`: every Conv2d/Linear
/// weight ~ U(-sqrt(6 / fan_in), sqrt(6 / fan_in)) (gain sqrt(2) times sqrt(3 / fan_in)), biases 0.
func heInitialize(_ model: Sequential<Float>, seed: UInt64) {
    var generator = RandomGenerator(seed: seed)
    for layer in model.layers {
        let parameters: (weight: Parameter<Float>, bias: Parameter<Float>?)
        if let c = layer as? Conv2d<Float> { parameters = (c.weight, c.bias) } else if let l = layer as? Linear<Float> {
            parameters = (l.weight, l.bias)
        } else { continue }
        let fanIn = parameters.weight.data.shape.dropFirst().reduce(1, *)
        initializeUniform(parameters.weight.data, bound: Float((6.0 / Double(fanIn)).squareRoot()), generator: &generator)
        parameters.bias?.data.zero()
    }
}

func run() throws {
    let o = parseOptions(Array(CommandLine.arguments.dropFirst()))
    let (x, y) = try loadSplit(o.trainImages, o.trainLabels)
    let test = try o.testImages.map { try loadSplit($0, o.testLabels!) }
    let model = try lenet(seed: o.seed)
    heInitialize(model, seed: o.seed)
    let optimizer = try Adam(parameters: model.parameters, learningRate: o.lr)
    // Cosine annealing per epoch (PyTorch's CosineAnnealingLR with T_max = epochs, eta_min = 0).
    func cosineRate(_ epoch: Int) -> Double { o.lr * (1 + cos(Double.pi * Double(epoch) / Double(max(o.epochs, 1)))) / 2 }
    if !o.quiet {
        print("training the lecture's network (ReLU) on \(x.shape[0]) images: \(o.epochs) epochs, batch \(o.batchSize), Adam lr \(o.lr) (cosine), seed \(o.seed)")
    }
    let history = try model.fit(x, y, epochs: o.epochs, batchSize: o.batchSize, optimizer: optimizer, seed: o.seed) { p in
        if p.batch == p.batchesPerEpoch - 1 {
            optimizer.learningRate = cosineRate(p.epoch + 1)
        }
        return .proceed
    }
    for e in 0..<history.epochs where !o.quiet {
        let rate = Double(x.shape[0]) / max(history.seconds[e], 1e-9)
        print("epoch \(e + 1)/\(o.epochs): loss \(fmt(history.loss[e])), accuracy \(fmt(history.accuracy[e])), "
              + "\(fmt(history.seconds[e], 2)) s (\(Int(rate.rounded())) images/s)")
    }
    let total = history.seconds.reduce(0, +)
    if total > 0 {
        print("training: \(fmt(total, 2)) s, \(Int((Double(x.shape[0] * history.epochs) / total).rounded())) images/s")
    }
    if let test {
        let (tx, ty) = test
        let m = try model.evaluate(tx, ty)
        print("test accuracy: \(fmt(m.accuracy)) (\(tx.shape[0]) images), test loss \(fmt(m.loss))")
    }
    try model.save(to: o.output)
    print("saved \(o.output)")
}

/// `value` with `digits` decimals.
func fmt(_ value: Double, _ digits: Int = 4) -> String {
    guard value.isFinite else { return "\(value)" }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let r = (value * scale).rounded() / scale
    var s = "\(r)"
    if let dot = s.firstIndex(of: ".") {
        let decimals = s.distance(from: dot, to: s.endIndex) - 1
        if decimals < digits { s += String(repeating: "0", count: digits - decimals) }
    }
    return s
}

do {
    try run()
} catch {
    printError("swiftcnn-train: \(error)")
    exit(1)
}
