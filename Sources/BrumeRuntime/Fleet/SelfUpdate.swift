import BrumeConfig
import BrumeCore
import Crypto

#if canImport(Glibc)
import Glibc
#endif

/// A package offered by the backend (PREFIX/update/offer):
///
///     {"version": "1.0.2", "url": "https://updates.example.com/brume_1.0.2_arm64.deb",
///      "sha256": "<hex>", "expires": 1765000600000, "kid": "backend-2026", "sig": "<base64>"}
///
/// Ed25519 over `brume-update-v1\nGW\nVERSION\nURL\nSHA256\nEXPIRES` (docs/fleet.md). The daemon
/// (unprivileged) verifies it, downloads and checks the package, and hands it to the root helper
/// (`brume update-install`, run by brume-update.service when the request appears), which verifies
/// everything again, installs with dpkg, waits for the new version to prove healthy, and
/// reinstalls the previous package when it does not.
struct UpdateOffer: Sendable {
    var version: String
    var url: String
    var sha256: String
    var expires: Int64
    var keyID: String
    var signature: String

    static let maxPackageBytes = 256 << 20

    static func signedBytes(gateway: String, version: String, url: String, sha256: String, expires: Int64) -> [UInt8] {
        Array("brume-update-v1\n\(gateway)\n\(version)\n\(url)\n\(sha256)\n\(expires)".utf8)
    }

    static func parse(_ bytes: [UInt8]) -> Result<UpdateOffer, ConfigPush.Refusal> {
        guard bytes.count <= 64 << 10 else { return .failure(.init(reason: "too_large", detail: "an offer is at most 64 KiB")) }
        guard let j = try? JSONParser.parse(bytes) else { return .failure(.init(reason: "bad_json", detail: "not JSON")) }
        guard case .string(let v)? = j["version"], isDebianVersion(v) else {
            return .failure(.init(reason: "bad_offer", detail: "\"version\" must be a Debian version (digits, letters, . + ~ : -; at most 64)"))
        }
        guard case .string(let url)? = j["url"], url.hasPrefix("https://"), url.utf8.count <= 2048, !url.contains("\n") else {
            return .failure(.init(reason: "bad_offer", detail: "\"url\" must be an https:// URL"))
        }
        guard case .string(let sha)? = j["sha256"], sha.utf8.count == 64, sha.unicodeScalars.allSatisfy({ ("0"..."9").contains($0) || ("a"..."f").contains($0) }) else {
            return .failure(.init(reason: "bad_offer", detail: "\"sha256\" must be 64 lowercase hex digits"))
        }
        guard let expires = j["expires"]?.integer else { return .failure(.init(reason: "bad_offer", detail: "\"expires\" (ms since the epoch) is required")) }
        guard case .string(let kid)? = j["kid"], case .string(let sig)? = j["sig"] else {
            return .failure(.init(reason: "unsigned", detail: "a package offer must be signed (\"kid\" and \"sig\")"))
        }
        return .success(UpdateOffer(version: v, url: url, sha256: sha, expires: expires, keyID: kid, signature: sig))
    }

    static func isDebianVersion(_ v: String) -> Bool {
        !v.isEmpty && v.utf8.count <= 64 && v.unicodeScalars.first.map { ("0"..."9").contains($0) } == true
            && v.unicodeScalars.allSatisfy { ("0"..."9").contains($0) || ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ".+~:-".unicodeScalars.contains($0) }
    }

    func refusal(keys: [String: Curve25519.Signing.PublicKey], gateway: String, now: Int64, clockTrusted: Bool, maxLifetimeMillis: Int64) -> ConfigPush.Refusal? {
        guard let key = keys[keyID] else { return .init(reason: "unknown_key", detail: "signed with key \"\(keyID)\", which this gateway does not have") }
        guard let raw = Base64.decode(signature), raw.count == 64,
              key.isValidSignature(raw, for: UpdateOffer.signedBytes(gateway: gateway, version: version, url: url, sha256: sha256, expires: expires)) else {
            return .init(reason: "bad_signature", detail: "the signature does not verify for this gateway (\(gateway)) with key \"\(keyID)\"")
        }
        guard clockTrusted else { return .init(reason: "clock_unsynchronised", detail: "the clock is not synchronised: the offer's expiry cannot be checked") }
        guard expires > now else { return .init(reason: "expired", detail: "the offer expired \((now - expires) / 1000) s ago") }
        guard expires - now <= maxLifetimeMillis else { return .init(reason: "expiry_too_far", detail: "\"expires\" is beyond [commands] max_lifetime") }
        return nil
    }

