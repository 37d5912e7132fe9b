import BrumeConfig
import BrumeCore
import BrumeFunctions
import BrumeRules
import BrumeStore
import BrumeUplink
import Logging
import ServiceLifecycle
import Synchronization
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

/// The gateway stopped because of a storage fault that only a restart clears (exit status 4).
public struct StorageFaultExit: Error, CustomStringConvertible {
    public var fault: StorageFault
    public var description: String { "outbox storage fault \(fault.kind.rawValue): \(fault.detail)" }
}

public struct StartupError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

/// One running gateway: the outbox, the uplink and the sources, started in
/// that order and stopped in reverse so that a shutdown drains the sources
/// into the outbox before SQLite closes.
public final class Gateway: Sendable {
    public let config: GatewayConfig
    let configPath: String?
    let currentConfig: Locked<GatewayConfig>
    let configLoadedMillis = Locked<Int64>(wallClockMillis())
    /// Reloads applied / rejected (SIGHUP, `brume reload`), and the last outcome.
    public let reloads = Counter()
    public let reloadsRejected = Counter()
    let lastReload = Locked<ReloadResult?>(nil)
    let reloadLock = Mutex<Void>(())
    public let outbox: Outbox
    /// Every uplink, each with its own cursor over the outbox; the first is the primary.
    public let uplinks: [RunningUplink]
    /// The primary uplink (the first configured).
    public var uplink: RunningUplink { uplinks[0] }
    let sourceList: Locked<[RunningSource]>
    /// The running sources (a reload may replace some).
    var sources: [RunningSource] { sourceList.withLock { $0 } }
    let commands: CommandService?
    let pipeline: Pipeline
    /// The user functions (WebAssembly) the rules and decoders run.
    let functions: FunctionDirectory
    let metrics: MetricsExporter
    /// Whether the system clock may stamp readings (boards without a real-time clock).
    let clock: ClockMonitor
    var live: LatestValues { pipeline.live }
    var broadcaster: ReadingBroadcaster { pipeline.broadcaster }
    let startedMillis = wallClockMillis()
    private let running = Atomic<Bool>(false)
    /// Set when the gateway stops because of a storage fault (run() then throws).
    let faultExit = Locked<StorageFault?>(nil)
    /// Set when a pushed configuration (or its rollback) needs the process restarted in place.
    let restartRequested = Locked(false)
    let restartSignal: AsyncStream<Void>
    let restartFeed: AsyncStream<Void>.Continuation
    /// The backend's channel ([fleet]); nil when off.
    let fleet: Locked<FleetService?> = Locked(nil)
    /// "local" or "remote vN": where the running configuration came from.
    let configOrigin: Locked<String>
    let lockFD: Int32
    let logger: Logger

