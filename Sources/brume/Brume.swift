import ArgumentParser
import BrumeConfig
import BrumeRuntime
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Exit codes of `brume` (documented in README and docs/configuration.md):
/// 0 ok / clean shutdown, 1 configuration invalid, 2 configuration unreadable,
/// 3 could not start (data_dir, outbox), 4 failed while running.
enum ExitStatus {
    static let invalidConfig: Int32 = 1
    static let unreadableConfig: Int32 = 2
    static let startupFailed: Int32 = 3
    static let runtimeFailed: Int32 = 4
}

@main
struct Brume: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "brume",
        abstract: "Brume: IoT edge gateway. Reads sensors, buffers in SQLite, syncs batches to the cloud.",
        subcommands: [Run.self, Check.self],
        defaultSubcommand: nil)
}

let defaultConfigPath = "/etc/brume/gateway.toml"

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a configuration file and print every problem as FILE:LINE:COL: message.",
        discussion: "Exit status: 0 valid, 1 invalid, 2 the file cannot be read.")

    @Argument(help: "The configuration file.")
    var file: String = defaultConfigPath

    func run() throws {
        switch ConfigLoader.load(path: file) {
        case .success(let (config, warnings)):
            for w in warnings { print(w) }
            print("\(file): ok (gateway \"\(config.gateway.id)\", \(config.sources.count) source\(config.sources.count == 1 ? "" : "s"), \(config.uplinks.count) uplink\(config.uplinks.count == 1 ? "" : "s"))")
        case .failure(.unreadable(let path, let reason)):
            printErr("\(path): cannot read: \(reason)")
            throw ExitCode(ExitStatus.unreadableConfig)
        case .failure(.invalid(let diags)):
            for d in diags { print(d) }
            let n = diags.filter { $0.severity == .error }.count
            printErr("\(file): \(n) error\(n == 1 ? "" : "s")")
            throw ExitCode(ExitStatus.invalidConfig)
        }
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the gateway until SIGTERM or SIGINT (which drain the sources into the outbox and exit 0).",
        discussion: "Exit status: 0 clean shutdown, 1 invalid config, 2 unreadable config, 3 cannot start, 4 failed while running.")

    @Option(name: .shortAndLong, help: "The configuration file.")
    var config: String = defaultConfigPath

    @Option(help: "Log level (overrides [log] level): trace, debug, info, notice, warning, error, critical.")
    var logLevel: String?

    func run() async throws {
        let cfg: GatewayConfig
        switch ConfigLoader.load(path: config) {
        case .success(let (c, warnings)):
            cfg = c
            for w in warnings { printErr("\(w)") }
        case .failure(.unreadable(let path, let reason)):
            printErr("\(path): cannot read: \(reason)")
            throw ExitCode(ExitStatus.unreadableConfig)
        case .failure(.invalid(let diags)):
            for d in diags { printErr("\(d)") }
            throw ExitCode(ExitStatus.invalidConfig)
        }
        let level = Logger.Level(rawValue: logLevel ?? cfg.log.level) ?? .info
        LoggingSystem.bootstrap { label in LogfmtHandler(label: label, level: level) }
        let logger = Logger(label: "brume")
        do {
            try await runGateway(config: cfg, logger: logger)
        } catch let e as StartupError {
            logger.critical("cannot start", metadata: ["error": "\(e)"])
            throw ExitCode(ExitStatus.startupFailed)
        } catch {
            logger.critical("gateway failed", metadata: ["error": "\(error)"])
            throw ExitCode(ExitStatus.runtimeFailed)
        }
    }
}

func printErr(_ s: String) {
    writeStderr(s + "\n")
}
