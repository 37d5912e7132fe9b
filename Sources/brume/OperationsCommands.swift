import ArgumentParser
import BrumeConfig
import BrumeCore
import BrumeRuntime
import BrumeStore

#if canImport(Glibc)
import Glibc
#endif

/// Loads the configuration for a tool command (exit 1/2 with diagnostics when it is broken).
/// `${...}` references this shell cannot resolve (the unit's environment, its credentials) are
/// not errors here: tools need the API address, the data folder, the sources.
func loadForTool(_ path: String) throws -> GatewayConfig {
    switch ConfigLoader.load(path: path, unresolved: .ignore) {
    case .success(let (cfg, _)): return cfg
    case .failure(.unreadable(let p, let reason)):
        printErr("\(p): cannot read: \(reason)")
        throw ExitCode(ExitStatus.unreadableConfig)
    case .failure(.invalid(let diags)):
        for d in diags { printErr("\(d)") }
        throw ExitCode(ExitStatus.invalidConfig)
    }
}

extension JSONValue {
    var str: String? { if case .string(let s) = self { return s } else { return nil } }
    var num: Double? { if case .number(let d) = self { return d } else { return nil } }
    var arr: [JSONValue] { if case .array(let a) = self { return a } else { return [] } }
    var members: [JSONMember] { if case .object(let m) = self { return m } else { return [] } }
    var text: String {
        switch self {
        case .string(let s): return s
        case .number(let d): return WireFormat.formatNumber(d)
        case .bool(let b): return b ? "true" : "false"
        case .null: return "-"
        default: return description
        }
    }
}

func age(_ ms: Double?, now: Double) -> String {
    guard let ms else { return "never" }
    let s = max(0, (now - ms) / 1000)
    if s < 10 { return String(format1(s)) + " s ago" }
    if s < 120 { return "\(Int(s)) s ago" }
    if s < 7200 { return "\(Int(s / 60)) min ago" }
    if s < 172_800 { return "\(Int(s / 3600)) h ago" }
    return "\(Int(s / 86400)) d ago"
}

func format1(_ x: Double) -> String {
    let r = (x * 10).rounded() / 10
    return WireFormat.formatNumber(r)
}

func bytesText(_ b: Double?) -> String {
    guard let b else { return "-" }
    if b < 1024 { return "\(Int(b)) B" }
    if b < 1_048_576 { return "\(format1(b / 1024)) KiB" }
    if b < 1_073_741_824 { return "\(format1(b / 1048576)) MiB" }
    return "\(format1(b / 1073741824)) GiB"
}