    public init(config: GatewayConfig, configPath: String? = nil, origin: String = "local", logger: Logger) throws {
        self.config = config
        self.configPath = configPath
        self.configOrigin = Locked(origin)
        (restartSignal, restartFeed) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        self.currentConfig = Locked(config)
        self.metrics = MetricsExporter(gateway: config.gateway.id)
        self.logger = logger
        try Gateway.ensureDirectory(config.gateway.dataDir)
        lockFD = try Gateway.lockDataDir(config.gateway.dataDir)
        let b = config.buffer
        var options = OutboxOptions(
            path: config.gateway.dataDir + "/outbox.db", maxBytes: b.maxBytes, maxAgeMillis: b.maxAgeMillis,
            whenFull: WhenFull(rawValue: b.whenFull) ?? .dropOldest, commitInterval: .milliseconds(b.commitIntervalMillis),
            synchronous: SyncLevel(rawValue: b.synchronous) ?? .full,
            historicalAfterMillis: config.uplinks.first?.historicalAfterMillis ?? 10_000)
        options.uplinks = config.uplinks.map(\.name)
        options.hold = .milliseconds(b.holdMillis)
        let clockState = ClockState(bootID: ClockMonitor.bootID(), trusted: true)
        options.clock = clockState
        do {
            outbox = try Outbox(options: options, logger: logger)
        } catch {
            throw StartupError("cannot open the outbox at \(options.path): \(error)")
        }
        clock = ClockMonitor(outbox: outbox, state: clockState, settings: config.clock, logger: logger)
        guard !config.uplinks.isEmpty else { throw StartupError("no uplink configured") }
        let outbox = self.outbox
        uplinks = try config.uplinks.map { try UplinkKinds.make($0, gatewayID: config.gateway.id, outbox: outbox, logger: logger) }
        // v1 commands and their results travel over the first v1 MQTT uplink's broker; uplink
        // formats with commands of their own (Sparkplug DCMD, ThingsBoard RPC) bring theirs.
        let up = config.uplinks.first { $0.carriesV1Commands }
        let functions = FunctionDirectory(logger: logger, deadLetterDirectory: config.gateway.dataDir + "/dead-letter")
        self.functions = functions
        let functionSet: [String: WasmFunction]
        do { functionSet = try functions.prepare(config.functions.specs) } catch { throw StartupError(error.message) }
        functions.install(functionSet)
        let engine = config.rules.compiled.map {
            RulesEngine(rules: $0, functions: FunctionDirectory.ruleFunctions(functionSet), clock: wallClockMillis)
        }
        let pipeline = Pipeline(outbox: outbox, rules: engine, logger: logger)
        self.pipeline = pipeline
        var sources: [RunningSource] = []
        for s in config.sources {
            sources.append(try SourceKinds.make(s, dataDir: config.gateway.dataDir, sink: pipeline, functions: functions, logger: logger))
        }
        self.sourceList = Locked(sources)

        // Actuators and the command path.
        if config.actuators.isEmpty && config.rules.triggers.isEmpty {
            commands = nil
        } else {
            let drivers = SourceKinds.drivers(config.actuators, sources: sources)
            let journal: CommandJournal
            do {
                journal = try CommandJournal(path: config.gateway.dataDir + "/commands.db", logger: logger)
            } catch {
                throw StartupError("cannot open the command journal: \(error)")
            }
            let formatSinks = uplinks.compactMap { $0.loop.sink as? MQTTSink }.filter { $0.commandIDPrefix != nil }
            let reporters = formatSinks.map { sink in CommandService.Reporter(prefix: sink.commandIDPrefix!, publish: { sink.publishReply(to: $0) }) }
            let service = CommandService(journal: journal, actuators: config.actuators, drivers: drivers, uplink: up, gatewayID: config.gateway.id,
                                         password: try Gateway.secret(up?.connection.passwordFile, logger: logger), logger: logger,
                                         auth: CommandAuth(config.commands, gatewayID: config.gateway.id), clock: clockState, reporters: reporters)
            for sink in formatSinks { sink.commandSlot.set { [weak service] cmds in service?.intakeExternal(cmds) } }
            commands = service
        }
        let c = commands
        pipeline.commands.withLock { $0 = c }
        if config.fleet.enabled, let configPath, let up = config.uplinks.first(where: { $0.carriesV1Commands }) {
            let service = FleetService(gateway: self, config: config, localPath: configPath, uplink: up,
                                       password: try Gateway.secret(up.connection.passwordFile, logger: logger), logger: logger)
            fleet.withLock { $0 = service }
        }
        let metrics = self.metrics
        for u in uplinks {
            let timer = metrics.publishLatency(u.config.name)
            u.stats.latencyObserver.set { d in timer.recordNanoseconds(Int64(d.components.seconds) * 1_000_000_000 + d.components.attoseconds / 1_000_000_000) }
        }
    }

