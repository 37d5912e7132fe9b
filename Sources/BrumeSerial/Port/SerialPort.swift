#if canImport(Glibc)
import Glibc
#endif

/// Line settings of a serial port (termios).
public struct SerialSettings: Sendable, Hashable {
    public enum Parity: String, Sendable, CaseIterable { case none, even, odd }
    public enum FlowControl: String, Sendable, CaseIterable { case none, rtscts, xonxoff }
    public var baud: Int
    public var dataBits: Int
    public var parity: Parity
    public var stopBits: Int
    public var flowControl: FlowControl

    public init(baud: Int = 9600, dataBits: Int = 8, parity: Parity = .none, stopBits: Int = 1, flowControl: FlowControl = .none) {
        self.baud = baud
        self.dataBits = dataBits
        self.parity = parity
        self.stopBits = stopBits
        self.flowControl = flowControl
    }

    /// Baud rates termios knows on Linux.
    public static let supportedBauds: [Int] = [50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600, 19200, 38400,
                                               57600, 115200, 230400, 460800, 500000, 576000, 921600, 1000000, 1152000, 1500000,
                                               2000000, 2500000, 3000000, 3500000, 4000000]

    static func speed(_ baud: Int) -> speed_t? {
        let table: [Int: Int32] = [
            50: B50, 75: B75, 110: B110, 134: B134, 150: B150, 200: B200, 300: B300, 600: B600, 1200: B1200, 1800: B1800,
            2400: B2400, 4800: B4800, 9600: B9600, 19200: B19200, 38400: B38400, 57600: B57600, 115200: B115200,
            230400: B230400, 460800: B460800, 500000: B500000, 576000: B576000, 921600: B921600, 1000000: B1000000,
            1152000: B1152000, 1500000: B1500000, 2000000: B2000000, 2500000: B2500000, 3000000: B3000000,
            3500000: B3500000, 4000000: B4000000,
        ]
        return table[baud].map { speed_t($0) }
    }
}

public struct SerialError: Error, Sendable, CustomStringConvertible {
    public var path: String
    public var operation: String
    public var code: Int32
    public var description: String { "\(operation) \(path): \(String(cString: strerror(code)))" }
    public var isMissing: Bool { code == ENOENT || code == ENODEV || code == ENXIO }
}

/// A serial port opened with termios: one code path for real UARTs, USB
/// adapters and pseudo-terminals (libserialport 0.1.1 cannot open ptys).
/// Non-blocking; reads wait with poll().
public final class SerialPort: @unchecked Sendable {
    // @unchecked: `fd` is set once; reads happen on the source thread, writes are serialised by the owner.
    public let path: String
    public private(set) var fd: Int32

    public enum ReadResult: Equatable, Sendable {
        case data(Int)
        case timeout
        /// The device went away (unplugged, hung up, read error).
        case closed(Int32)
    }

    private init(path: String, fd: Int32) {
        self.path = path
        self.fd = fd
    }

    deinit { close() }

    public static func open(path: String, settings: SerialSettings) throws(SerialError) -> SerialPort {
        let fd = Glibc.open(path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC)
        if fd < 0 { throw SerialError(path: path, operation: "open", code: errno) }
        let port = SerialPort(path: path, fd: fd)
        // Exclusive: a second opener (another program) gets EBUSY instead of stealing bytes.
        _ = ioctl(fd, UInt(TIOCEXCL))
        var t = termios()
        if tcgetattr(fd, &t) != 0 { throw SerialError(path: path, operation: "tcgetattr", code: errno) }
        cfmakeraw(&t)
        t.c_cflag |= tcflag_t(CLOCAL | CREAD)
        t.c_cflag &= ~tcflag_t(CSIZE)
        switch settings.dataBits {
        case 5: t.c_cflag |= tcflag_t(CS5)
        case 6: t.c_cflag |= tcflag_t(CS6)
        case 7: t.c_cflag |= tcflag_t(CS7)
        default: t.c_cflag |= tcflag_t(CS8)
        }
        switch settings.parity {
        case .none: t.c_cflag &= ~tcflag_t(PARENB)
        case .even: t.c_cflag |= tcflag_t(PARENB); t.c_cflag &= ~tcflag_t(PARODD)
        case .odd: t.c_cflag |= tcflag_t(PARENB | PARODD)
        }
        if settings.stopBits == 2 { t.c_cflag |= tcflag_t(CSTOPB) } else { t.c_cflag &= ~tcflag_t(CSTOPB) }
        t.c_cflag &= ~tcflag_t(CRTSCTS)
        t.c_iflag &= ~tcflag_t(IXON | IXOFF | IXANY)
        switch settings.flowControl {
        case .none: break
        case .rtscts: t.c_cflag |= tcflag_t(CRTSCTS)
        case .xonxoff: t.c_iflag |= tcflag_t(IXON | IXOFF)
        }
        guard let speed = SerialSettings.speed(settings.baud) else { throw SerialError(path: path, operation: "baud \(settings.baud) on", code: EINVAL) }
        cfsetispeed(&t, speed)
        cfsetospeed(&t, speed)
        if tcsetattr(fd, TCSANOW, &t) != 0 { throw SerialError(path: path, operation: "tcsetattr", code: errno) }
        return port
    }

    /// Waits up to `timeoutMillis` for bytes and reads what is there.
    public func read(into buffer: UnsafeMutableRawBufferPointer, timeoutMillis: Int32) -> ReadResult {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let n = poll(&pfd, 1, timeoutMillis)
        if n < 0 { return errno == EINTR ? .timeout : .closed(errno) }
        if n == 0 { return .timeout }
        if pfd.revents & Int16(POLLIN) != 0 || pfd.revents & Int16(POLLHUP | POLLERR) != 0 {
            let r = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if r > 0 { return .data(r) }
            if r == 0 { return .closed(0) }
            if errno == EAGAIN || errno == EINTR { return .timeout }
            return .closed(errno)
        }
        if pfd.revents & Int16(POLLNVAL) != 0 { return .closed(EBADF) }
        return .timeout
    }

    /// Writes all bytes (waiting for the driver while its buffer is full, up to `timeoutMillis`).
    public func write(_ bytes: [UInt8], timeoutMillis: Int32 = 2000) throws(SerialError) {
        var off = 0
        while off < bytes.count {
            let r = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + off, bytes.count - off) }
            if r > 0 { off += r; continue }
            if r < 0 && (errno == EAGAIN || errno == EINTR) {
                var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                if poll(&pfd, 1, timeoutMillis) <= 0 { throw SerialError(path: path, operation: "write (timed out) to", code: ETIMEDOUT) }
                continue
            }
            throw SerialError(path: path, operation: "write to", code: errno)
        }
    }

    public func close() {
        if fd >= 0 {
            _ = Glibc.close(fd)
            fd = -1
        }
    }
}
