import BrumeConfig
import BrumeCore
import BrumeFunctions
import BrumeRules
import BrumeStore
import BrumeUplink
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// The gateway's state as one JSON document: `GET /api/v1/status`, `brume status`,
/// the status page. Times are ms since the epoch (the gateway's clock: `now_ms`).
/// Secrets (passwords, tokens, URL credentials) never appear.
extension Gateway {
    public func statusJSON() -> JSONValue {
        let now = wallClockMillis()
        let cfg = currentConfig.withLock { $0 }
        func obj(_ m: [(String, JSONValue)]) -> JSONValue { .object(m.map { JSONMember(key: $0.0, value: $0.1) }) }
        func num(_ x: Int64?) -> JSONValue { x.map { .number(Double($0)) } ?? .null }
        func reasons(_ d: [String: Int64]) -> JSONValue { obj(d.sorted { $0.key < $1.key }.map { ($0.key, .number(Double($0.value))) }) }

        let reload = lastReload.withLock { $0 }
        var reloadJSON: JSONValue = .null
        if let r = reload {
            reloadJSON = obj([("ok", .bool(r.ok)), ("at_ms", num(r.atMillis)), ("message", .string(r.message)),
                              ("errors", .array(r.errors.map { .string($0) }))])
        }
        let gateway = obj([
            ("id", .string(cfg.gateway.id)), ("version", .string(brumeVersion)), ("started_ms", num(startedMillis)), ("pid", num(Int64(getpid()))),
            ("config", obj([("path", configPath.map { .string($0) } ?? .null), ("loaded_ms", num(configLoadedMillis.withLock { $0 })),
                            ("reloads", num(reloads.current)), ("reloads_rejected", num(reloadsRejected.current)), ("last_reload", reloadJSON),
                            ("origin", .string(configOrigin.withLock { $0 })), ("sha256", .string(FleetService.hash(cfg))),
                            ("fleet", fleet.withLock { $0 }.map { f in
                                var m: [JSONMember] = []
                                if case .object(let s) = f.stateJSON { m = s }
                                m.append(JSONMember(key: "refused", value: reasons(f.refused.snapshot)))
                                return .object(m)
                            } ?? .null)])),
        ])

        let backlog = outbox.backlog()
        let uplinks: JSONValue = .array(self.uplinks.map { up in
            let upState: String = switch up.state {
            case .online: "connected"
            case .connecting: "connecting"
            case .offline: "disconnected"
            case .stopped: "stopped"
            }
            let st = up.stats
            let acked = st.readingsAcked.current
            return obj([
                ("name", .string(up.config.name)), ("kind", .string(up.config.kind.rawValue)),
                ("format", .string(up.config.kind == .mqtt ? up.config.format.name : up.config.http?.format.rawValue ?? "json")),
                ("state", .string(upState)),
                ("inbound_rejected", reasons((up.loop.sink as? MQTTSink)?.inboundRejected.snapshot ?? [:])),
                ("url", .string(up.config.endpoint)), ("match", .array(up.config.match.map { .string($0) })),
                ("batches_acked", num(st.batchesAcked.current)), ("readings_acked", num(acked)),
                ("bytes_sent", num(st.bytesSent.current)), ("bytes_uncompressed", num(st.bytesUncompressed.current)),
                ("bytes_per_reading", acked > 0 ? .number((Double(st.bytesSent.current) / Double(acked) * 10).rounded() / 10) : .null),
                ("compression_ratio", st.bytesSent.current > 0 ? .number((Double(st.bytesUncompressed.current) / Double(st.bytesSent.current) * 100).rounded() / 100) : .null),
                ("resends", num(st.resends.current)), ("dead_lettered", num(st.deadLettered.current)),
                ("backlog", num(backlog[outbox.uplinkKey(up.config.name)] ?? 0)),
                ("max_bytes_per_second", num(up.config.maxBytesPerSecond)),
                ("last_ack_ms", num(st.lastAckMillis.current)),
                ("publish_latency_ms", .number(Double(st.lastAckLatencyMicros.current) / 1000)),
                ("errors", reasons(st.publishErrors.snapshot)),
                ("splits", num(st.splits.current)),
                ("max_bytes_per_day", num(up.config.maxBytesPerDay)),
                ("bytes_last_24h", num(up.loop.budget?.used)),
                ("budget_spent", .bool(st.budgetHeld.current)),
                ("fault", st.fault.current.map { f in
                    obj([("reason", .string(f.reason)), ("detail", .string(f.detail)), ("misconfigured", .bool(f.misconfigured)),
                         ("since_ms", .number(Double(f.sinceMillis)))])
                } ?? .null),
            ])
        })

        let ob = outbox.stats
        let buffer = obj([
            // Waiting for an uplink: in the database, and in memory (the hold window, the next commit).
            ("readings", num(ob.bufferedReadings + Int64(ob.pendingInMemory))), ("in_memory", num(Int64(ob.pendingInMemory))),
            ("delivered_from_memory", num(outbox.deliveredFromMemory.current)), ("bytes", num(ob.bufferedBytes)), ("max_bytes", num(outbox.options.maxBytes)),
            ("oldest_ms", num(ob.oldestMillis)), ("evicted", reasons(ob.evicted)), ("committed", num(ob.committed)),
            ("delivered", num(ob.delivered)), ("commits", num(ob.commits)), ("commit_failures", num(ob.commitFailures)),
            ("storage_fault", outbox.storageFault.map { f in
                obj([("kind", .string(f.kind.rawValue)), ("detail", .string(f.detail)), ("since_ms", .number(Double(f.sinceMillis))),
                     ("needs_restart", .bool(f.needsRestart))])
            } ?? .null),
        ])

        let clockJSON = clockStatusJSON(obj: obj, num: num)

        let latest = live.snapshot
        var sourcesJSON: [JSONValue] = []
        for src in sources {
            let kind = src.kind
            var details: [String: DeviceDetails] = [:]
            var deviceOrder: [String] = []
            for d in src.details() { details[d.name] = d; deviceOrder.append(d.name) }
            let seen = latest[src.name] ?? [:]
            for d in seen.keys.sorted() where !deviceOrder.contains(d) { deviceOrder.append(d) }
            var devices: [JSONValue] = []
            for name in deviceOrder.prefix(500) {
                let metrics = seen[name] ?? [:]
                let last = metrics.values.map(\.received).max()
                let metricsJSON: [JSONValue] = metrics.keys.sorted().prefix(200).map { m in
                    let e = metrics[m]!
                    return obj([("metric", .string(m)), ("value", e.value.json), ("time_ms", num(e.received)), ("reading_time_ms", num(e.time))])
                }
                var state = "online"
                if let d = details[name], let s = d.state {
                    state = s
                } else if let last, now - last > 120_000 {
                    state = "stale"
                }
                var fields: [(String, JSONValue)] = [("name", .string(name)), ("state", .string(state)), ("last_reading_ms", num(last)),
                                                     ("metrics", .array(metricsJSON))]
                // The kind's own details under its name ("modbus": {...}).
                if let d = details[name] { fields.append((kind, d.status)) }
                devices.append(obj(fields))
            }
            // When the gateway last received something from it (a replayed or buffered device may send old timestamps).
            let received = seen.values.flatMap { $0.values.map(\.received) }.max()
            sourcesJSON.append(obj([
                ("name", .string(src.name)), ("kind", .string(kind)), ("state", .string(src.state.rawValue)),
                ("messages", num(src.stats.messages.current)), ("readings", num(src.stats.readings.current)),
                ("errors", reasons(src.stats.errors.snapshot)), ("last_reading_ms", num(received)),
                ("devices", .array(devices)),
            ]))
        }

        var rulesJSON: [JSONValue] = []
        if let rules = pipeline.rules {
            for (name, st) in rules.stats().sorted(by: { $0.key < $1.key }) {
                rulesJSON.append(obj([("name", .string(name)), ("in", num(Int64(st.`in`))), ("out", num(Int64(st.out))),
                                      ("dropped", num(Int64(st.dropped))), ("errors", num(Int64(st.errors)))]))
            }
        }

        let functionsJSON: [JSONValue] = functions.all.map { f in
            let st = f.statistics()
            return obj([
                ("name", .string(f.spec.name)), ("run", .string(f.spec.kind.rawValue)), ("module", .string(f.spec.path)),
                ("sha256", .string(f.sha256)), ("fuel", num(Int64(f.spec.fuel))), ("memory_bytes", num(Int64(f.spec.memoryBytes))),
                ("on_error", .string(f.spec.onError.rawValue)), ("calls", num(st.calls)), ("outputs", num(st.outputs)),
                ("failures", reasons(Dictionary(uniqueKeysWithValues: st.failures.map { ($0.key.rawValue, $0.value) }))),
                ("dead_lettered", num(st.deadLettered)), ("restarts", num(st.restarts)),
                ("log_lines", num(st.logLines)), ("log_suppressed", num(st.logSuppressed)),
                ("fuel_max", num(Int64(st.fuelMax))), ("fuel_avg", num(st.calls > 0 ? Int64(st.fuelTotal / UInt64(st.calls)) : nil)),
                ("disabled", .bool(st.disabled)), ("last_error", st.lastError.map { .string($0) } ?? .null),
            ])
        }

        var commandsJSON: JSONValue = .null
        if let commands {
            let recent = (try? commands.journal.recent(limit: 20)) ?? []
            commandsJSON = obj([
                ("counts", reasons(commands.journal.counts())),
                ("recent", .array(recent.map { r in
                    obj([("id", .string(r.command.id)), ("actuator", .string(r.command.actuator)), ("value", r.command.value.json),
                         ("state", .string(r.state.rawValue)), ("detail", .string(r.detail)), ("updated_ms", num(r.updatedAt)),
                         ("origin", .string(r.command.origin))])
                })),
            ])
        }

        let errors: [JSONValue] = RecentLog.shared.entries.reversed().map { e in
            var msg = e.message
            if let d = e.detail { msg += ": " + d }
            return obj([("at_ms", num(e.atMillis)), ("level", .string(e.level.rawValue)), ("source", e.source.map { .string($0) } ?? .null),
                        ("reason", e.reason.map { .string($0) } ?? .null), ("message", .string(msg))])
        }

        return obj([
            ("now_ms", num(now)), ("gateway", gateway), ("uplinks", uplinks), ("buffer", buffer), ("clock", clockJSON), ("sources", .array(sourcesJSON)),
            ("rules", .array(rulesJSON)), ("functions", .array(functionsJSON)), ("commands", commandsJSON), ("recent_errors", .array(errors)),
            ("process", obj([("rss_bytes", num(ProcessStats.residentBytes())), ("cpu_seconds", .number((ProcessStats.cpuSeconds() * 100).rounded() / 100))])),
            ("api", obj([("stream_subscribers", num(Int64(broadcaster.count)))])),
        ])
    }

