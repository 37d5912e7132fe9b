import BrumeConfig
import BrumeCore
import Crypto

#if canImport(Glibc)
import Glibc
#endif

/// A configuration pushed by the backend (PREFIX/config/set), as JSON:
///
///     {"version": 7, "expires": 1765000000000, "config": "<the whole gateway.toml>",
///      "kid": "backend-1", "sig": "<base64 Ed25519 signature>"}
///
/// The signature is over `signedBytes(gateway:)`: this gateway's id, the version, the expiry and
/// the SHA-256 of the text, so a push cannot be altered, re-targeted at another gateway or replayed
/// (versions only go up; an old one is refused) — docs/fleet.md.
struct ConfigPush: Sendable {
    var version: Int64
    var expires: Int64
    var text: String
    var keyID: String
    var signature: String

    static let maxBytes = 1 << 20

    /// The bytes a backend signs.
    static func signedBytes(gateway: String, version: Int64, expires: Int64, text: String) -> [UInt8] {
        Array("brume-config-v1\n\(gateway)\n\(version)\n\(expires)\n\(sha256Hex(text))".utf8)
    }

    static func sha256Hex(_ text: String) -> String {
        SHA256.hash(data: Array(text.utf8)).map { b in String(b, radix: 16).leftPadded(2) }.joined()
    }

    struct Refusal: Error, Sendable { var reason: String; var detail: String; var version: Int64? }

    static func parse(_ payload: UnsafeRawBufferPointer) -> Result<ConfigPush, Refusal> {
        guard payload.count <= maxBytes else { return .failure(Refusal(reason: "too_large", detail: "a push is at most 1 MiB, this one is \(payload.count) bytes")) }
        let json: JSONValue
        do { json = try JSONParser.parse(payload) } catch {
            return .failure(Refusal(reason: "bad_json", detail: "not JSON: \(error)"))
        }
        let version = json["version"]?.integer
        guard let version, version > 0 else {
            return .failure(Refusal(reason: "bad_push", detail: "\"version\" must be a positive integer"))
        }
        guard let expires = json["expires"]?.integer else {
            return .failure(Refusal(reason: "bad_push", detail: "\"expires\" (ms since the epoch) is required: a push without one could be replayed", version: version))
        }
        guard case .string(let text)? = json["config"] else {
            return .failure(Refusal(reason: "bad_push", detail: "\"config\" must be the whole gateway.toml as a string", version: version))
        }
        guard case .string(let kid)? = json["kid"], case .string(let sig)? = json["sig"] else {
            return .failure(Refusal(reason: "unsigned", detail: "a configuration push must be signed (\"kid\" and \"sig\"): unsigned pushes are refused", version: version))
        }
        return .success(ConfigPush(version: version, expires: expires, text: text, keyID: kid, signature: sig))
    }

    /// Signature, binding, expiry and replay: nil when the push may be checked and applied.
    func refusal(keys: [String: Curve25519.Signing.PublicKey], gateway: String, currentVersion: Int64, now: Int64,
                 clockTrusted: Bool, maxLifetimeMillis: Int64) -> Refusal? {
        guard let key = keys[keyID] else {
            return Refusal(reason: "unknown_key", detail: "signed with key \"\(keyID)\", which this gateway does not have in [commands.keys]", version: version)
        }
        guard let raw = Base64.decode(signature), raw.count == 64,
              key.isValidSignature(raw, for: ConfigPush.signedBytes(gateway: gateway, version: version, expires: expires, text: text)) else {
            return Refusal(reason: "bad_signature", detail: "the signature does not verify for this gateway (\(gateway)) with key \"\(keyID)\": forged, altered, or signed for another gateway", version: version)
        }
        guard version > currentVersion else {
            return Refusal(reason: "replayed", detail: "version \(version) is not newer than the running version \(currentVersion): a replay or an out-of-order push", version: version)
        }
        guard clockTrusted else {
            return Refusal(reason: "clock_unsynchronised", detail: "the gateway's clock is not synchronised: whether the push has expired cannot be told", version: version)
        }
        guard expires > now else {
            return Refusal(reason: "expired", detail: "the push expired \((now - expires) / 1000) s ago", version: version)
        }
        guard expires - now <= maxLifetimeMillis else {
            return Refusal(reason: "expiry_too_far", detail: "\"expires\" is \((expires - now) / 1000) s ahead, beyond [commands] max_lifetime", version: version)
        }
        return nil
    }

