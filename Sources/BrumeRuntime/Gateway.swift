import BrumeConfig
import BrumeCore
import BrumeMQTT
import BrumeRules
import BrumeSerial
import BrumeStore
import BrumeUplink
import Logging
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

public struct StartupError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

/// The pipeline between sources and the outbox: the local rules (filters,
/// transforms, windows, derived metrics, triggers), then the outbox. Trigger
/// commands go to the command path; trigger events go upward with the command
/// results, ahead of the telemetry backlog.
final class Pipeline: ReadingSink {
    let outbox: Outbox
    let rules: RulesEngine?
    let commands = Locked<CommandService?>(nil)
    let logger: Logger
    init(outbox: Outbox, rules: RulesEngine?, logger: Logger) {
        self.outbox = outbox
        self.rules = rules
        self.logger = logger
    }
    func accept(_ readings: [Reading], from source: String) -> UInt64 {
        guard let rules else { return outbox.append(readings) }
        return deliver(rules.process(readings))
    }
    @discardableResult
    func deliver(_ out: RulesOutput) -> UInt64 {
        let ticket = outbox.append(out.readings)
        if !out.commands.isEmpty || !out.events.isEmpty {
            let service = commands.withLock { $0 }
            for c in out.commands {
                if let service {
                    service.submit(Command(id: "trigger-\(c.trigger)-\(c.at)", actuator: c.actuator, value: c.value, expires: nil, origin: "trigger:\(c.trigger)"))
                } else {
                    logger.error("trigger fired but no actuator path is configured", metadata: ["trigger": "\(c.trigger)"])
                }
            }
            for e in out.events {
                logger.notice("trigger \(e.kind)", metadata: ["trigger": "\(e.trigger)", "detail": "\(e.detail)"])
                service?.recordEvent(e)
            }
        }
        return ticket
    }
    func waitDurable(_ ticket: UInt64, timeout: Duration) -> Bool {
        outbox.waitProcessed(ticket, timeout: timeout)
    }
}

/// One running gateway: the outbox, the uplink and the sources, started in
/// that order and stopped in reverse so that a shutdown drains the sources
/// into the outbox before SQLite closes.
public final class Gateway: Service, Sendable {
    public let config: GatewayConfig
    public let outbox: Outbox
    public let uplink: MQTTUplink
    public let sources: [any Source]
    let commands: CommandService?
    let pipeline: Pipeline
    private let logger: Logger

