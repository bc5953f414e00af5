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

/// conv2d's gradients when `conv2dGradInputKernel(g) == .winograd` (same contract as
/// `conv2dBackward`, batch >= 1): dx by `winogradConv2dGradInput`, then dw and db by the other paths.
@inlinable
func conv2dBackwardWinograd<T: CNNScalar>(_ g: Conv2DGeometry, gradOut: UnsafePointer<T>, x: UnsafePointer<T>,
                                          weight: UnsafePointer<T>, gradX: UnsafeMutablePointer<T>,
                                          gradWeight: UnsafeMutablePointer<T>?, gradBias: UnsafeMutablePointer<T>?,
                                          accumulate: Bool, workspace: ScratchSlots<T>) throws {
    try winogradConv2dGradInput(g, gradOut: gradOut, weight: weight, gradX: gradX, workspace: workspace)
    if gradWeight == nil && gradBias == nil { return }
    try conv2dBackwardNonEmpty(g, gradOut: gradOut, x: x, weight: weight, gradX: nil, gradWeight: gradWeight,
                               gradBias: gradBias, accumulate: accumulate, workspace: workspace)
}