    /// A signed push as JSON (`brume sign-config`, the tests, a backend's reference).
    static func sign(text: String, version: Int64, expires: Int64, gateway: String, keyID: String, privateKey: Curve25519.Signing.PrivateKey) throws -> String {
        let sig = try privateKey.signature(for: signedBytes(gateway: gateway, version: version, expires: expires, text: text))
        var out: [UInt8] = Array("{\"version\":\(version),\"expires\":\(expires),\"config\":".utf8)
        WireFormat.appendString(text, to: &out)
        out.append(contentsOf: ",\"kid\":".utf8)
        WireFormat.appendString(keyID, to: &out)
        out.append(contentsOf: ",\"sig\":".utf8)
        WireFormat.appendString(Base64.encode(Array(sig)), to: &out)
        out.append(UInt8(ascii: "}"))
        return String(decoding: out, as: UTF8.self)
    }
}

extension String {
    func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: "0", count: n - count) + self }
}

extension JSONValue {
    var stringValue: String? { if case .string(let s) = self { s } else { nil } }
    /// An integral number that fits Int64 exactly.
    var integer: Int64? {
        guard case .number(let d) = self, d.isFinite, d == d.rounded(), abs(d) < 9.0e15 else { return nil }
        return Int64(d)
    }
}

/// Where pushed configurations live: `DATA_DIR/remote/` — `config.toml` (the pushed file in use,
/// or on probation), `previous.toml` (the last good pushed file; absent: the local
/// /etc/brume/gateway.toml was the last good one) and `state.json`. Every replacement is a
/// write to a temporary file, fsync, rename, fsync of the folder: a power cut leaves the old
/// file or the new one, never a mix.
struct RemoteConfigStore: Sendable {
    let dir: String
    init(dataDir: String) { dir = dataDir + "/remote" }

    var configPath: String { dir + "/config.toml" }
    var previousPath: String { dir + "/previous.toml" }
    var statePath: String { dir + "/state.json" }

    /// What the backend is told, and what survives a restart.
    struct State: Sendable, Equatable {
        enum Phase: String, Sendable { case good, pending }
        /// The version running (0: the local file, never pushed).
        var version: Int64 = 0
        var phase: Phase = .good
        /// The version a rollback returns to.
        var previousVersion: Int64 = 0
        /// The highest version ever accepted: never decreases, so a rolled-back push cannot be
        /// replayed (a rollback lowers `version`, not this).
        var highestVersion: Int64 = 0
        /// SHA-256 of the text `config.toml` must hold for `version` ("" : no config.toml, the
        /// local file). A mismatch at start means a power cut in the middle of a change.
        var sha256: String = ""
        /// Starts of the gateway while this version was on probation (a crash loop rolls back).
        var pendingStarts: Int = 0
        /// The last push's outcome: "applied", "refused", "rolled_back".
        var lastVersion: Int64 = 0
        var lastOutcome: String = ""
        var lastReason: String = ""
        var lastDetail: [String] = []
        var lastAtMillis: Int64 = 0

        var json: JSONValue {
            .object([
                JSONMember(key: "version", value: .number(Double(version))),
                JSONMember(key: "phase", value: .string(phase.rawValue)),
                JSONMember(key: "previous_version", value: .number(Double(previousVersion))),
                JSONMember(key: "highest_version", value: .number(Double(highestVersion))),
                JSONMember(key: "file_sha256", value: .string(sha256)),
                JSONMember(key: "pending_starts", value: .number(Double(pendingStarts))),
                JSONMember(key: "last", value: .object([
                    JSONMember(key: "version", value: .number(Double(lastVersion))),
                    JSONMember(key: "outcome", value: .string(lastOutcome)),
                    JSONMember(key: "reason", value: .string(lastReason)),
                    JSONMember(key: "detail", value: .array(lastDetail.map { .string($0) })),
                    JSONMember(key: "at_ms", value: .number(Double(lastAtMillis))),
                ])),
            ])
        }

        init() {}
        init(json j: JSONValue) {
            version = j["version"]?.integer ?? 0
            phase = Phase(rawValue: j["phase"]?.stringValue ?? "") ?? .good
            previousVersion = j["previous_version"]?.integer ?? 0
            highestVersion = j["highest_version"]?.integer ?? version
            sha256 = j["file_sha256"]?.stringValue ?? ""
            pendingStarts = Int(j["pending_starts"]?.integer ?? 0)
            if let l = j["last"] {
                lastVersion = l["version"]?.integer ?? 0
                lastOutcome = l["outcome"]?.stringValue ?? ""
                lastReason = l["reason"]?.stringValue ?? ""
                if case .array(let a)? = l["detail"] { lastDetail = a.compactMap(\.stringValue) }
                lastAtMillis = l["at_ms"]?.integer ?? 0
            }
        }
    }

    /// nil when the state file exists but cannot be read: pushes are then refused (a lost state
    /// must not reset the replay protection to version 0).
    func loadState() -> State? {
        guard access(statePath, F_OK) == 0 else { return State() }
        guard case .success(let text) = ConfigLoader.readFile(statePath), let j = try? JSONParser.parse(text), case .object = j else { return nil }
        return State(json: j)
    }