    public init(config: GatewayConfig, logger: Logger) throws {
        self.config = config
        self.logger = logger
        try Gateway.ensureDirectory(config.gateway.dataDir)
        let b = config.buffer
        let options = OutboxOptions(
            path: config.gateway.dataDir + "/outbox.db", maxBytes: b.maxBytes, maxAgeMillis: b.maxAgeMillis,
            whenFull: WhenFull(rawValue: b.whenFull) ?? .dropOldest, commitInterval: .milliseconds(b.commitIntervalMillis),
            synchronous: SyncLevel(rawValue: b.synchronous) ?? .normal,
            historicalAfterMillis: config.uplinks.first?.historicalAfterMillis ?? 10_000)
        do {
            outbox = try Outbox(options: options, logger: logger)
        } catch {
            throw StartupError("cannot open the outbox at \(options.path): \(error)")
        }
        guard let up = config.uplinks.first else { throw StartupError("no uplink configured") }
        uplink = MQTTUplink(config: up, gatewayID: config.gateway.id, password: try Gateway.secret(up.connection.passwordFile, logger: logger),
                            outbox: outbox, logger: logger)
        let engine = config.rules.compiled.map { RulesEngine(rules: $0, clock: wallClockMillis) }
        let pipeline = Pipeline(outbox: outbox, rules: engine, logger: logger)
        self.pipeline = pipeline
        var sources: [any Source] = []
        for s in config.sources {
            switch s.kind {
            case .mqtt(let m):
                sources.append(MQTTSource(name: s.name, config: m, password: try Gateway.secret(m.connection.passwordFile, logger: logger),
                                          sink: pipeline, logger: logger))
            case .serial(let c):
                sources.append(SerialSource(options: SerialSourceOptions(config: c, name: s.name), sink: pipeline, logger: logger))
            }
        }
        self.sources = sources

        // Actuators and the command path.
        if config.actuators.isEmpty && config.rules.triggers.isEmpty {
            commands = nil
        } else {
            var drivers: [String: ActuatorDriver] = [:]
            for act in config.actuators {
                let timeout = Duration.milliseconds(act.timeoutMillis)
                switch act.via {
                case .serial(let sourceName, let write, let reply):
                    guard let src = sources.first(where: { $0.name == sourceName }) as? SerialSource else { continue }
                    drivers[act.name] = { value in
                        switch await src.request(Array(render(write, value).utf8), expect: reply.map { render($0, value) }, timeout: timeout) {
                        case .success(let r): return .success(r.isEmpty ? "written" : "reply: \(r)")
                        case .failure(.timeout): return .failure(DriverFailure(detail: "no reply from the device within \(act.timeoutMillis) ms"))
                        case .failure(.disconnected): return .failure(DriverFailure(detail: "device disconnected"))
                        case .failure(.writeFailed(let e)): return .failure(DriverFailure(detail: "write failed: \(e)"))
                        }
                    }
                case .mqtt(let sourceName, let topic, let payload, let ackTopic, let ackPayload):
                    guard let src = sources.first(where: { $0.name == sourceName }) as? MQTTSource else { continue }
                    if let ackTopic { src.addAckSubscription(ackTopic) }
                    drivers[act.name] = { value in
                        switch await src.request(topic: topic, payload: Array(render(payload, value).utf8), ackTopic: ackTopic,
                                                 ackPayload: ackTopic == nil ? nil : render(ackPayload ?? "{value}", value), timeout: timeout) {
                        case .success(let r): return .success(r.isEmpty ? "published" : "acknowledged: \(r)")
                        case .failure(.timeout): return .failure(DriverFailure(detail: "no acknowledgement within \(act.timeoutMillis) ms"))
                        case .failure(.disconnected): return .failure(DriverFailure(detail: "field broker disconnected"))
                        case .failure(.publishFailed(let e)): return .failure(DriverFailure(detail: "publish failed: \(e)"))
                        }
                    }
                }
            }
            let journal: CommandJournal
            do {
                journal = try CommandJournal(path: config.gateway.dataDir + "/commands.db", logger: logger)
            } catch {
                throw StartupError("cannot open the command journal: \(error)")
            }
            commands = CommandService(journal: journal, actuators: config.actuators, drivers: drivers, uplink: up, gatewayID: config.gateway.id,
                                      password: try Gateway.secret(up.connection.passwordFile, logger: logger), logger: logger)
        }
        let c = commands
        pipeline.commands.withLock { $0 = c }
    }

