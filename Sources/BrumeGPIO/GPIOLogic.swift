/// What the GPIO source decides from edges and time, apart from threads and the chip (tested
/// with explicit times).
///
/// - **State inputs** (door contacts, float switches): an edge starts a quiet period of
///   `debounce`; every further edge restarts it; when it ends the level is read and, if it
///   changed, reported. A contact that bounces for 20 ms gives one reading.
/// - **Pulse counters** (S0 outputs of energy meters, reed contacts of water and gas meters):
///   an edge of the counted polarity is a pulse when the line was quiet (no edge of either
///   polarity) for `debounce` before it. The total (`pulses × scale`) and the rate over the last interval are reported
///   every interval — after the count is on disk, so a total sent is never above one that a
///   restart would start from: a total never goes back.
public struct GPIOLogic: Sendable {
    public struct StateInput: Sendable {
        public var line: Int
        public var debounceNanos: UInt64
        var settleUntil: UInt64?
        public internal(set) var reported: Bool?
        public init(line: Int, debounceNanos: UInt64) { self.line = line; self.debounceNanos = debounceNanos }
    }

    public struct CounterInput: Sendable {
        public var line: Int
        public var rising: Bool
        public var debounceNanos: UInt64
        public internal(set) var pulses: UInt64 = 0
        var lastEdge: UInt64?
        /// Bounces refused by the debounce (for status).
        public internal(set) var bounces: UInt64 = 0
        public init(line: Int, rising: Bool, debounceNanos: UInt64, pulses: UInt64 = 0) {
            self.line = line; self.rising = rising; self.debounceNanos = debounceNanos; self.pulses = pulses
        }
    }

    public var states: [StateInput]
    public var counters: [CounterInput]

    public init(states: [StateInput], counters: [CounterInput]) {
        self.states = states
        self.counters = counters
    }

    public mutating func edge(_ e: GPIOEdge) {
        for i in states.indices where states[i].line == e.line {
            states[i].settleUntil = e.nanos &+ states[i].debounceNanos
        }
        for i in counters.indices where counters[i].line == e.line {
            // A pulse: an edge of the counted polarity after the line was quiet for `debounce`
            // (edges of either polarity: a contact bounces when it closes and when it opens).
            let quiet = counters[i].lastEdge.map { e.nanos < $0 || e.nanos - $0 >= counters[i].debounceNanos } ?? true
            counters[i].lastEdge = e.nanos
            guard counters[i].rising == e.rising else { continue }
            guard quiet else {
                counters[i].bounces &+= 1
                continue
            }
            // A meter's lifetime of pulses fits 64 bits many times over; never traps.
            counters[i].pulses &+= 1
        }
    }

    /// State inputs whose quiet period is over at `now`: (index, level) of those whose level
    /// changed (or was never reported). `level` reads the line.
    public mutating func settled(now: UInt64, level: (Int) -> Bool?) -> [(index: Int, value: Bool)] {
        var out: [(Int, Bool)] = []
        for i in states.indices {
            let due = states[i].reported == nil || (states[i].settleUntil.map { now >= $0 } ?? false)
            guard due, let v = level(states[i].line) else { continue }
            states[i].settleUntil = nil
            if states[i].reported != v {
                states[i].reported = v
                out.append((i, v))
            }
        }
        return out
    }

    /// When the next quiet period ends (the source's wait is at most until then).
    public var nextSettle: UInt64? { states.compactMap(\.settleUntil).min() }
}