    func save(_ s: State) throws {
        try RemoteConfigStore.ensureDir(dir)
        try RemoteConfigStore.atomicWrite(statePath, s.json.description + "\n")
    }

    /// The pushed file in use, if any.
    func current() -> String? {
        if case .success(let t) = ConfigLoader.readFile(configPath) { return t }
        return nil
    }

    /// Puts `text` in use on probation. Order (each step durable before the next), so that a
    /// power cut anywhere leaves something `repair` makes consistent:
    /// 1. previous.toml := a copy of config.toml (or removed: the local file was the good one);
    /// 2. state := pending, with the SHA-256 the new file will have;
    /// 3. config.toml := the new text.
    func stage(_ text: String, version: Int64, state: inout State, now: Int64) throws {
        try RemoteConfigStore.ensureDir(dir)
        if let cur = current() { try RemoteConfigStore.atomicWrite(previousPath, cur) } else { unlink(previousPath); RemoteConfigStore.syncDir(dir) }
        state.previousVersion = state.version
        state.version = version
        state.highestVersion = max(state.highestVersion, version)
        state.sha256 = ConfigPush.sha256Hex(text)
        state.phase = .pending
        state.pendingStarts = 0
        state.lastAtMillis = now
        try save(state)
        try RemoteConfigStore.atomicWrite(configPath, text)
    }

    /// Back to the last good file (the previous push, or the local file): the file first, then
    /// the state (a power cut between the two is repaired at the next start).
    func rollBack(state: inout State) throws {
        if case .success(let prev) = ConfigLoader.readFile(previousPath) {
            try RemoteConfigStore.atomicWrite(configPath, prev)
            state.sha256 = ConfigPush.sha256Hex(prev)
        } else {
            unlink(configPath)
            RemoteConfigStore.syncDir(dir)
            state.sha256 = ""
        }
        state.version = state.previousVersion
        state.phase = .good
        state.pendingStarts = 0
        try save(state)
    }

    /// At start: the state says what config.toml should hold; if it does not (a power cut
    /// between the steps of `stage` or `rollBack`), go back to the last good file.
    func repair(_ s: inout State) -> Bool {
        let onDisk = current().map(ConfigPush.sha256Hex) ?? ""
        guard onDisk != s.sha256 else { return false }
        let bad = s.version
        if s.phase == .pending {
            // Interrupted while staging (the new file never landed) or while rolling back.
            try? rollBack(state: &s)
        } else {
            // A good state whose file differs: trust the file only if it is the previous good one.
            s.sha256 = onDisk
            try? save(s)
        }
        s.lastVersion = bad
        s.lastOutcome = "rolled_back"
        s.lastReason = "interrupted"
        s.lastDetail = ["a change of the configuration files was interrupted (a power cut?): back to the last good file"]
        s.lastAtMillis = wallClockMillis()
        try? save(s)
        return true
    }

    static func ensureDir(_ d: String) throws {
        if mkdir(d, 0o750) != 0 && errno != EEXIST { throw StartupError("cannot create \(d): \(String(cString: strerror(errno)))") }
    }

    static func syncDir(_ d: String) {
        let fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 { _ = fsync(fd); close(fd) }
    }

    static func atomicWrite(_ path: String, _ text: String) throws {
        if let why = BrumeCore.atomicWrite(text, to: path) { throw StartupError(why) }
    }
}

/// The configuration the gateway runs: the local file, or the pushed one when `[fleet]
/// remote_config` is on and a push is in use (with the local conf.d merged as always).
public enum EffectiveConfig {
    public struct Loaded: Sendable {
        public var config: GatewayConfig
        public var warnings: [Diagnostic]
        /// "local" or "remote v7".
        public var origin: String
    }

    /// nil `local`: the local file is loaded here.
    public static func load(path: String) -> Result<Loaded, ConfigFailure> {
        let local: (GatewayConfig, [Diagnostic])
        switch ConfigLoader.load(path: path) {
        case .failure(let f): return .failure(f)
        case .success(let l): local = l
        }
        guard local.0.fleet.remoteConfig else { return .success(Loaded(config: local.0, warnings: local.1, origin: "local")) }
        let store = RemoteConfigStore(dataDir: local.0.gateway.dataDir)
        guard let text = store.current() else { return .success(Loaded(config: local.0, warnings: local.1, origin: "local")) }
        let version = store.loadState()?.version ?? 0
        switch ConfigLoader.load(path: path, mainText: text, mainName: store.configPath, interpolateMain: false) {
        case .success(let (c, w)):
            // The protected settings are the local file's, whatever the pushed one says.
            if let why = FleetProtection.violation(local: local.0, pushed: c) {
                return .success(Loaded(config: local.0, warnings: local.1 + [Diagnostic(file: store.configPath, position: SourcePosition(line: 1, column: 1), message: "ignored: \(why)", severity: .warning)], origin: "local"))
            }
            return .success(Loaded(config: c, warnings: w, origin: "remote v\(version)"))
        case .failure:
            // A pushed file that no longer loads (an edited conf.d, a missing variable): the local one runs.
            return .success(Loaded(config: local.0, warnings: local.1 + [Diagnostic(file: store.configPath, position: SourcePosition(line: 1, column: 1), message: "the pushed configuration does not load any more: running the local file", severity: .warning)], origin: "local"))
        }
    }
}

