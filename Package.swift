// swift-tools-version:6.0
//
// SwiftCNN: a small convolutional-network library.
//
//   SwiftCNN         the core (pure Swift: no Foundation, no C, no Python)
//   SwiftCNNCAPI     the core exported as a flat C ABI (@_cdecl), built as a dynamic library
//                    for the Python extension; its header is Sources/SwiftCNNCAPI/include/swiftcnn.h
//   SwiftCNNExample  the README's Swift example: trains the lecture's network
//   SwiftCNNIO       save/load of models in Python's .npz format, .npy/.npz/zip (no Foundation)
//   SwiftCNNTrain    `swiftcnn-train`: trains the lecture's network on MNIST IDX files
//   SwiftCNNTestSupport  test helpers shared by both test targets (not a product)
//
// No unsafeFlags here, so other packages can depend on SwiftCNN. Speed flags (-target-cpu,
// -DSWIFTCNN_FMA) and the static Swift runtime are passed on the `swift build` command line by
// setup.py; see docs/ARCHITECTURE.md.
import PackageDescription

let package = Package(
    name: "SwiftCNN",
    products: [
        .library(name: "SwiftCNN", targets: ["SwiftCNN"]),
        .library(name: "SwiftCNNCAPI", type: .dynamic, targets: ["SwiftCNNCAPI"]),
        .executable(name: "swiftcnn-example", targets: ["SwiftCNNExample"]),
        .library(name: "SwiftCNNIO", targets: ["SwiftCNNIO"]),
        .executable(name: "swiftcnn-train", targets: ["SwiftCNNTrain"]),
    ],
    targets: [
        .target(name: "SwiftCNN"),
        .target(name: "SwiftCNNCAPI", dependencies: ["SwiftCNN"]),
        .executableTarget(name: "SwiftCNNExample", dependencies: ["SwiftCNN"]),
        .target(name: "SwiftCNNIO", dependencies: ["SwiftCNN"]),
        .executableTarget(name: "SwiftCNNTrain", dependencies: ["SwiftCNN", "SwiftCNNIO"]),
        // Helpers shared by the two test targets (seeded data, finite differences, error checks).
        .target(name: "SwiftCNNTestSupport", dependencies: ["SwiftCNN"], path: "Tests/SwiftCNNTestSupport"),
        .testTarget(name: "SwiftCNNTests", dependencies: ["SwiftCNN", "SwiftCNNTestSupport"]),
        .testTarget(name: "SwiftCNNCAPITests", dependencies: ["SwiftCNNCAPI", "SwiftCNN", "SwiftCNNTestSupport"]),
        .testTarget(name: "SwiftCNNIOTests", dependencies: ["SwiftCNNIO", "SwiftCNN", "SwiftCNNTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