func table(_ rows: [[String]], indent: String = "") -> String {
    guard let first = rows.first else { return "" }
    let widths = (0..<first.count).map { c in rows.map { c < $0.count ? $0[c].count : 0 }.max() ?? 0 }
    return rows.map { r in
        indent + r.enumerated().map { i, cell in i == r.count - 1 ? cell : cell + String(repeating: " ", count: widths[i] - cell.count) }.joined(separator: "  ")
    }.joined(separator: "\n")
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the running gateway's state: sources and devices, buffer, uplink, commands, recent errors.",
        discussion: "Asks the local API ([api] listen in the configuration). Exit status: 0 ok, 1 the gateway cannot be reached.")

    @Option(name: .shortAndLong, help: "The configuration file (for the API address and token).")
    var config: String = defaultConfigPath

    @Flag(help: "Print the raw JSON (the same as GET /api/v1/status).")
    var json = false

    func run() throws {
        let cfg = try loadForTool(config)
        let client = LocalAPIClient(api: cfg.api)
        let s: JSONValue
        do { (_, s) = try client.json("GET", "/api/v1/status") } catch {
            printErr("brume status: \(error)")
            throw ExitCode(1)
        }
        if json { print(s.description); return }
        print(render(s))
    }

    func render(_ s: JSONValue) -> String {
        let now = s["now_ms"]?.num ?? 0
        var out: [String] = []
        let g = s["gateway"] ?? .null
        let uptime = (now - (g["started_ms"]?.num ?? now)) / 1000
        out.append("gateway \(g["id"]?.text ?? "?")  brume \(g["version"]?.text ?? "?")  pid \(g["pid"]?.text ?? "?")  up \(duration(uptime))")
        let c = g["config"] ?? .null
        var cfgLine = "config  \(c["path"]?.text ?? "-")  loaded \(age(c["loaded_ms"]?.num, now: now))  reloads \(c["reloads"]?.text ?? "0") applied, \(c["reloads_rejected"]?.text ?? "0") rejected"
        if let last = c["last_reload"], case .object = last {
            cfgLine += "\n        last reload \(age(last["at_ms"]?.num, now: now)): \(last["message"]?.text ?? "")"
            for e in last["errors"]?.arr ?? [] { cfgLine += "\n          \(e.text)" }
        }
        out.append(cfgLine)
        out.append("")
        var up: [[String]] = [["UPLINK", "STATE", "ACKED", "SENT", "LAST ACK", "URL"]]
        for u in s["uplinks"]?.arr ?? [] {
            up.append([u["name"]?.text ?? "?", u["state"]?.text ?? "?", "\(u["readings_acked"]?.text ?? "0") readings / \(u["batches_acked"]?.text ?? "0") batches",
                       bytesText(u["bytes_sent"]?.num), age(u["last_ack_ms"]?.num, now: now), u["url"]?.text ?? ""])
        }
        out.append(table(up))
        let b = s["buffer"] ?? .null
        let used = b["bytes"]?.num ?? 0, maxB = b["max_bytes"]?.num ?? 0
        var bl = "buffer  \(b["readings"]?.text ?? "0") readings, \(bytesText(used)) of \(bytesText(maxB))"
        if maxB > 0 { bl += " (\(format1(used / maxB * 100)) %)" }
        if let o = b["oldest_ms"]?.num { bl += ", oldest \(age(o, now: now).replacingOccurrences(" ago", ""))" }
        let ev = (b["evicted"]?.members ?? []).filter { ($0.value.num ?? 0) > 0 }
        bl += ev.isEmpty ? ", nothing evicted" : ", evicted " + ev.map { "\($0.key) \($0.value.text)" }.joined(separator: ", ")
        out.append(bl)
        let clk = s["clock"] ?? .null
        if case .object = clk {
            var cl = "clock   "
            if clk["trusted"]?.text == "false" {
                cl += clk["unsynced_readings"]?.text == "flagged" ? "not synchronised: readings it stamps go flagged \"clock\":\"unsynced\"" : "not synchronised: readings it stamps wait for NTP"
            } else {
                cl += clk["synchronised"]?.text == "true" ? "synchronised" : "not synchronised, trusted"
            }
            if let m = clk["marked"]?.num, m > 0 { cl += " (\(Int(m)) stamped unsynchronised, \(clk["unsynced_readings"]?.text ?? "?"))" }
            out.append(cl)
        }
        out.append("")
        var rows: [[String]] = [["SOURCE/DEVICE", "KIND/STATE", "READINGS", "ERRORS", "LAST", "VALUES"]]
        for src in s["sources"]?.arr ?? [] {
            let errs = (src["errors"]?.members ?? []).map { "\($0.key):\($0.value.text)" }.joined(separator: " ")
            rows.append([src["name"]?.text ?? "?", "\(src["kind"]?.text ?? "?") \(src["state"]?.text ?? "?")", src["readings"]?.text ?? "0",
                         errs.isEmpty ? "-" : errs, age(src["last_reading_ms"]?.num, now: now), ""])
            for d in src["devices"]?.arr ?? [] {
                let values = (d["metrics"]?.arr ?? []).prefix(4).map { "\($0["metric"]?.text ?? "?")=\($0["value"]?.text ?? "-")" }.joined(separator: " ")
                var extra = ""
                if let m = d["modbus"], case .object = m {
                    extra = "unit \(m["unit"]?.text ?? "?"), \(m["timeouts"]?.text ?? "0") timeouts"
                    let ex = (m["exceptions"]?.members ?? []).map { "exc\($0.key):\($0.value.text)" }
                    if !ex.isEmpty { extra += ", " + ex.joined(separator: " ") }
                }
                rows.append(["  " + (d["name"]?.text ?? "?"), d["state"]?.text ?? "?", "", extra.isEmpty ? "" : extra, age(d["last_reading_ms"]?.num, now: now), values])
            }
        }
        out.append(table(rows))
        if let rules = s["rules"]?.arr, !rules.isEmpty {
            out.append("")
            out.append(table([["RULE", "IN", "OUT", "DROPPED", "ERRORS"]] + rules.map { r in
                [r["name"]?.text ?? "?", r["in"]?.text ?? "0", r["out"]?.text ?? "0", r["dropped"]?.text ?? "0", r["errors"]?.text ?? "0"]
            }))
        }
        if let cmds = s["commands"], case .object = cmds {
            out.append("")
            out.append("commands  " + (cmds["counts"]?.members ?? []).map { "\($0.key) \($0.value.text)" }.joined(separator: ", "))
            let recent = (cmds["recent"]?.arr ?? []).prefix(5)
            if !recent.isEmpty {
                out.append(table(recent.map { r in
                    [r["id"]?.text ?? "?", r["actuator"]?.text ?? "?", r["value"]?.text ?? "?", r["state"]?.text ?? "?", age(r["updated_ms"]?.num, now: now), r["detail"]?.text ?? ""]
                }, indent: "  "))
            }
        }
        let errors = (s["recent_errors"]?.arr ?? []).prefix(5)
        if !errors.isEmpty {
            out.append("")
            out.append("recent errors")
            out.append(table(errors.map { e in [age(e["at_ms"]?.num, now: now), e["source"]?.text ?? "-", e["reason"]?.text ?? "-", e["message"]?.text ?? ""] }, indent: "  "))
        }
        let p = s["process"] ?? .null
        out.append("")
        out.append("process  RSS \(bytesText(p["rss_bytes"]?.num)), CPU \(p["cpu_seconds"]?.text ?? "?") s")
        return out.joined(separator: "\n")
    }

    func duration(_ s: Double) -> String {
        let t = Int(max(0, s))
        if t < 120 { return "\(t)s" }
        if t < 7200 { return "\(t / 60)m\(t % 60)s" }
        if t < 172_800 { return "\(t / 3600)h\((t % 3600) / 60)m" }
        return "\(t / 86400)d\((t % 86400) / 3600)h"
    }
}

