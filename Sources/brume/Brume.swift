import ArgumentParser
import CPowerCut
import BrumeConfig
import BrumeCore
import BrumeSerial
import BrumeOneWire
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
        version: brumeVersion,
        subcommands: [Run.self, Check.self, Test.self, Fn.self, Status.self, Tail.self, Reload.self, Buffer.self, Ports.self, Keygen.self, Sign.self, SignConfig.self, SignUpdate.self, UpdateInstall.self],
        defaultSubcommand: nil)
}

let defaultConfigPath = "/etc/brume/gateway.toml"

struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a configuration file and print every problem as FILE:LINE:COL: message.",
        discussion: "Exit status: 0 valid, 1 invalid, 2 the file cannot be read, 3 (--connect) something would fail at start.")

    @Argument(help: "The configuration file.")
    var file: String = defaultConfigPath

    @Flag(help: "Also try every broker, HTTP endpoint, secret and TLS file, serial port and Modbus device (exit 3 when one would fail at start).")
    var connect = false

    @Option(help: "With --connect: seconds to wait for each broker.")
    var timeout: Double = 10

    func run() async throws {
        switch ConfigLoader.load(path: file) {
        case .success(let (config, warnings)):
            for w in warnings { print(w) }
            if connect {
                LoggingSystem.bootstrap { label in LogfmtHandler(label: label, level: .warning) }
                let held = runningGateway(config)
                if held { printLine("the gateway is running: its serial ports are not opened, brokers are tried under their own client ids") }
                let outcomes = await ConnectCheck.run(config, timeout: .milliseconds(Int64(max(0.5, min(timeout, 120)) * 1000)), portsHeld: held,
                                                      logger: Logger(label: "brume.check")) { o in
                    printLine("\(o.ok ? "ok  " : "FAIL") \(o.subject): \(o.detail)")
                }
                let failed = outcomes.filter { !$0.ok }.count
                if failed > 0 {
                    printErr("\(file): \(failed) of \(outcomes.count) would fail at start")
                    throw ExitCode(ExitStatus.startupFailed)
                }
            }
            let merged = config.files.dropFirst()
            print("\(file): ok (gateway \"\(config.gateway.id)\", \(config.sources.count) source\(config.sources.count == 1 ? "" : "s"), \(config.uplinks.count) uplink\(config.uplinks.count == 1 ? "" : "s")\(merged.isEmpty ? "" : "; merged: " + merged.joined(separator: ", ")))")
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
        let origin: String
        // [fleet] remote_config: the pushed configuration when one is in use (docs/fleet.md).
        EffectiveConfig.countStart(path: config)
        switch EffectiveConfig.load(path: config) {
        case .success(let loaded):
            cfg = loaded.config
            origin = loaded.origin
            for w in loaded.warnings { printErr("\(w)") }
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
        if let file = getenv("BRUME_FAULT_CLOCK_OFFSET_FILE").map({ String(cString: $0) }) {
            ClockFault.follow(file, logger: logger)
        }
        if getenv("BRUME_FAULT_POWERCUT").map({ String(cString: $0) }) == "1" {
            // Fault injection (the chaos suite's power-cut scenario): SQLite writes stay in this
            // process's memory until fsynced, so a kill -9 loses them as a power cut would.
            let rc = brume_powercut_register(1)
            logger.warning("fault injection: unsynced SQLite writes are held in memory and lost on kill -9 (BRUME_FAULT_POWERCUT)",
                           metadata: ["rc": "\(rc)"])
        }
        do {
            if try await runGateway(config: cfg, configPath: config, origin: origin, logger: logger) == .restartInPlace {
                // Same PID (systemd, supervisors and tests keep watching it), a fresh process on
                // the configuration now in place; the outbox was drained and closed.
                logger.notice("restarting in place for the new configuration")
                let argv: [UnsafeMutablePointer<CChar>?] = CommandLine.arguments.map { strdup($0) } + [nil]
                // Whatever a library left open without close-on-exec does not outlive this process.
                markAllCloseOnExec()
                execv("/proc/self/exe", argv)
                logger.critical("cannot restart in place", metadata: ["error": "\(String(cString: strerror(errno)))"])
                throw ExitCode(ExitStatus.runtimeFailed)
            }
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

struct Ports: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List serial ports: path, description, USB VID:PID, serial number, and which configured source claims each.",
        discussion: "Pseudo-terminals and udev symlinks are not listed (no sysfs entry); sources may still name them by path.")

    @Option(name: .shortAndLong, help: "A configuration whose serial sources are matched against the ports.")
    var config: String?

    @Flag(help: "Print JSON.")
    var json = false

    @Flag(help: "Print a [[source]] stanza for each port, naming USB adapters by their identity (survives replugs and renumbering), to paste into gateway.toml.")
    var toml = false

    @Option(help: "Where 1-Wire probes are looked for.")
    var w1Devices = "/sys/bus/w1/devices"

    func run() throws {
        let ports = PortDiscovery.list()
        let probes = OneWire.list(root: w1Devices)
        if toml {
            print(PortStanzas.toml(ports))
            if let o = PortStanzas.oneWireToml(probes) { print(o) }
            return
        }
        var claims: [(name: String, spec: PortSpec)] = []
        var probeClaims: [String: String] = [:]
        var lora: [(name: String, config: LoRaWANSourceConfig)] = []
        var gpio: [(name: String, config: GPIOSourceConfig)] = []
        if let config {
            for s in try loadForTool(config).sources {
                if case .lorawan(let l) = s.kind { lora.append((s.name, l)) }
                if case .gpio(let g) = s.kind { gpio.append((s.name, g)) }
                if case .onewire(let o) = s.kind { for p in o.probes { probeClaims[p.id] = s.name } }
                if case .serial(let c) = s.kind { claims.append((s.name, c.port)) }
                if case .modbus(let m) = s.kind, case .rtu(let port, _, _, _, _, _) = m.transport { claims.append((s.name, port)) }
            }
        }
        func claimedBy(_ p: PortInfo) -> [String] { claims.filter { p.matches($0.spec) }.map(\.name) }
        let unmatched = claims.filter { c in !ports.contains { $0.matches(c.spec) } }
        if json {
            var out = "["
            for (i, p) in ports.enumerated() {
                if i > 0 { out += "," }
                var f: [String] = ["\"path\":\(jsonString(p.path))", "\"description\":\(jsonString(p.description))", "\"transport\":\(jsonString(p.transport))"]
                f.append("\"usb_vid_pid\":" + (p.vidPid.map(jsonString) ?? "null"))
                f.append("\"usb_serial\":" + (p.serialNumber.map(jsonString) ?? "null"))
                f.append("\"manufacturer\":" + (p.manufacturer.map(jsonString) ?? "null"))
                f.append("\"product\":" + (p.product.map(jsonString) ?? "null"))
                f.append("\"claimed_by\":[" + claimedBy(p).map(jsonString).joined(separator: ",") + "]")
                out += "{" + f.joined(separator: ",") + "}"
            }
            out += "]"
            if !probes.isEmpty || w1Devices != "/sys/bus/w1/devices" {
                out = "{\"serial\":" + out + ",\"onewire\":[" + probes.map { id in
                    "{\"id\":\(jsonString(id)),\"claimed_by\":[" + (probeClaims[id].map(jsonString) ?? "") + "]}"
                }.joined(separator: ",") + "]}"
            }
            print(out)
            return
        }
        let rows = [["PATH", "DESCRIPTION", "USB VID:PID", "SERIAL", "SOURCE"]] + ports.map {
            [$0.path, $0.description, $0.vidPid ?? "-", $0.serialNumber ?? "-", claimedBy($0).joined(separator: ",").isEmpty ? "-" : claimedBy($0).joined(separator: ",")]
        }
        let widths = (0..<5).map { c in rows.map { $0[c].count }.max() ?? 0 }
        for r in rows {
            print(r.enumerated().map { $0.element + String(repeating: " ", count: widths[$0.offset] - $0.element.count) }.joined(separator: "  "))
        }
        if ports.isEmpty { print("(no serial ports found)") }
        if !probes.isEmpty {
            print("")
            print("1-Wire probes (\(w1Devices)):")
            for id in probes { print("  \(id)  \(probeClaims[id].map { "source \($0)" } ?? "-")") }
        }
        for (id, src) in probeClaims.sorted(by: { $0.key < $1.key }) where !probes.contains(id) {
            print("source \"\(src)\": 1-Wire probe \(id) is not on the bus (unplugged? dtoverlay=w1-gpio?)")
        }
        for c in unmatched {
            if case .path = c.spec { continue }
            print("source \"\(c.name)\": no port matches \(c.spec) (is the device plugged in?)")
        }
        // LoRa concentrator HATs sit on SPI; their packet forwarder (not Brume) opens it.
        let spi: [String] = ["/dev/spidev0.0", "/dev/spidev0.1", "/dev/spidev1.0"].filter { (p: String) in access(p, F_OK) == 0 }
        // GPIO chips (the character devices libgpiod opens; `gpioinfo` lists their lines).
        let chips: [String] = (0..<8).map { "/dev/gpiochip\($0)" }.filter { (p: String) in access(p, F_OK) == 0 }
        if !chips.isEmpty || !gpio.isEmpty { print("") }
        if !chips.isEmpty { print("GPIO chips: \(chips.joined(separator: ", ")) (gpioinfo lists their lines and who holds them)") }
        for (name, g) in gpio {
            let lines = (g.inputs.map { "\($0.line) (\($0.counter == nil ? "contact" : "counter") \($0.device)/\($0.metric))" } + g.outputs.map { "\($0.line) (output)" })
            let present = g.chip.hasPrefix("simulated:") || chips.contains { $0.hasSuffix("/" + g.chip) || $0 == g.chip } || !g.chip.hasPrefix("gpiochip")
            print("source \"\(name)\": GPIO \(g.chip)\(present ? "" : " (not found here)"): lines \(lines.joined(separator: ", "))")
        }
        if !spi.isEmpty || !lora.isEmpty { print("") }
        if !spi.isEmpty { print("SPI: \(spi.joined(separator: ", ")) (a LoRa concentrator HAT's packet forwarder uses it; its server_address goes to a lorawan source)") }
        for (name, l) in lora {
            let free = udpPortFree(host: l.host, port: l.port)
            print("source \"\(name)\": LoRaWAN, the packet forwarder sends to UDP \(l.host):\(l.port) (\(free == nil ? "free now: the gateway is not running" : "in use: the gateway, or another program"); \(l.devices.count) device\(l.devices.count == 1 ? "" : "s"))")
        }
    }
}

func jsonString(_ s: String) -> String {
    var out: [UInt8] = []
    WireFormat.appendString(s, to: &out)
    return String(decoding: out, as: UTF8.self)
}

/// Fault injection for the chaos suite: the wall clock of this process follows the offset
/// written in a file ("+8d", "-1h", "0"), re-read every 100 ms, as if the system clock jumped
/// while the gateway runs; a second word, "unsynced" or "synced", overrides the kernel's clock
/// synchronisation status as the clock monitor sees it (a board without a real-time clock). Never set in production; logged loudly when it is.
enum ClockFault {
    static func follow(_ path: String, logger: Logger) {
        logger.warning("fault injection: the wall clock follows an offset file (BRUME_FAULT_CLOCK_OFFSET_FILE)", metadata: ["file": "\(path)"])
        let t = Thread_start {
            var last: Int64 = 0
            while true {
                if case .success(let text) = ConfigLoader.readFile(path) {
                    let words = text.split(whereSeparator: \.isWhitespace)
                    let s = words.first.map(String.init) ?? ""
                    let status: Int8 = words.count > 1 ? (words[1] == "unsynced" ? 0 : words[1] == "synced" ? 1 : -1) : -1
                    if clockFaultSynchronised.exchange(status, ordering: .relaxed) != status {
                        logger.warning("fault injection: clock synchronisation status", metadata: ["status": "\(status == 0 ? "unsynced" : status == 1 ? "synced" : "real")"])
                    }
                    let neg = s.hasPrefix("-")
                    let body = (s.hasPrefix("-") || s.hasPrefix("+")) ? String(s.dropFirst()) : s
                    if let ms = body == "0" ? 0 : (Units.parseDuration(body) ?? Int64(body)) {
                        let off = neg ? -ms : ms
                        if off != last {
                            wallClockFaultOffsetMillis.store(off, ordering: .relaxed)
                            logger.warning("fault injection: wall clock jumped", metadata: ["offset_ms": "\(off)", "delta_ms": "\(off - last)"])
                            last = off
                        }
                    }
                }
                usleep(100_000)
            }
        }
        _ = t
    }
}

/// Starts a detached thread running `body`.
@discardableResult
func Thread_start(_ body: @escaping @Sendable () -> Void) -> pthread_t { DedicatedThread.start("brume-cli", detached: true, body) }

struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create an Ed25519 key pair for signing commands.",
        discussion: "Writes KID.key (the private key: keep it on the backend, mode 600) and prints the line for the gateways' [commands.keys].")

    @Option(help: "The key id (letters, digits, '.', '_', '-'), e.g. the year: k2026.") var kid: String
    @Option(help: "Where to write KID.key.") var out: String = "."

    func run() throws {
        guard !kid.isEmpty, kid.utf8.count <= 64, kid.unicodeScalars.allSatisfy({ ($0.properties.isAlphabetic && $0.isASCII) || ("0"..."9").contains($0) || ".-_".unicodeScalars.contains($0) }) else {
            printErr("--kid must use only letters, digits, '.', '_' and '-' (at most 64)")
            throw ExitCode(2)
        }
        let (priv, pub) = CommandSigning.keygen()
        let path = "\(out)/\(kid).key"
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else {
            printErr("cannot create \(path): \(String(cString: strerror(errno)))")
            throw ExitCode(1)
        }
        let text = priv + "\n"
        _ = text.withCString { write(fd, $0, strlen($0)) }
        close(fd)
        print("private key written to \(path) (keep it on the backend that signs commands)")
        print("for gateway.toml:\n[commands.keys]\n\(kid) = \"\(pub)\"")
    }
}

