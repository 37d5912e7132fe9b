import BrumeConfig
import BrumeCore
import BrumeMQTT
import BrumeSerial
import BrumeUplink
import Crypto
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The backend's channel to this gateway (`[fleet]`, docs/fleet.md), on the first v1 MQTT
/// uplink's broker under its own client id (`ID-fleet`, persistent session: a push sent while the
/// gateway is offline arrives when it is back):
///
/// - `PREFIX/config/set` ← a signed configuration push. Checked like `brume check` (refused with
///   every diagnostic), protected settings compared, staged (fsync + rename, the previous good
///   file kept) and applied like a reload — or by restarting the process in place when the
///   changes need one (`exec`, same PID: the outbox spans both configurations). Then on
///   probation: healthy within `health_window` (every uplink online and a batch acknowledged since,
///   or nothing to send; no source disconnected) → kept; otherwise rolled back by itself.
/// - `PREFIX/config/state` → the running version, its hash, and the last push's outcome (retained).
/// - `PREFIX/diagnostics/request` ← `{"id": "...", "log_lines": 50}`; `PREFIX/diagnostics/response`
///   → status, recent log lines, serial ports, outbox statistics (at most 256 KiB, one per 5 s).
final class FleetService: Sendable {
    let settings: FleetSection
    let prefix: String
    let localPath: String
    let store: RemoteConfigStore
    let keys: [String: Curve25519.Signing.PublicKey]
    let gatewayID: String
    let logger: Logger
    let client: MQTTClient
    let inbox: AsyncStream<(String, [UInt8])>
    private let inboxFeed: AsyncStream<(String, [UInt8])>.Continuation
    let state: Locked<RemoteConfigStore.State>
    /// state.json exists and cannot be read: pushes are refused (the replay protection is lost).
    let stateUnreadable: Bool
    /// Every change of the fleet state (a push, the probation's verdict, a rollback) runs under
    /// this lock, one at a time: the message task and the probation task never interleave.
    private let ops = Mutex<Void>(())
    /// Monotonic deadline of the probation (nil: not on probation).
    let probationDeadline = Locked<ContinuousClock.Instant?>(nil)
    let probationSince = Locked<Int64>(0)
    let lastDiagnostics = Locked<ContinuousClock.Instant?>(nil)
    let refused = ReasonCounters()
    let limiter = LogRateLimiter(burst: 5, interval: .seconds(30))
    weak let gatewayRef: Gateway?
    let updates: UpdateFiles
    let installedVersion: String?
    /// The package version on probation, until when, and since when (ms).
    let updateProbation = Locked<(String, ContinuousClock.Instant, Int64)?>(nil)
    let downloading = Atomic<Bool>(false)
    let lastResultMTime = Locked<Int>(0)