    public func run() async throws {
        let st = outbox.stats
        logger.info("brume starting", metadata: [
            "gateway.id": "\(config.gateway.id)", "outbox.buffered": "\(st.bufferedReadings)",
            "outbox.unacked_batches": "\(outbox.unackedBatches().count)", "sources": "\(sources.count)",
        ])
        outbox.start()
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.uplink.run() }
            group.addTask { await self.reportPeriodically() }
            for s in sources { s.start() }
            if let commands {
                group.addTask { await commands.run() }
                group.addTask {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: .seconds(1))
                        commands.checkSafeStates(uplinkOnline: self.uplink.state == .online)
                    }
                }
            }
            if let rules = pipeline.rules {
                let pipeline = self.pipeline
                group.addTask {
                    // Time-based rule output: window closes, heartbeats, debounce expiries.
                    while !Task.isCancelled {
                        try? await Task.sleep(for: .milliseconds(100))
                        pipeline.deliver(rules.tick())
                    }
                }
            }
            // Until SIGTERM/SIGINT.
            try? await gracefulShutdown()
            logger.info("shutting down: stopping sources, committing the outbox")
            if let commands {
                await commands.applyShutdownSafeStates()
                commands.stop()
            }
            for s in sources { s.stop() }
            if let rules = pipeline.rules { pipeline.deliver(rules.flush()) } // open windows are emitted
            outbox.flush()
            await uplink.shutdown()
            group.cancelAll()
        }
        outbox.stop()
        outbox.close()
        let end = outbox.stats
        logger.info("brume stopped", metadata: ["outbox.buffered": "\(end.bufferedReadings)", "outbox.delivered": "\(end.delivered)"])
    }

    private func reportPeriodically() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(60))
            if Task.isCancelled { return }
            let s = outbox.stats
            var md: Logger.Metadata = [
                "uplink.state": "\(uplink.state.rawValue)", "uplink.batches_acked": "\(uplink.stats.batchesAcked.current)",
                "outbox.buffered": "\(s.bufferedReadings)", "outbox.bytes": "\(s.bufferedBytes)",
                "outbox.evicted": "\(s.evicted)",
            ]
            for src in sources {
                md["source.\(src.name)"] = "\(src.state.rawValue) readings=\(src.stats.readings.current) errors=\(src.stats.errors.total)"
            }
            logger.info("status", metadata: md)
        }
    }

    static func ensureDirectory(_ path: String) throws {
        var parts: [String] = []
        var cur = ""
        for comp in path.split(separator: "/", omittingEmptySubsequences: false) {
            cur += (cur.isEmpty && path.hasPrefix("/") ? "/" : (cur.isEmpty ? "" : "/")) + comp
            parts.append(cur)
        }
        for p in parts where !p.isEmpty && p != "/" {
            if mkdir(p, 0o750) != 0 && errno != EEXIST {
                throw StartupError("cannot create data_dir \(path): \(String(cString: strerror(errno)))")
            }
        }
        if access(path, W_OK) != 0 { throw StartupError("data_dir \(path) is not writable: \(String(cString: strerror(errno)))") }
    }

    /// Reads a secret file (first line, trailing newline removed). Warns when
    /// the file is readable by group or others. The secret is never logged.
    static func secret(_ path: String?, logger: Logger) throws -> String? {
        guard let path else { return nil }
        var st = stat()
        guard stat(path, &st) == 0 else { throw StartupError("cannot read password_file \(path): \(String(cString: strerror(errno)))") }
        if st.st_mode & 0o077 != 0 {
            logger.warning("secret file is readable by group or others; chmod 600 it", metadata: ["file": "\(path)"])
        }
        guard case .success(let text) = ConfigLoader.readFile(path) else {
            throw StartupError("cannot read password_file \(path): \(String(cString: strerror(errno)))")
        }
        return String(text.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
            .trimmingCharacters(in: "\r")
    }
}

/// Runs a gateway until SIGTERM or SIGINT, then shuts it down gracefully.
public func runGateway(config: GatewayConfig, logger: Logger) async throws {
    let gateway = try Gateway(config: config, logger: logger)
    let group = ServiceGroup(configuration: .init(
        services: [.init(service: gateway, successTerminationBehavior: .gracefullyShutdownGroup)],
        gracefulShutdownSignals: [.sigterm, .sigint],
        logger: logger))
    try await group.run()
}

extension String {
    func trimmingCharacters(in c: Character) -> String {
        var s = Substring(self)
        while s.last == c { s = s.dropLast() }
        return String(s)
    }
}

extension SerialSourceOptions {
    init(config c: SerialSourceConfig, name: String) {
        let settings = SerialSettings(baud: c.baud, dataBits: c.dataBits, parity: SerialSettings.Parity(rawValue: c.parity) ?? .none,
                                      stopBits: c.stopBits, flowControl: SerialSettings.FlowControl(rawValue: c.flowControl) ?? .none)
        self.init(name: name, port: c.port, settings: settings, format: c.format, device: c.device, maxFrame: c.maxFrame,
                  poll: c.poll.map { SerialPoll(request: Array($0.send.utf8), everyMillis: $0.everyMillis, timeoutMillis: $0.timeoutMillis, retries: $0.retries) })
    }
}