extension EffectiveConfig {
    /// Before a start: a pushed configuration still on probation gets this start counted; one
    /// that made the gateway stop three times before it could prove healthy (a crash loop, a
    /// power cut each time...) is rolled back now.
    public static func countStart(path: String) {
        guard case .success(let (local, _)) = ConfigLoader.load(path: path), local.fleet.remoteConfig else { return }
        // Not while another brume runs on this data folder (it would fail to start anyway).
        let lock = open(local.gateway.dataDir + "/brume.lock", O_RDWR | O_CLOEXEC)
        defer { if lock >= 0 { close(lock) } }
        if lock >= 0 && flock(lock, LOCK_EX | LOCK_NB) != 0 { return }
        let store = RemoteConfigStore(dataDir: local.gateway.dataDir)
        guard var s = store.loadState() else { return }
        if store.repair(&s) { return }
        guard s.phase == .pending else { return }
        s.pendingStarts += 1
        if s.pendingStarts > 3 {
            let bad = s.version
            try? store.rollBack(state: &s)
            s.lastVersion = bad
            s.lastOutcome = "rolled_back"
            s.lastReason = "restarts"
            s.lastDetail = ["the gateway stopped \(s.pendingStarts) times while version \(bad) was on probation"]
            s.lastAtMillis = wallClockMillis()
        }
        try? store.save(s)
    }
}

/// What a push must never change without a technician on site.
enum FleetProtection {
    static func violation(local: GatewayConfig, pushed: GatewayConfig) -> String? {
        var changed: [String] = []
        if pushed.gateway != local.gateway { changed.append("[gateway] (id, data_dir: the outbox and the batch ids)") }
        if pushed.api != local.api { changed.append("[api] (the local API's address and token)") }
        if pushed.commands != local.commands { changed.append("[commands] (the signing keys)") }
        if pushed.fleet != local.fleet { changed.append("[fleet] (the configuration channel itself)") }
        if pushed.clock != local.clock { changed.append("[clock] (whether expiries of pushes and commands can be trusted)") }
        // Secret files: only those the technician already named (a push must not make the
        // gateway read any local file and send it to a broker of its choosing).
        let allowed = secretFiles(local)
        let extra = secretFiles(pushed).subtracting(allowed).sorted()
        if !extra.isEmpty { changed.append("secret or key files not in the local configuration (\(extra.joined(separator: ", ")))") }
        if changed.isEmpty { return nil }
        return "a push may not change \(changed.joined(separator: ", ")): these need a technician (edit the local file)"
    }

    static func secretFiles(_ c: GatewayConfig) -> Set<String> {
        var out = Set<String>()
        func conn(_ m: MQTTConnection) {
            if let p = m.passwordFile { out.insert(p) }
            if let t = m.tls { for f in [t.caFile, t.certFile, t.keyFile].compactMap({ $0 }) { out.insert(f) } }
        }
        for u in c.uplinks {
            if u.kind == .mqtt { conn(u.connection) }
            if let h = u.http {
                switch h.auth {
                case .none: break
                case .bearer(let f), .token(let f): out.insert(f)
                case .oauth2(_, _, let f, _): out.insert(f)
                }
                if let t = h.tls { for f in [t.caFile, t.certFile, t.keyFile].compactMap({ $0 }) { out.insert(f) } }
            }
        }
        for s in c.sources { if case .mqtt(let m) = s.kind { conn(m.connection) } }
        return out
    }
}

extension CommandSigning {
    /// A configuration push for one gateway, signed (`brume sign-config`; docs/fleet.md).
    public static func signConfig(text: String, version: Int64, expires: Int64, gateway: String, keyID: String, privateKeyBase64: String) throws -> String {
        guard let raw = Base64.decode(privateKeyBase64.trimmingCharacters(in: "\n")), raw.count == 32,
              let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: raw) else {
            throw SignError(description: "the private key must be 32 bytes in base64 (brume keygen writes one)")
        }
        guard version > 0 else { throw SignError(description: "the version must be a positive integer, higher than the running one") }
        return try ConfigPush.sign(text: text, version: version, expires: expires, gateway: gateway, keyID: keyID, privateKey: key)
    }
}
