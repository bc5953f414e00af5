import Synchronization

/// A layer's training/evaluation flag, readable and settable from any thread.
///
/// An atomic rather than a field under the layer's `ExclusiveAccess`: setting the mode is not
/// refused while another thread runs the layer; a forward reads the flag once at its start, so it
/// runs wholly in one mode, and the new mode applies from the next forward.
@usableFromInline
final class TrainingFlag: Sendable {
    let value = Atomic<Bool>(true)

    @usableFromInline init() {}

    @usableFromInline var isOn: Bool { value.load(ordering: .acquiring) }

    @usableFromInline func set(_ on: Bool) { value.store(on, ordering: .releasing) }
}

extension Layer {
    /// Layers without modes are the same in both: they always answer true (the Python wrapper keeps
    /// the `.training` attribute of such layers itself).
    public var isTraining: Bool { true }

    /// Layers without modes ignore the mode.
    public func setTraining(_ on: Bool) {}
}
