import BrumeConfig
import BrumeCore
import BrumeMQTT
import BrumeSerial
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
        statePublisher.withLock { $0 = { [weak self] in self?.publishState() } }
        if state.withLock({ $0.phase }) == .pending { beginProbation() }
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
            }
        }
    }

    /// Probation: kept when healthy (after at least a quarter of the window, so a source that
    /// fails a little after the start is seen), rolled back when the window ends first.
    func watchProbation() async -> Bool {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(500))
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
        apply(version: push.version, rollingBack: false)
    }

    /// Applies the files now in place: a reload, or a restart in place when one is needed.
    private func apply(version: Int64, rollingBack: Bool) {
        guard let gw = gatewayRef else { return }
        let r = gw.reload()
        if r.ok {
            if !rollingBack { beginProbation() }
            publishState()
            return
        }
        if r.needsRestart {
            logger.notice(rollingBack ? "restarting in place to roll back" : "restarting in place to apply the pushed configuration",
                          metadata: ["version": "\(version)", "why": "\(r.message)"])
            publishState()
            gw.requestRestart()
            return
        }
        // Checked, yet not applicable (a source cannot be built ...): back to the last good one.
        if !rollingBack { _ = rollBack(reason: "apply_failed", detail: [r.message] + r.errors) }
        else { logger.critical("the rolled-back configuration does not apply either", metadata: ["error": "\(r.message)"]) }
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
