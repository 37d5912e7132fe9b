import ArgumentParser
import BrumeCore

/// MQTT sensor nodes: N devices × M metrics publishing at a rate.
struct Sensors: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Simulated MQTT sensor nodes (N devices × M metrics at a rate).")

    @Option(help: "Field broker URL.") var broker = "mqtt://127.0.0.1:1883"
    @Option(help: "Number of devices.") var devices = 3
    @Option(help: "Metrics per device (temperature, humidity, pressure, co2, ...).") var metrics = 2
    @Option(help: "Publications per second per device.") var rate: Double = 1
    @Option(help: "Payload style: number (sensors/DEV/METRIC → 21.5), json (sensors/DEV/METRIC → {\"v\":21.5,\"ts\":...}), multi (sensors/DEV → {\"temperature\":21.5,...}).")
    var style = "number"
    @Option(help: "Topic prefix.") var prefix = "sensors"
    @Option(help: "Stop after this many seconds (0: run until killed).") var duration: Double = 0
    @Option(help: "QoS (0 or 1).") var qos: Int32 = 1

    static let names = ["temperature", "humidity", "pressure", "co2", "voltage", "current", "flow", "level"]

    func validate() throws {
        guard ["number", "json", "multi"].contains(style) else { throw ValidationError("--style must be number, json or multi") }
        guard devices > 0, metrics > 0, metrics <= Sensors.names.count, rate > 0 else { throw ValidationError("devices, metrics (≤ 8) and rate must be positive") }
    }

    func run() throws {
        let (host, port) = try parseBroker(broker)
        let pub = WindowedPublisher(host: host, port: port, clientID: "firmware-sim-sensors-\(getpid())")
        try pub.start()
        var sent = 0
        let start = monotonicNanos()
        let period = UInt64(1e9 / rate)
        var tick: UInt64 = 0
        var rng = SystemRandomNumberGenerator()
        print("firmware-sim: \(devices) devices × \(metrics) metrics at \(rate)/s on \(broker) (style \(style))")
        while duration == 0 || Double(monotonicNanos() - start) / 1e9 < duration {
            let now = wallClockMillis()
            for d in 0..<devices {
                let dev = "dev\(d + 1)"
                var fields: [(String, Double)] = []
                for m in 0..<metrics {
                    let base = [21.0, 45.0, 1013.0, 420.0, 230.0, 1.5, 12.0, 80.0][m]
                    let v = (base + Double(Int.random(in: -50...50, using: &rng)) / 10 + sin(Double(tick) / 20)).rounded(toPlaces: 2)
                    fields.append((Sensors.names[m], v))
                }
                switch style {
                case "multi":
                    let body = fields.map { "\"\($0.0)\":\(WireFormat.formatNumber($0.1))" }.joined(separator: ",")
                    pub.publish(topic: "\(prefix)/\(dev)", payload: Array("{\(body),\"ts\":\(now)}".utf8), qos: qos, sent: &sent)
                case "json":
                    for (n, v) in fields {
                        pub.publish(topic: "\(prefix)/\(dev)/\(n)", payload: Array("{\"v\":\(WireFormat.formatNumber(v)),\"ts\":\(now)}".utf8), qos: qos, sent: &sent)
                    }
                default:
                    for (n, v) in fields {
                        pub.publish(topic: "\(prefix)/\(dev)/\(n)", payload: Array(WireFormat.formatNumber(v).utf8), qos: qos, sent: &sent)
                    }
                }
            }
            tick += 1
            let next = start + tick * period
            let nowNs = monotonicNanos()
            if next > nowNs { usleep(UInt32(min(UInt64(UInt32.max), (next - nowNs) / 1000))) }
        }
        pub.drain(sent: sent)
        pub.client.stop()
    }
}

extension Double {
    func rounded(toPlaces p: Int) -> Double {
        var f = 1.0
        for _ in 0..<p { f *= 10 }
        return (self * f).rounded() / f
    }
}

#if canImport(Glibc)
import Glibc
#endif
