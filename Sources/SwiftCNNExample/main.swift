// The lecture's network (LeNet-5 with sigmoids) trained with Adam on one synthetic batch. A sigmoid
// LeNet sits near ln(10) = 2.30 for a while before it learns (PyTorch's does the same).
// Run: swift run -c release swiftcnn-example
import SwiftCNN

let model = try Sequential<Float>(
    Conv2d(inChannels: 1, outChannels: 6, kernelSize: (5, 5), padding: (2, 2), seed: 1), Sigmoid(),
    MaxPool2d(kernelSize: (2, 2)),
    Conv2d(inChannels: 6, outChannels: 16, kernelSize: (5, 5), seed: 2), Sigmoid(),
    MaxPool2d(kernelSize: (2, 2)),
    Flatten(),
    Linear(inFeatures: 400, outFeatures: 120, seed: 3), Sigmoid(),
    Linear(inFeatures: 120, outFeatures: 84, seed: 4), Sigmoid(),
    Linear(inFeatures: 84, outFeatures: 10, seed: 5))
print(model)

// A fixed batch of 32 synthetic 28x28 images: class k is a bright horizontal bar at rows 2k+4...2k+5,
// on uniform noise.
var rng = RandomGenerator(seed: 0)
let x = try Tensor<Float>(zeros: [32, 1, 28, 28])
initializeUniform(x, bound: 0.5, generator: &rng)
let labels = (0..<32).map { Int64($0 % 10) }
for (n, label) in labels.enumerated() {
    for row in (2 * Int(label) + 4)...(2 * Int(label) + 5) {
        for col in 4..<24 { x[flat: n * 784 + row * 28 + col] += 2 }
    }
}

let optimizer = try Adam(parameters: model.parameters, learningRate: 0.003)
for step in 1...80 {
    // The canonical step: zero the grads, forward, loss and its gradient, backward, update.
    try optimizer.zeroGrad()
    let logits = try model.forward(x)
    let (loss, gradLogits) = try softmaxCrossEntropy(logits: logits, labels: labels)
    _ = try model.backward(gradLogits)
    try optimizer.step()
    if step % 10 == 0 { print("step \(step): loss \(loss)") }
}
