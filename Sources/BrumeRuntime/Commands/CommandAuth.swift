import BrumeConfig
import BrumeCore
import Crypto
import Synchronization

/// Who may command the actuators (`[commands]`), and whether a command's expiry can be trusted.
///
/// A signed command carries `"kid"` (which key) and `"sig"`: an Ed25519 signature (base64) by
/// the backend's private key over `Command.signedBytes(gateway:)` — this gateway's id, the
/// command's id, actuator, value and expiry. So a forged, altered or re-targeted command (signed
/// for another gateway) does not verify; a key removed from `[commands.keys]` (rotated out) is
/// unknown; a replay of the same id is a duplicate (the journal), and a replay after the journal
/// forgot it (`retention`) has expired, because a signed command must expire within
/// `max_lifetime`. Local triggers and safe states are the gateway's own: not signed.
struct CommandAuth: Sendable {
    let keys: [String: Curve25519.Signing.PublicKey]
    let required: Bool
    let maxLifetimeMillis: Int64
    /// Finished commands are forgotten after this long (`[commands] retention`).
    let retentionMillis: Int64
    let gatewayID: String

    init(_ c: CommandsSection, gatewayID: String) {
        var keys: [String: Curve25519.Signing.PublicKey] = [:]
        for (kid, raw) in c.publicKeys {
            if let k = try? Curve25519.Signing.PublicKey(rawRepresentation: raw) { keys[kid] = k }
        }
        self.keys = keys
        required = c.requireSignatures
        maxLifetimeMillis = c.maxLifetimeMillis
        retentionMillis = c.retentionMillis
        self.gatewayID = gatewayID
    }

    struct Refusal: Error, Sendable {
        var reason: String
        var detail: String
    }

    /// nil when the command may be journaled (it may still be expired: the caller checks).
    /// `clockTrusted`: the board's clock can tell whether `expires` has passed.
    func refusal(_ cmd: Command, now: Int64, clockTrusted: Bool) -> Refusal? {
        if let sig = cmd.signature {
            guard let key = keys[sig.keyID] else {
                return Refusal(reason: "unknown_key", detail: "signed with key \"\(sig.keyID)\", which this gateway does not have (rotated out, or another site's)")
            }
            guard let raw = Base64.decode(sig.base64), raw.count == 64,
                  key.isValidSignature(raw, for: cmd.signedBytes(gateway: gatewayID)) else {
                return Refusal(reason: "bad_signature", detail: "the signature does not verify for this gateway (\(gatewayID)) with key \"\(sig.keyID)\": forged, altered, or signed for another gateway")
            }
            guard cmd.expires != nil else {
                return Refusal(reason: "no_expiry", detail: "a signed command must carry \"expires\" (within [commands] max_lifetime): without one it could be replayed once the journal forgot it")
            }
        } else if required {
            return Refusal(reason: "unsigned", detail: "this gateway accepts signed commands only ([commands] signatures = \"required\")")
        }
        if let e = cmd.expires {
            guard clockTrusted else {
                return Refusal(reason: "clock_unsynchronised", detail: "the gateway's clock is not synchronised: whether the command has expired cannot be told, so it is not run")
            }
            if e > now, e - now > maxLifetimeMillis {
                return Refusal(reason: "expiry_too_far", detail: "\"expires\" is \((e - now) / 1000) s ahead, beyond [commands] max_lifetime (\(maxLifetimeMillis / 1000) s)")
            }
        }
        return nil
    }

    /// A signed command as JSON, for `brume sign` and the tests.
    static func sign(_ cmd: Command, gateway: String, keyID: String, privateKey: Curve25519.Signing.PrivateKey) throws -> String {
        let sig = try privateKey.signature(for: cmd.signedBytes(gateway: gateway))
        var out: [UInt8] = Array("{\"id\":".utf8)
        WireFormat.appendString(cmd.id, to: &out)
        out.append(contentsOf: ",\"actuator\":".utf8)
        WireFormat.appendString(cmd.actuator, to: &out)
        out.append(contentsOf: ",\"value\":".utf8)
        WireFormat.appendValue(cmd.value, to: &out)
        if let e = cmd.expires {
            out.append(contentsOf: ",\"expires\":".utf8)
            WireFormat.appendInteger(e, to: &out)
        }
        out.append(contentsOf: ",\"kid\":".utf8)
        WireFormat.appendString(keyID, to: &out)
        out.append(contentsOf: ",\"sig\":".utf8)
        WireFormat.appendString(Base64.encode(Array(sig)), to: &out)
        out.append(UInt8(ascii: "}"))
        return String(decoding: out, as: UTF8.self)
    }
}

/// `brume keygen` and `brume sign`: what a backend (or a technician testing an actuator) needs.
public enum CommandSigning {
    /// A new Ed25519 key pair, both in base64 (private: 32 bytes; public: 32 bytes).
    public static func keygen() -> (privateKey: String, publicKey: String) {
        let k = Curve25519.Signing.PrivateKey()
        return (Base64.encode(Array(k.rawRepresentation)), Base64.encode(Array(k.publicKey.rawRepresentation)))
    }

    public struct SignError: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// Signs a command (its JSON as the cloud would send it, without "kid"/"sig") for one gateway.
    public static func sign(commandJSON: String, gateway: String, keyID: String, privateKeyBase64: String) throws -> String {
        guard let raw = Base64.decode(privateKeyBase64.trimmingCharacters(in: "\n")), raw.count == 32,
              let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: raw) else {
            throw SignError(description: "the private key must be 32 bytes in base64 (brume keygen writes one)")
        }
        let parsed = Array(commandJSON.utf8).withUnsafeBytes { raw -> Result<Command, CommandParseError> in
            do throws(CommandParseError) { return .success(try CommandParser.parse(raw)) } catch { return .failure(error) }
        }
        let cmd: Command
        switch parsed {
        case .success(let c): cmd = c
        case .failure(let error): throw SignError(description: "not a command: \(error.reason): \(error.message)")
        }
        guard cmd.expires != nil else { throw SignError(description: "a signed command needs \"expires\" (ms since the epoch)") }
        return try CommandAuth.sign(cmd, gateway: gateway, keyID: keyID, privateKey: key)
    }
}