extension String {
    func replacingOccurrences(_ a: String, _ b: String) -> String {
        var out = ""
        var rest = Substring(self)
        while let r = rest.firstRange(of: a) {
            out += rest[..<r.lowerBound] + b
            rest = rest[r.upperBound...]
        }
        return out + rest
    }
}

func percentEncode(_ s: String) -> String {
    var out = ""
    for b in s.utf8 {
        if (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2D || b == 0x2E || b == 0x5F || b == 0x7E || b == 0x2F || b == 0x2A {
            out.unicodeScalars.append(Unicode.Scalar(b))
        } else {
            out += "%" + String(b, radix: 16, uppercase: true).leftPad(2)
        }
    }
    return out
}

extension String {
    func leftPad(_ n: Int) -> String { String(repeating: "0", count: max(0, n - count)) + self }
}

struct Tail: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print live readings as the running gateway stores them (after the rules), until interrupted.",
        discussion: "Example: brume tail --match 'boiler/*' --match '*/temperature'")

    @Option(name: .shortAndLong, help: "The configuration file (for the API address and token).")
    var config: String = defaultConfigPath

    @Option(help: "Only readings whose device/metric matches this glob (*, ?, **); repeatable.")
    var match: [String] = []

    @Flag(help: "Print each reading as JSON ({\"d\":...,\"m\":...,\"t\":...,\"v\":...}).")
    var json = false

    @Option(help: "Stop after this many readings (0: never).")
    var count = 0

    func run() throws {
        let cfg = try loadForTool(config)
        let client = LocalAPIClient(api: cfg.api)
        let query = match.isEmpty ? "" : "?" + match.map { "match=" + percentEncode($0) }.joined(separator: "&")
        var pending: [UInt8] = []
        var seen = 0
        let status: Int
        do {
            status = try client.stream("GET", "/api/v1/stream" + query) { chunk in
                pending.append(contentsOf: chunk)
                while let nl = pending.firstIndex(of: 10) {
                    let line = String(decoding: pending[..<nl], as: UTF8.self)
                    pending.removeSubrange(...nl)
                    guard line.hasPrefix("data: ") else { continue }
                    let body = line.dropFirst(6)
                    if json { printLine(String(body)) } else if let r = try? JSONParser.parse(Array(body.utf8)) {
                        printLine("\(clock(r["t"]?.num))  \(r["d"]?.text ?? "?")/\(r["m"]?.text ?? "?") = \(r["v"]?.text ?? "?")")
                    }
                    seen += 1
                    if count > 0 && seen >= count { return false }
                }
                return true
            }
        } catch {
            printErr("brume tail: \(error)")
            throw ExitCode(1)
        }
        if status != 200 {
            printErr("brume tail: HTTP \(status): \(String(decoding: pending.prefix(300), as: UTF8.self))")
            throw ExitCode(1)
        }
    }

    func clock(_ ms: Double?) -> String {
        guard let ms else { return "-" }
        var t = time_t(Int(ms / 1000))
        var tmv = tm()
        localtime_r(&t, &tmv)
        func p(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let milli = Int(ms.truncatingRemainder(dividingBy: 1000))
        return "\(p(tmv.tm_hour)):\(p(tmv.tm_min)):\(p(tmv.tm_sec)).\(String(milli).leftPad(3))"
    }
}

