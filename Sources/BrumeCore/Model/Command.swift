/// An actuator command from the cloud (wire format v1, topic `{prefix}/commands`):
/// `{"id":"c-42","actuator":"boiler/valve","value":"close","expires":1764170060000}`.
public struct Command: Sendable, Hashable {
    public var id: String
    public var actuator: String
    public var value: Value
    /// Milliseconds since the epoch after which it must not run (nil: never expires).
    public var expires: Int64?
    /// Where it came from: "cloud" or "trigger:NAME" (local rules).
    public var origin: String
    /// `"kid"` and `"sig"`: the key id and the signature (base64) over `signedBytes(gateway:)`.
    public var signature: (keyID: String, base64: String)?

    public init(id: String, actuator: String, value: Value, expires: Int64?, origin: String = "cloud",
                signature: (keyID: String, base64: String)? = nil) {
        self.id = id
        self.actuator = actuator
        self.value = value
        self.expires = expires
        self.origin = origin
        self.signature = signature
    }

    public static func == (a: Command, b: Command) -> Bool {
        a.id == b.id && a.actuator == b.actuator && a.value == b.value && a.expires == b.expires && a.origin == b.origin
            && a.signature?.keyID == b.signature?.keyID && a.signature?.base64 == b.signature?.base64
    }

    public func hash(into h: inout Hasher) {
        h.combine(id)
        h.combine(actuator)
        h.combine(value)
        h.combine(expires)
        h.combine(origin)
    }

    /// What a signature covers: a fixed text, not the JSON as sent (its field order, spaces and
    /// escapes do not matter), bound to one gateway (a command for another gateway does not
    /// verify here) and to the command's id, actuator, value and expiry:
    ///
    ///     brume-command-v1\n<gateway id>\n<id>\n<actuator>\n<value as JSON>\n<expires or ->
    ///
    /// The value as JSON: numbers as `WireFormat.formatNumber`, `true`/`false`, strings quoted
    /// and escaped as `WireFormat.appendString`.
    public func signedBytes(gateway: String) -> [UInt8] {
        var out = Array("brume-command-v1\n".utf8)
        out.append(contentsOf: gateway.utf8)
        out.append(10)
        out.append(contentsOf: id.utf8)
        out.append(10)
        out.append(contentsOf: actuator.utf8)
        out.append(10)
        WireFormat.appendValue(value, to: &out)
        out.append(10)
        if let expires { WireFormat.appendInteger(expires, to: &out) } else { out.append(UInt8(ascii: "-")) }
        return out
    }
}

/// The life of a command. Final states: done, failed, expired, rejected.
public enum CommandState: String, Sendable, CaseIterable {
    case accepted, sent, done, failed, expired, rejected
    public var isFinal: Bool { self == .done || self == .failed || self == .expired || self == .rejected }
}

/// A command result as reported upward (`{prefix}/commands/result`).
public struct CommandResult: Sendable, Hashable {
    public var id: String?
    public var state: CommandState
    public var at: Int64
    public var detail: String
    public init(id: String?, state: CommandState, at: Int64, detail: String) {
        self.id = id
        self.state = state
        self.at = at
        self.detail = detail
    }
}

extension WireFormat {
    /// `{"id":"c-42","state":"done","at":1764170001234,"detail":"..."}` (id null when the command had none).
    public static func encodeResult(_ r: CommandResult) -> [UInt8] {
        var out: [UInt8] = []
        out.append(contentsOf: "{\"id\":".utf8)
        if let id = r.id { appendString(id, to: &out) } else { out.append(contentsOf: "null".utf8) }
        out.append(contentsOf: ",\"state\":\"\(r.state.rawValue)\",\"at\":\(r.at),\"detail\":".utf8)
        appendString(r.detail, to: &out)
        out.append(UInt8(ascii: "}"))
        return out
    }
}

public struct CommandParseError: Error, Sendable {
    public var id: String?
    public var reason: String
    public var message: String
}

public enum CommandParser {
    public static let maxBytes = 16 * 1024

    /// Parses a v1 command. Errors carry the id when it could be read, so the
    /// rejection can be reported against it.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(CommandParseError) -> Command {
        if bytes.count > maxBytes {
            throw CommandParseError(id: nil, reason: "too_large", message: "command of \(bytes.count) bytes is larger than \(maxBytes)")
        }
        let json: JSONValue
        do { json = try JSONParser.parse(bytes) } catch {
            throw CommandParseError(id: nil, reason: "malformed", message: "not valid JSON: \(error)")
        }
        guard case .object = json else { throw CommandParseError(id: nil, reason: "malformed", message: "a command is a JSON object") }
        var id: String?
        if case .string(let s)? = json["id"] { id = s }
        guard let id, !id.isEmpty, id.utf8.count <= 128 else {
            throw CommandParseError(id: nil, reason: "missing_id", message: "\"id\" must be a non-empty string of at most 128 bytes")
        }
        guard case .string(let actuator)? = json["actuator"], !actuator.isEmpty else {
            throw CommandParseError(id: id, reason: "malformed", message: "\"actuator\" must be a non-empty string")
        }
        let value: Value
        switch json["value"] {
        case .number(let d)?: value = .number(d)
        case .bool(let b)?: value = .bool(b)
        case .string(let s)? where s.utf8.count <= 256: value = .string(s)
        case nil: throw CommandParseError(id: id, reason: "malformed", message: "\"value\" is missing")
        default: throw CommandParseError(id: id, reason: "wrong_type", message: "\"value\" must be a number, a boolean or a short string")
        }
        var expires: Int64?
        switch json["expires"] {
        case nil, .null?: break
        case .number(let d)? where d.isFinite && d >= 0 && d < 1e15: expires = Int64(d)
        default: throw CommandParseError(id: id, reason: "malformed", message: "\"expires\" must be milliseconds since the epoch")
        }
        var signature: (keyID: String, base64: String)?
        switch (json["kid"], json["sig"]) {
        case (nil, nil): break
        case (.string(let kid)?, .string(let sig)?) where !kid.isEmpty && kid.utf8.count <= 64 && !sig.isEmpty && sig.utf8.count <= 256:
            signature = (kid, sig)
        default:
            throw CommandParseError(id: id, reason: "bad_signature", message: "\"kid\" and \"sig\" go together: a key id (at most 64 bytes) and a base64 signature")
        }
        return Command(id: id, actuator: actuator, value: value, expires: expires, signature: signature)
    }
}
