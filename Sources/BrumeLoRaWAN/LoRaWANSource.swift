import BrumeCore
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `[[source]] kind = "lorawan"`: Brume as the "server" of a LoRa concentrator's Semtech UDP
/// packet forwarder. Every PUSH_DATA is acknowledged; each `rxpk` is checked and decoded by
/// `LoRaWANDecoder`; readings go to the sink with the radio's RSSI and SNR. The accepted frame
/// counters are written to `countersPath` (temporary file, fsync, rename) at most once a second
/// and at stop.
public final class LoRaWANSource: Source {
    public struct Options: Sendable {
        public var host: String
        public var port: UInt16
        /// Forwarder EUIs allowed to send (empty: any).
        public var gateways: Set<UInt64>
        public var devices: [LoRaWANDevice]
        /// RSSI and SNR of each accepted frame as readings (`rssi`, `snr`).
        public var signal: Bool
        public var countersPath: String
        /// Downlinks (commands, ACKs of confirmed uplinks) are sent; false beside a network server.
        public var downlinks: Bool
        public init(host: String, port: UInt16, gateways: Set<UInt64>, devices: [LoRaWANDevice], signal: Bool, countersPath: String, downlinks: Bool = true) {
            self.downlinks = downlinks
            self.host = host
            self.port = port
            self.gateways = gateways
            self.devices = devices
            self.signal = signal
            self.countersPath = countersPath
        }
    }

    /// What status shows per device.
    public struct DeviceState: Sendable {
        public var fcnt: UInt32?
        public var rssi: Double?
        public var snr: Double?
        public var lastSeenMillis: Int64?
        public var frames: Int64 = 0
        public var lastRefusal: String?
    }

    public let name: String
    public let stats = SourceStats()
    let options: Options
    let sink: any ReadingSink
    let logger: Logger
    private let stateGauge = Gauge<SourceState>(.starting)
    private let worker = WorkerThread()
    private let limiter = LogRateLimiter(burst: 10, interval: .seconds(30))
    /// Per device name.
    public let devices = Locked<[String: DeviceState]>([:])
    /// Forwarders heard from (EUI → last PUSH_DATA/PULL_DATA, ms).
    public let forwarders = Locked<[UInt64: Int64]>([:])
    /// The bound UDP port (the configured one, or the kernel's choice for port 0 in tests).
    public let boundPort = Atomic<UInt16>(0)

    public init(name: String, options: Options, sink: any ReadingSink, logger: Logger) {
        self.name = name
        self.options = options
        self.sink = sink
        self.logger = logger.forSource(name)
    }

    public var state: SourceState { stateGauge.current }

