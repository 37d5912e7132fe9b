import BrumeConfig
import BrumeCore
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

/// The pipeline between sources and the outbox: the local rules (filters,
/// transforms, windows, derived metrics, triggers), then the outbox. Trigger
/// commands go to the command path; trigger events go upward with the command
/// results, ahead of the telemetry backlog.
final class Pipeline: ReadingSink {
    let outbox: Outbox
    private let engine: Locked<RulesEngine?>
    var rules: RulesEngine? { engine.withLock { $0 } }
    let commands = Locked<CommandService?>(nil)
    let logger: Logger
    /// Latest value per stream (status page) and live subscribers (`brume tail`).
    let live = LatestValues()
    let broadcaster = ReadingBroadcaster()
    init(outbox: Outbox, rules: RulesEngine?, logger: Logger) {
        self.outbox = outbox
        self.engine = Locked(rules)
        self.logger = logger
        var set = RecentSet(capacity: 20_000)
        for r in outbox.tailReadings(limit: 20_000) { set.insert(r) }
        recent = Locked(set)
    }

    /// Swaps the rules atomically; state of unchanged rules carries over.
    func replaceRules(_ new: RulesEngine?) {
        engine.withLock { old in
            if let new, let o = old { new.carryState(from: o) }
            old = new
        }
    }
    /// Readings seen lately: a broker redelivering a message that was already
    /// committed (the gateway died before its PUBACK left) is recognised and
    /// dropped, counted as `duplicate_redelivery`. Seeded from the outbox tail.
    let recent: Locked<RecentSet>
    let duplicatesDropped = Counter()

