// Window state per stream (pure value types, no clock of their own: the engine passes `now`).

struct Sample: Hashable, Sendable {
    var t: Int64
    var v: Double
}

/// A window that has closed: its emission time and its values (in event-time order, arrival
/// order for ties; arrival order for count windows).
struct ClosedWindow: Sendable {
    var time: Int64
    var values: [Double]
    /// The samples with their times (kept only for window functions: `Config.keepTimes`).
    var samples: [Sample] = []
}

enum AggregateMath {
    /// Computes `aggs` over `values` (non-empty), in the order of `aggs`.
    static func compute(_ aggs: [Aggregate], _ values: [Double]) -> [Double] {
        precondition(!values.isEmpty)
        let n = Double(values.count)
        var sum = 0.0
        var lo = values[0]
        var hi = values[0]
        for v in values {
            sum += v
            if v < lo { lo = v }
            if v > hi { hi = v }
        }
        var sorted: [Double]? = nil
        var out: [Double] = []
        out.reserveCapacity(aggs.count)
        for a in aggs {
            switch a {
            case .avg: out.append(sum / n)
            case .min: out.append(lo)
            case .max: out.append(hi)
            case .sum: out.append(sum)
            case .count: out.append(n)
            case .first: out.append(values[0])
            case .last: out.append(values[values.count - 1])
            case .stddev:
                let mean = sum / n
                var ss = 0.0
                for v in values { ss += (v - mean) * (v - mean) }
                out.append((ss / n).squareRoot())
            case .p50, .p90, .p99:
                if sorted == nil { sorted = values.sorted() }
                out.append(percentile(sorted!, a == .p50 ? 0.5 : a == .p90 ? 0.9 : 0.99))
            }
        }
        return out
    }

    /// Linear interpolation between closest ranks over sorted values (numpy "linear").
    static func percentile(_ sorted: [Double], _ p: Double) -> Double {
        let rank = p * Double(sorted.count - 1)
        let lo = Int(rank.rounded(.down))
        let hi = Swift.min(lo + 1, sorted.count - 1)
        let frac = rank - Double(lo)
        if frac == 0 || lo == hi { return sorted[lo] }
        return sorted[lo] + (sorted[hi] - sorted[lo]) * frac
    }
}

@inline(__always)
func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
    let q = a / b
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
}

/// The window state of one stream under one rule.
struct WindowBuffer: Sendable {
    enum Config: Hashable, Sendable {
        case time(size: Int64, hop: Int64)   // tumbling: hop == size
        case sliding(size: Int64)
        case session(gap: Int64)
        case count(Int)

        init(_ k: WindowSpec.Kind) {
            switch k {
            case .tumbling(let s): self = .time(size: s, hop: s)
            case .hopping(let s, let h): self = .time(size: s, hop: h)
            case .sliding(let s): self = .sliding(size: s)
            case .session(let g): self = .session(gap: g)
            case .count(let n): self = .count(n)
            }
        }
    }

    struct Session: Sendable {
        var first: Int64
        var last: Int64
        var samples: [Sample]
    }

    let config: Config
    let tolerance: Int64
    /// Greatest event time seen.
    var maxEvent: Int64 = .min
    /// Samples sorted by time (arrival order for ties); arrival order for count windows.
    var buffer: [Sample] = []
    /// Time windows: starts of windows holding data and not yet emitted, ascending.
    var pending: [Int64] = []
    var sessions: [Session] = []

    /// Window functions see each sample's time too (aggregates need only the values).
    let keepTimes: Bool

    init(config: Config, tolerance: Int64, keepTimes: Bool = false) {
        self.config = config
        self.tolerance = tolerance
        self.keepTimes = keepTimes
    }

    func closed<C: Collection<Sample>>(_ time: Int64, _ samples: C) -> ClosedWindow {
        ClosedWindow(time: time, values: samples.map(\.v), samples: keepTimes ? Array(samples) : [])
    }

    var isEmpty: Bool { buffer.isEmpty && pending.isEmpty && sessions.isEmpty }

    /// The engine clock only advances the watermark to `now - clockGrace`: it
    /// closes the windows of streams that went silent, without making readings
    /// late that carry a device timestamp a little behind the gateway's clock
    /// (clock skew, network and broker delay).
    static let clockGrace: Int64 = 2000
    func watermark(_ now: Int64) -> Int64 { Swift.max(maxEvent, now == .min ? .min : now - Self.clockGrace) }

