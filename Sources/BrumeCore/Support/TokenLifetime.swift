/// How long an OAuth2 access token may be used: `expires_in` of a token response (RFC 6749
/// §5.1), from the network, so any JSON number: clamped to [1 s, 1 year] (3,600 s when absent
/// or not a number), less a refresh margin of a minute or a tenth of it. Pure, so the fuzzer
/// drives it with every number a token endpoint could send (1e300 once trapped a conversion).
public enum TokenLifetime {
    /// Seconds the token is used before it is refreshed.
    public static func useFor(_ response: JSONValue) -> Double {
        var lifetime: Double = 3600
        if case .number(let e)? = response["expires_in"], e.isFinite { lifetime = min(max(e, 1), 365 * 86_400) }
        return max(1, lifetime - min(60, lifetime / 10))
    }

    /// The monotonic deadline (ns) for a token obtained at `now`.
    public static func deadline(_ response: JSONValue, now: UInt64) -> UInt64 {
        now &+ UInt64(useFor(response) * 1e9)
    }
}