    /// The system clock: synchronised (the kernel's view), trusted to stamp readings, and what
    /// became of readings stamped while it was not.
    func clockStatusJSON(obj: ([(String, JSONValue)]) -> JSONValue, num: (Int64?) -> JSONValue) -> JSONValue {
        let snap = clock.last.withLock { $0 }
        let readings: (String, JSONValue?) = switch outbox.clockStatus {
        case .none: ("none", nil)
        case .waiting(let first): ("waiting", num(first))
        case .corrected(let offset): ("corrected", num(offset))
        case .flagged: ("flagged", nil)
        }
        return obj([
            ("synchronised", snap.map { .bool($0.synchronised) } ?? .null),
            ("trusted", snap.map { .bool($0.trusted) } ?? .null),
            ("reason", snap.map { .string($0.reason) } ?? .null),
            ("max_error_ms", snap.map { $0.maxErrorMicros < 0 ? .null : .number(Double($0.maxErrorMicros / 1000)) } ?? .null),
            ("mode", .string(clock.settings.unsynchronised.rawValue)),
            ("wait_ms", num(clock.settings.waitMillis)),
            // Readings stamped while it was not trusted, in this boot: none, waiting (from the
            // first's sequence number), corrected (by this offset, wall - boot clock), or flagged.
            ("unsynced_readings", .string(readings.0)),
            ("first_waiting_seq", readings.0 == "waiting" ? (readings.1 ?? .null) : .null),
            ("correction_offset_ms", readings.0 == "corrected" ? (readings.1 ?? .null) : .null),
            ("marked", num(clock.state.markedTotal.load(ordering: .relaxed))),
        ])
    }

