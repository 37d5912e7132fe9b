import BrumeConfig
import BrumeCore
import BrumeMQTT
import BrumeRules
import BrumeStore
import Logging
import Synchronization

/// Executes one command value on one actuator: returns a detail on success or
/// the reason of the failure.
typealias ActuatorDriver = @Sendable (Value) async -> Result<String, DriverFailure>

struct DriverFailure: Error, Sendable {
    var detail: String
}

public final class CommandStats: Sendable {
    public let received = Counter()
    public let duplicates = Counter()
    public let rejected = ReasonCounters()
    public let executed = Counter()
    public let failed = Counter()
    public let expired = Counter()
    public init() {}
}

/// The command path: cloud → intake (validation, journal) → per-actuator
/// dispatch, one command at a time and in order → device → result upward.
///
/// Commands arrive on `{prefix}/commands` (QoS1) over their own connection to
/// the uplink broker, with a persistent session. Each is written to the journal
/// inside the MQTT callback, before libmosquitto writes the PUBACK: a command
/// the cloud saw acknowledged is durable. Results (every state change) go to
/// `{prefix}/commands/result` over the same connection — ahead of any telemetry
/// backlog, which has its own connection and queue — and are re-sent until
/// acknowledged.
final class CommandService: Sendable {
    let journal: CommandJournal
    private let bindings: Locked<(actuators: [String: ActuatorConfig], drivers: [String: ActuatorDriver])>
    var actuators: [String: ActuatorConfig] { bindings.withLock { $0.actuators } }
    var drivers: [String: ActuatorDriver] { bindings.withLock { $0.drivers } }
    let stats = CommandStats()
    private let logger: Logger
    private let now: @Sendable () -> Int64
    /// The v1 command connection (`{prefix}/commands`); nil when no uplink speaks v1.
    private let client: MQTTClient?
    /// Uplink formats that bring commands of their own (Sparkplug DCMD, ThingsBoard RPC): the
    /// results of commands whose id starts with `prefix` go back through `publish` (nil: it has
    /// nothing to say for that state; false: not now, asked again).
    struct Reporter: Sendable {
        var prefix: String
        var publish: @Sendable (CommandResult) -> Bool?
    }
    private let reporters: [Reporter]
    private let resultTopic: String
    private let eventTopic: String
    private let gatewayID: String
    private let poke: AsyncStream<Void>.Continuation
    private let pokes: AsyncStream<Void>
    private let busy = Mutex<Set<String>>([])
    private let transient = Mutex<[CommandResult]>([]) // rejections without an id (not journaled)
    private let events = Locked<(generation: UInt64?, acks: [(UInt64, Int32)])>((nil, []))
    private let limiter = LogRateLimiter(burst: 5, interval: .seconds(30))
    private let uplinkDown = Mutex<Int64?>(nil)
    private let safeApplied = Mutex<Set<String>>([])
    let auth: CommandAuth
    /// The board's clock (nil: trusted): an expiry cannot be checked by an unsynchronised clock.
    let clock: ClockState?
    /// Accepted commands' expiries on the monotonic clock (ns): a wall-clock jump (a board whose
    /// clock NTP steps from 1970) neither runs an expired command nor expires a live one.
    private let monoDeadlines = Mutex<[String: UInt64]>([:])

