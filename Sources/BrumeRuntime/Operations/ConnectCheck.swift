import BrumeConfig
import BrumeGPIO
import BrumeCore
import BrumeModbus
import BrumeOneWire
import BrumeMQTT
import BrumeSerial
import BrumeUplink
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `brume check --connect`: what would fail at start, tried for real. Every broker (uplinks and
/// MQTT sources) gets a CONNECT with the configured TLS and credentials under its own client id
/// (`ID-check-PID`, clean session: the running gateway's session is left alone); every HTTP
/// uplink a HEAD with its credentials (an OAuth2 token is fetched); every secret and TLS file is
/// read; every serial port is resolved and opened; every Modbus device answers a read of its
/// first point. Nothing is published, stored or written to a device.
public enum ConnectCheck {
    public struct Outcome: Sendable {
        public var subject: String
        public var ok: Bool
        public var detail: String
    }

    /// `portsHeld`: the gateway runs and holds its serial ports; they are not opened (a second
    /// opener would take its bytes, and opening a USB adapter can reset the device behind it).
    public static func run(_ config: GatewayConfig, timeout: Duration = .seconds(10), portsHeld: Bool = false,
                           logger: Logger, report: @escaping @Sendable (Outcome) -> Void) async -> [Outcome] {
        let all = Locked<[Outcome]>([])
        func say(_ o: Outcome) { all.withLock { $0.append(o) }; report(o) }

        for u in config.uplinks {
            let subject = "uplink \(u.name) (\(u.kind.rawValue) \(u.kind == .mqtt ? u.connection.url.description : u.http.map { HTTPSinkConfig(url: $0.url).displayURL } ?? ""))"
            switch u.kind {
            case .mqtt:
                say(await mqtt(subject, u.connection, timeout: timeout, logger: logger))
            case .http:
                do {
                    let sink = try HTTPSink(options: try UplinkKinds.httpOptions(u.http!, logger: logger), gatewayID: config.gateway.id, logger: logger)
                    let r = await sink.probe()
                    await sink.stop(drain: .zero)
                    switch r {
                    case .success(let d): say(Outcome(subject: subject, ok: true, detail: d))
                    case .failure(let e): say(Outcome(subject: subject, ok: false, detail: e.description))
                    }
                } catch {
                    say(Outcome(subject: subject, ok: false, detail: "\(error)"))
                }
            }
        }
        for s in config.sources {
            switch s.kind {
            case .mqtt(let m):
                say(await mqtt("source \(s.name) (mqtt \(m.connection.url))", m.connection, timeout: timeout, logger: logger))
            case .serial(let c):
                let subject = "source \(s.name) (serial \(c.port))"
                switch PortDiscovery.resolve(c.port) {
                case .found(let path):
                    if portsHeld { say(Outcome(subject: subject, ok: true, detail: "\(path) present; held by the running gateway, not opened")); continue }
                    let settings = SerialSettings(baud: c.baud, dataBits: c.dataBits, parity: SerialSettings.Parity(rawValue: c.parity) ?? .none,
                                                  stopBits: c.stopBits, flowControl: SerialSettings.FlowControl(rawValue: c.flowControl) ?? .none)
                    do {
                        let port = try SerialPort.open(path: path, settings: settings)
                        port.close()
                        say(Outcome(subject: subject, ok: true, detail: "\(path) opened at \(c.baud) \(c.dataBits)\(c.parity.prefix(1).uppercased())\(c.stopBits)"))
                    } catch {
                        say(Outcome(subject: subject, ok: false, detail: "\(error)\(error.code == EBUSY ? " (another program holds it: the running gateway? ModemManager?)" : error.code == EACCES ? " (the brume user needs the dialout group)" : "")"))
                    }
                case let other:
                    say(Outcome(subject: subject, ok: false, detail: missing(other)))
                }
            case .modbus(let m):
                say(modbus(s.name, m, portsHeld: portsHeld))
            case .onewire(let o):
                let present = Set(OneWire.list(root: o.root))
                let absent = o.probes.filter { !present.contains($0.id) }.map(\.id)
                say(Outcome(subject: "source \(s.name) (1-Wire \(o.root))", ok: absent.isEmpty,
                            detail: absent.isEmpty ? "\(o.probes.count) probe\(o.probes.count == 1 ? "" : "s") on the bus" : "not on the bus: \(absent.joined(separator: ", ")) (found: \(present.sorted().joined(separator: ", ")))"))
            case .gpio(let g):
                let subject = "source \(s.name) (GPIO \(g.chip))"
                if portsHeld { say(Outcome(subject: subject, ok: true, detail: "lines held by the running gateway, not requested")); continue }
                // Requesting every line as the gateway would (outputs in their safe state), then releasing them.
                do {
                    let chip = try GPIOSource.openChip(g.chip)
                    defer { chip.close() }
                    for o in g.outputs { try chip.requestOutput(line: o.line, initial: o.safe, activeLow: o.activeLow, consumer: "brume-check") }
                    for i in g.inputs { try chip.requestInput(line: i.line, bias: GPIOBias(rawValue: i.bias) ?? .asIs, activeLow: i.activeLow, consumer: "brume-check") }
                    say(Outcome(subject: subject, ok: true, detail: "\(chip.label): \(g.inputs.count) input\(g.inputs.count == 1 ? "" : "s") and \(g.outputs.count) output\(g.outputs.count == 1 ? "" : "s") requested"))
                } catch {
                    say(Outcome(subject: subject, ok: false, detail: "\(error)"))
                }
            case .lorawan(let l):
                let subject = "source \(s.name) (LoRaWAN UDP \(l.host):\(l.port))"
                if portsHeld { say(Outcome(subject: subject, ok: true, detail: "held by the running gateway, not opened")); continue }
                say(Outcome(subject: subject, ok: udpPortFree(host: l.host, port: l.port).map { _ in false } ?? true,
                            detail: udpPortFree(host: l.host, port: l.port).map { "cannot listen: \($0) (a ChirpStack gateway bridge on the same port? see the field guide)" }
                                ?? "the port is free; \(l.devices.count) device\(l.devices.count == 1 ? "" : "s") declared (frames are checked as they come: brume test)"))
            case .board(let b):
                let present = ["/sys/class/thermal/thermal_zone0/temp", "/proc/meminfo", "/sys/devices/platform/soc/soc:firmware/get_throttled"]
                    .filter { access((b.root == "/" ? "" : b.root) + $0, R_OK) == 0 }
                say(Outcome(subject: "source \(s.name) (board \(b.root))", ok: true, detail: present.isEmpty ? "no health file readable here: only disk readings" : "readable: \(present.joined(separator: ", "))"))
            }
        }
        return all.withLock { $0 }
    }

    /// One CONNECT under a client id of its own; the first outcome wins.
    static func mqtt(_ subject: String, _ conn: MQTTConnection, timeout: Duration, logger: Logger) async -> Outcome {
        let password: String?
        do { password = try Gateway.secret(conn.passwordFile, logger: logger) } catch {
            return Outcome(subject: subject, ok: false, detail: "\(error)")
        }
        for file in [conn.tls?.caFile, conn.tls?.certFile, conn.tls?.keyFile].compactMap({ $0 }) {
            if case .failure(let p) = ConfigLoader.readFile(file) {
                return Outcome(subject: subject, ok: false, detail: "cannot read TLS file \(file): \(p)")
            }
        }
        let suffix = "-check-\(getpid())"
        var options = UplinkKinds.mqttClientOptions(conn, password: password)
        options.clientID = String(conn.clientID.utf8.prefix(128 - suffix.utf8.count))! + suffix
        options.protocolVersion = .auto
        options.reconnectInitial = .milliseconds(200)
        options.reconnectMax = .milliseconds(500)
        let result = Locked<Outcome?>(nil)
        let start = ContinuousClock.now
        var handlers = MQTTHandlers(onConnect: { client, _, _ in
            let ms = (ContinuousClock.now - start).components
            let v = client.negotiatedVersion.load(ordering: .relaxed) == 5 ? "MQTT 5" : "MQTT 3.1.1"
            result.withLock { $0 = $0 ?? Outcome(subject: subject, ok: true, detail: "connected (\(v)\(conn.tls != nil ? ", TLS" : "")\(conn.username != nil ? ", as \(conn.username!)" : "")) in \(ms.seconds * 1000 + ms.attoseconds / 1_000_000_000_000_000) ms") }
        })
        let brokers = ([conn.url] + conn.alternates).count
        let failures = Locked<[String]>([])
        handlers.onConnectFailed = { said in
            var reason = said
            if let tls = conn.tls, said.contains("TLS") {
                reason += " (the broker's certificate does not verify against \(tls.caFile.map { "ca_file \($0)" } ?? "the system's CAs"), or it is not issued to \(conn.url.host), or the broker wants a client certificate)"
            }
            // With alternates, every broker of the list gets its chance before it counts as failed.
            let all = failures.withLock { f in f.append(reason); return f }
            if all.count >= brokers {
                result.withLock { $0 = $0 ?? Outcome(subject: subject, ok: false, detail: all.count == 1 ? reason : all.joined(separator: "; ")) }
            }
        }
        var quiet = logger
        quiet.logLevel = .critical
        let client = MQTTClient(options: options, logger: quiet, handlers: handlers)
        client.start()
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline, result.withLock({ $0 }) == nil {
            try? await Task.sleep(for: .milliseconds(20))
        }
        client.stop()
        return result.withLock { $0 } ?? Outcome(subject: subject, ok: false, detail: "no answer within \(timeout) (a firewall dropping packets? the right host and port?)")
    }

    static func missing(_ r: PortResolution) -> String {
        switch r {
        case .found(let p): return "\(p) found"
        case .notFound: return "no such port: nothing plugged in matches (brume ports lists what is)"
        case .ambiguous(let paths): return "several ports match (\(paths.joined(separator: ", "))): add serial_number (brume ports --toml)"
        }
    }

    static func modbus(_ name: String, _ m: ModbusSourceConfig, portsHeld: Bool) -> Outcome {
        let transport: ModbusTransport
        var path: String?
        switch m.transport {
        case .rtu(let port, let baud, let bits, let parity, let stop, let rs485):
            transport = .rtu(port: port, baud: baud, parity: parity, dataBits: bits, stopBits: stop, rs485: rs485)
            switch PortDiscovery.resolve(port) {
            case .found(let p): path = p
            case let other: return Outcome(subject: "source \(name) (modbus rtu \(port))", ok: false, detail: missing(other))
            }
            if portsHeld { return Outcome(subject: "source \(name) (modbus rtu \(port))", ok: true, detail: "\(path!) present; held by the running gateway, not opened") }
        case .tcp(let host, let port):
            transport = .tcp(host: host, port: port)
        }
        let subject = "source \(name) (modbus \(transport))"
        let devices = m.devices.map { ModbusDeviceOptions(name: $0.name, unit: $0.unit, points: $0.points, timeoutMillis: $0.timeoutMillis, retries: 0) }
        switch ModbusProbe.probe(transport, resolvedPath: path, devices: devices) {
        case .failure(let f): return Outcome(subject: subject, ok: false, detail: "\(f)")
        case .success(let outcomes):
            let bad = outcomes.filter { if case .failure = $0.result { true } else { false } }
            let text = outcomes.map { o -> String in
                switch o.result {
                case .success(let ms): return "\(o.device) (unit \(o.unit)) answered in \(ms) ms"
                case .failure(let f): return "\(o.device) (unit \(o.unit)): \(f)"
                }
            }.joined(separator: "; ")
            return Outcome(subject: subject, ok: bad.isEmpty, detail: text.isEmpty ? "connected (no device to read)" : text)
        }
    }
}

/// nil when a UDP socket can be bound to host:port now; else why not.
public func udpPortFree(host: String, port: Int) -> String? {
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = UInt16(port).bigEndian
    guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else { return "not an IPv4 address: \(host)" }
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return String(cString: strerror(errno)) }
    defer { close(fd) }
    let r = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    return r == 0 ? nil : String(cString: strerror(errno))
}
