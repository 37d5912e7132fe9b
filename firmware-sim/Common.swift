import BrumeCore
import BrumeMQTT
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

func parseBroker(_ url: String) throws -> (String, Int) {
    var rest = Substring(url)
    if rest.hasPrefix("mqtt://") { rest = rest.dropFirst(7) }
    guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]) else {
        throw SimError("broker must look like mqtt://127.0.0.1:1883, got \(url)")
    }
    return (String(rest[..<colon]), port)
}

struct SimError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

func simLogger(_ label: String) -> Logger {
    var l = Logger(label: label) { _ in StreamLogHandler.standardError(label: label) }
    l.logLevel = .warning
    return l
}

func sleepMillis(_ ms: Int) { usleep(UInt32(max(0, ms)) * 1000) }

/// Waits until the client is connected, up to `timeout` seconds.
func waitConnected(_ client: MQTTClient, timeout: Double = 30) throws {
    let deadline = monotonicNanos() + UInt64(timeout * 1e9)
    while !client.isConnected {
        if monotonicNanos() > deadline { throw SimError("could not connect to \(client.options.host):\(client.options.port)") }
        sleepMillis(10)
    }
}

/// A publisher with a bounded QoS1 window (libmosquitto would otherwise queue without bound).
final class WindowedPublisher: Sendable {
    let client: MQTTClient
    let window: Int

    init(host: String, port: Int, clientID: String, window: Int = 2000) {
        self.window = window
        let box = PublisherCounters()
        client = MQTTClient(options: MQTTClientOptions(host: host, port: port, clientID: clientID, cleanSession: true, maxInflight: window),
                            logger: simLogger("firmware-sim"),
                            handlers: MQTTHandlers(onPublished: { _, _, _ in box.acked.add(1, ordering: .relaxed) }))
        counters = box
    }
    let counters: PublisherCounters

    final class PublisherCounters: Sendable {
        let acked = Atomic<Int>(0)
    }

    func start() throws {
        client.start()
        try waitConnected(client)
    }

    /// Publishes, waiting while the window is full or the broker is away.
    func publish(topic: String, payload: [UInt8], qos: Int32, sent: inout Int) {
        while qos > 0 && sent - counters.acked.load(ordering: .relaxed) >= window { usleep(200) }
        while true {
            do {
                try client.publish(topic: topic, payload: payload, qos: qos)
                sent += 1
                return
            } catch {
                sleepMillis(20)
            }
        }
    }

    /// Waits until every QoS1 message was acknowledged (or timeout).
    func drain(sent: Int, timeout: Double = 30) {
        let deadline = monotonicNanos() + UInt64(timeout * 1e9)
        while counters.acked.load(ordering: .relaxed) < sent && monotonicNanos() < deadline { sleepMillis(5) }
    }
}

func flushStdout() { fflush(nil) }