struct Sign: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Sign a command for one gateway (for a backend's tests or a technician).",
        discussion: """
        Prints the command with "kid" and "sig" added; publish it to PREFIX/commands, e.g.
          brume sign --key k2026.key --kid k2026 --gateway gw-01 '{"id":"c-1","actuator":"pump","value":"on","expires":1764170060000}' \\
            | mosquitto_pub -t brume/gw-01/commands -q 1 -s
        """)

    @Option(help: "The private key file (brume keygen).") var key: String
    @Option(help: "Its key id, as in [commands.keys].") var kid: String
    @Option(help: "The gateway id the command is for ([gateway] id).") var gateway: String
    @Argument(help: "The command as JSON (id, actuator, value, expires).") var command: String

    func run() throws {
        guard case .success(let text) = ConfigLoader.readFile(key) else {
            printErr("cannot read \(key)")
            throw ExitCode(1)
        }
        do {
            print(try CommandSigning.sign(commandJSON: command, gateway: gateway, keyID: kid, privateKeyBase64: text))
        } catch {
            printErr("\(error)")
            throw ExitCode(2)
        }
    }
}

struct SignConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sign-config",
        abstract: "Sign a whole gateway.toml as a configuration push for one gateway (docs/fleet.md).",
        discussion: """
        Prints the push as JSON; publish it to PREFIX/config/set, e.g.
          brume sign-config --key k2026.key --kid k2026 --gateway gw-01 --version 8 site.toml \\
            | mosquitto_pub -t brume/gw-01/config/set -q 1 -s
        The gateway answers on PREFIX/config/state (retained).
        """)

    @Option(help: "The private key file (brume keygen).") var key: String
    @Option(help: "Its key id, as in [commands.keys].") var kid: String
    @Option(help: "The gateway id the push is for ([gateway] id).") var gateway: String
    @Option(help: "The configuration's version: higher than the one running (PREFIX/config/state).") var version: Int64
    @Option(help: "Seconds until the push expires (at most [commands] max_lifetime).") var expiresIn: Int64 = 600
    @Argument(help: "The gateway.toml to push.") var file: String

    func run() throws {
        guard case .success(let keyText) = ConfigLoader.readFile(key) else { printErr("cannot read \(key)"); throw ExitCode(1) }
        guard case .success(let text) = ConfigLoader.readFile(file) else { printErr("cannot read \(file)"); throw ExitCode(1) }
        guard expiresIn > 0 && expiresIn <= 30 * 86_400 else { printErr("--expires-in must be between 1 s and 30 days"); throw ExitCode(1) }
        do {
            print(try CommandSigning.signConfig(text: text, version: version, expires: wallClockMillis() + expiresIn * 1000, gateway: gateway, keyID: kid, privateKeyBase64: keyText))
        } catch {
            printErr("\(error)")
            throw ExitCode(2)
        }
    }
}