    /// The gateway as an ordered list of services for swift-service-lifecycle's `ServiceGroup`:
    /// storage → uplinks → rules → sources → commands → operations. The group stops them in
    /// reverse order, each after the one above has finished: operations (API, signals) first,
    /// then commands (safe states, while the sources that reach the actuators still run), the
    /// sources (whatever they read is handed over), the rules (open windows emitted, the outbox
    /// committed), the uplinks (in-flight batches acknowledged, up to 2 s), and the storage last
    /// (the writer stopped, SQLite closed).
    func services() -> [ServiceGroupConfiguration.ServiceConfiguration] {
        let outbox = self.outbox, pipeline = self.pipeline, logger = self.logger, config = self.config
        var list: [Stage] = []
        list.append(Stage("storage", stop: {
            outbox.stop()
            outbox.close()
            let end = outbox.stats
            logger.info("brume stopped", metadata: ["outbox.buffered": "\(end.bufferedReadings)", "outbox.delivered": "\(end.delivered)"])
        }))
        for u in uplinks {
            list.append(Stage("uplink \(u.config.name)", loops: [{ await u.run() }], stop: { await u.shutdown() }))
        }
        list.append(Stage("rules", loops: [{
            // Time-based rule output: window closes, heartbeats, debounce expiries.
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(100))
                if let rules = pipeline.rules { pipeline.deliver(rules.tick()) }
            }
        }], stop: {
            if let rules = pipeline.rules { pipeline.deliver(rules.flush()) } // open windows are emitted
            outbox.flush()
        }))
        list.append(Stage("sources", start: { for s in self.sources { s.start() } }, stop: {
            logger.info("shutting down: stopping sources, committing the outbox")
            for s in self.sources { s.stop() }
        }))
        if let commands {
            list.append(Stage("commands", loops: [{ await commands.run() }, {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(1))
                    commands.checkSafeStates(uplinkOnline: self.commandUplinkOnline)
                }
            }], stop: {
                await commands.applyShutdownSafeStates()
                commands.stop()
            }))
        }
        let clock = self.clock
        var ops: [@Sendable () async -> Void] = [{ await self.reportPeriodically() }, { await clock.run() }]
        if configPath != nil {
            ops.append { for await _ in await UnixSignalsSequence(trapping: .sighup) { self.reload() } }
        }
        if config.api.enabled {
            let api = config.api
            ops.append { await APIServer.run(gateway: self, config: api, logger: logger) }
        }
        if let every = config.api.selfTelemetryMillis {
            ops.append {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(every))
                    if Task.isCancelled { return }
                    self.pipeline.accept(self.selfTelemetry(), from: "brume")
                }
            }
        }
        if let interval = SystemdNotify.watchdogInterval {
            let restartAfter = self.restartAfter
            ops.append {
                // The ping proves the async runtime runs and the outbox writer loops; if the
                // writer is stuck, or a storage fault only a restart clears lasts, systemd
                // restarts the gateway (the corrupt-file recovery runs at start, a replaced data
                // folder is opened anew).
                while !Task.isCancelled {
                    try? await Task.sleep(for: interval)
                    let stalled = outbox.writerStalledNanos()
                    if let fault = outbox.storageFault, fault.needsRestart, fault.age() >= restartAfter {
                        logger.critical("outbox storage fault: not pinging the systemd watchdog",
                                        metadata: ["fault": "\(fault.kind.rawValue)", "detail": "\(fault.detail)"])
                    } else if stalled < 10_000_000_000 {
                        SystemdNotify.send("WATCHDOG=1")
                    } else {
                        logger.critical("outbox writer stalled: not pinging the systemd watchdog", metadata: ["stalled_s": "\(stalled / 1_000_000_000)"])
                    }
                }
            }
        }
        list.append(Stage("operations", start: {
            self.running.store(true, ordering: .releasing)
            SystemdNotify.send("READY=1\nSTATUS=running: \(self.sources.count) sources, uplink \(config.uplinks.first?.name ?? "-")")
        }, loops: ops, stop: {
            self.running.store(false, ordering: .releasing)
            self.broadcaster.finishAll() // live streams end, so the HTTP server can stop
            // A restart in place is not a stop: systemd (Type=notify) would otherwise kill the
            // exec'd process after TimeoutStopSec; RELOADING=1 then the new process's READY=1.
            SystemdNotify.send(self.restartRequested.withLock { $0 } ? "RELOADING=1" : "STOPPING=1")
        }, cancelLoopsFirst: true))
        // A storage fault that only a restart clears: without a watchdog (or if it did not act),
        // the gateway stops by itself a little later, and `runGateway` throws (exit status 4),
        // so Restart=on-failure (or any supervisor) starts it on a sound file.
        let restartAfter = self.restartAfter, faultExit = self.faultExit
        let watch = Stage("storage watch", loops: [{
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                if let fault = outbox.storageFault, fault.needsRestart, fault.age() >= restartAfter + restartAfter / 2 {
                    logger.critical("outbox storage fault: exiting so that the service restarts",
                                    metadata: ["fault": "\(fault.kind.rawValue)", "detail": "\(fault.detail)"])
                    faultExit.withLock { $0 = fault }
                    return
                }
            }
        }], endsWithFirstLoop: true)
        list.append(watch)
        // The backend's channel; a restart in place (a pushed configuration that needs one) ends
        // the group like a SIGTERM would: everything drains, then `brume run` execs itself.
        let restartSignal = self.restartSignal
        if let fleet = fleet.withLock({ $0 }) {
            list.append(Stage("fleet", start: { fleet.start() }, loops: [
                { await fleet.handleMessages() },
                { _ = await fleet.watchProbation() },
            ], stop: { fleet.stop() }, cancelLoopsFirst: true))
        }
        list.append(Stage("restart in place", loops: [{
            for await _ in restartSignal { return }
        }], endsWithFirstLoop: true))
        return list.map { .init(service: $0, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup) }
    }

    /// Before the services run: the outbox writer starts, so that sources find it committing.
    func start() {
        let st = outbox.stats
        logger.info("brume starting", metadata: [
            "gateway.id": "\(config.gateway.id)", "outbox.buffered": "\(st.bufferedReadings)",
            "outbox.unacked_batches": "\(outbox.unackedBatches().count)", "sources": "\(sources.count)",
        ])
        clock.poll() // before the first reading: may the clock stamp them?
        outbox.start()
    }

    /// A storage fault that only a restart clears is waited out this long (it may be a
    /// passing I/O error) before the watchdog stops being fed; half as long again later the
    /// gateway exits by itself (`[buffer] fault_restart_after`).
    var restartAfter: Duration { .milliseconds(config.buffer.faultRestartAfterMillis) }

    /// The uplink that carries commands (the first MQTT one) is online: safe states count from its outages.
    var commandUplinkOnline: Bool {
        (uplinks.first { $0.config.carriesV1Commands } ?? uplinks.first { $0.config.kind == .mqtt } ?? uplink).state == .online
    }

    /// `/readyz`: running, and the outbox writer alive.
    func readiness() -> (Bool, String) {
        guard running.load(ordering: .acquiring) else { return (false, "not ready: starting or stopping") }
        let stalled = outbox.writerStalledNanos()
        guard stalled < 10_000_000_000 else { return (false, "not ready: the outbox writer has stalled for \(stalled / 1_000_000_000) s (disk?)") }
        if let f = outbox.storageFault {
            return (false, "not ready: outbox storage fault \(f.kind.rawValue) for \(f.age().components.seconds) s: \(f.detail)")
        }
        let ups = uplinks.map { "\($0.config.name) \($0.state.rawValue)" }.joined(separator: ", ")
        return (true, "ready: uplink \(ups), \(sources.filter { $0.state == .connected }.count)/\(sources.count) sources connected")
    }

    /// The gateway's own health as readings of device "brume" (`[api] self_telemetry`).
    func selfTelemetry() -> [Reading] {
        let t = wallClockMillis()
        let ob = outbox.stats
        func r(_ m: String, _ v: Double) -> Reading { Reading(device: "brume", metric: m, time: t, value: .number(v)) }
        var out = [
            r("rss_bytes", Double(ProcessStats.residentBytes())), r("cpu_seconds", (ProcessStats.cpuSeconds() * 1000).rounded() / 1000),
            r("outbox_readings", Double(ob.bufferedReadings)), r("outbox_bytes", Double(ob.bufferedBytes)),
            r("outbox_evicted", Double(ob.evicted.values.reduce(0, +))),
            r("uplink_up", uplink.state == .online ? 1 : 0),
            r("sources_connected", Double(sources.filter { $0.state == .connected }.count)),
        ]
        if let oldest = ob.oldestMillis { out.append(r("outbox_oldest_age_s", Double(max(0, t - oldest)) / 1000)) }
        return out
    }

    private func reportPeriodically() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(60))
            if Task.isCancelled { return }
            let s = outbox.stats
            var md: Logger.Metadata = [
                "uplink.state": "\(uplink.state.rawValue)", "uplink.batches_acked": "\(uplink.stats.batchesAcked.current)",
                "outbox.buffered": "\(s.bufferedReadings)", "outbox.bytes": "\(s.bufferedBytes)",
                "outbox.evicted": "[\(s.evicted.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: ","))]",
                "pipeline.duplicates_dropped": "\(pipeline.duplicatesDropped.current)",
            ]
            for src in sources {
                let errs = src.stats.errors.snapshot.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: ",")
                md["source.\(src.name)"] = "\(src.state.rawValue) readings=\(src.stats.readings.current) errors=[\(errs)]"
                for d in src.details() { md["\(src.kind).\(src.name).\(d.name)"] = "\(d.summary)" }
            }
            if let rules = pipeline.rules {
                for (name, st) in rules.stats().sorted(by: { $0.key < $1.key }) {
                    md["rule.\(name)"] = "in=\(st.`in`) out=\(st.out) dropped=\(st.dropped) errors=\(st.errors)"
                }
            }
            if let commands {
                md["commands"] = "\(commands.journal.counts().sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))"
            }
            logger.info("status", metadata: md)
        }
    }

}

