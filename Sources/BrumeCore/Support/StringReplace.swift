extension String {
    /// Every occurrence of `target` replaced, left to right, in one pass (a replacement that
    /// contains `target` is not expanded again). Without Foundation's `replacingOccurrences`.
    public func replacingAll(_ target: String, with replacement: String) -> String {
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
