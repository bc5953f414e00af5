/// The checks every Tensor-level op with an `into:` output argument makes on that output.


/// Throws a value error if the memory of `out` overlaps that of `input` (named `name`).
@usableFromInline
func checkNoOverlap<T>(op: String, _ out: Tensor<T>, _ input: Tensor<T>, _ name: String) throws {
    if out.count == 0 || input.count == 0 { return }
    let o = UnsafeRawPointer(out.pointer), i = UnsafeRawPointer(input.pointer)
    let size = MemoryLayout<T>.stride
    if o < i + input.count * size && i < o + out.count * size {
        throw SwiftCNNError.value("\(op): out must not overlap \(name)")
    }
}

/// Throws a value error unless `out` has `shape`.
@usableFromInline
func checkOutShape<T>(op: String, _ out: Tensor<T>, _ shape: [Int]) throws {
    guard out.shape == shape else {
        throw SwiftCNNError.value("\(op): out must have shape \(describeShape(shape)), got \(describeShape(out.shape))")
    }
}