struct Reload: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check the configuration, then ask the running gateway to apply it (like SIGHUP) and print the outcome.",
        discussion: "Exit status: 0 applied, 1 invalid or rejected, 2 unreadable, 3 the gateway cannot be reached.")

    @Option(name: .shortAndLong, help: "The configuration file.")
    var config: String = defaultConfigPath

    @Option(help: ArgumentHelp("When the local API cannot be reached ([api] enabled = false), send SIGHUP to this process instead (the unit's ExecReload passes $MAINPID); the outcome is then only in the log.", valueName: "pid"))
    var fallbackPid: Int32?

    func run() throws {
        // The same diagnostics as `brume check`, before anything is sent.
        let cfg = try loadForTool(config)
        let client = LocalAPIClient(api: cfg.api)
        let (status, r): (Int, JSONValue)
        do { (status, r) = try client.json("POST", "/api/v1/reload") } catch {
            if let pid = fallbackPid, pid > 1 {
                guard kill(pid, SIGHUP) == 0 else {
                    printErr("brume reload: the local API cannot be reached (\(error)) and SIGHUP to \(pid) failed: \(String(cString: strerror(errno)))")
                    throw ExitCode(3)
                }
                print("the local API cannot be reached (\(error)): SIGHUP sent to \(pid); the file passed brume check, the outcome is in the log")
                return
            }
            printErr("brume reload: \(error)\n(or: systemctl reload brume, which sends SIGHUP)")
            throw ExitCode(3)
        }
        let ok = r["ok"].map { if case .bool(let b) = $0 { b } else { false } } ?? false
        print(r["message"]?.text ?? "HTTP \(status)")
        for e in r["errors"]?.arr ?? [] { print(e.text) }
        if !ok { throw ExitCode(1) }
    }
}

struct Buffer: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Inspect, export or purge the outbox (the readings buffered for the cloud).",
        subcommands: [BufferStats.self, BufferExport.self, BufferPurge.self, BufferDeadLetters.self])
}

