import BrumeCore

// The rule descriptions the config layer fills from `gateway.toml`. BrumeRules never parses
// TOML: it receives these structs, compiles them once (`RulesCompiler.compile`) and reports
// every problem at once with a position inside the TOML file.

/// A position in the TOML file, 1-based.
///
/// For an `ExprText`, `span` is the position of the first character *inside* the quotes of the
/// TOML string (for `drop_if = "value < 0"`, the `v`). A diagnostic at character offset `k` of the
/// expression is reported at `column + k` on the same line (or on a later line when the
/// expression text itself contains newlines, as a multi-line TOML string does). Columns count
/// Unicode scalars. The config layer passes the decoded string: an escape sequence before the
/// error (`\"`) shifts the reported column by the length difference.
public struct SourceSpan: Sendable, Hashable, CustomStringConvertible {
    public var line: Int
    public var column: Int
    /// The configuration file it is in (see `SourcePosition.file`).
    public var file: Int
    public init(line: Int, column: Int, file: Int = 0) {
        self.line = line
        self.column = column
        self.file = file
    }
    public var description: String { "\(line):\(column)" }
}

/// An expression as written in the config, with the position of its first character.
public struct ExprText: Sendable, Hashable {
    public var text: String
    public var span: SourceSpan
    public init(_ text: String, at span: SourceSpan) {
        self.text = text
        self.span = span
    }
}

/// What a rule does with a reading when one of its expressions fails at run time
/// (division by zero, a missing stream value, a type mismatch, ...). Every failure is counted in
/// `RuleStats.errors` either way.
public enum ErrorPolicy: String, Sendable, Hashable, CaseIterable {
    /// Drop the reading (also counted in `dropped`). The default: a value that could not be
    /// validated or transformed is not sent as if it had been.
    case drop
    /// Skip the failing stage and let the reading continue unchanged.
    case pass
}

/// One `[[rule]]`.
///
/// Stages run in this fixed order for each matching reading:
/// 1. `dropIf`  — range validation: when true the reading is dropped (counted in `dropped`).
/// 2. `flagIf`  — when true the reading is kept and a second reading `<metric>.flag = true`
///    (same device and time) is emitted just before it.
/// 3. `scale`, then `offset` (`v * scale + offset`), then `convert` (unit table), then `value`
///    (an expression of `value` whose result replaces the value; it may be a number, a bool or a
///    string).
/// 4. `deadband` / `heartbeatMillis` — report on change: a reading passes when it is the first of
///    its stream, when it differs from the last passed value by more than `deadband` (numbers;
///    bools and strings: when different), or when the last pass is `heartbeatMillis` or more
///    ago on the engine clock. Setting only `heartbeatMillis` means deadband 0 (any change).
///    A held-back reading is released by `tick()` once the heartbeat is due, so a stream that
///    keeps reporting the same value is still sent at least every heartbeat. No reading is
///    ever invented: a silent sensor produces no heartbeat.
/// 5. `minIntervalMillis` — rate limit / downsample: at most one reading per interval per
///    stream, on event time (`reading.time`); the first reading of each interval passes.
/// 6. `window` — aggregation (see `WindowSpec`), emitting `<metric>.<agg>` readings; with
///    `keepRaw` the raw reading continues too, otherwise it is consumed.
///
/// Every reading a rule emits (the raw one, flags, aggregates) continues through the rules
/// declared after it; a reading matching no rule passes unchanged.
public struct RuleSpec: Sendable, Hashable {
    /// Shown in statistics and diagnostics; defaults to `rule#N` (N = 1-based position).
    public var name: String?
    /// Globs over `"device/metric"`: `*` any run of characters except `/`, `?` one character
    /// except `/`, `**` anything including `/`. A rule applies when any glob matches.
    public var match: [String]
    /// Position of the `[[rule]]` table (used for non-expression diagnostics).
    public var span: SourceSpan
    public var dropIf: ExprText?
    public var flagIf: ExprText?
    public var scale: Double?
    public var offset: Double?
    /// A name from `UnitConversion.names` (`"c_to_f"`, `"pa_to_hpa"`, ...).
    public var convert: String?
    public var value: ExprText?
    public var deadband: Double?
    public var heartbeatMillis: Int64?
    public var minIntervalMillis: Int64?
    public var window: WindowSpec?
    public var emit: [Aggregate]
    public var keepRaw: Bool
    public var lateToleranceMillis: Int64
    public var onError: ErrorPolicy
    /// A user function (`[[function]]`, BrumeFunctions) in place of the stages above: the
    /// config layer makes one such rule per function, ahead of the `[[rule]]`s. A `.reading`
    /// function sees every matching reading; a `.window` function the contents of each closed
    /// window (`window` set, `emit` empty). The implementation is given to the `RulesEngine`.
    public var function: FunctionRef?