    var json: String {
        var out: [UInt8] = Array("{\"version\":".utf8)
        WireFormat.appendString(version, to: &out)
        out.append(contentsOf: ",\"url\":".utf8); WireFormat.appendString(url, to: &out)
        out.append(contentsOf: ",\"sha256\":".utf8); WireFormat.appendString(sha256, to: &out)
        out.append(contentsOf: ",\"expires\":\(expires),\"kid\":".utf8); WireFormat.appendString(keyID, to: &out)
        out.append(contentsOf: ",\"sig\":".utf8); WireFormat.appendString(signature, to: &out)
        out.append(UInt8(ascii: "}"))
        return String(decoding: out, as: UTF8.self)
    }

    static func sign(version: String, url: String, sha256: String, expires: Int64, gateway: String, keyID: String, privateKey: Curve25519.Signing.PrivateKey) throws -> String {
        let sig = try privateKey.signature(for: signedBytes(gateway: gateway, version: version, url: url, sha256: sha256, expires: expires))
        return UpdateOffer(version: version, url: url, sha256: sha256, expires: expires, keyID: keyID, signature: Base64.encode(Array(sig))).json
    }
}

/// `DATA_DIR/update/`: the daemon writes `brume.deb` and `request.json` (which wakes the helper
/// through brume-update-trigger.path); the helper writes `probation.json` before it installs and
/// `result.json` when done; the new daemon writes `healthy.json` once healthy on probation.
struct UpdateFiles: Sendable {
    let dir: String
    init(dataDir: String) { dir = dataDir + "/update" }
    var deb: String { dir + "/brume.deb" }
    var part: String { dir + "/brume.deb.part" }
    var request: String { dir + "/request.json" }
    var result: String { dir + "/result.json" }
    var probation: String { dir + "/probation.json" }
    var healthy: String { dir + "/healthy.json" }
    var installed: String { dir + "/installed" }

    func json(_ path: String) -> JSONValue? {
        guard case .success(let t) = ConfigLoader.readFile(path) else { return nil }
        return try? JSONParser.parse(t)
    }

    /// What the backend is told of the last update.
    func writeResult(version: String, outcome: String, reason: String = "", detail: [String] = []) throws {
        try RemoteConfigStore.ensureDir(dir)
        let j = JSONValue.object([
            JSONMember(key: "version", value: .string(version)), JSONMember(key: "outcome", value: .string(outcome)),
            JSONMember(key: "reason", value: .string(reason)), JSONMember(key: "detail", value: .array(detail.prefix(20).map { .string(String($0.prefix(2000))) })),
            JSONMember(key: "at_ms", value: .number(Double(wallClockMillis()))),
        ])
        try RemoteConfigStore.atomicWrite(result, j.description + "\n")
        adopt(result)
    }

    /// A file the root helper writes gets the owner of the folder (the brume user), so that the
    /// unprivileged gateway can read it and replace it.
    func adopt(_ path: String) {
        var st = stat()
        guard getuid() == 0, stat(dir, &st) == 0 else { return }
        _ = chown(path, st.st_uid, st.st_gid)
    }
}

/// SHA-256 of a file, streamed (lowercase hex); nil when it cannot be read.
func sha256File(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var h = SHA256()
    var buf = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 { return nil }
        if n == 0 { break }
        h.update(data: buf[0..<n])
    }
    return h.finalize().map { String($0, radix: 16).leftPadded(2) }.joined()
}

/// Runs a program, waits, returns its exit status and its output (stdout + stderr, at most 64 KiB).
func runProgram(_ path: String, _ args: [String], environment: [String] = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C"]) -> (Int32, String) {
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else { return (-1, "pipe: \(String(cString: strerror(errno)))") }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
    posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
    posix_spawn_file_actions_addclose(&actions, fds[0])
    let argv: [UnsafeMutablePointer<CChar>?] = ([path] + args).map { strdup($0) } + [nil]
    let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
    defer { for a in argv { free(a) }; for e in envp { free(e) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, path, &actions, nil, argv, envp)
    close(fds[1])
    guard rc == 0 else { close(fds[0]); return (-1, "cannot run \(path): \(String(cString: strerror(rc)))") }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buf.withUnsafeMutableBytes { read(fds[0], $0.baseAddress, $0.count) }
        if n <= 0 { break }
        if out.count < 64 << 10 { out.append(contentsOf: buf[0..<n]) }
    }
    close(fds[0])
    var st: Int32 = 0
    while waitpid(pid, &st, 0) < 0 && errno == EINTR {}
    let status = (st & 0x7f) == 0 ? (st >> 8) & 0xff : 128 + (st & 0x7f)
    return (status, String(decoding: out, as: UTF8.self))
}