struct BufferStats: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stats", abstract: "Readings, bytes, age and evictions of the outbox (read-only; works while brume runs).")
    @Option(name: .shortAndLong, help: "The configuration file (for data_dir).") var config: String = defaultConfigPath
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let cfg = try loadForTool(config)
        let path = cfg.gateway.dataDir + "/outbox.db"
        let s: OutboxInspector.Summary
        do { s = try OutboxInspector(path: path).summary() } catch {
            printErr("brume buffer stats: cannot read \(path): \(error)")
            throw ExitCode(1)
        }
        let now = Double(wallClockMillis())
        if json {
            var m: [JSONMember] = [
                JSONMember(key: "path", value: .string(path)), JSONMember(key: "readings", value: .number(Double(s.buffered))),
                JSONMember(key: "bytes", value: .number(Double(s.bytes))), JSONMember(key: "file_bytes", value: .number(Double(s.fileBytes))),
                JSONMember(key: "max_bytes", value: .number(Double(cfg.buffer.maxBytes))), JSONMember(key: "segments", value: .number(Double(s.segments))),
                JSONMember(key: "unacked_batches", value: .number(Double(s.unackedBatches))), JSONMember(key: "committed", value: .number(Double(s.committed))),
                JSONMember(key: "delivered", value: .number(Double(s.delivered))),
                JSONMember(key: "evicted", value: .object(s.evicted.sorted { $0.key < $1.key }.map { JSONMember(key: $0.key, value: .number(Double($0.value))) })),
            ]
            m.append(JSONMember(key: "oldest_ms", value: s.oldestMillis.map { .number(Double($0)) } ?? .null))
            print(JSONValue.object(m).description)
            return
        }
        print("outbox    \(path) (\(bytesText(Double(s.fileBytes))) on disk)")
        print("buffered  \(s.buffered) readings, \(bytesText(Double(s.bytes))) of \(bytesText(Double(cfg.buffer.maxBytes))) in \(s.segments) segments")
        print("oldest    \(s.oldestMillis.map { age(Double($0), now: now) } ?? "-")   newest \(s.newestMillis.map { age(Double($0), now: now) } ?? "-")")
        print("batches   \(s.unackedBatches) sent and not yet acknowledged")
        print("totals    \(s.committed) committed, \(s.delivered) delivered")
        print("evicted   " + (s.evicted.isEmpty ? "nothing" : s.evicted.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")))
    }
}