    /// Index of the first sample with time ≥ t (after all with smaller time).
    func lowerBound(_ t: Int64) -> Int {
        var lo = 0, hi = buffer.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if buffer[mid].t < t { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// Index of the first sample with time > t.
    func upperBound(_ t: Int64) -> Int {
        var lo = 0, hi = buffer.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if buffer[mid].t <= t { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    mutating func insertSorted(_ s: Sample) {
        if buffer.last.map({ $0.t <= s.t }) ?? true { buffer.append(s) } else { buffer.insert(s, at: upperBound(s.t)) }
    }

    /// Adds a sample. Returns nil when it is late (dropped), else the windows that closed.
    mutating func add(_ s: Sample, now: Int64) -> [ClosedWindow]? {
        let w0 = watermark(now)
        switch config {
        case .count(let n):
            buffer.append(s)
            maxEvent = Swift.max(maxEvent, s.t)
            if buffer.count >= n {
                let closed = self.closed(s.t, buffer)
                buffer.removeAll(keepingCapacity: true)
                return [closed]
            }
            return []
        case .time(let size, let hop):
            let lastStart = floorDiv(s.t, hop) * hop
            if w0 != .min && lastStart + size + tolerance <= w0 { return nil }
            insertSorted(s)
            var start = lastStart
            while start + size > s.t {
                if w0 == .min || start + size + tolerance > w0 { insertPending(start) }
                start -= hop
            }
            maxEvent = Swift.max(maxEvent, s.t)
            return advance(now: now)
        case .sliding(let size):
            if w0 != .min && s.t < w0 - tolerance { return nil }
            insertSorted(s)
            maxEvent = Swift.max(maxEvent, s.t)
            let lo = upperBound(s.t - size)
            let hi = upperBound(s.t)
            let closed = self.closed(s.t, buffer[lo..<hi])
            let cut = upperBound(watermark(now) - tolerance - size)
            if cut > 0 { buffer.removeFirst(cut) }
            return [closed]
        case .session(let gap):
            if w0 != .min && s.t + gap + tolerance <= w0 { return nil }
            var merged = Session(first: s.t, last: s.t, samples: [s])
            var keep: [Session] = []
            for x in sessions {
                if s.t > x.first - gap && s.t < x.last + gap {
                    merged.first = Swift.min(merged.first, x.first)
                    merged.last = Swift.max(merged.last, x.last)
                    merged.samples.append(contentsOf: x.samples)
                } else {
                    keep.append(x)
                }
            }
            if merged.samples.count > 1 {
                // Stable sort by time: arrival order kept for ties (the new sample was added first,
                // so move it behind the older ones of equal time).
                let newest = merged.samples.removeFirst()
                merged.samples.sort { $0.t < $1.t }
                let at = merged.samples.firstIndex { $0.t > newest.t } ?? merged.samples.count
                merged.samples.insert(newest, at: at)
            }
            let at = keep.firstIndex { $0.first > merged.first } ?? keep.count
            keep.insert(merged, at: at)
            sessions = keep
            maxEvent = Swift.max(maxEvent, s.t)
            return advance(now: now)
        }
    }

    private mutating func insertPending(_ start: Int64) {
        var lo = 0, hi = pending.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if pending[mid] < start { lo = mid + 1 } else { hi = mid }
        }
        if lo < pending.count && pending[lo] == start { return }
        pending.insert(start, at: lo)
    }

    /// Closes the windows whose end + tolerance the watermark has reached.
    mutating func advance(now: Int64) -> [ClosedWindow] {
        let w = watermark(now)
        if w == .min { return [] }
        var out: [ClosedWindow] = []
        switch config {
        case .count, .sliding:
            return []
        case .time(let size, _):
            var closedCount = 0
            for start in pending {
                guard start + size + tolerance <= w else { break }
                let lo = lowerBound(start)
                let hi = lowerBound(start + size)
                if lo < hi { out.append(closed(start + size, buffer[lo..<hi])) }
                closedCount += 1
            }
            if closedCount > 0 { pending.removeFirst(closedCount) }
            let cut = upperBound(w - tolerance - size)
            if cut > 0 { buffer.removeFirst(cut) }
        case .session(let gap):
            var keep: [Session] = []
            for x in sessions {
                if x.last + gap + tolerance <= w {
                    out.append(closed(x.last + gap, x.samples))
                } else {
                    keep.append(x)
                }
            }
            sessions = keep
        }
        return out
    }

    /// Whether `advance(now:)` would close something (cheap check for `tick`).
    func due(now: Int64) -> Bool {
        let w = watermark(now)
        switch config {
        case .count, .sliding: return false
        case .time(let size, _): return pending.first.map { $0 + size + tolerance <= w } ?? false
        case .session(let gap): return sessions.contains { $0.last + gap + tolerance <= w }
        }
    }

    /// Shutdown: emits every window that holds data, partial ones included.
    mutating func flush() -> [ClosedWindow] {
        var out: [ClosedWindow] = []
        switch config {
        case .count:
            if let last = buffer.last { out.append(closed(last.t, buffer)) }
        case .sliding:
            break
        case .time(let size, _):
            for start in pending {
                let lo = lowerBound(start)
                let hi = lowerBound(start + size)
                if lo < hi { out.append(closed(start + size, buffer[lo..<hi])) }
            }
        case .session(let gap):
            for x in sessions { out.append(closed(x.last + gap, x.samples)) }
        }
        buffer.removeAll()
        pending.removeAll()
        sessions.removeAll()
        return out
    }
}