    init(journal: CommandJournal, actuators: [ActuatorConfig], drivers: [String: ActuatorDriver], uplink: UplinkConfig?,
         gatewayID: String, password: String?, logger: Logger, auth: CommandAuth? = nil, clock: ClockState? = nil,
         reporters: [Reporter] = [], now: @escaping @Sendable () -> Int64 = wallClockMillis) {
        self.reporters = reporters
        self.auth = auth ?? CommandAuth(CommandsSection(), gatewayID: gatewayID)
        self.clock = clock
        self.journal = journal
        self.bindings = Locked((Dictionary(actuators.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a }), drivers))
        var lg = logger
        lg[metadataKey: "component"] = "commands"
        self.logger = lg
        self.now = now
        resultTopic = "\(uplink?.topicPrefix ?? "")/commands/result"
        eventTopic = "\(uplink?.topicPrefix ?? "")/events"
        self.gatewayID = gatewayID
        (pokes, poke) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let box = IntakeBox()
        let poke = self.poke
        let events = self.events
        guard let uplink else {
            client = nil
            return
        }
        let conn = uplink.connection
        var options = MQTTClientOptions(host: conn.url.host, port: conn.url.port, clientID: conn.clientID + "-cmd", cleanSession: false,
                                        keepAlive: conn.keepAliveSeconds, username: conn.username, password: password,
                                        tls: conn.tls.map { MQTTTLS(caFile: $0.caFile, certFile: $0.certFile, keyFile: $0.keyFile, verifyHostname: $0.verifyHostname) },
                                        maxInflight: 100)
        options.alternates = conn.alternates.map { MQTTBrokerAddress(host: $0.host, port: $0.port) }
        // MQTT 5 where the broker speaks it (as the uplink): a session that outlives a disconnect
        // (Session Expiry Interval) and the commands' Message Expiry Interval.
        options.protocolVersion = uplink.mqttVersion == "3.1.1" ? .v311 : uplink.mqttVersion == "5" ? .v5 : .auto
        let client = MQTTClient(
            options: options,
            logger: lg,
            handlers: MQTTHandlers(
                onConnect: { _, gen, _ in
                    events.withLock { $0 = (gen, []) }
                    poke.yield()
                },
                onDisconnect: { _, _ in
                    events.withLock { $0.generation = nil }
                    poke.yield()
                },
                onMessage: { _, payload, _, _ in box.service?.intake(payload, messageExpiry: box.client?.currentMessageExpiry) },
                onPublished: { gen, mid, _ in
                    events.withLock { $0.acks.append((gen, mid)) }
                    poke.yield()
                }))
        client.addSubscription("\(uplink.topicPrefix)/commands", qos: 1)
        self.client = client
        box.service = self
        box.client = client
    }

    final class IntakeBox: @unchecked Sendable {
        // Set once, before the client starts.
        weak var service: CommandService?
        weak var client: MQTTClient?
    }

    var connected: Bool { client?.isConnected ?? false }

    /// Reload: the declared actuators and their drivers change together. A
    /// command already dispatched finishes on the driver it started with;
    /// waiting commands of an actuator that is gone fail when dispatched.
    func replaceActuators(_ actuators: [ActuatorConfig], drivers: [String: ActuatorDriver]) {
        bindings.withLock { $0 = (Dictionary(actuators.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a }), drivers) }
    }

    // MARK: intake (MQTT network thread)

    /// Validates and journals one command. Runs inside the MQTT callback: when
    /// it returns, the command is durable (or its rejection is recorded).
    func intake(_ payload: UnsafeRawBufferPointer, messageExpiry: UInt32? = nil) {
        stats.received.add()
        var cmd: Command
        do throws(CommandParseError) {
            cmd = try CommandParser.parse(payload)
        } catch {
            stats.rejected.add(error.reason)
            logRejected(error.id, error.reason, error.message)
            if let id = error.id {
                recordRejection(Command(id: id, actuator: "?", value: .string(""), expires: nil), detail: "\(error.reason): \(error.message)")
            } else {
                transient.withLock { $0.append(CommandResult(id: nil, state: .rejected, at: now(), detail: "\(error.reason): \(error.message)")) }
            }
            poke.yield()
            return
        }
        if let refusal = auth.refusal(cmd, now: now(), clockTrusted: clock?.isTrusted ?? true) {
            stats.rejected.add(refusal.reason)
            logRejected(cmd.id, refusal.reason, refusal.detail)
            recordRejection(cmd, detail: "\(refusal.reason): \(refusal.detail)")
            poke.yield()
            return
        }
        // A command without "expires" sent with an MQTT 5 Message Expiry Interval expires when
        // its message does (after the signature check: the signature covers what was sent).
        if cmd.expires == nil, let seconds = messageExpiry {
            cmd.expires = now() + Int64(seconds) * 1000
        }
        if let e = cmd.expires {
            let left = e - now()
            let nanos = left <= 0 ? 0 : UInt64(min(left, 365 * 86_400_000)) * 1_000_000
            monoDeadlines.withLock { d in
                if d.count > 10_000 { let t = monotonicNanos(); d = d.filter { $0.value > t } } // bounded: finished ones go
                d[cmd.id] = monotonicNanos() &+ nanos
            }
        }
        submit(cmd)
    }

    /// Commands that came through an uplink format (Sparkplug DCMD, ThingsBoard RPC): the same
    /// checks as v1 commands (signature policy, allowlist, ranges), journaled before anything runs.
    func intakeExternal(_ cmds: [Command]) {
        for cmd in cmds {
            stats.received.add()
            if let refusal = auth.refusal(cmd, now: now(), clockTrusted: clock?.isTrusted ?? true) {
                stats.rejected.add(refusal.reason)
                logRejected(cmd.id, refusal.reason, refusal.detail)
                recordRejection(cmd, detail: "\(refusal.reason): \(refusal.detail)")
                continue
            }
            submit(cmd)
        }
        poke.yield()
    }

    /// Expired: by the monotonic deadline set at receipt, or (after a restart) by the wall clock
    /// when it is trusted; with an untrusted clock and no deadline, it cannot be told: expired.
    private func hasExpired(_ cmd: Command) -> Bool {
        guard let e = cmd.expires else { return false }
        if let d = monoDeadlines.withLock({ $0[cmd.id] }) { return monotonicNanos() >= d }
        if clock?.isTrusted == false { return true }
        return e <= now()
    }

    /// Validation and journaling, for cloud commands and local triggers alike.
    func submit(_ cmd: Command) {
        guard let act = actuators[cmd.actuator] else {
            stats.rejected.add("unknown_actuator")
            logRejected(cmd.id, "unknown_actuator", "no actuator \"\(cmd.actuator)\" is declared")
            recordRejection(cmd, detail: "unknown_actuator: no actuator \"\(cmd.actuator)\" is declared on this gateway")
            poke.yield()
            return
        }
        if let why = act.problem(with: cmd.value) {
            let reason = why.hasPrefix("expected") ? "wrong_type" : why.hasPrefix("contains") ? "bad_value" : "out_of_range"
            stats.rejected.add(reason)
            logRejected(cmd.id, reason, why)
            recordRejection(cmd, detail: "\(reason): \(why)")
            poke.yield()
            return
        }
        do {
            switch try journal.accept(cmd) {
            case .accepted:
                if hasExpired(cmd) {
                    stats.expired.add()
                    try journal.transition(cmd.id, to: .expired, detail: "expired before it could run")
                }
            case .duplicate(let state):
                stats.duplicates.add()
                try journal.reReport(cmd.id)
                logger.info("repeated command id: not run again, its state is reported again", metadata: ["command.id": "\(cmd.id)", "command.state": "\(state.rawValue)"])
            }
        } catch {
            logger.error("cannot journal a command: it is not run", metadata: ["command.id": "\(cmd.id)", "error": "\(error)"])
            stats.rejected.add("journal_error")
            transient.withLock { $0.append(CommandResult(id: cmd.id, state: .rejected, at: now(), detail: "journal_error: the gateway could not record it (\(error)); not run")) }
        }
        poke.yield()
    }

    /// A trigger fired or cleared: kept in the journal until the cloud has it.
    /// `{"v":1,"gw":"...","trigger":"...","kind":"fired","at":...,"detail":"...","values":{"boiler/temperature":92.5}}`
    func recordEvent(_ e: RuleEvent) {
        var out: [UInt8] = Array("{\"v\":1,\"gw\":".utf8)
        WireFormat.appendString(gatewayID, to: &out)
        out.append(contentsOf: ",\"trigger\":".utf8)
        WireFormat.appendString(e.trigger, to: &out)
        out.append(contentsOf: ",\"kind\":\"\(e.kind)\",\"at\":\(e.at),\"detail\":".utf8)
        WireFormat.appendString(e.detail, to: &out)
        out.append(contentsOf: ",\"values\":{".utf8)
        for (i, (k, v)) in e.values.sorted(by: { $0.key < $1.key }).enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            WireFormat.appendString(k, to: &out)
            out.append(UInt8(ascii: ":"))
            WireFormat.appendValue(v, to: &out)
        }
        out.append(contentsOf: "}}".utf8)
        do { try journal.addEvent(String(decoding: out, as: UTF8.self)) } catch {
            logger.error("cannot store a trigger event", metadata: ["error": "\(error)"])
        }
        poke.yield()
    }

    private func recordRejection(_ cmd: Command, detail: String) {
        do {
            if case .duplicate = try journal.reject(cmd, detail: detail) {
                stats.duplicates.add()
                try journal.reReport(cmd.id)
            }
        } catch {
            transient.withLock { $0.append(CommandResult(id: cmd.id, state: .rejected, at: now(), detail: detail)) }
        }
    }

    private func logRejected(_ id: String?, _ reason: String, _ message: String) {
        if let n = limiter.admit() {
            logger.warning("command rejected", metadata: ["command.id": "\(id ?? "-")", "reason": "\(reason)", "detail": "\(message)", "suppressed": "\(n)"])
        }
    }

    // MARK: the loop

    func run() async {
        do {
            let n = try journal.failInterrupted()
            if n > 0 { logger.warning("commands interrupted by the last stop were not resent (outcome unknown)", metadata: ["commands": "\(n)"]) }
        } catch {
            logger.error("command journal: cannot check interrupted commands", metadata: ["error": "\(error)"])
        }
        client?.start()
        let poke = self.poke
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(100))
                    poke.yield()
                }
            }
            group.addTask { [self] in
                // The journal stays small: finished, reported commands are forgotten after the
                // retention — by a clock that can be trusted (a 1970 clock would keep or drop
                // everything).
                while !Task.isCancelled {
                    if clock?.isTrusted ?? true {
                        do {
                            let n = try journal.prune(before: now() - auth.retentionMillis)
                            if n > 0 { logger.info("command journal: finished commands forgotten", metadata: ["commands": "\(n)", "retention_s": "\(auth.retentionMillis / 1000)"]) }
                        } catch {
                            logger.error("command journal: cannot prune", metadata: ["error": "\(error)"])
                        }
                    }
                    try? await Task.sleep(for: .seconds(3600))
                }
            }
            var inflight: [Int32: (String, CommandState)] = [:]
            var eventsInflight: [Int32: Int64] = [:]
            var generation: UInt64?
            for await _ in pokes {
                if Task.isCancelled { break }
                report(&inflight, &eventsInflight, &generation)
                dispatch(into: &group)
            }
            group.cancelAll()
        }
    }

    func stop() {
        client?.stop()
        poke.finish()
    }

    /// Publishes the states not yet acknowledged by the cloud.
    private func report(_ inflight: inout [Int32: (String, CommandState)], _ eventsInflight: inout [Int32: Int64], _ generation: inout UInt64?) {
        let (gen, acks) = events.withLock { e in
            let r = (e.generation, e.acks)
            e.acks.removeAll()
            return r
        }
        var reported: [(id: String, state: CommandState)] = []
        var eventsDone: [Int64] = []
        for (g, mid) in acks where g == generation {
            if let (id, state) = inflight.removeValue(forKey: mid), !id.isEmpty { reported.append((id, state)) }
            if let seq = eventsInflight.removeValue(forKey: mid) { eventsDone.append(seq) }
        }
        try? journal.markReported(reported)
        try? journal.markEventsReported(eventsDone)
        reportExternal()
        if gen != generation {
            generation = gen
            inflight.removeAll()
            eventsInflight.removeAll()
        }
        guard let client, generation != nil, inflight.count < 50 else { return }
        if eventsInflight.isEmpty, let events = try? journal.unreportedEvents() {
            for (seq, body) in events {
                guard let (g, mid) = try? client.publish(topic: eventTopic, payload: Array(body.utf8), qos: 1), g == generation else { break }
                eventsInflight[mid] = seq
            }
        }
        for r in transient.withLock({ t in defer { t.removeAll() }; return t }) {
            _ = try? client.publish(topic: resultTopic, payload: WireFormat.encodeResult(r), qos: 1)
        }
        let pendingIDs = Set(inflight.values.map { "\($0.0)/\($0.1.rawValue)" })
        guard let results = try? journal.unreported(limit: 50) else { return }
        for r in results where !pendingIDs.contains("\(r.id ?? "")/\(r.state.rawValue)") && !isExternal(r.id) {
            guard let (g, mid) = try? client.publish(topic: resultTopic, payload: WireFormat.encodeResult(r), qos: 1), g == generation else { return }
            inflight[mid] = (r.id ?? "", r.state)
        }
    }

    private func isExternal(_ id: String?) -> Bool {
        guard let id else { return false }
        return reporters.contains { id.hasPrefix($0.prefix) }
    }

    /// Results of commands that came through an uplink format go back through it; with no v1
    /// connection, the others stay in the journal (status page, `brume status`) and are marked
    /// reported: there is nowhere to send them.
    private func reportExternal() {
        guard !reporters.isEmpty || client == nil, let results = try? journal.unreported(limit: 200) else { return }
        var done: [(id: String, state: CommandState)] = []
        for r in results {
            guard let id = r.id else { continue }
            if let rep = reporters.first(where: { id.hasPrefix($0.prefix) }) {
                if rep.publish(r) != false { done.append((id, r.state)) }
            } else if client == nil {
                done.append((id, r.state))
            }
        }
        if !done.isEmpty { try? journal.markReported(done) }
        if client == nil { transient.withLock { $0.removeAll() } }
    }

    /// Starts the oldest waiting command of every idle actuator.
    private func dispatch(into group: inout TaskGroup<Void>) {
        guard let waiting = try? journal.waiting() else { return }
        var started = Set<String>()
        for rec in waiting {
            let name = rec.command.actuator
            if started.contains(name) { continue }
            started.insert(name) // later commands of this actuator wait their turn, in order
            guard busy.withLock({ $0.insert(name).inserted }) else { continue }
            if hasExpired(rec.command) {
                monoDeadlines.withLock { _ = $0.removeValue(forKey: rec.command.id) }
                stats.expired.add()
                try? journal.transition(rec.command.id, to: .expired, detail: "expired before it could run")
                busy.withLock { _ = $0.remove(name) }
                poke.yield()
                continue
            }
            // Resumed after a restart with a changed configuration: check again.
            if let act = actuators[name], let why = act.problem(with: rec.command.value) {
                try? journal.transition(rec.command.id, to: .failed, detail: "no longer acceptable for this actuator: \(why)")
                busy.withLock { _ = $0.remove(name) }
                poke.yield()
                continue
            }
            guard let driver = drivers[name] else {
                try? journal.transition(rec.command.id, to: .failed, detail: "actuator \"\(name)\" is no longer configured")
                busy.withLock { _ = $0.remove(name) }
                continue
            }
            do {
                // Durably "sent" before it reaches the device: after a crash it is never sent again.
                try journal.transition(rec.command.id, to: .sent)
            } catch {
                busy.withLock { _ = $0.remove(name) }
                continue
            }
            let id = rec.command.id
            let value = rec.command.value
            group.addTask {
                let result = await driver(value)
                switch result {
                case .success(let detail):
                    self.stats.executed.add()
                    try? self.journal.transition(id, to: .done, detail: detail)
                case .failure(let f):
                    self.stats.failed.add()
                    try? self.journal.transition(id, to: .failed, detail: f.detail)
                    self.logger.warning("command failed", metadata: ["command.id": "\(id)", "actuator": "\(name)", "detail": "\(f.detail)"])
                }
                self.busy.withLock { _ = $0.remove(name) }
                self.poke.yield()
            }
        }
    }

    /// Safe states: after the cloud has been unreachable for `safe_after`, set
    /// each such actuator to its safe value (once per outage).
    func checkSafeStates(uplinkOnline: Bool) {
        let t = now()
        let downSince: Int64? = uplinkDown.withLock { d in
            if uplinkOnline { d = nil; return nil }
            if d == nil { d = t }
            return d
        }
        guard let since = downSince else {
            safeApplied.withLock { $0.removeAll() }
            return
        }
        for act in actuators.values {
            guard let after = act.safeAfterMillis, let v = act.safeValue, t - since >= after else { continue }
            guard safeApplied.withLock({ $0.insert(act.name).inserted }) else { continue }
            logger.warning("cloud unreachable: setting the actuator to its safe state", metadata: ["actuator": "\(act.name)", "value": "\(v)"])
            submit(Command(id: "safe-\(act.name)-\(t)", actuator: act.name, value: v, expires: nil, origin: "safe_state"))
        }
    }

    /// On shutdown: actuators with safe_on_shutdown get their safe value, directly.
    func applyShutdownSafeStates() async {
        for act in actuators.values where act.safeOnShutdown {
            guard let v = act.safeValue, let driver = drivers[act.name] else { continue }
            let r = await driver(v)
            logger.info("shutdown: actuator set to its safe state", metadata: ["actuator": "\(act.name)", "value": "\(v)", "ok": "\((try? r.get()) != nil)"])
        }
    }
}

