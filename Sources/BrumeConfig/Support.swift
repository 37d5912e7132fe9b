import BrumeCore

extension String {
    func replacingAll(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var out = ""
        var rest = Substring(self)
        while let r = rest.firstRange(of: target) {
            out += rest[..<r.lowerBound]
            out += replacement
            rest = rest[r.upperBound...]
        }
        out += rest
        return out
    }
}

extension Value {
    /// "boost" with quotes, 21.5 and true without: for messages.
    var quotedIfString: String {
        if case .string(let s) = self { return "\"\(s)\"" }
        return description
    }
}
