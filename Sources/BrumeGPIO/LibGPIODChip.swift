import CGPIOD
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A GPIO chip through libgpiod 1.6 (Debian 12's libgpiod2): `chip` is what
/// `gpiod_chip_open_lookup` takes — "gpiochip0", "/dev/gpiochip0", a label like
/// "pinctrl-bcm2711", or a number. Edges are read from each line's event file descriptor.
/// Not exercised by the tests on this machine (no GPIO chip in its kernel): see `GPIOChip`.
public final class LibGPIODChip: GPIOChip, @unchecked Sendable {
    public let label: String
    private let chip: OpaquePointer
    /// Guarded by `lock`: libgpiod objects are not thread-safe.
    private let lock = Mutex<Void>(())
    private var lines: [Int: OpaquePointer] = [:]
    private var eventFDs: [(line: Int, fd: Int32)] = []

    public init(_ descr: String) throws(GPIOError) {
        guard let c = gpiod_chip_open_lookup(descr) else {
            let e = brume_gpiod_errno()
            throw GPIOError("cannot open GPIO chip \"\(descr)\": \(String(cString: strerror(e)))\(e == EACCES ? " (the brume user needs the gpio group)" : e == ENOENT ? " (gpiodetect lists the chips)" : "")")
        }
        chip = c
        label = gpiod_chip_label(c).map { String(cString: $0) } ?? descr
    }

    private func line(_ offset: Int) throws(GPIOError) -> OpaquePointer {
        guard offset >= 0, offset < Int(gpiod_chip_num_lines(chip)) else {
            throw GPIOError("line \(offset) does not exist on \(label) (it has \(gpiod_chip_num_lines(chip)) lines)")
        }
        guard let l = gpiod_chip_get_line(chip, UInt32(offset)) else { throw GPIOError("line \(offset): \(String(cString: strerror(brume_gpiod_errno())))") }
        return l
    }

    private func flags(_ bias: GPIOBias, _ activeLow: Bool) -> Int32 {
        var f: Int32 = activeLow ? Int32(GPIOD_LINE_REQUEST_FLAG_ACTIVE_LOW) : 0
        switch bias {
        case .asIs: break
        case .disable: f |= Int32(GPIOD_LINE_REQUEST_FLAG_BIAS_DISABLE)
        case .pullUp: f |= Int32(GPIOD_LINE_REQUEST_FLAG_BIAS_PULL_UP)
        case .pullDown: f |= Int32(GPIOD_LINE_REQUEST_FLAG_BIAS_PULL_DOWN)
        }
        return f
    }

    private func busy(_ l: OpaquePointer, _ offset: Int) -> String {
        let e = brume_gpiod_errno()
        let who = gpiod_line_consumer(l).map { " (held by \"\(String(cString: $0))\")" } ?? ""
        return "cannot request line \(offset) of \(label): \(String(cString: strerror(e)))\(e == EBUSY ? who : "")"
    }

    public func requestInput(line offset: Int, bias: GPIOBias, activeLow: Bool, consumer: String) throws(GPIOError) {
        try lock.withLock { _ throws(GPIOError) in
            let l = try line(offset)
            let rc = consumer.withCString { c -> Int32 in
                var cfg = gpiod_line_request_config(consumer: c, request_type: Int32(GPIOD_LINE_REQUEST_EVENT_BOTH_EDGES), flags: flags(bias, activeLow))
                return gpiod_line_request(l, &cfg, 0)
            }
            guard rc == 0 else { throw GPIOError(busy(l, offset)) }
            lines[offset] = l
            eventFDs.append((offset, gpiod_line_event_get_fd(l)))
        }
    }

    public func requestOutput(line offset: Int, initial: Bool, activeLow: Bool, consumer: String) throws(GPIOError) {
        try lock.withLock { _ throws(GPIOError) in
            let l = try line(offset)
            let rc = consumer.withCString { c -> Int32 in
                var cfg = gpiod_line_request_config(consumer: c, request_type: Int32(GPIOD_LINE_REQUEST_DIRECTION_OUTPUT), flags: flags(.asIs, activeLow))
                return gpiod_line_request(l, &cfg, initial ? 1 : 0)
            }
            guard rc == 0 else { throw GPIOError(busy(l, offset)) }
            lines[offset] = l
        }
    }

    public func value(line offset: Int) throws(GPIOError) -> Bool {
        try lock.withLock { _ throws(GPIOError) -> Bool in
            guard let l = lines[offset] else { throw GPIOError("line \(offset) is not requested") }
            let v = gpiod_line_get_value(l)
            guard v >= 0 else { throw GPIOError("cannot read line \(offset): \(String(cString: strerror(brume_gpiod_errno())))") }
            return v == 1
        }
    }

    public func set(line offset: Int, _ value: Bool) throws(GPIOError) {
        try lock.withLock { _ throws(GPIOError) in
            guard let l = lines[offset] else { throw GPIOError("line \(offset) is not an output") }
            guard gpiod_line_set_value(l, value ? 1 : 0) == 0 else { throw GPIOError("cannot set line \(offset): \(String(cString: strerror(brume_gpiod_errno())))") }
        }
    }

    public func waitEdges(timeoutMillis: Int32) throws(GPIOError) -> [GPIOEdge] {
        let fds = lock.withLock { _ in eventFDs }
        guard !fds.isEmpty else { usleep(UInt32(timeoutMillis) * 1000); return [] }
        var p = fds.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
        let n = poll(&p, nfds_t(p.count), timeoutMillis)
        guard n > 0 else {
            if n < 0 && errno != EINTR { throw GPIOError("poll: \(String(cString: strerror(errno)))") }
            return []
        }
        var out: [GPIOEdge] = []
        for (i, x) in p.enumerated() where x.revents & Int16(POLLIN) != 0 {
            var ev = gpiod_line_event()
            guard gpiod_line_event_read_fd(x.fd, &ev) == 0 else { continue }
            let nanos = UInt64(ev.ts.tv_sec) &* 1_000_000_000 &+ UInt64(ev.ts.tv_nsec)
            out.append(GPIOEdge(line: fds[i].line, rising: ev.event_type == Int32(GPIOD_LINE_EVENT_RISING_EDGE), nanos: nanos))
        }
        return out.sorted { $0.nanos < $1.nanos }
    }

    public func close() {
        lock.withLock { _ in
            for l in lines.values { gpiod_line_release(l) }
            lines.removeAll()
            eventFDs.removeAll()
        }
        gpiod_chip_close(chip)
    }
}
