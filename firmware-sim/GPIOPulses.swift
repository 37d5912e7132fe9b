import ArgumentParser
import BrumeCore

#if canImport(Glibc)
import Glibc
#endif

/// Drives the inputs of a GPIO source's simulated chip (`chip = "simulated:DIR"`): a water
/// meter's reed contact (a pulse per litre, with contact bounce) and a door contact that opens
/// and closes. Edges carry CLOCK_MONOTONIC stamps, as the kernel gives them.
struct GPIOPulses: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "gpio", abstract: "Pulses and contacts on a simulated GPIO chip (the FIFO DIR/in).")

    @Option(help: "The simulated chip's folder (its FIFO is DIR/in).") var dir: String
    @Option(help: "The meter's line (pulses pull it low).") var meterLine = 27
    @Option(help: "Meter pulses per second.") var pulseRate: Double = 2
    @Option(help: "The door contact's line (low: open).") var doorLine = 17
    @Option(help: "Seconds between two door changes (0: never).") var doorEvery: Double = 20
    @Option(help: "Stop after this many seconds (0: run until killed).") var duration: Double = 0

    func validate() throws {
        guard pulseRate > 0, pulseRate <= 100, doorEvery >= 0 else { throw ValidationError("pulse-rate 0...100, door-every ≥ 0") }
    }

    func run() throws {
        let path = dir + "/in"
        if access(path, F_OK) != 0 { mkfifo(path, 0o660) }
        // Blocks until the gateway opened its end.
        let fd = open(path, O_WRONLY)
        guard fd >= 0 else { throw ValidationError("cannot open \(path): \(String(cString: strerror(errno)))") }
        print("firmware-sim: GPIO meter on line \(meterLine) at \(pulseRate)/s, door on line \(doorLine) every \(doorEvery) s → \(path)")
        func put(_ line: Int, _ level: Int, _ nanos: UInt64) {
            let s = "\(line) \(level) \(nanos)\n"
            _ = s.withCString { write(fd, $0, strlen($0)) }
        }
        let start = monotonicNanos()
        var lastDoor = start
        var door = 1
        var pulses = 0
        while duration == 0 || Double(monotonicNanos() - start) / 1e9 < duration {
            let t = monotonicNanos()
            // The reed contact bounces when it closes (twice within 2 ms) and when it opens 20 ms later.
            put(meterLine, 0, t); put(meterLine, 1, t + 700_000); put(meterLine, 0, t + 1_500_000)
            put(meterLine, 1, t + 20_000_000); put(meterLine, 0, t + 20_600_000); put(meterLine, 1, t + 21_000_000)
            pulses += 1
            if doorEvery > 0, Double(t - lastDoor) / 1e9 >= doorEvery {
                door = 1 - door
                put(doorLine, door, t); put(doorLine, 1 - door, t + 3_000_000); put(doorLine, door, t + 8_000_000)
                lastDoor = t
            }
            usleep(UInt32(1_000_000 / pulseRate))
        }
        print("firmware-sim: \(pulses) pulses")
    }
}