    @discardableResult
    func accept(_ readings: [Reading], from source: String, redelivery: Redelivery) -> UInt64 {
        // Only a broker redelivers, and only right after a reconnect: other
        // identical readings (a pulse counter, lines read in one chunk) are real.
        let fresh: [Reading]
        switch redelivery {
        case .never:
            fresh = readings
        case .possible:
            recent.withLock { set in for r in readings { set.insert(r) } }
            fresh = readings
        case .likely:
            fresh = recent.withLock { set in
                var out: [Reading] = []
                out.reserveCapacity(readings.count)
                for r in readings where !set.contains(r) {
                    set.insert(r)
                    out.append(r)
                }
                return out
            }
        }
        if fresh.count < readings.count { duplicatesDropped.add(Int64(readings.count - fresh.count)) }
        live.record(fresh, source: source)
        // A broker that delivers them again if they are lost: they may wait in memory for the
        // cloud's acknowledgement (the outbox's hold).
        let holdable = redelivery != .never
        guard let rules else {
            broadcaster.publish(fresh)
            return outbox.append(fresh, holdable: holdable)
        }
        return deliver(rules.process(fresh), holdable: holdable)
    }
    @discardableResult
    func deliver(_ out: RulesOutput, holdable: Bool = false) -> UInt64 {
        broadcaster.publish(out.readings)
        let ticket = outbox.append(out.readings, holdable: holdable)
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
    func flushNow() { outbox.flush() }
    func waitDurable(_ ticket: UInt64, timeout: Duration) -> Bool {
        outbox.waitProcessed(ticket, timeout: timeout)
    }
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
    private let reloadLock = Mutex<Void>(())
    public let outbox: Outbox
    /// Every uplink, each with its own cursor over the outbox; the first is the primary.
    public let uplinks: [RunningUplink]
    /// The primary uplink (the first configured).
    public var uplink: RunningUplink { uplinks[0] }
    private let sourceList: Locked<[RunningSource]>
    /// The running sources (a reload may replace some).
    var sources: [RunningSource] { sourceList.withLock { $0 } }
    let commands: CommandService?
    let pipeline: Pipeline
    let metrics = MetricsExporter()
    var live: LatestValues { pipeline.live }
    var broadcaster: ReadingBroadcaster { pipeline.broadcaster }
    let startedMillis = wallClockMillis()
    private let running = Atomic<Bool>(false)
    /// Set when the gateway stops because of a storage fault (run() then throws).
    let faultExit = Locked<StorageFault?>(nil)
    private let lockFD: Int32
    private let logger: Logger

    public init(config: GatewayConfig, configPath: String? = nil, logger: Logger) throws {
        self.config = config
        self.configPath = configPath
        self.currentConfig = Locked(config)
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
        do {
            outbox = try Outbox(options: options, logger: logger)
        } catch {
            throw StartupError("cannot open the outbox at \(options.path): \(error)")
        }
        guard !config.uplinks.isEmpty else { throw StartupError("no uplink configured") }
        let outbox = self.outbox
        uplinks = try config.uplinks.map { try UplinkKinds.make($0, gatewayID: config.gateway.id, outbox: outbox, logger: logger) }
        // Commands and their results travel over the first MQTT uplink's broker.
        let up = config.uplinks.first { $0.kind == .mqtt } ?? config.uplinks[0]
        let engine = config.rules.compiled.map { RulesEngine(rules: $0, clock: wallClockMillis) }
        let pipeline = Pipeline(outbox: outbox, rules: engine, logger: logger)
        self.pipeline = pipeline
        var sources: [RunningSource] = []
        for s in config.sources {
            sources.append(try SourceKinds.make(s, sink: pipeline, logger: logger))
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
            commands = CommandService(journal: journal, actuators: config.actuators, drivers: drivers, uplink: up, gatewayID: config.gateway.id,
                                      password: try Gateway.secret(up.connection.passwordFile, logger: logger), logger: logger)
        }
        let c = commands
        pipeline.commands.withLock { $0 = c }
        let metrics = self.metrics
        for u in uplinks {
            let timer = metrics.publishLatency(u.config.name)
            u.stats.latencyObserver.withLock { $0 = { d in timer.recordNanoseconds(Int64(d.components.seconds) * 1_000_000_000 + d.components.attoseconds / 1_000_000_000) } }
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
        var ops: [@Sendable () async -> Void] = [{ await self.reportPeriodically() }]
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
            SystemdNotify.send("STOPPING=1")
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
        return (list + [watch]).map { .init(service: $0, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup) }
    }

    /// Before the services run: the outbox writer starts, so that sources find it committing.
    func start() {
        let st = outbox.stats
        logger.info("brume starting", metadata: [
            "gateway.id": "\(config.gateway.id)", "outbox.buffered": "\(st.bufferedReadings)",
            "outbox.unacked_batches": "\(outbox.unackedBatches().count)", "sources": "\(sources.count)",
        ])
        outbox.start()
    }

    /// A storage fault that only a restart clears is waited out this long (it may be a
    /// passing I/O error) before the watchdog stops being fed; half as long again later the
    /// gateway exits by itself (`[buffer] fault_restart_after`).
    var restartAfter: Duration { .milliseconds(config.buffer.faultRestartAfterMillis) }

    /// SIGHUP, `brume reload` and `POST /api/v1/reload`: re-reads the configuration.
    ///
    /// Invalid → rejected with the same diagnostics as `brume check`; the running
    /// configuration stays. Valid → applied as a whole: sources that did not
    /// change keep running (connections, counters, ports untouched), removed ones
    /// stop, new and changed ones start; actuators are rebound; rules, derived
    /// metrics and triggers are swapped keeping the state of every rule that did
    /// not change; `[log] level` applies at once. The outbox is never touched.
    /// Changes to [gateway], [buffer], [uplink] and [api] need a restart: such a
    /// reload is rejected as a whole (nothing half-applied), and says so.
    @discardableResult
    func reload() -> ReloadResult {
        reloadLock.withLock { _ in reloadLocked() }
    }

    private func reloadLocked() -> ReloadResult {
        guard let path = configPath else {
            return ReloadResult(ok: false, atMillis: wallClockMillis(), message: "this gateway was started without a configuration file", errors: [])
        }
        SystemdNotify.send("RELOADING=1")
        defer { SystemdNotify.send("READY=1") }
        func reject(_ message: String, _ errors: [String] = []) -> ReloadResult {
            reloadsRejected.add()
            for e in errors { logger.error("reload rejected", metadata: ["diagnostic": "\(e)"]) }
            logger.error("reload rejected: \(message); the running configuration stays", metadata: ["config": "\(path)", "errors": "\(errors.count)"])
            let r = ReloadResult(ok: false, atMillis: wallClockMillis(), message: "rejected: \(message)", errors: errors)
            lastReload.withLock { $0 = r }
            return r
        }
        let new: GatewayConfig
        switch ConfigLoader.load(path: path) {
        case .failure(.unreadable(_, let reason)):
            return reject("cannot read \(path)", ["\(path): \(reason)"])
        case .failure(.invalid(let diags)):
            return reject("the configuration has \(diags.filter { $0.severity == .error }.count) error(s)", diags.map { "\($0)" })
        case .success(let (cfg, _)):
            new = cfg
        }
        let old = currentConfig.withLock { $0 }
        var restart: [String] = []
        if new.gateway != old.gateway { restart.append("[gateway]") }
        if new.buffer != old.buffer { restart.append("[buffer]") }
        if new.uplinks != old.uplinks { restart.append("[uplink]") }
        if new.api != old.api { restart.append("[api]") }
        if commands == nil && (!new.actuators.isEmpty || !new.rules.triggers.isEmpty) { restart.append("the first [[actuator]]/[[trigger]]") }
        guard restart.isEmpty else {
            return reject("\(restart.joined(separator: ", ")) changed: restart brume to apply (systemctl restart brume)")
        }
        // Build everything new first: if one cannot be built, nothing changes.
        let oldSources = Dictionary(old.sources.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let running = Dictionary(sources.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var built: [String: RunningSource] = [:]
        for sc in new.sources where oldSources[sc.name] != sc {
            do { built[sc.name] = try SourceKinds.make(sc, sink: pipeline, logger: logger) } catch {
                return reject("source \"\(sc.name)\" cannot be built: \(error)")
            }
        }
        let newNames = Set(new.sources.map(\.name))
        let stopped = running.filter { !newNames.contains($0.key) || built[$0.key] != nil }
        // Apply: stop what goes (ports and client ids are free again), then start what comes.
        for (_, src) in stopped { src.stop() }
        for name in stopped.keys where !newNames.contains(name) { live.remove(source: name) }
        var list: [RunningSource] = []
        for sc in new.sources {
            if let b = built[sc.name] { b.start(); list.append(b) } else if let r = running[sc.name] { list.append(r) }
        }
        sourceList.withLock { $0 = list }
        if let commands { commands.replaceActuators(new.actuators, drivers: SourceKinds.drivers(new.actuators, sources: list)) }
        pipeline.replaceRules(new.rules.compiled.map { RulesEngine(rules: $0, clock: wallClockMillis) })
        if new.log != old.log, let level = Logger.Level(rawValue: new.log.level) { LogfmtHandler.level.withLock { $0 = level } }
        currentConfig.withLock { $0 = new }
        configLoadedMillis.withLock { $0 = wallClockMillis() }
        reloads.add()
        let added = built.keys.filter { running[$0] == nil }.sorted()
        let changed = built.keys.filter { running[$0] != nil }.sorted()
        let removed = stopped.keys.filter { !newNames.contains($0) }.sorted()
        var parts: [String] = []
        if !added.isEmpty { parts.append("sources added: \(added.joined(separator: ", "))") }
        if !changed.isEmpty { parts.append("sources restarted: \(changed.joined(separator: ", "))") }
        if !removed.isEmpty { parts.append("sources removed: \(removed.joined(separator: ", "))") }
        parts.append("\(list.count - built.count) sources unchanged")
        parts.append("\(new.rules.rules.count) rules, \(new.rules.derived.count) derived, \(new.rules.triggers.count) triggers, \(new.actuators.count) actuators")
        let message = "applied: " + parts.joined(separator: "; ")
        logger.notice("configuration reloaded", metadata: ["config": "\(path)", "sources.added": "\(added)", "sources.restarted": "\(changed)",
                                                          "sources.removed": "\(removed)", "rules": "\(new.rules.rules.count)", "actuators": "\(new.actuators.count)"])
        let r = ReloadResult(ok: true, atMillis: wallClockMillis(), message: message, errors: [])
        lastReload.withLock { $0 = r }
        return r
    }

    /// The uplink that carries commands (the first MQTT one) is online: safe states count from its outages.
    var commandUplinkOnline: Bool {
        (uplinks.first { $0.config.kind == .mqtt } ?? uplink).state == .online
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

    /// One gateway per data_dir: two would fight over the outbox and the MQTT client ids.
    /// The lock (flock on data_dir/brume.lock) goes with the process, even on kill -9.
    static func lockDataDir(_ dir: String) throws -> Int32 {
        let path = dir + "/brume.lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw StartupError("cannot create \(path): \(String(cString: strerror(errno)))") }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            close(fd)
            throw StartupError("another brume is already running with data_dir \(dir) (\(path) is locked); stop it first")
        }
        return fd
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
public func runGateway(config: GatewayConfig, configPath: String? = nil, logger: Logger) async throws {
    let gateway = try Gateway(config: config, configPath: configPath, logger: logger)
    gateway.start()
    let group = ServiceGroup(configuration: .init(services: gateway.services(), gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    try await group.run()
    if let fault = gateway.faultExit.withLock({ $0 }) { throw StorageFaultExit(fault: fault) }
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