    init(gateway: Gateway, config: GatewayConfig, localPath: String, uplink: UplinkConfig, password: String?, logger: Logger) {
        var lg = logger
        lg[metadataKey: "component"] = "fleet"
        self.logger = lg
        settings = config.fleet
        prefix = uplink.topicPrefix
        self.localPath = localPath
        store = RemoteConfigStore(dataDir: config.gateway.dataDir)
        var keys: [String: Curve25519.Signing.PublicKey] = [:]
        for (kid, raw) in config.commands.publicKeys {
            if let k = try? Curve25519.Signing.PublicKey(rawRepresentation: raw) { keys[kid] = k }
        }
        self.keys = keys
        gatewayID = config.gateway.id
        gatewayRef = gateway
        let loaded = store.loadState()
        stateUnreadable = loaded == nil
        state = Locked(loaded ?? RemoteConfigStore.State())
        (inbox, inboxFeed) = AsyncStream.makeStream(of: (String, [UInt8]).self, bufferingPolicy: .bufferingNewest(16))
        var options = UplinkKinds.mqttClientOptions(uplink.connection, password: password, clientIDSuffix: "-fleet", cleanSession: false, maxInflight: 16)
        options.protocolVersion = uplink.mqttVersion == "3.1.1" ? .v311 : uplink.mqttVersion == "5" ? .v5 : .auto
        let feed = inboxFeed
        let statePublisher = Locked<(@Sendable () -> Void)?>(nil)
        client = MQTTClient(options: options, logger: lg, handlers: MQTTHandlers(
            onConnect: { _, _, _ in statePublisher.withLock { $0 }?() },
            onMessage: { topic, payload, _, _ in
                // Anyone who may publish there can send: nothing larger than a push is copied.
                guard payload.count <= ConfigPush.maxBytes else { return }
                feed.yield((String(cString: topic), Array(payload)))
            }))
        if settings.remoteConfig { client.addSubscription("\(prefix)/config/set", qos: 1) }
        if settings.diagnostics { client.addSubscription("\(prefix)/diagnostics/request", qos: 1) }
        if settings.updates { client.addSubscription("\(prefix)/update/offer", qos: 1) }
        updates = UpdateFiles(dataDir: config.gateway.dataDir)
        installedVersion = config.fleet.updates ? installedPackageVersion() : nil
        statePublisher.withLock { $0 = { [weak self] in self?.publishState(); self?.publishUpdateState() } }
        if state.withLock({ $0.phase }) == .pending { beginProbation() }
        if settings.updates, let p = updates.json(updates.probation), let v = p["version"]?.stringValue {
            // A package on probation: this process says when it is healthy; the helper decides.
            updateProbation.withLock { $0 = (v, ContinuousClock.now + .milliseconds(settings.updateWindowMillis), wallClockMillis()) }
        }
    }

    func start() { client.start() }
    func stop() { client.stop(); inboxFeed.finish() }

    // MARK: - The loops (a Stage of the gateway)

    func handleMessages() async {
        for await (topic, payload) in inbox {
            if topic == "\(prefix)/config/set" && settings.remoteConfig {
                ops.withLock { _ in handlePush(payload) }
            } else if topic == "\(prefix)/diagnostics/request" && settings.diagnostics {
                answerDiagnostics(payload)
            } else if topic == "\(prefix)/update/offer" && settings.updates {
                handleOffer(payload)
            }
        }
    }