    public func start() {
        worker.start("lorawan-\(name)") { [self] in
            var link = Link(decoder: LoRaWANDecoder(devices: options.devices, counters: Self.loadCounters(options.countersPath, logger: logger)))
            var buf = [UInt8](repeating: 0, count: 65_536)
            var dirty = false
            var lastSave = ContinuousClock.now
            var fd: Int32 = -1
            var nextTry = ContinuousClock.now
            while worker.isRunning {
                if fd < 0 {
                    // Not listening yet (the port held by another program, an address not up yet): again every 5 s.
                    if ContinuousClock.now >= nextTry, let f = listen() { fd = f } else {
                        if ContinuousClock.now >= nextTry { nextTry = ContinuousClock.now + .seconds(5) }
                        usleep(100_000)
                        continue
                    }
                }
                var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                if poll(&pfd, 1, 200) > 0 {
                    var from = sockaddr_in()
                    var fromLen = socklen_t(MemoryLayout<sockaddr_in>.size)
                    let n = buf.withUnsafeMutableBytes { b in
                        withUnsafeMutablePointer(to: &from) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, b.baseAddress, b.count, 0, $0, &fromLen) } }
                    }
                    if n > 0 {
                        for (bytes, to) in handle(Array(buf[0..<n]), from: from, link: &link, dirty: &dirty) {
                            var dest = to
                            _ = bytes.withUnsafeBytes { r in
                                withUnsafePointer(to: &dest) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, r.baseAddress, r.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
                            }
                        }
                    }
                }
                expireDownlinks(&link)
                if dirty && ContinuousClock.now - lastSave >= .seconds(1) {
                    dirty = !Self.saveCounters(link.decoder.counters, to: options.countersPath, logger: logger)
                    lastSave = ContinuousClock.now
                }
            }
            if dirty { _ = Self.saveCounters(link.decoder.counters, to: options.countersPath, logger: logger) }
            if fd >= 0 { close(fd) }
            // Stopping: queued and unconfirmed downlinks are not sent (never later, by another run).
            for d in downlinks.withLock({ q in defer { q.removeAll() }; return q }) { d.done(.failure("the gateway stopped before the device listened: not sent")) }
            for (_, w) in link.awaiting { w.downlink.done(.failure("the gateway stopped before the forwarder confirmed the transmission: it may have been sent")) }
        }
    }

    /// The UDP socket the forwarder sends to, or nil (logged, at a bounded rate).
    private func listen() -> Int32? {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = options.port.bigEndian
        guard inet_pton(AF_INET, options.host, &addr.sin_addr) == 1 else {
            if limiter.admit() != nil { logger.error("LoRaWAN: not an IPv4 address to listen on", metadata: ["lorawan.listen": "\(options.host)"]) }
            stateGauge.set(.disconnected)
            return nil
        }
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0 else {
            let e = String(cString: strerror(errno))
            if limiter.admit() != nil {
                logger.error("LoRaWAN: cannot listen for the packet forwarder (trying again every 5 s)",
                             metadata: ["lorawan.listen": "\(options.host):\(options.port)", "error": "\(e)",
                                        "hint": "another program (a ChirpStack gateway bridge?) holds the port: see the field guide"])
            }
            close(fd)
            stateGauge.set(.disconnected)
            return nil
        }
        var got = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &got) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        boundPort.store(UInt16(bigEndian: got.sin_port), ordering: .releasing)
        logger.info("LoRaWAN source listening for the packet forwarder",
                    metadata: ["lorawan.listen": "\(options.host):\(boundPort.load(ordering: .acquiring))", "lorawan.devices": "\(options.devices.count)"])
        stateGauge.set(.connected)
        return fd
    }

    public func stop() {
        guard worker.stop() else { return }
        stateGauge.set(.stopped)
    }

    func refuse(_ reason: String, _ detail: String, device: String? = nil, level: Logger.Level = .warning) {
        stats.errors.add(reason)
        if let device { devices.withLock { $0[device, default: DeviceState()].lastRefusal = reason } }
        if limiter.admit() != nil {
            logger.log(level: level, "LoRaWAN frame refused", metadata: ["reason": "\(reason)", "detail": "\(detail)"])
        }
    }

    /// At most 64 forwarders remembered (any EUI may be claimed when `gateways` is empty).
    private func noteForwarder(_ gw: UInt64) {
        forwarders.withLock { f in
            if f[gw] == nil, f.count >= 64, let oldest = f.min(by: { $0.value < $1.value })?.key { f[oldest] = nil }
            f[gw] = wallClockMillis()
        }
    }

    /// What the source thread alone keeps: the decoder, where each forwarder listens for
    /// downlinks (its last PULL_DATA), and the downlinks waiting for the forwarder's TX_ACK.
    struct Link {
        var decoder: LoRaWANDecoder
        var pull: [UInt64: (address: sockaddr_in, version: UInt8)] = [:]
        var awaiting: [UInt16: (downlink: Downlink, deadline: UInt64, version: UInt8, gateway: UInt64)] = [:]
        var nextToken = UInt16.random(in: 0...UInt16.max)
    }

    /// A command for a Class A device: sent in the receive window after its next uplink.
    struct Downlink: Sendable {
        var devAddr: UInt32
        var fport: UInt8
        var payload: [UInt8]
        var deadline: UInt64
        var done: @Sendable (Result<String, DownlinkFailure>) -> Void
    }

    public struct DownlinkFailure: Error, Sendable, CustomStringConvertible, ExpressibleByStringLiteral {
        public var description: String
        public init(stringLiteral s: String) { description = s }
        public init(_ s: String) { description = s }
    }

    private let downlinks = Mutex<[Downlink]>([])

    /// Queues `payload` on `fport` for `device`; answers once the forwarder confirmed the
    /// transmission (TX_ACK), or with why not. A device that does not send within `timeout`
    /// gets nothing, ever (at most once).
    public func sendDownlink(device: String, fport: UInt8, payload: [UInt8], timeout: Duration) async -> Result<String, DownlinkFailure> {
        guard let addr = options.devices.first(where: { $0.device == device })?.devAddr else { return .failure(DownlinkFailure("no LoRaWAN device \(device)")) }
        // Only the source's thread answers queued downlinks.
        guard worker.isRunning else { return .failure("the LoRaWAN source is not running: not sent") }
        let nanos = UInt64(timeout.components.seconds) &* 1_000_000_000 &+ UInt64(timeout.components.attoseconds / 1_000_000_000)
        return await withCheckedContinuation { (cont: CheckedContinuation<Result<String, DownlinkFailure>, Never>) in
            let once = Mutex(false)
            let d = Downlink(devAddr: addr, fport: fport, payload: payload, deadline: monotonicNanos() &+ nanos, done: { r in
                if !once.withLock({ let was = $0; $0 = true; return was }) { cont.resume(returning: r) }
            })
            downlinks.withLock { $0.append(d) }
        }
    }

    func expireDownlinks(_ link: inout Link) {
        let now = monotonicNanos()
        let expired = downlinks.withLock { q -> [Downlink] in
            let e = q.filter { now >= $0.deadline }
            q.removeAll { now >= $0.deadline }
            return e
        }
        for d in expired {
            stats.errors.add("downlink_expired")
            d.done(.failure("the device sent no uplink in time (a Class A device listens only after it sends): not sent"))
        }
        for (token, w) in link.awaiting where now >= w.deadline {
            link.awaiting[token] = nil
            if w.version < 2 {
                // Protocol v1 forwarders never confirm.
                w.downlink.done(.success("handed to the packet forwarder for the device's receive window (protocol v1: no confirmation)"))
            } else {
                stats.errors.add("downlink_unconfirmed")
                w.downlink.done(.failure("the packet forwarder did not confirm the transmission (no TX_ACK): it may have been sent"))
            }
        }
    }

    /// After an accepted uplink of `addr` through forwarder `gw`: the downlink that waits for
    /// it (a queued command, and/or the ACK a confirmed uplink asks for), as a PULL_RESP.
    func downlink(after rx: SemtechUDP.RxPacket, addr: UInt32, gateway gw: UInt64, link: inout Link) -> [([UInt8], sockaddr_in)] {
        guard options.downlinks, let dev = link.decoder.devices[addr] else { return [] }
        let confirmed = link.decoder.lastAcceptedConfirmed
        let queued = downlinks.withLock { q -> Downlink? in
            guard let i = q.firstIndex(where: { $0.devAddr == addr }) else { return nil }
            return q.remove(at: i)
        }
        guard queued != nil || confirmed else { return [] }
        guard let (to, version) = link.pull[gw] else {
            if let queued { downlinks.withLock { $0.insert(queued, at: 0) } }
            if limiter.admit() != nil {
                logger.warning("LoRaWAN: no downlink path: the forwarder has not sent PULL_DATA", metadata: ["lorawan.gateway": "\(SemtechUDP.eui(gw))"])
            }
            return []
        }
        guard let fcnt = link.decoder.takeDownlinkCounter(addr) else {
            if let queued { downlinks.withLock { $0.insert(queued, at: 0) } }
            return []
        }
        let phy = LoRaWANFrame.downlink(devAddr: addr, fcnt: fcnt, fport: queued?.fport, payload: queued?.payload ?? [], ack: confirmed,
                                        nwkSKey: dev.nwkSKey, appSKey: dev.appSKey)
        link.nextToken &+= 1
        guard let packet = SemtechUDP.pullResp(token: link.nextToken, phy: phy, after: rx) else {
            if let queued { queued.done(.failure("the forwarder's report lacks the timing (tmst, freq, datr) of the uplink: not sent")) }
            return []
        }
        if let queued { link.awaiting[link.nextToken] = (queued, monotonicNanos() &+ 3_000_000_000, version, gw) }
        return [(packet, to)]
    }

    /// One UDP datagram; returns what to send (the acknowledgement to its sender, downlinks).
    func handle(_ datagram: [UInt8], from: sockaddr_in, link: inout Link, dirty: inout Bool) -> [([UInt8], sockaddr_in)] {
        stats.messages.add()
        let packet: SemtechUDP.Packet
        switch SemtechUDP.parse(datagram) {
        case .success(let p): packet = p
        case .failure(let e):
            refuse(e.reason, "a datagram that is not Semtech UDP (\(datagram.count) bytes)")
            return []
        }
        switch packet {
        case .pullData(let token, let gw):
            guard options.gateways.isEmpty || options.gateways.contains(gw) else {
                refuse("unknown_gateway", "packet forwarder \(SemtechUDP.eui(gw)) is not in gateways")
                return []
            }
            noteForwarder(gw)
            if link.pull[gw] == nil && link.pull.count >= 64 { link.pull.removeAll() }
            link.pull[gw] = (from, datagram[0])
            return [(SemtechUDP.ack(version: datagram[0], token: token, identifier: 0x04), from)]
        case .txAck(let token, let gw, let error):
            // Only the forwarder the downlink went to confirms it (UDP senders can claim anything).
            guard let w = link.awaiting[token], w.gateway == gw else {
                stats.errors.add("unexpected_tx_ack")
                return []
            }
            link.awaiting[token] = nil
            if let error {
                stats.errors.add("downlink_refused")
                w.downlink.done(.failure(DownlinkFailure("the packet forwarder did not send it: \(error)")))
            } else {
                w.downlink.done(.success("sent to the device in its receive window (TX_ACK)"))
            }
            return []
        case .pushData(let token, let gw, let json):
            guard options.gateways.isEmpty || options.gateways.contains(gw) else {
                refuse("unknown_gateway", "packet forwarder \(SemtechUDP.eui(gw)) is not in gateways")
                return []
            }
            noteForwarder(gw)
            var sends: [([UInt8], sockaddr_in)] = []
            switch SemtechUDP.rxPackets(json) {
            case .failure(let e):
                refuse(e.reason, "PUSH_DATA from \(SemtechUDP.eui(gw)) without valid JSON")
            case .success(let packets):
                var readings: [Reading] = []
                for p in packets {
                    switch p {
                    case .failure(let e): refuse(e.reason, "radio packet from \(SemtechUDP.eui(gw))", level: .info)
                    case .success(let rx):
                        let (rs, accepted) = accept(rx, decoder: &link.decoder, dirty: &dirty)
                        readings += rs
                        if let addr = accepted { sends += downlink(after: rx, addr: addr, gateway: gw, link: &link) }
                    }
                }
                if !readings.isEmpty {
                    stats.readings.add(Int64(readings.count))
                    stats.lastReadingMillis.set(readings.last!.time)
                    sink.accept(readings, from: name, redelivery: .never)
                }
            }
            return [(SemtechUDP.ack(version: datagram[0], token: token, identifier: 0x01), from)] + sends
        }
    }

    /// The readings of one radio packet, and the DevAddr when it was accepted (a downlink may follow).
    func accept(_ rx: SemtechUDP.RxPacket, decoder: inout LoRaWANDecoder, dirty: inout Bool) -> ([Reading], UInt32?) {
        switch decoder.decode(rx.phyPayload) {
        case .refused(let reason, let addr, let detail):
            let dev = addr.flatMap { decoder.devices[$0]?.device }
            // Neighbours' devices and join requests are normal on a shared band: info, not warning.
            refuse(reason, detail, device: dev, level: reason == "unknown_devaddr" || reason == "join_request" ? .debug : .warning)
            return ([], nil)
        case .duplicate:
            stats.errors.add("duplicate")
            return ([], nil)
        case .accepted(let device, let fcnt, _, let values, let payloadError, let reset):
            dirty = true
            let now = wallClockMillis()
            devices.withLock {
                var s = $0[device, default: DeviceState()]
                s.fcnt = fcnt
                s.rssi = rx.rssi
                s.snr = rx.snr
                s.lastSeenMillis = now
                s.frames += 1
                $0[device] = s
            }
            if reset {
                stats.errors.add("counter_reset")
                logger.notice("LoRaWAN device restarted its frame counter (allow_counter_reset)", metadata: ["device": "\(device)", "lorawan.fcnt": "\(fcnt)"])
            }
            if let payloadError { refuse("bad_payload", "\(device): \(payloadError)", device: device) }
            var out = values.map { Reading(device: device, metric: $0.0, time: now, value: $0.1) }
            if options.signal {
                if let r = rx.rssi { out.append(Reading(device: device, metric: "rssi", time: now, value: .number(r))) }
                if let s = rx.snr { out.append(Reading(device: device, metric: "snr", time: now, value: .number(s))) }
            }
            return (out, decoder.devices.first { $0.value.device == device }?.key)
        }
    }

    // MARK: - frame counters on disk

    /// `DEVADDR FCNT MIC FCNTDOWN` per line (FCNTDOWN: the next downlink counter; absent in files of older versions).
    static func loadCounters(_ path: String, logger: Logger) -> [UInt32: LoRaWANDecoder.Counter] {
        guard let text = readSmallFile(path, limit: 4 << 20) else { return [:] }
        var out: [UInt32: LoRaWANDecoder.Counter] = [:]
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ")
            guard f.count == 3 || f.count == 4, let a = LoRaWANFrame.devAddr(hex: String(f[0])), let n = UInt32(f[1]), f[2].utf8.count == 8, let m = UInt32(f[2], radix: 16),
                  let down = f.count == 4 ? UInt32(f[3]) : 0 else {
                logger.warning("LoRaWAN: a line of the frame-counter file is not understood (skipped)", metadata: ["path": "\(path)"])
                continue
            }
            out[a] = .init(fcnt: n, mic: [UInt8(m >> 24), UInt8(m >> 16 & 0xFF), UInt8(m >> 8 & 0xFF), UInt8(m & 0xFF)], down: down)
        }
        return out
    }

    static func saveCounters(_ counters: [UInt32: LoRaWANDecoder.Counter], to path: String, logger: Logger) -> Bool {
        var text = ""
        for (a, c) in counters.sorted(by: { $0.key < $1.key }) {
            text += "\(LoRaWANFrame.hex(a)) \(c.fcnt) \(c.mic.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()) \(c.down)\n"
        }
        if let why = atomicWrite(text, to: path, mode: 0o600) {
            logger.error("LoRaWAN: cannot write the frame counters", metadata: ["path": "\(path)", "error": "\(why)"])
            return false
        }
        return true
    }
}
