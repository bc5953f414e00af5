/// When conv2d runs through Winograd F(2x2, 3x3) (Kernels/Winograd.swift), and its backward glue.

/// Whether conv2d's forward (and, with padding <= 2, its input gradient) runs through Winograd
/// F(2x2, 3x3): 3x3 kernels, stride 1, no dilation, and a problem big enough for the transforms to
/// pay: at least 16 input and 16 output channels (the 16 GEMMs' depth and rows) and an output of at
/// least 8 x 8 (16 tiles per image; smaller images waste most of a 24-tile group). Both types.
@inlinable
func conv2dUsesWinograd(_ g: Conv2DGeometry) -> Bool {
    g.kernelH == 3 && g.kernelW == 3 && g.strideH == 1 && g.strideW == 1 && g.dilationH == 1 && g.dilationW == 1
        && g.batch > 0 && g.inChannels >= winogradMinChannels && g.outChannels >= winogradMinChannels
        && g.outH >= winogradMinOutput && g.outW >= winogradMinOutput
}

/// The fewest input and output channels for which `conv2dUsesWinograd` holds.
@usableFromInline let winogradMinChannels = 16
/// The smallest output height and width for which `conv2dUsesWinograd` holds.
@usableFromInline let winogradMinOutput = 8

/// conv2d's gradients for `conv2dUsesWinograd` geometries whose input gradient, if asked for, is
/// `.winograd` (same contract as `conv2dBackward`, batch >= 1): dx by `winogradConv2dGradInput`, dw by
/// `winogradConv2dGradWeight`, and db[k] = Σ_{n,i,j} g[n,k,i,j] (images in order).
@inlinable
func conv2dBackwardWinograd<T: CNNScalar>(_ g: Conv2DGeometry, gradOut: UnsafePointer<T>, x: UnsafePointer<T>,
                                          weight: UnsafePointer<T>, gradX: UnsafeMutablePointer<T>?,
                                          gradWeight: UnsafeMutablePointer<T>?, gradBias: UnsafeMutablePointer<T>?,
                                          accumulate: Bool, workspace: ScratchSlots<T>) throws {
    if let gradX {
        try winogradConv2dGradInput(g, gradOut: gradOut, weight: weight, gradX: gradX, workspace: workspace)
    }
    if let gradWeight {
        try winogradConv2dGradWeight(g, gradOut: gradOut, x: x, gradWeight: gradWeight, accumulate: accumulate,
                                     workspace: workspace)
    }
    if let gradBias {
        let plane = g.outH * g.outW
        for k in 0..<g.outChannels {
            var sum: T = accumulate ? gradBias[k] : 0
            for n in 0..<g.batch { sum += contiguousSum(gradOut + (n * g.outChannels + k) * plane, count: plane) }
            gradBias[k] = sum
        }
    }
}