    /// Probation: kept when healthy (after at least a quarter of the window, so a source that
    /// fails a little after the start is seen), rolled back when the window ends first.
    func watchProbation() async -> Bool {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(500))
            if settings.updates { watchUpdate() }
            let restart = ops.withLock { _ -> Bool in
                guard let deadline = probationDeadline.withLock({ $0 }) else { return false }
                let window = Duration.milliseconds(settings.healthWindowMillis)
                let (healthy, why) = health()
                if healthy && ContinuousClock.now >= deadline - window + window / 4 {
                    probationDeadline.withLock { $0 = nil }
                    var s = state.withLock { $0 }
                    s.phase = .good
                    s.pendingStarts = 0
                    s.lastVersion = s.version
                    s.lastOutcome = "applied"
                    s.lastReason = ""
                    s.lastDetail = []
                    s.lastAtMillis = wallClockMillis()
                    commit(s)
                    logger.notice("pushed configuration kept: healthy", metadata: ["version": "\(s.version)"])
                    return false
                }
                guard ContinuousClock.now >= deadline else { return false }
                probationDeadline.withLock { $0 = nil }
                return rollBack(reason: "unhealthy", detail: ["not healthy within \(settings.healthWindowMillis / 1000) s of the push: \(why)"])
            }
            if restart { return true }
        }
        return false
    }

    // MARK: - Pushes

    /// Under `ops`. Refusals of messages whose signature was not verified are counted and logged
    /// but not stored or published: whoever may publish on the topic must not be able to wear the
    /// SD card or overwrite the retained report.
    func handlePush(_ payload: [UInt8]) {
        let push: ConfigPush
        switch payload.withUnsafeBytes({ ConfigPush.parse($0) }) {
        case .failure(let r): refuse(r.reason, [r.detail], version: r.version, verified: false); return
        case .success(let p): push = p
        }
        let gw = gatewayRef
        let current = state.withLock { $0 }
        let unverified = ["unknown_key", "bad_signature"]
        if stateUnreadable {
            refuse("state_unreadable", ["\(store.statePath) cannot be read: pushes are refused until a technician removes it"], version: push.version, verified: false)
            return
        }
        if let r = push.refusal(keys: keys, gateway: gatewayID, currentVersion: current.highestVersion, now: wallClockMillis(),
                                clockTrusted: gw?.clock.state.isTrusted ?? true, maxLifetimeMillis: gw?.config.commands.maxLifetimeMillis ?? 86_400_000) {
            refuse(r.reason, [r.detail], version: push.version, verified: !unverified.contains(r.reason))
            return
        }
        if current.phase == .pending {
            refuse("busy", ["version \(current.version) is still on probation: push again once it is kept or rolled back"], version: push.version)
            return
        }
        // Checked like `brume check`, with the local conf.d, against the local protected settings.
        let candidate: GatewayConfig
        switch ConfigLoader.load(path: localPath, mainText: push.text, mainName: "push-v\(push.version).toml", interpolateMain: false) {
        case .failure(.unreadable(let p, let reason)): refuse("unreadable", ["\(p): \(reason)"], version: push.version); return
        case .failure(.invalid(let diags)):
            refuse("invalid", diags.filter { $0.severity == .error }.map(\.description), version: push.version)
            return
        case .success(let (c, _)): candidate = c
        }
        guard case .success(let (local, _)) = ConfigLoader.load(path: localPath) else {
            refuse("local_config", ["the local \(localPath) does not load: fix it on site first"], version: push.version)
            return
        }
        if let why = FleetProtection.violation(local: local, pushed: candidate) {
            refuse("protected", [why], version: push.version)
            return
        }
        var s = current
        do { try store.stage(push.text, version: push.version, state: &s, now: wallClockMillis()) } catch {
            refuse("storage", ["cannot stage the file: \(error)"], version: push.version)
            return
        }
        state.withLock { $0 = s }
        logger.notice("configuration push staged", metadata: ["version": "\(push.version)", "sha256": "\(ConfigPush.sha256Hex(push.text))"])
        apply(version: push.version)
    }

    /// Applies the staged push: a reload, or a restart in place when one is needed; a push that
    /// checked yet cannot be applied (a source cannot be built ...) goes back to the last good one.
    /// (Rollbacks apply themselves in `rollBack`.)
    private func apply(version: Int64) {
        guard let gw = gatewayRef else { return }
        let r = gw.reload()
        if r.ok {
            beginProbation()
            publishState()
        } else if r.needsRestart {
            logger.notice("restarting in place to apply the pushed configuration", metadata: ["version": "\(version)", "why": "\(r.message)"])
            publishState()
            gw.requestRestart()
        } else {
            _ = rollBack(reason: "apply_failed", detail: [r.message] + r.errors)
        }
    }

    func beginProbation() {
        probationSince.withLock { $0 = wallClockMillis() }
        probationDeadline.withLock { $0 = ContinuousClock.now + .milliseconds(settings.healthWindowMillis) }
    }

    /// Back to the last good file; true when the process must restart for it.
    @discardableResult
    func rollBack(reason: String, detail: [String]) -> Bool {
        var s = state.withLock { $0 }
        let bad = s.version
        do { try store.rollBack(state: &s) } catch {
            logger.critical("cannot roll back the pushed configuration", metadata: ["error": "\(error)"])
            return false
        }
        s.lastVersion = bad
        s.lastOutcome = "rolled_back"
        s.lastReason = reason
        s.lastDetail = detail
        s.lastAtMillis = wallClockMillis()
        commit(s)
        refused.add("rolled_back")
        logger.error("pushed configuration rolled back", metadata: ["version": "\(bad)", "to_version": "\(s.version)", "reason": "\(reason)", "detail": "\(detail.joined(separator: "; "))"])
        guard let gw = gatewayRef else { return false }
        let r = gw.reload()
        if r.ok { return false }
        if !r.needsRestart {
            // The last good configuration does not reload (it needs what the bad one broke?):
            // a fresh process loads it from scratch.
            logger.critical("the rolled-back configuration does not reload: restarting in place", metadata: ["error": "\(r.message)"])
        }
        gw.requestRestart()
        return true
    }

    private func refuse(_ reason: String, _ detail: [String], version: Int64?, verified: Bool = true) {
        refused.add(reason)
        if !verified {
            if limiter.admit() != nil {
                logger.warning("configuration push refused", metadata: ["reason": "\(reason)", "detail": "\(detail.prefix(1).joined())"])
            }
            return
        }
        var s = state.withLock { $0 }
        s.lastVersion = version ?? 0
        s.lastOutcome = "refused"
        s.lastReason = reason
        s.lastDetail = Array(detail.prefix(100))
        s.lastAtMillis = wallClockMillis()
        commit(s)
        if limiter.admit() != nil {
            logger.warning("configuration push refused", metadata: ["version": "\(version.map(String.init) ?? "-")", "reason": "\(reason)", "detail": "\(detail.prefix(3).joined(separator: "; "))"])
        }
    }

    private func commit(_ s: RemoteConfigStore.State) {
        state.withLock { $0 = s }
        do { try store.save(s) } catch { logger.error("cannot save the fleet state", metadata: ["error": "\(error)"]) }
        publishState()
    }

    /// Healthy: every uplink online and a batch acknowledged since the push (or nothing to send),
    /// and (with `health = "uplinks_and_sources"`) no source disconnected.
    func health() -> (Bool, String) {
        guard let gw = gatewayRef else { return (false, "stopping") }
        let since = probationSince.withLock { $0 }
        for u in gw.uplinks {
            if u.state != .online { return (false, "uplink \(u.config.name) is \(u.state.rawValue)") }
            let acked = (u.stats.lastAckMillis.current ?? 0) >= since
            if !acked && gw.outbox.stats.bufferedReadings > 0 { return (false, "uplink \(u.config.name): no batch acknowledged yet") }
        }
        if settings.healthSources {
            for s in gw.sources where s.state != .connected { return (false, "source \(s.name) is \(s.state.rawValue)") }
        }
        return (true, "")
    }

    // MARK: - Reports

    var stateJSON: JSONValue {
        let s = state.withLock { $0 }
        let cfg = gatewayRef?.currentConfig.withLock { $0 }
        var members: [JSONMember] = [
            JSONMember(key: "gateway", value: .string(gatewayID)),
            JSONMember(key: "sha256", value: .string(cfg.map(FleetService.hash) ?? "")),
        ]
        if case .object(let m) = s.json { members += m }
        return .object(members)
    }

    /// The running configuration's hash: SHA-256 over its files' texts in merge order.
    static func hash(_ c: GatewayConfig) -> String {
        var h = SHA256()
        for t in c.texts { h.update(data: Array(t.utf8)); h.update(data: [0]) }
        return h.finalize().map { String($0, radix: 16).leftPadded(2) }.joined()
    }

    func publishState() {
        let body = Array((stateJSON.description).utf8)
        body.withUnsafeBytes { _ = try? client.publish(topic: "\(prefix)/config/state", payload: $0, qos: 1, retain: true) }
    }

    // MARK: - Diagnostics

    static let maxDiagnosticsBytes = 256 << 10

    func answerDiagnostics(_ payload: [UInt8]) {
        let req = try? JSONParser.parse(payload)
        let id = req?["id"]?.stringValue ?? ""
        let lines = Int(max(0, min(500, req?["log_lines"]?.integer ?? 50)))
        var out: [JSONMember] = [JSONMember(key: "id", value: .string(String(id.prefix(128)))), JSONMember(key: "gateway", value: .string(gatewayID)),
                                 JSONMember(key: "at_ms", value: .number(Double(wallClockMillis())))]
        let now = ContinuousClock.now
        let tooSoon = lastDiagnostics.withLock { last -> Bool in
            if let l = last, now - l < .seconds(5) { return true }
            last = now
            return false
        }
        if tooSoon {
            refused.add("diagnostics_rate_limited")
            out.append(JSONMember(key: "error", value: .string("rate_limited: one request per 5 s")))
        } else if let gw = gatewayRef {
            out.append(JSONMember(key: "status", value: gw.statusJSON()))
            out.append(JSONMember(key: "logs", value: .array(LogTail.shared.last(lines).map { .string($0) })))
            out.append(JSONMember(key: "ports", value: .array(PortDiscovery.list().map { p in
                .object([JSONMember(key: "path", value: .string(p.path)), JSONMember(key: "description", value: .string(p.description)),
                         JSONMember(key: "usb", value: .string(p.usbVID.map { String(format4($0)) + ":" + String(format4(p.usbPID ?? 0)) } ?? "")),
                         JSONMember(key: "serial", value: .string(p.serialNumber ?? ""))])
            })))
            let st = gw.outbox.stats
            out.append(JSONMember(key: "outbox", value: .object([
                JSONMember(key: "buffered_readings", value: .number(Double(st.bufferedReadings))),
                JSONMember(key: "unacked_batches", value: .number(Double(gw.outbox.unackedBatches().count))),
            ])))
        }
        var body = JSONValue.object(out).description
        // Bounded: the logs go first, then the ports, until it fits.
        while body.utf8.count > FleetService.maxDiagnosticsBytes, let i = out.firstIndex(where: { $0.key == "logs" || $0.key == "ports" }) {
            out[i].value = .string("left out: the answer is limited to \(FleetService.maxDiagnosticsBytes) bytes")
            body = JSONValue.object(out).description
        }
        Array(body.utf8).withUnsafeBytes { _ = try? client.publish(topic: "\(prefix)/diagnostics/response", payload: $0, qos: 1) }
    }
}