    public init(
        name: String? = nil, match: [String], span: SourceSpan = SourceSpan(line: 1, column: 1),
        dropIf: ExprText? = nil, flagIf: ExprText? = nil,
        scale: Double? = nil, offset: Double? = nil, convert: String? = nil, value: ExprText? = nil,
        deadband: Double? = nil, heartbeatMillis: Int64? = nil, minIntervalMillis: Int64? = nil,
        window: WindowSpec? = nil, emit: [Aggregate] = [], keepRaw: Bool = false,
        lateToleranceMillis: Int64 = 0, onError: ErrorPolicy = .drop, function: FunctionRef? = nil
    ) {
        self.name = name
        self.match = match
        self.span = span
        self.dropIf = dropIf
        self.flagIf = flagIf
        self.scale = scale
        self.offset = offset
        self.convert = convert
        self.value = value
        self.deadband = deadband
        self.heartbeatMillis = heartbeatMillis
        self.minIntervalMillis = minIntervalMillis
        self.window = window
        self.emit = emit
        self.keepRaw = keepRaw
        self.lateToleranceMillis = lateToleranceMillis
        self.onError = onError
        self.function = function
    }
}

/// Names the user function a rule runs (see `RuleSpec.function`). Only the name and the mode
/// are part of the rule's identity: a reload that swaps the module of a window function keeps
/// the readings already in its open windows.
public struct FunctionRef: Sendable, Hashable {
    public enum Mode: String, Sendable, Hashable { case reading, window }
    public var name: String
    public var mode: Mode
    public init(name: String, mode: Mode) {
        self.name = name
        self.mode = mode
    }
}

/// What a user function made of a reading or a window.
public enum FunctionOutcome: Sendable {
    /// The reading goes on unchanged, followed by these extra readings (derived metrics).
    case keep([Reading])
    /// The reading is consumed; these go on instead (none: the function filtered it out).
    case replace([Reading])
    /// The call failed (trap, exhausted budget, bad output, error code, disabled). `passOn`:
    /// the function's policy lets the reading go on unchanged; otherwise it was dropped or
    /// dead-lettered by the function.
    case failed(message: String, passOn: Bool)
}

/// A user function, as the rules engine calls it (implemented by BrumeFunctions). Calls come
/// one at a time from one engine, but an implementation may be shared by two engines.
public protocol RuleFunction: AnyObject, Sendable {
    func apply(_ reading: Reading) -> FunctionOutcome
    /// The samples of one closed window of the stream `device/metric`, in event-time order;
    /// `end` is the window's emission time. Readings returned by `.keep` or `.replace` go on.
    func window(device: String, metric: String, end: Int64, samples: [WindowSample]) -> FunctionOutcome
}

/// One reading of a window, as a window function sees it.
public struct WindowSample: Sendable, Hashable {
    public var time: Int64
    public var value: Double
    public init(time: Int64, value: Double) {
        self.time = time
        self.value = value
    }
}

/// A window over each stream (device/metric) that a rule matches. Time windows use event time
/// (`reading.time`).
///
/// - `tumbling(size)`: windows `[k*size, (k+1)*size)`.
/// - `hopping(size, hop)`: windows `[k*hop, k*hop+size)`; they overlap when `hop < size`.
/// - `sliding(size)`: on every accepted reading at `t`, the aggregate of the stream's readings
///   with time in `(t - size, t]` is emitted at once, with time `t`.
/// - `session(gap)`: readings less than `gap` apart form one session `[first, last + gap)`.
/// - `count(n)`: every `n` readings in arrival order; time = the n-th reading's time.
///   Count windows ignore the late tolerance.
///
/// A time window closes, and its aggregates are emitted with `time` = window end, when the
/// stream's watermark reaches `end + lateToleranceMillis`; the watermark is the larger of the
/// stream's greatest reading time and the engine clock. A reading is late, dropped and counted
/// (`late`, `dropped`), when every window it belongs to has closed. Windows without readings
/// emit nothing. `flush()` (shutdown) emits every open window, partial count windows included.
public struct WindowSpec: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        case tumbling(sizeMillis: Int64)
        case hopping(sizeMillis: Int64, hopMillis: Int64)
        case sliding(sizeMillis: Int64)
        case session(gapMillis: Int64)
        case count(n: Int)
    }
    public var kind: Kind
    public init(_ kind: Kind) { self.kind = kind }
}

