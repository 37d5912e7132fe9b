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

extension Gateway {
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
        let origin: String
        // The pushed configuration when [fleet] remote_config has one in use, else the local file.
        switch EffectiveConfig.load(path: path) {
        case .failure(.unreadable(let p, let reason)):
            return reject("cannot read \(p)", ["\(p): \(reason)"])
        case .failure(.invalid(let diags)):
            return reject("the configuration has \(diags.filter { $0.severity == .error }.count) error(s)", diags.map { "\($0)" })
        case .success(let loaded):
            new = loaded.config
            origin = loaded.origin
        }
        let old = currentConfig.withLock { $0 }
        var restart: [String] = []
        if new.gateway != old.gateway { restart.append("[gateway]") }
        if new.buffer != old.buffer { restart.append("[buffer]") }
        if new.uplinks != old.uplinks { restart.append("[uplink]") }
        if new.api != old.api { restart.append("[api]") }
        if commands == nil && (!new.actuators.isEmpty || !new.rules.triggers.isEmpty) { restart.append("the first [[actuator]]/[[trigger]]") }
        if new.fleet != old.fleet { restart.append("[fleet]") }
        guard restart.isEmpty else {
            var r = reject("\(restart.joined(separator: ", ")) changed: restart brume to apply (systemctl restart brume)")
            r.needsRestart = true
            return r
        }
        // Build everything new first: if one cannot be built, nothing changes.
        let functionSet: [String: WasmFunction]
        do { functionSet = try functions.prepare(new.functions.specs) } catch {
            return reject(error.message)
        }
        let oldSources = Dictionary(old.sources.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let running = Dictionary(sources.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var built: [String: RunningSource] = [:]
        for sc in new.sources where oldSources[sc.name] != sc {
            do { built[sc.name] = try SourceKinds.make(sc, dataDir: new.gateway.dataDir, sink: pipeline, functions: functions, logger: logger) } catch {
                return reject("source \"\(sc.name)\" cannot be built: \(error)")
            }
        }
        let newNames = Set(new.sources.map(\.name))
        let stopped = running.filter { !newNames.contains($0.key) || built[$0.key] != nil }
        // Apply: the functions first (a new source may decode with a new one), then stop what
        // goes (ports and client ids are free again), then start what comes.
        functions.install(functionSet)
        for (_, src) in stopped { src.stop() }
        for name in stopped.keys where !newNames.contains(name) { live.remove(source: name) }
        var list: [RunningSource] = []
        for sc in new.sources {
            if let b = built[sc.name] { b.start(); list.append(b) } else if let r = running[sc.name] { list.append(r) }
        }
        sourceList.withLock { $0 = list }
        if let commands { commands.replaceActuators(new.actuators, drivers: SourceKinds.drivers(new.actuators, sources: list)) }
        pipeline.replaceRules(new.rules.compiled.map { RulesEngine(rules: $0, functions: FunctionDirectory.ruleFunctions(functionSet), clock: wallClockMillis) })
        if new.log != old.log, let level = Logger.Level(rawValue: new.log.level) { LogfmtHandler.level.withLock { $0 = level } }
        currentConfig.withLock { $0 = new }
        configOrigin.withLock { $0 = origin }
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
        parts.append("\(new.functions.specs.count) functions, \(new.rules.rules.count - new.rules.rules.filter { $0.function != nil }.count) rules, \(new.rules.derived.count) derived, \(new.rules.triggers.count) triggers, \(new.actuators.count) actuators")
        let message = "applied: " + parts.joined(separator: "; ")
        logger.notice("configuration reloaded", metadata: ["config": "\(path)", "sources.added": "\(added)", "sources.restarted": "\(changed)",
                                                          "sources.removed": "\(removed)", "rules": "\(new.rules.rules.count)", "actuators": "\(new.actuators.count)"])
        let r = ReloadResult(ok: true, atMillis: wallClockMillis(), message: message, errors: [])
        lastReload.withLock { $0 = r }
        return r
    }
}
