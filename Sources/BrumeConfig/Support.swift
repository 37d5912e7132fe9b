import BrumeCore

extension Value {
    /// "boost" with quotes, 21.5 and true without: for messages.
    var quotedIfString: String {
        if case .string(let s) = self { return "\"\(s)\"" }
        return description
    }
}
