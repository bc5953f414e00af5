import SwiftCNN
func net() throws -> Sequential<Float> { try Sequential<Float>(
    Conv2d(inChannels: 1, outChannels: 6, kernelSize: (5, 5), padding: (2, 2), seed: 1), Sigmoid(),
    MaxPool2d(kernelSize: (2, 2)),
    Conv2d(inChannels: 6, outChannels: 16, kernelSize: (5, 5), seed: 2), Sigmoid(),
    MaxPool2d(kernelSize: (2, 2)),
    Flatten(),
    Linear(inFeatures: 400, outFeatures: 120, seed: 3), Sigmoid(),
    Linear(inFeatures: 120, outFeatures: 84, seed: 4), Sigmoid(),
    Linear(inFeatures: 84, outFeatures: 10, seed: 5)) }
var rng = RandomGenerator(seed: 0)
let x = try Tensor<Float>(zeros: [32, 1, 28, 28])
initializeUniform(x, bound: 0.5, generator: &rng)
let labels = (0..<32).map { Int64($0 % 10) }
for (n, label) in labels.enumerated() {
    for row in (2 * Int(label) + 4)...(2 * Int(label) + 5) {
        for col in 4..<24 { x[flat: n * 784 + row * 28 + col] += 2 }
    }
}
for cfg in 0..<6 {
  let model = try net()
  let optimizer: any Optimizer
  switch cfg {
  case 0: optimizer = try SGD(parameters: model.parameters, learningRate: 0.9)
  case 1: optimizer = try SGD(parameters: model.parameters, learningRate: 0.5, momentum: 0.9)
  case 2: optimizer = try Adam(parameters: model.parameters, learningRate: 0.003)
  case 3: optimizer = try Adam(parameters: model.parameters, learningRate: 0.001)
  case 4: optimizer = try SGD(parameters: model.parameters, learningRate: 2)
  default: optimizer = try Adam(parameters: model.parameters, learningRate: 0.02)
  }
  var out: [String] = []
  for _ in 1...30 {
    try optimizer.zeroGrad()
    let (loss, g) = try softmaxCrossEntropy(logits: model.forward(x), labels: labels)
    _ = try model.backward(g)
    try optimizer.step()
    out.append(String(Int(loss * 1000)))
  }
  print(cfg, out.joined(separator: " "))
}