private func format4(_ v: UInt16) -> String { String(v, radix: 16).leftPadded(4) }

// MARK: - Self-update (the unprivileged half; SelfUpdate.swift has the root helper)

extension FleetService {
    func handleOffer(_ payload: [UInt8]) {
        let offer: UpdateOffer
        switch UpdateOffer.parse(payload) {
        case .failure(let r): refused.add("update_\(r.reason)"); logRefusedOffer(r); return
        case .success(let o): offer = o
        }
        let gw = gatewayRef
        if let r = offer.refusal(keys: keys, gateway: gatewayID, now: wallClockMillis(), clockTrusted: gw?.clock.state.isTrusted ?? true,
                                 maxLifetimeMillis: gw?.config.commands.maxLifetimeMillis ?? 86_400_000) {
            refused.add("update_\(r.reason)")
            logRefusedOffer(r)
            if !["unknown_key", "bad_signature"].contains(r.reason) { updateResult(offer.version, "refused", r.reason, [r.detail]) }
            return
        }
        if offer.version == installedVersion {
            updateResult(offer.version, "refused", "already_installed", ["brume \(offer.version) is installed"]); return
        }
        if access(updates.request, F_OK) == 0 || access(updates.probation, F_OK) == 0 || downloading.exchange(true, ordering: .acquiringAndReleasing) {
            updateResult(offer.version, "refused", "busy", ["another update is in progress"]); return
        }
        logger.notice("package offer accepted: downloading", metadata: ["version": "\(offer.version)", "url": "\(offer.url)"])
        updateResult(offer.version, "downloading", "", [offer.url])
        let files = updates, ca = settings.updateCAFile
        Task { [self] in
            defer { downloading.store(false, ordering: .releasing) }
            do {
                try RemoteConfigStore.ensureDir(files.dir)
                let n = try await PackageDownload.fetch(url: offer.url, caFile: ca, to: files.part, maxBytes: UpdateOffer.maxPackageBytes)
                guard sha256File(files.part) == offer.sha256 else {
                    unlink(files.part)
                    updateResult(offer.version, "refused", "sha256_mismatch", ["the downloaded file (\(n) bytes) is not the package offered"])
                    return
                }
                guard rename(files.part, files.deb) == 0 else { throw PackageDownload.Failure("cannot rename \(files.part): \(String(cString: strerror(errno)))") }
                try RemoteConfigStore.atomicWrite(files.request, offer.json + "\n")
                logger.notice("package downloaded and verified: waiting for the installer (brume-update.service)", metadata: ["version": "\(offer.version)", "bytes": "\(n)"])
                updateResult(offer.version, "downloaded", "", ["\(n) bytes, SHA-256 verified; the installer runs as brume-update.service"])
            } catch {
                updateResult(offer.version, "failed", "download", ["\(error)"])
            }
        }
    }

