import ArgumentParser
import BrumeConfig
import BrumeCore
import BrumeRuntime
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Exit status of `brume test` when a source tested delivered no reading (documented in
/// docs/field-guide.md); `brume check --connect` uses `ExitStatus.startupFailed` for "would fail".
let noReadingsExit: Int32 = 5

/// Is the gateway of this configuration running (its local API answers)?
func runningGateway(_ cfg: GatewayConfig) -> Bool {
    guard cfg.api.enabled else { return false }
    return (try? LocalAPIClient(api: cfg.api).request("GET", "/healthz")) != nil
}

/// A serial line or a Modbus RTU bus: a second opener would take bytes from the running gateway.
func holdsSerialPort(_ s: SourceConfig) -> Bool {
    switch s.kind {
    case .serial: return true
    case .lorawan: return true // its UDP port
    case .gpio: return true // its lines
    case .modbus(let m): if case .rtu = m.transport { return true } else { return false }
    case .mqtt, .board, .onewire: return false
    }
}

struct Test: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Dry run: read the configured sources for a few seconds, print every reading and what the rules decide, then exit.",
        discussion: """
            Nothing is stored or sent and no actuator is driven; a trigger's command is printed instead. MQTT sources connect \
            with their own client id (ID-test-PID) and a clean session, beside a running gateway. Serial and Modbus RTU \
            sources are skipped while the gateway runs (it holds the port), unless --force.
            Exit status: 0 every source tested delivered a reading, 1 invalid config, 2 unreadable config, 3 a source cannot \
            start, 5 a source delivered no reading.
            """)

    @Option(name: .shortAndLong, help: "The configuration file.")
    var config: String = defaultConfigPath

    @Option(help: "How long to read, in seconds (1 to 3600).")
    var seconds: Double = 10

    @Option(name: .customLong("source"), help: "Only this source (repeat for several).")
    var sources: [String] = []

    @Flag(help: "Open serial ports and Modbus RTU buses even while the gateway runs (it would lose the bytes read here).")
    var force = false

    @Option(help: "Log level of the sources' own messages: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "warning"

    func validate() throws {
        guard seconds >= 1 && seconds <= 3600 else { throw ValidationError("--seconds must be between 1 and 3600") }
    }

    func run() async throws {
        let cfg: GatewayConfig
        switch ConfigLoader.load(path: config) {
        case .success(let (c, warnings)):
            cfg = c
            for w in warnings { printErr("\(w)") }
        case .failure(.unreadable(let p, let reason)):
            printErr("\(p): cannot read: \(reason)")
            throw ExitCode(ExitStatus.unreadableConfig)
        case .failure(.invalid(let diags)):
            for d in diags { printErr("\(d)") }
            throw ExitCode(ExitStatus.invalidConfig)
        }
        let names = cfg.sources.map(\.name)
        for s in sources where !names.contains(s) {
            var msg = "brume test: no source \"\(s)\" in \(config) (sources: \(names.joined(separator: ", ")))"
            if names.isEmpty { msg = "brume test: \(config) declares no source" }
            printErr(msg)
            throw ExitCode(ExitStatus.invalidConfig)
        }
        var only = sources.isEmpty ? names : sources
        if !force && runningGateway(cfg) {
            let held = cfg.sources.filter { only.contains($0.name) && holdsSerialPort($0) }.map(\.name)
            if !held.isEmpty {
                printLine("the gateway is running and holds the port of \(held.map { "\"\($0)\"" }.joined(separator: ", ")): skipped (see its readings with `brume tail`, or stop it, or use --force)")
                only.removeAll { held.contains($0) }
            }
        }
        if only.isEmpty {
            printErr("brume test: no source left to test")
            throw ExitCode(noReadingsExit)
        }
        let level = Logger.Level(rawValue: logLevel) ?? .warning
        LoggingSystem.bootstrap { label in LogfmtHandler(label: label, level: level) }
        let dry = DryRun(config: cfg, only: only)
        let summary: DryRun.Summary
        do {
            summary = try await dry.run(seconds: seconds, logger: Logger(label: "brume.test")) { line in printLine(line) }
        } catch {
            printErr("brume test: cannot start: \(error)")
            throw ExitCode(ExitStatus.startupFailed)
        }
        printLine("")
        for s in summary.readings {
            let errs = s.errors.filter { $0.value > 0 }.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
            printLine("source \(s.source): \(s.count) reading\(s.count == 1 ? "" : "s"), \(s.state)\(errs.isEmpty ? "" : "; rejected input: " + errs.joined(separator: ", "))")
        }
        if cfg.rules.compiled != nil {
            printLine("rules: \(summary.kept) reading\(summary.kept == 1 ? "" : "s") out, \(summary.dropped) dropped, \(summary.commands) command\(summary.commands == 1 ? "" : "s") not sent")
        }
        if !summary.everySourceDelivered { throw ExitCode(noReadingsExit) }
    }
}