/// Aggregates over the numeric values of a window.
///
/// `avg`, `sum`, `min`, `max`, `count`; `first`/`last` by event time (ties: arrival order;
/// count windows: arrival order); `stddev` is the population standard deviation (divides by n);
/// `p50`/`p90`/`p99` interpolate linearly between the closest ranks (rank = p * (n - 1) over the
/// sorted values, as numpy's default).
public enum Aggregate: String, Sendable, Hashable, CaseIterable {
    case avg, min, max, sum, count, first, last, stddev, p50, p90, p99
}

/// A metric computed from several streams, e.g. a dew point from a temperature and a humidity.
///
/// `inputs` maps a variable name used in `expr` to a stream `"device/metric"`. Whenever one of
/// the input streams emits a reading (after the rules), and every input has a value, the
/// expression is evaluated and a reading `device/metric` is produced with the triggering
/// reading's time. Derived readings go through the rules like any reading, but do not feed
/// other derived metrics (no cycles).
public struct DerivedSpec: Sendable, Hashable {
    public var device: String
    public var metric: String
    public var inputs: [String: String]
    public var expr: ExprText
    public var span: SourceSpan
    public init(device: String, metric: String, inputs: [String: String], expr: ExprText, span: SourceSpan = SourceSpan(line: 1, column: 1)) {
        self.device = device
        self.metric = metric
        self.inputs = inputs
        self.expr = expr
        self.span = span
    }
}

/// A local trigger: `when` (and `clear`) are conditions over the latest values of streams,
/// named as `device/metric` path tokens (`boiler/temperature > 90`), plus `time` (engine clock).
///
/// State machine (engine clock): idle → (when holds) → pending → (held for `forMillis`, and the
/// cooldown since the last firing has elapsed) → fired/active → (`clear` holds, or `when` no
/// longer holds when there is no `clear`) → cleared/idle. When `when` stops holding while
/// pending, the trigger returns to idle (debounce). On firing it sends `commandValue` to
/// `actuator` and/or a `.fired` event; on clearing a `.cleared` event.
public struct TriggerSpec: Sendable, Hashable {
    public var name: String
    public var when: ExprText
    public var clear: ExprText?
    public var forMillis: Int64
    public var cooldownMillis: Int64
    public var actuator: String?
    public var commandValue: Value?
    public var event: String?
    public var span: SourceSpan
    public init(
        name: String, when: ExprText, clear: ExprText? = nil, forMillis: Int64 = 0, cooldownMillis: Int64 = 0,
        actuator: String? = nil, commandValue: Value? = nil, event: String? = nil,
        span: SourceSpan = SourceSpan(line: 1, column: 1)
    ) {
        self.name = name
        self.when = when
        self.clear = clear
        self.forMillis = forMillis
        self.cooldownMillis = cooldownMillis
        self.actuator = actuator
        self.commandValue = commandValue
        self.event = event
        self.span = span
    }
}

/// One problem found while compiling the rules.
public struct RuleDiagnostic: Sendable, Hashable, CustomStringConvertible {
    public var span: SourceSpan
    public var message: String
    public init(span: SourceSpan, message: String) {
        self.span = span
        self.message = message
    }
    /// `gateway.toml:12:18: message`
    public func formatted(file: String) -> String { "\(file):\(span.line):\(span.column): \(message)" }
    public var description: String { "\(span.line):\(span.column): \(message)" }
}

/// Every problem found by `RulesCompiler.compile`, in file order. A collection of
/// `RuleDiagnostic` (`Result` needs its failure to be an `Error`, which an array is not).
public struct RuleDiagnostics: Error, Sendable, Hashable, RandomAccessCollection, CustomStringConvertible {
    public var all: [RuleDiagnostic]
    public init(_ all: [RuleDiagnostic]) { self.all = all }
    public var startIndex: Int { all.startIndex }
    public var endIndex: Int { all.endIndex }
    public subscript(i: Int) -> RuleDiagnostic { all[i] }
    /// One line per problem: `gateway.toml:12:18: message`.
    public func formatted(file: String) -> String { all.map { $0.formatted(file: file) }.joined(separator: "\n") }
    public var description: String { all.map(\.description).joined(separator: "\n") }
}

private let nowhere = SourceSpan(line: 0, column: 0)

extension RuleSpec {
    /// The spec without positions in the file (what `RulesEngine.carryState` compares).
    var identity: RuleSpec {
        var s = self
        s.span = nowhere
        s.dropIf?.span = nowhere
        s.flagIf?.span = nowhere
        s.value?.span = nowhere
        return s
    }
}

extension TriggerSpec {
    var identity: TriggerSpec {
        var s = self
        s.span = nowhere
        s.when.span = nowhere
        s.clear?.span = nowhere
        return s
    }
}