/// Runs a gateway until SIGTERM or SIGINT, then shuts it down gracefully.
/// How `runGateway` ended.
public enum GatewayExit: Sendable {
    /// SIGTERM/SIGINT: drained and stopped.
    case stopped
    /// A pushed configuration (or its rollback) needs a fresh process: `brume run` execs itself.
    case restartInPlace
}

public func runGateway(config: GatewayConfig, configPath: String? = nil, origin: String = "local", logger: Logger) async throws -> GatewayExit {
    let gateway = try Gateway(config: config, configPath: configPath, origin: origin, logger: logger)
    gateway.start()
    let group = ServiceGroup(configuration: .init(services: gateway.services(), gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    try await group.run()
    if let fault = gateway.faultExit.withLock({ $0 }) { throw StorageFaultExit(fault: fault) }
    return gateway.restartRequested.withLock { $0 } ? .restartInPlace : .stopped
}

extension Gateway {
    /// Ends the run so that `brume run` restarts the process in place (same PID, same outbox).
    func requestRestart() {
        restartRequested.withLock { $0 = true }
        restartFeed.yield()
    }
}

extension String {
    func trimmingCharacters(in c: Character) -> String {
        var s = Substring(self)
        while s.last == c { s = s.dropLast() }
        return String(s)
    }
}

/// The outcome of one reload (status page, `brume reload`, the API).
struct ReloadResult: Sendable {
    var ok: Bool
    var atMillis: Int64
    var message: String
    var errors: [String]
    /// Rejected only because sections changed that need a restart.
    var needsRestart = false

    var json: JSONValue {
        .object([JSONMember(key: "ok", value: .bool(ok)), JSONMember(key: "at_ms", value: .number(Double(atMillis))),
                 JSONMember(key: "message", value: .string(message)), JSONMember(key: "errors", value: .array(errors.map { .string($0) }))])
    }
}

/// Maintenance on a stopped gateway's data (`brume buffer purge` without a running daemon).
public enum OfflineMaintenance {
    public static func purge(config: GatewayConfig) throws -> Int64 {
        let fd = try Gateway.lockDataDir(config.gateway.dataDir)
        defer { close(fd) }
        let b = config.buffer
        var options = OutboxOptions(path: config.gateway.dataDir + "/outbox.db", maxBytes: b.maxBytes, maxAgeMillis: b.maxAgeMillis,
                                    whenFull: WhenFull(rawValue: b.whenFull) ?? .dropOldest, commitInterval: .milliseconds(b.commitIntervalMillis),
                                    synchronous: SyncLevel(rawValue: b.synchronous) ?? .full)
        options.uplinks = config.uplinks.map(\.name)
        let outbox = try Outbox(options: options, logger: Logger(label: "brume"))
        let n = outbox.purge()
        outbox.close()
        return n
    }
}