/// The installed package's version (nil: not installed by dpkg).
func installedPackageVersion() -> String? {
    let (rc, out) = runProgram("/usr/bin/dpkg-query", ["-W", "-f=${Version}", "brume"])
    let v = out.split(separator: "\n").first.map(String.init) ?? ""
    return rc == 0 && !v.isEmpty ? v : nil
}

/// `brume update-install` (root, from brume-update.service): verifies the request again (the
/// daemon that wrote it is not trusted for that), keeps the previous package for the rollback,
/// installs with dpkg, waits for the new daemon's `healthy.json`, reinstalls the previous
/// package when it does not come within the window. Exit status 0 applied, 1 refused or rolled
/// back, 2 nothing to do.
public enum UpdateInstaller {
    public static func run(configPath: String, waitSeconds: Int?, log: (String) -> Void) -> Int32 {
        guard case .success(let (config, _)) = ConfigLoader.load(path: configPath) else { log("cannot load \(configPath)"); return 1 }
        guard config.fleet.updates else { log("[fleet] updates is off in \(configPath)"); return 2 }
        let files = UpdateFiles(dataDir: config.gateway.dataDir)
        guard case .success(let text) = ConfigLoader.readFile(files.request) else { log("no request in \(files.request)"); return 2 }
        unlink(files.request) // one attempt per request, whatever happens (the path unit must not loop)
        var keys: [String: Curve25519.Signing.PublicKey] = [:]
        for (kid, raw) in config.commands.publicKeys { if let k = try? Curve25519.Signing.PublicKey(rawRepresentation: raw) { keys[kid] = k } }
        func refuse(_ v: String, _ reason: String, _ detail: String) -> Int32 {
            log("refused: \(reason): \(detail)")
            try? files.writeResult(version: v, outcome: "refused", reason: reason, detail: [detail])
            return 1
        }
        let offer: UpdateOffer
        switch UpdateOffer.parse(Array(text.utf8)) {
        case .failure(let r): return refuse("", r.reason, r.detail)
        case .success(let o): offer = o
        }
        // The expiry was checked when the offer arrived (the daemon knows whether the clock is
        // synchronised); here the signature, the binding and the package itself.
        if let r = offer.refusal(keys: keys, gateway: config.gateway.id, now: offer.expires - 1, clockTrusted: true, maxLifetimeMillis: .max), r.reason != "expiry_too_far" {
            return refuse(offer.version, r.reason, r.detail)
        }
        guard sha256File(files.deb) == offer.sha256 else { return refuse(offer.version, "sha256_mismatch", "\(files.deb) is not the package offered") }
        let (frc, fields) = runProgram("/usr/bin/dpkg-deb", ["--field", files.deb, "Package", "Version", "Architecture"])
        var f: [String: String] = [:]
        for line in fields.split(separator: "\n") { if let c = line.firstIndex(of: ":") { f[String(line[..<c])] = String(line[line.index(after: c)...].drop { $0 == " " }) } }
        let arch = runProgram("/usr/bin/dpkg", ["--print-architecture"]).1.split(separator: "\n").first.map(String.init) ?? ""
        guard frc == 0, f["Package"] == "brume", f["Version"] == offer.version, f["Architecture"] == arch || f["Architecture"] == "all" else {
            return refuse(offer.version, "wrong_package", "the file is \(f["Package"] ?? "?") \(f["Version"] ?? "?") for \(f["Architecture"] ?? "?"), not brume \(offer.version) for \(arch)")
        }
        guard let current = installedPackageVersion() else { return refuse(offer.version, "not_installed", "brume is not installed by dpkg here: nothing to roll back to") }
        if current == offer.version { return refuse(offer.version, "already_installed", "brume \(current) is installed") }
        // The package to go back to: one installed by a previous update, or apt's cache.
        let fileVersion = current.replacingAll(":", with: "%3a")
        let candidates = ["\(files.installed)/brume_\(fileVersion)_\(arch).deb", "/var/cache/apt/archives/brume_\(fileVersion)_\(arch).deb"]
        guard let previous = candidates.first(where: { access($0, R_OK) == 0 }) else {
            return refuse(offer.version, "no_rollback_package", "no package of the installed version \(current) to roll back to (looked for \(candidates.joined(separator: ", ")))")
        }
        try? RemoteConfigStore.ensureDir(files.installed)
        if !previous.hasPrefix(files.installed) { _ = runProgram("/bin/cp", [previous, "\(files.installed)/brume_\(fileVersion)_\(arch).deb"]) }
        let rollback = "\(files.installed)/brume_\(fileVersion)_\(arch).deb"
        let since = wallClockMillis()
        unlink(files.healthy)
        let probation = JSONValue.object([JSONMember(key: "version", value: .string(offer.version)), JSONMember(key: "previous", value: .string(current)),
                                          JSONMember(key: "since_ms", value: .number(Double(since)))])
        try? RemoteConfigStore.atomicWrite(files.probation, probation.description + "\n")
        files.adopt(files.probation)
        try? files.writeResult(version: offer.version, outcome: "installing", detail: ["from \(current)"])
        log("installing brume \(offer.version) (from \(current); rollback package \(rollback))")
        let (rc, out) = runProgram("/usr/bin/dpkg", ["-i", "--force-confold", files.deb])
        func rollBack(_ reason: String, _ detail: [String]) -> Int32 {
            log("rolling back to \(current): \(reason)")
            let (rrc, rout) = runProgram("/usr/bin/dpkg", ["-i", "--force-confold", rollback])
            unlink(files.probation)
            try? files.writeResult(version: offer.version, outcome: rrc == 0 ? "rolled_back" : "rollback_failed", reason: reason,
                                   detail: detail + (rrc == 0 ? ["reinstalled \(current)"] : ["dpkg failed to reinstall \(current): \(rout.suffix(1000))"]))
            return 1
        }
        guard rc == 0 else { return rollBack("dpkg_failed", ["dpkg -i: \(out.suffix(1500))"]) }
        let keep = "\(files.installed)/brume_\(offer.version.replacingAll(":", with: "%3a"))_\(arch).deb"
        _ = runProgram("/bin/cp", [files.deb, keep])
        unlink(files.deb)
        // The new daemon (restarted by the package's postinst under systemd) says when it is healthy.
        let wait = Int64(waitSeconds ?? Int(config.fleet.updateWindowMillis / 1000) + 30)
        let deadline = ContinuousClock.now + .seconds(wait)
        while ContinuousClock.now < deadline {
            if let h = files.json(files.healthy), h["version"]?.stringValue == offer.version, (h["at_ms"]?.integer ?? 0) >= since {
                unlink(files.probation)
                try? files.writeResult(version: offer.version, outcome: "applied", detail: ["from \(current)"])
                // Keep the running and the previous packages; older ones go.
                if let d = opendir(files.installed) {
                    var names: [String] = []
                    while let e = readdir(d) {
                        let n = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                        if n.hasSuffix(".deb") { names.append(n) }
                    }
                    closedir(d)
                    for n in names where "\(files.installed)/\(n)" != keep && "\(files.installed)/\(n)" != rollback { unlink("\(files.installed)/\(n)") }
                }
                log("brume \(offer.version) is healthy")
                return 0
            }
            usleep(500_000)
        }
        return rollBack("unhealthy", ["brume \(offer.version) did not report healthy within \(wait) s of its installation"])
    }
}

extension CommandSigning {
    /// A package offer for one gateway, signed; the version and the SHA-256 come from the file.
    public static func signUpdate(package: String, url: String, expires: Int64, gateway: String, keyID: String, privateKeyBase64: String) throws -> String {
        guard let raw = Base64.decode(privateKeyBase64.trimmingCharacters(in: "\n")), raw.count == 32,
              let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: raw) else {
            throw SignError(description: "the private key must be 32 bytes in base64 (brume keygen writes one)")
        }
        guard let sha = sha256File(package) else { throw SignError(description: "cannot read \(package)") }
        let (rc, out) = runProgram("/usr/bin/dpkg-deb", ["--field", package, "Version"])
        let version = out.split(separator: "\n").first.map(String.init) ?? ""
        guard rc == 0, UpdateOffer.isDebianVersion(version) else { throw SignError(description: "\(package) is not a .deb with a version (dpkg-deb: \(out.prefix(200)))") }
        guard url.hasPrefix("https://") else { throw SignError(description: "the URL must be https://") }
        return try UpdateOffer.sign(version: version, url: url, sha256: sha, expires: expires, gateway: gateway, keyID: keyID, privateKey: key)
    }
}