struct BufferExport: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "export",
        abstract: "Print the buffered readings as JSON lines {\"seq\":...,\"d\":...,\"m\":...,\"t\":...,\"v\":...} (read-only; works while brume runs).",
        discussion: "Example: brume buffer export --since 2h > backlog.jsonl")
    @Option(name: .shortAndLong, help: "The configuration file (for data_dir).") var config: String = defaultConfigPath
    @Option(help: "Only readings newer than this: a duration (\"2h\", \"30m\") or ms since the epoch.") var since: String?

    func run() throws {
        let cfg = try loadForTool(config)
        var sinceMillis: Int64?
        if let since {
            if let d = Units.parseDuration(since) { sinceMillis = wallClockMillis() - d } else if let ms = Int64(since) { sinceMillis = ms } else {
                printErr("brume buffer export: --since must be a duration like \"2h\" or milliseconds since the epoch, got \"\(since)\"")
                throw ExitCode(64)
            }
        }
        let path = cfg.gateway.dataDir + "/outbox.db"
        var out: [UInt8] = []
        out.reserveCapacity(1 << 16)
        var n = 0
        do {
            try OutboxInspector(path: path).forEachBuffered(sinceMillis: sinceMillis) { sr in
                out.append(contentsOf: #"{"seq":"#.utf8)
                WireFormat.appendInteger(sr.seq, to: &out)
                out.append(contentsOf: #","d":"#.utf8)
                WireFormat.appendString(sr.reading.device, to: &out)
                out.append(contentsOf: #","m":"#.utf8)
                WireFormat.appendString(sr.reading.metric, to: &out)
                out.append(contentsOf: #","t":"#.utf8)
                WireFormat.appendInteger(sr.reading.time, to: &out)
                out.append(contentsOf: #","v":"#.utf8)
                WireFormat.appendValue(sr.reading.value, to: &out)
                out.append(contentsOf: "}\n".utf8)
                n += 1
                if out.count > 60_000 { flushOut(&out) }
            }
        } catch {
            printErr("brume buffer export: cannot read \(path): \(error)")
            throw ExitCode(1)
        }
        flushOut(&out)
        printErr("exported \(n) readings")
    }

    func flushOut(_ out: inout [UInt8]) {
        out.withUnsafeBytes { b in
            var off = 0
            while off < b.count {
                let w = write(1, b.baseAddress! + off, b.count - off)
                if w <= 0 { return }
                off += w
            }
        }
        out.removeAll(keepingCapacity: true)
    }
}

struct BufferPurge: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "purge",
        abstract: "Drop every buffered reading (counted as evicted, reason \"purged\"). Asks for confirmation.",
        discussion: "While brume runs, the running gateway purges (through its local API); otherwise the outbox file is purged directly.")
    @Option(name: .shortAndLong, help: "The configuration file.") var config: String = defaultConfigPath
    @Flag(name: .long, help: "Do not ask (scripts).") var yes = false

    func run() throws {
        let cfg = try loadForTool(config)
        let path = cfg.gateway.dataDir + "/outbox.db"
        let buffered = (try? OutboxInspector(path: path).summary().buffered) ?? 0
        if !yes {
            print("This drops \(buffered) buffered readings from \(path); they will never reach the cloud.")
            printLine("Type \"purge\" to go on: ", newline: false)
            guard let answer = readLine(), answer.trimmingSpaces == "purge" else {
                print("nothing purged")
                throw ExitCode(1)
            }
        }
        let client = LocalAPIClient(api: cfg.api)
        if cfg.api.enabled, let (status, r) = try? client.json("POST", "/api/v1/buffer/purge?confirm=yes") {
            guard status == 200 else { printErr("brume buffer purge: HTTP \(status): \(r)"); throw ExitCode(1) }
            print("purged \(r["purged"]?.text ?? "?") readings (by the running gateway)")
            return
        }
        do {
            let n = try OfflineMaintenance.purge(config: cfg)
            print("purged \(n) readings")
        } catch {
            printErr("brume buffer purge: \(error)")
            throw ExitCode(1)
        }
    }
}

/// Writes straight to standard output (unbuffered: `brume tail` lines appear at once, even in a pipe).
func printLine(_ s: String, newline: Bool = true) {
    var s = newline ? s + "\n" : s
    s.withUTF8 { b in
        var off = 0
        while off < b.count {
            let w = write(1, b.baseAddress! + off, b.count - off)
            if w <= 0 { return }
            off += w
        }
    }
}

struct BufferDeadLetters: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dead-letters",
        abstract: "List the batches an HTTP endpoint refused for good (4xx), or export their bodies (read-only).",
        discussion: "Each dead letter keeps the HTTP status, the endpoint's answer and the exact body that was sent (gzip if the uplink compresses).")
    @Option(name: .shortAndLong, help: "The configuration file (for data_dir).") var config: String = defaultConfigPath
    @Option(help: "Write each body to DIR/<id>-<first>-<last>.body") var export: String?

    func run() throws {
        let cfg = try loadForTool(config)
        let path = cfg.gateway.dataDir + "/outbox.db"
        let letters: [Outbox.DeadLetter]
        do { letters = try OutboxInspector(path: path).deadLetters() } catch {
            printErr("brume buffer dead-letters: cannot read \(path): \(error)")
            throw ExitCode(1)
        }
        if letters.isEmpty { printLine("no dead letters"); return }
        let now = Double(wallClockMillis())
        printLine(table([["ID", "UPLINK", "SEQ", "HTTP", "WHEN", "BYTES", "ANSWER"]] + letters.map {
            ["\($0.id)", $0.uplink, "\($0.first)-\($0.last)", "\($0.status)", age(Double($0.atMillis), now: now), "\($0.body.count)",
             String($0.response.prefix(60)).replacingOccurrences("\n", " ")]
        }))
        if let dir = export {
            for l in letters {
                let file = "\(dir)/\(l.id)-\(l.first)-\(l.last).body"
                guard let f = fopen(file, "w") else { printErr("cannot write \(file)"); throw ExitCode(1) }
                _ = l.body.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, f) }
                fclose(f)
            }
            printLine("wrote \(letters.count) bodies to \(dir)")
        }
    }
}