    private func logRefusedOffer(_ r: ConfigPush.Refusal) {
        if limiter.admit() != nil { logger.warning("package offer refused", metadata: ["reason": "\(r.reason)", "detail": "\(r.detail)"]) }
    }

    private func updateResult(_ version: String, _ outcome: String, _ reason: String, _ detail: [String]) {
        do { try updates.writeResult(version: version, outcome: outcome, reason: reason, detail: detail) } catch {
            logger.error("cannot write the update result", metadata: ["error": "\(error)"])
        }
        publishUpdateState()
    }

    /// A package on probation: `healthy.json` once this process is healthy (the helper waits
    /// for it); the helper's `result.json` published when it changes.
    func watchUpdate() {
        if let (version, deadline, since) = updateProbation.withLock({ $0 }), ContinuousClock.now < deadline {
            probationSince.withLock { $0 = max($0, since) }
            let window = Duration.milliseconds(settings.updateWindowMillis)
            let (healthy, _) = health()
            if healthy && ContinuousClock.now >= deadline - window + window / 4 {
                updateProbation.withLock { $0 = nil }
                let j = JSONValue.object([JSONMember(key: "version", value: .string(version)), JSONMember(key: "pid", value: .number(Double(getpid()))),
                                          JSONMember(key: "at_ms", value: .number(Double(wallClockMillis())))])
                do {
                    try RemoteConfigStore.atomicWrite(updates.healthy, j.description + "\n")
                    logger.notice("updated package healthy", metadata: ["version": "\(version)"])
                } catch { logger.error("cannot write \(updates.healthy)", metadata: ["error": "\(error)"]) }
            }
        }
        var st = stat()
        let m = stat(updates.result, &st) == 0 ? Int(st.st_mtim.tv_sec) * 1_000_000_000 + Int(st.st_mtim.tv_nsec) : 0
        if lastResultMTime.withLock({ old in defer { old = m }; return old != m }) { publishUpdateState() }
    }

    func publishUpdateState() {
        guard settings.updates else { return }
        var members: [JSONMember] = [JSONMember(key: "gateway", value: .string(gatewayID)),
                                     JSONMember(key: "installed", value: installedVersion.map { .string($0) } ?? .null)]
        members.append(JSONMember(key: "last", value: updates.json(updates.result) ?? .null))
        let body = Array(JSONValue.object(members).description.utf8)
        body.withUnsafeBytes { _ = try? client.publish(topic: "\(prefix)/update/state", payload: $0, qos: 1, retain: true) }
    }
}
