import BrumeCore
import BrumeFunctions
import BrumeStore
import BrumeUplink
import Prometheus
import Synchronization

/// Prometheus metrics (`GET /metrics`) through swift-prometheus.
///
/// The components keep their own lock-free counters (one relaxed atomic add on
/// the hot path); at scrape time they are mirrored into the registry: totals
/// as counters (incremented by the difference since the last scrape), levels
/// as gauges. The publish latency is recorded as it happens, in a Prometheus histogram.
final class MetricsExporter: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let mirrored = Mutex<[String: Int64]>([:])
    private let mirroredSeconds = Mutex<[String: Double]>([:])
    private let timers = Mutex<[String: DurationHistogram]>([:])
    /// Every series carries `gateway="<id>"`: a fleet's metrics in one Prometheus stay apart
    /// even where the scrape configuration does not relabel them.
    let base: [(String, String)]

    /// The publish → acknowledgement latency histogram of one uplink (recorded as it happens).
    func publishLatency(_ uplink: String) -> DurationHistogram {
        timers.withLock { t in
            if let x = t[uplink] { return x }
            let name = "brume_uplink_publish_latency_seconds"
            let x = registry.makeDurationHistogram(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: MetricsExporter.help[name] ?? ""),
                                                   labels: base + [("uplink", uplink)], buckets: MetricsExporter.latencyBuckets)
            t[uplink] = x
            return x
        }
    }

    static let latencyBuckets: [Duration] = [.milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
                                             .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(5), .seconds(10)]

    init(gateway: String) {
        base = [("gateway", gateway)]
    }

    /// Sets a counter to `total` (counters only go up: a total that went down, e.g.
    /// after a source was replaced on reload, restarts from there).
    private func counter(_ name: String, _ labels: [(String, String)], _ total: Int64) {
        let labels = base + labels
        let key = name + labels.map { "|\($0.0)=\($0.1)" }.joined()
        let last = mirrored.withLock { m -> Int64 in
            let l = m[key] ?? 0
            m[key] = total
            return l
        }
        let c = registry.makeCounter(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: MetricsExporter.help[name] ?? ""), labels: labels)
        if total > last { c.increment(by: total - last) } else if total < last { c.increment(by: total) }
    }

    /// A counter of seconds (CPU time): Prometheus counters take fractions.
    private func counter(_ name: String, _ labels: [(String, String)], seconds total: Double) {
        let labels = base + labels
        let key = name + labels.map { "|\($0.0)=\($0.1)" }.joined()
        let last = mirroredSeconds.withLock { m -> Double in
            let l = m[key] ?? 0
            m[key] = total
            return l
        }
        let c = registry.makeCounter(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: MetricsExporter.help[name] ?? ""), labels: labels)
        if total > last { c.increment(by: total - last) }
    }

    private func gauge(_ name: String, _ labels: [(String, String)], _ value: Double) {
        let labels = base + labels
        registry.makeGauge(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: MetricsExporter.help[name] ?? ""), labels: labels).set(to: value)
    }

    static let help: [String: String] = [
        "brume_source_readings_total": "Readings a source handed to the pipeline.",
        "brume_source_messages_total": "Messages, lines or Modbus responses a source received.",
        "brume_source_errors_total": "Inputs a source dropped or requests that failed, by reason.",
        "brume_source_up": "1 while the source is connected (broker, port, bus).",
        "brume_modbus_requests_total": "Modbus requests sent to a device, retries included.",
        "brume_modbus_timeouts_total": "Modbus requests that got no answer in time.",
        "brume_modbus_exceptions_total": "Modbus exception responses, by exception code.",
        "brume_modbus_latency_seconds": "Modbus response times of a device (answered requests).",
        "brume_data_dir_free_bytes": "Free space on the file system of the data folder (outbox, journal), for unprivileged users.",
        "brume_data_dir_size_bytes": "Size of the file system of the data folder.",
        "brume_process_disk_written_bytes_total": "Bytes the brume process caused to be written to storage (/proc/self/io write_bytes): SD card wear.",
        "brume_modbus_device_up": "1 while a Modbus device answers (0: backed off, probed).",
        "brume_device_last_reading_age_seconds": "Age of the newest reading of a device (data freshness).",
        "brume_outbox_readings": "Readings buffered in the outbox, not yet acknowledged by the uplink.",
        "brume_outbox_bytes": "Bytes of buffered readings in the outbox.",
        "brume_outbox_max_bytes": "The configured outbox size limit (buffer.max_bytes).",
        "brume_outbox_oldest_age_seconds": "Age of the oldest buffered reading (0 when empty).",
        "brume_outbox_evicted_total": "Readings dropped from the outbox, by reason (max_bytes, max_age, buffer_full, purged, corrupt).",
        "brume_outbox_committed_total": "Readings committed to the outbox.",
        "brume_outbox_commits_total": "Group commits (transactions that stored readings): SD-card writes, one fsync each.",
        "brume_outbox_commit_failures_total": "Outbox commits that failed (disk full, I/O) and were retried.",
        "brume_outbox_in_memory_readings": "Readings waiting in memory: the hold window for the cloud's acknowledgement, or the next group commit.",
        "brume_outbox_delivered_from_memory_total": "Readings every uplink acknowledged before they were committed: never written to the card.",
        "brume_outbox_storage_fault": "1 while the outbox has a storage fault, by kind (disk_full, io_error, corrupt, data_folder_gone).",
        "brume_clock_synchronized": "1 while the kernel says the system clock is synchronised (NTP, chrony, timesyncd).",
        "brume_clock_trusted": "1 while the clock may stamp readings as they are (0: they are marked and wait for the sync).",
        "brume_clock_max_error_seconds": "The kernel's maximum error estimate of the system clock.",
        "brume_clock_marked_readings_total": "Readings stamped while the clock was not trusted (corrected after the sync, or flagged).",
        "brume_clock_waiting": "1 while readings stamped by an unsynchronised clock wait for the sync (batches stop before them).",
        "brume_uplink_held": "1 while the uplink holds its backlog because the endpoint or the configuration is wrong (see status).",
        "brume_uplink_splits_total": "Batches split because they were too large for the endpoint or batch_max_bytes.",
        "brume_uplink_up": "1 while the uplink is connected.",
        "brume_uplink_batches_acked_total": "Batches the uplink broker acknowledged.",
        "brume_uplink_readings_acked_total": "Readings the uplink broker acknowledged.",
        "brume_uplink_bytes_sent_total": "Telemetry bytes published (payloads).",
        "brume_uplink_resends_total": "Batches sent again (same id) after a reconnect or restart.",
        "brume_uplink_bytes_uncompressed_total": "Telemetry bytes before compression (with bytes_sent: the compression ratio).",
        "brume_uplink_dead_lettered_total": "Readings in batches the endpoint refused for good (kept as dead letters).",
        "brume_uplink_errors_total": "Failed deliveries, by reason (network, http_503, http_429, not_connected ...).",
        "brume_uplink_backlog_readings": "Readings this uplink has not acknowledged yet.",
        "brume_uplink_publish_latency_seconds": "Publish to acknowledgement (MQTT PUBACK, HTTP 2xx) of a batch.",
        "brume_uplink_inbound_rejected_total": "Messages on an uplink format's command topics that were refused (bad Sparkplug payload, malformed ThingsBoard RPC ...), by reason.",
        "brume_commands": "Commands in the journal, by state.",
        "brume_commands_rejected_total": "Commands refused, by reason (unsigned, bad_signature, unknown_key, clock_unsynchronised, bad_value, ...).",
        "brume_rule_in_total": "Readings a rule matched.",
        "brume_function_calls_total": "Calls of a user function (WebAssembly).",
        "brume_function_failures_total": "Failed calls of a user function, by reason (trap, out_of_fuel, bad_output, error_code, too_large, disabled).",
        "brume_function_dead_lettered_total": "Inputs of failed calls written to the function's dead-letter file.",
        "brume_function_disabled": "1 when a user function is disabled after too many consecutive failures (until the next reload).",
        "brume_function_fuel_max": "Most fuel one call of a user function used (its budget: the function's fuel).",
        "brume_rule_out_total": "Readings a rule passed on or produced.",
        "brume_rule_dropped_total": "Readings a rule dropped (filter, deadband, rate limit).",
        "brume_rule_errors_total": "Expression errors in a rule.",
        "brume_pipeline_duplicates_dropped_total": "Broker redeliveries recognised and dropped.",
        "brume_process_resident_memory_bytes": "Resident memory of the brume process.",
        "brume_process_cpu_seconds_total": "CPU time (user + system) of the brume process.",
        "brume_config_reloads_total": "Configuration reloads, by result.",
        "brume_build_info": "The brume version (label).",
        "brume_board_soc_temperature_celsius": "SoC temperature ([[source]] kind = \"board\").",
        "brume_board_under_voltage": "1 while the Raspberry Pi firmware reports under-voltage.",
        "brume_board_under_voltage_occurred": "1 if under-voltage occurred since boot.",
        "brume_board_frequency_capped": "1 while the ARM frequency is capped.",
        "brume_board_frequency_capped_occurred": "1 if the ARM frequency was capped since boot.",
        "brume_board_throttled": "1 while the SoC is throttled.",
        "brume_board_throttled_occurred": "1 if the SoC was throttled since boot.",
        "brume_board_soft_temperature_limit": "1 while the soft temperature limit is active.",
        "brume_board_soft_temperature_limit_occurred": "1 if the soft temperature limit was reached since boot.",
        "brume_board_disk_free_bytes": "Free bytes on the filesystem of the data folder.",
        "brume_board_disk_size_bytes": "Size of the filesystem of the data folder.",
        "brume_board_disk_written_bytes": "Bytes written to the disk holding the data folder since boot (SD card wear).",
        "brume_board_memory_available_bytes": "MemAvailable of /proc/meminfo.",
        "brume_board_memory_total_bytes": "MemTotal of /proc/meminfo.",
        "brume_board_load1": "Load average over 1 minute.",
        "brume_board_uptime_seconds": "Seconds since boot.",
        "brume_board_clock_synchronised": "1 when the kernel says the clock is NTP-synchronised.",
        "brume_lorawan_rssi_dbm": "RSSI of the last frame accepted from a LoRaWAN device (dBm).",
        "brume_lorawan_snr_db": "SNR of the last frame accepted from a LoRaWAN device (dB).",
    ]

    func render(_ g: Gateway) -> [UInt8] {
        let now = wallClockMillis()
        var histograms: [(labels: [(String, String)], DeviceDetails.Histogram)] = []
        for src in g.sources {
            let l = [("source", src.name)]
            counter("brume_source_readings_total", l, src.stats.readings.current)
            counter("brume_source_messages_total", l, src.stats.messages.current)
            for (reason, n) in src.stats.errors.snapshot { counter("brume_source_errors_total", l + [("reason", reason)], n) }
            gauge("brume_source_up", l, src.state == .connected ? 1 : 0)
            for d in src.details() {
                let dl = [("source", src.name), ("device", d.name)]
                for c in d.counters { counter(c.name, dl + c.labels, Int64(c.value)) }
                for x in d.gauges { gauge(x.name, dl + x.labels, x.value) }
                for h in d.histograms { histograms.append((base + dl, h)) }
            }
        }
        for (source, devices) in g.live.snapshot {
            for (device, metrics) in devices {
                if let last = metrics.values.map(\.received).max() {
                    gauge("brume_device_last_reading_age_seconds", [("source", source), ("device", device)], Double(max(0, now - last)) / 1000)
                }
            }
        }
        let ob = g.outbox.stats
        gauge("brume_outbox_readings", [], Double(ob.bufferedReadings))
        gauge("brume_outbox_bytes", [], Double(ob.bufferedBytes))
        gauge("brume_outbox_max_bytes", [], Double(g.outbox.options.maxBytes))
        gauge("brume_outbox_oldest_age_seconds", [], ob.oldestMillis.map { Double(max(0, now - $0)) / 1000 } ?? 0)
        for (reason, n) in ob.evicted { counter("brume_outbox_evicted_total", [("reason", reason)], n) }
        counter("brume_outbox_committed_total", [], ob.committed)
        counter("brume_outbox_commit_failures_total", [], ob.commitFailures)
        counter("brume_outbox_commits_total", [], ob.commits)
        gauge("brume_outbox_in_memory_readings", [], Double(ob.pendingInMemory))
        counter("brume_outbox_delivered_from_memory_total", [], g.outbox.deliveredFromMemory.current)
        let fault = g.outbox.storageFault
        for kind in [StorageFault.Kind.diskFull, .ioError, .corrupt, .dataFolderGone] {
            gauge("brume_outbox_storage_fault", [("kind", kind.rawValue)], fault?.kind == kind ? 1 : 0)
        }
        if let c = g.clock.last.withLock({ $0 }) {
            gauge("brume_clock_synchronized", [], c.synchronised ? 1 : 0)
            gauge("brume_clock_trusted", [], c.trusted ? 1 : 0)
            if c.maxErrorMicros >= 0 { gauge("brume_clock_max_error_seconds", [], Double(c.maxErrorMicros) / 1_000_000) }
        }
        counter("brume_clock_marked_readings_total", [], g.clock.state.markedTotal.load(ordering: .relaxed))
        if case .waiting = g.outbox.clockStatus { gauge("brume_clock_waiting", [], 1) } else { gauge("brume_clock_waiting", [], 0) }
        let backlog = g.outbox.backlog()
        for up in g.uplinks {
            let ul = [("uplink", up.config.name)]
            gauge("brume_uplink_up", ul, up.state == .online ? 1 : 0)
            counter("brume_uplink_batches_acked_total", ul, up.stats.batchesAcked.current)
            counter("brume_uplink_readings_acked_total", ul, up.stats.readingsAcked.current)
            counter("brume_uplink_bytes_sent_total", ul, up.stats.bytesSent.current)
            counter("brume_uplink_bytes_uncompressed_total", ul, up.stats.bytesUncompressed.current)
            counter("brume_uplink_resends_total", ul, up.stats.resends.current)
            counter("brume_uplink_dead_lettered_total", ul, up.stats.deadLettered.current)
            for (reason, n) in up.stats.publishErrors.snapshot { counter("brume_uplink_errors_total", ul + [("reason", reason)], n) }
            // 1 while the uplink holds its backlog because of an endpoint or configuration fault.
            gauge("brume_uplink_held", ul, up.stats.fault.current?.misconfigured == true ? 1 : 0)
            counter("brume_uplink_splits_total", ul, up.stats.splits.current)
            gauge("brume_uplink_backlog_readings", ul, Double(backlog[g.outbox.uplinkKey(up.config.name)] ?? 0))
            if let sink = up.loop.sink as? MQTTSink {
                for (reason, n) in sink.inboundRejected.snapshot { counter("brume_uplink_inbound_rejected_total", ul + [("reason", reason)], n) }
            }
        }
        if let commands = g.commands {
            var counts = commands.journal.counts()
            for s in ["accepted", "sent", "done", "failed", "expired", "rejected"] where counts[s] == nil { counts[s] = 0 }
            for (state, n) in counts { gauge("brume_commands", [("state", state)], Double(n)) }
            for (reason, n) in commands.stats.rejected.snapshot { counter("brume_commands_rejected_total", [("reason", reason)], n) }
        }
        if let rules = g.pipeline.rules {
            for (name, st) in rules.stats() {
                let rl = [("rule", name)]
                counter("brume_rule_in_total", rl, Int64(st.`in`))
                counter("brume_rule_out_total", rl, Int64(st.out))
                counter("brume_rule_dropped_total", rl, Int64(st.dropped))
                counter("brume_rule_errors_total", rl, Int64(st.errors))
            }
        }
        for f in g.functions.all {
            let st = f.statistics()
            let fl = [("function", f.spec.name)]
            counter("brume_function_calls_total", fl, st.calls)
            for reason in FunctionStats.Failure.allCases {
                counter("brume_function_failures_total", fl + [("reason", reason.rawValue)], st.failures[reason] ?? 0)
            }
            counter("brume_function_dead_lettered_total", fl, st.deadLettered)
            gauge("brume_function_disabled", fl, st.disabled ? 1 : 0)
            gauge("brume_function_fuel_max", fl, Double(st.fuelMax))
        }
        counter("brume_pipeline_duplicates_dropped_total", [], g.pipeline.duplicatesDropped.current)
        gauge("brume_process_resident_memory_bytes", [], Double(ProcessStats.residentBytes()))
        counter("brume_process_cpu_seconds_total", [], seconds: ProcessStats.cpuSeconds())
        if let w = ProcessStats.writtenBytes() { counter("brume_process_disk_written_bytes_total", [], w) }
        if let (free, size) = ProcessStats.fileSystem(g.config.gateway.dataDir) {
            gauge("brume_data_dir_free_bytes", [], Double(free))
            gauge("brume_data_dir_size_bytes", [], Double(size))
        }
        counter("brume_config_reloads_total", [("result", "applied")], g.reloads.current)
        counter("brume_config_reloads_total", [("result", "rejected")], g.reloadsRejected.current)
        gauge("brume_build_info", [("version", brumeVersion)], 1)
        var out = registry.emitToBuffer()
        MetricsExporter.appendHistograms(histograms, to: &out)
        return out
    }

    /// Histograms kept as bucket counts by their components (Modbus response times), in the
    /// text exposition format: `_bucket{le=...}` cumulative, `_sum`, `_count`; HELP and TYPE
    /// once per name.
    static func appendHistograms(_ hs: [(labels: [(String, String)], DeviceDetails.Histogram)], to out: inout [UInt8]) {
        var described: Set<String> = []
        for (labels, h) in hs {
            if described.insert(h.name).inserted {
                out.append(contentsOf: "# HELP \(h.name) \(help[h.name] ?? h.name)\n# TYPE \(h.name) histogram\n".utf8)
            }
            let l = labels.map { "\($0.0)=\"\(escapeLabel($0.1))\"" }.joined(separator: ",")
            var cumulative: Int64 = 0
            for (i, n) in h.counts.enumerated() {
                cumulative += n
                let le = i < h.bounds.count ? WireFormat.formatNumber(h.bounds[i]) : "+Inf"
                out.append(contentsOf: "\(h.name)_bucket{\(l),le=\"\(le)\"} \(cumulative)\n".utf8)
            }
            out.append(contentsOf: "\(h.name)_sum{\(l)} \(WireFormat.formatNumber(h.sum))\n\(h.name)_count{\(l)} \(cumulative)\n".utf8)
        }
    }

    static func escapeLabel(_ s: String) -> String {
        var o = ""
        for c in s.unicodeScalars {
            switch c {
            case "\\": o += "\\\\"
            case "\"": o += "\\\""
            case "\n": o += "\\n"
            default: o.unicodeScalars.append(c)
            }
        }
        return o
    }
}