    /// `GET /api/v1/readings/latest`: [{source, device, metric, value, time_ms}], optionally filtered.
    func latestJSON(match: [Glob]) -> JSONValue {
        var out: [JSONValue] = []
        for (source, devices) in live.snapshot.sorted(by: { $0.key < $1.key }) {
            for (device, metrics) in devices.sorted(by: { $0.key < $1.key }) {
                for (metric, e) in metrics.sorted(by: { $0.key < $1.key }) where match.isEmpty || match.contains(where: { $0.matches("\(device)/\(metric)") }) {
                    out.append(.object([JSONMember(key: "source", value: .string(source)), JSONMember(key: "device", value: .string(device)),
                                        JSONMember(key: "metric", value: .string(metric)), JSONMember(key: "value", value: e.value.json),
                                        JSONMember(key: "time_ms", value: .number(Double(e.time))), JSONMember(key: "received_ms", value: .number(Double(e.received)))]))
                }
            }
        }
        return .array(out)
    }
}

extension Value {
    var json: JSONValue {
        switch self {
        case .number(let d): return d.isFinite ? .number(d) : .null
        case .bool(let b): return .bool(b)
        case .string(let s): return .string(s)
        }
    }
}

/// The version reported by `brume --version`, the status page and metrics.
public let brumeVersion = "0.5.0"
