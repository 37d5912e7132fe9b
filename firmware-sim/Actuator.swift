import ArgumentParser
import BrumeCore
import BrumeMQTT
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A simulated MQTT actuator (relay, valve, setpoint): obeys values published
/// on its command topic, reports its state on the state topic (the gateway's
/// acknowledgement), and logs every value it executed, one per line, so tests
/// can check that nothing ran twice. It can be told to misbehave.
struct Actuator: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "A simulated MQTT actuator that obeys, reports its state and logs what it executed.")

    @Option(help: "Field broker URL.") var broker = "mqtt://127.0.0.1:1883"
    @Option(help: "Command topic (the gateway publishes values here).") var topic: String
    @Option(help: "State topic (the actuator reports the value it applied).") var stateTopic: String
    @Option(help: "Append every executed value to this file.") var log: String
    @Option(help: "none, no-ack (obey but never report), late-ack (report after --late-ms), error (refuse: report ERROR).") var misbehave = "none"
    @Option(help: "Delay before reporting, in ms (late-ack; also a slow device for any mode).") var lateMs = 0
    @Option(help: "Create this file once subscribed.") var readyFile: String?

    func run() throws {
        let (host, port) = try parseBroker(broker)
        guard let f = fopen(log, "a") else { throw SimError("cannot open \(log)") }
        setvbuf(f, nil, _IOLBF, 0)
        let out = FileBox(f)
        let mode = misbehave
        let delay = lateMs
        let stateTopic = self.stateTopic
        let client = MQTTClient(options: MQTTClientOptions(host: host, port: port, clientID: "firmware-sim-actuator-\(getpid())", cleanSession: true),
                                logger: simLogger("actuator"),
                                handlers: MQTTHandlers(onMessage: { _, payload, _, _ in
                                    let value = String(decoding: payload, as: UTF8.self)
                                    if mode == "error" {
                                        out.pending.withLock { $0.append((stateTopic, "ERROR")) }
                                        return
                                    }
                                    out.write(value)
                                    if mode != "no-ack" { out.pending.withLock { $0.append((stateTopic, value)) } }
                                }))
        client.addSubscription(topic, qos: 1)
        signal(SIGTERM) { _ in cloudStop.store(true, ordering: .relaxed) }
        client.start()
        try waitConnected(client)
        sleepMillis(100)
        if let readyFile { _ = fclose(fopen(readyFile, "w")) }
        while !cloudStop.load(ordering: .relaxed) {
            let batch = out.pending.withLock { p in defer { p.removeAll() }; return p }
            if batch.isEmpty { sleepMillis(5); continue }
            if delay > 0 || mode == "late-ack" { sleepMillis(max(delay, 1)) }
            for (t, v) in batch { _ = try? client.publish(topic: t, payload: Array(v.utf8), qos: 1) }
        }
        client.stop()
    }
}

final class FileBox: @unchecked Sendable {
    // @unchecked: writes go through `lock`.
    let f: UnsafeMutablePointer<FILE>
    let lock = Mutex<Void>(())
    let pending = Mutex<[(String, String)]>([])
    init(_ f: UnsafeMutablePointer<FILE>) { self.f = f }
    func write(_ line: String) { _ = lock.withLock { _ in fputs(line + "\n", f) } }
}
