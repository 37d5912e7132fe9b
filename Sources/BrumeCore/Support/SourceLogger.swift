import Logging

extension Logger {
    /// This logger with `source.name` in every entry (each source's logs say whose they are).
    public func forSource(_ name: String) -> Logger {
        var lg = self
        lg[metadataKey: "source.name"] = "\(name)"
        return lg
    }
}