/// "{value}" in a template becomes the command's value.
/// A command value in an actuator's template (`write`, `payload`, `ack_payload`), in one pass
/// (a value containing "{value}" is not expanded again). In a JSON template the value is written
/// as JSON — escaped inside a string (`"{value}"`), a JSON literal elsewhere (`{"v":{value}}`) —
/// so it can never add fields or end the document. Elsewhere (a serial line) it goes as text;
/// control characters never reach here (`ActuatorConfig.problem(with:)` refuses them).
func render(_ template: String, _ value: Value) -> String {
    let probe = template.replacingAll("{value}", with: "0")
    guard template.contains("{value}"), probe.first == "{" || probe.first == "[",
          (try? JSONParser.parse(Array(probe.utf8))) != nil else {
        return template.replacingAll("{value}", with: value.description)
    }
    var out = ""
    var inString = false, escaped = false
    var rest = Substring(template)
    while !rest.isEmpty {
        if !escaped, rest.hasPrefix("{value}") {
            var json: [UInt8] = []
            WireFormat.appendValue(value, to: &json)
            var literal = String(decoding: json, as: UTF8.self)
            if inString {
                if case .string = value { literal = String(literal.dropFirst().dropLast()) } // already inside quotes
            }
            out += literal
            rest = rest.dropFirst(7)
            continue
        }
        let c = rest.first!
        if inString {
            if escaped { escaped = false } else if c == "\\" { escaped = true } else if c == "\"" { inString = false }
        } else if c == "\"" {
            inString = true
        }
        out.append(c)
        rest = rest.dropFirst()
    }
    return out
}