/// Every descriptor above stderr gets FD_CLOEXEC: whatever a library left open does not outlive
/// the process that a restart in place replaces (ours are opened with O_CLOEXEC already).
func markAllCloseOnExec() {
    guard let d = opendir("/proc/self/fd") else { return }
    var fds: [Int32] = []
    while let e = readdir(d) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if let fd = Int32(name), fd > 2 { fds.append(fd) }
    }
    closedir(d)
    for fd in fds {
        let flags = fcntl(fd, F_GETFD)
        if flags >= 0 { _ = fcntl(fd, F_SETFD, flags | FD_CLOEXEC) }
    }
}

struct SignUpdate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sign-update",
        abstract: "Sign a package offer (self-update) for one gateway (docs/fleet.md).",
        discussion: """
        Prints the offer as JSON; publish it to PREFIX/update/offer, e.g.
          brume sign-update --key k.key --kid k --gateway gw-01 --url https://updates.example.com/brume_1.0.2_arm64.deb brume_1.0.2_arm64.deb \\
            | mosquitto_pub -t brume/gw-01/update/offer -q 1 -s
        The version and the SHA-256 are read from the package file.
        """)

    @Option(help: "The private key file (brume keygen).") var key: String
    @Option(help: "Its key id, as in [commands.keys].") var kid: String
    @Option(help: "The gateway id the offer is for.") var gateway: String
    @Option(help: "Where the gateway downloads the package (https://).") var url: String
    @Option(help: "Seconds until the offer expires (at most [commands] max_lifetime).") var expiresIn: Int64 = 3600
    @Argument(help: "The .deb offered (its version and SHA-256 are signed).") var package: String

    func run() throws {
        guard case .success(let keyText) = ConfigLoader.readFile(key) else { printErr("cannot read \(key)"); throw ExitCode(1) }
        guard expiresIn > 0 && expiresIn <= 30 * 86_400 else { printErr("--expires-in must be between 1 s and 30 days"); throw ExitCode(1) }
        do {
            print(try CommandSigning.signUpdate(package: package, url: url, expires: wallClockMillis() + expiresIn * 1000, gateway: gateway, keyID: kid, privateKeyBase64: keyText))
        } catch {
            printErr("\(error)")
            throw ExitCode(2)
        }
    }
}

struct UpdateInstall: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "update-install",
        abstract: "Install a package the gateway downloaded and verified, with rollback (run as root by brume-update.service).",
        discussion: "Exit status: 0 installed and healthy, 1 refused or rolled back, 2 nothing to do.")

    @Option(name: .shortAndLong, help: "The configuration file (keys, data_dir).") var config: String = defaultConfigPath
    @Option(help: "Seconds to wait for the new version to report healthy (default: [fleet] update_window + 30 s).") var wait: Int?

    func run() throws {
        let rc = UpdateInstaller.run(configPath: config, waitSeconds: wait) { printErr("brume update-install: \($0)") }
        if rc != 0 { throw ExitCode(rc) }
    }
}
