import BrumeTestKit
import Testing
import BrumeSerial

/// A straightforward, non-streaming model of the framer: the whole input at once.
private func referenceEvents(_ input: [UInt8], terminator: LineFramer.Terminator, max: Int) -> [FramerEvent] {
    let lf = UInt8(ascii: "\n"), cr = UInt8(ascii: "\r")
    var events: [FramerEvent] = []
    var line: [UInt8] = []
    var afterCR = false
    func finish() {
        var l = line
        line = []
        if terminator == .lf, l.last == cr { l.removeLast() }
        if l.isEmpty { return }
        events.append(l.count > max ? .drop(.tooLong) : .frame(l))
    }
    for b in input {
        if afterCR { afterCR = false; if b == lf { continue } }
        switch terminator {
        case .lf: if b == lf { finish() } else { line.append(b) }
        case .cr: if b == cr { finish(); afterCR = true } else { line.append(b) }
        case .any:
            if b == lf { finish() } else if b == cr { finish(); afterCR = true } else { line.append(b) }
        }
    }
    return events
}

@Suite struct LineFramerTests {
    static let mixed = bytes("temp=21.5\r\nhum=40\nstate=open\rx=1\r\n\r\n\ny=\u{00}\u{7F}2\n")
    static let mixedFrames: [FramerEvent] = [
        .frame(bytes("temp=21.5")), .frame(bytes("hum=40")), .frame(bytes("state=open")),
        .frame(bytes("x=1")), .frame(bytes("y=\u{00}\u{7F}2")),
    ]

    @Test func wholeInputAtOnce() {
        var f = LineFramer()
        #expect(f.events(Self.mixed, cuts: []) == Self.mixedFrames)
        #expect(f.bufferedByteCount == 0)
    }

    @Test func everySingleSplitPoint() {
        for i in 0...Self.mixed.count {
            var f = LineFramer()
            #expect(f.events(Self.mixed, cuts: [i]) == Self.mixedFrames, "split at \(i)")
        }
    }

    @Test func everyPairOfSplitPoints() {
        let n = Self.mixed.count
        for i in 0...n {
            for j in i...n {
                var f = LineFramer()
                #expect(f.events(Self.mixed, cuts: [i, j]) == Self.mixedFrames, "split at \(i), \(j)")
            }
        }
    }

    @Test func oneByteAtATime() {
        var f = LineFramer()
        #expect(f.events(Self.mixed, cuts: Array(1..<Self.mixed.count)) == Self.mixedFrames)
    }

    @Test(arguments: LineFramer.Terminator.allCases)
    func crlfNeverGivesAnEmptyFrame(terminator: LineFramer.Terminator) {
        let input = bytes("a\r\nb\r\n")
        for i in 0...input.count {
            var f = LineFramer(terminator: terminator)
            #expect(f.events(input, cuts: [i]) == [.frame(bytes("a")), .frame(bytes("b"))], "split at \(i)")
        }
    }

    @Test func lfModeKeepsLoneCR() {
        var f = LineFramer(terminator: .lf)
        #expect(f.events(bytes("a\r\nb\rc\nd\r\r\n"), cuts: []) ==
                [.frame(bytes("a")), .frame(bytes("b\rc")), .frame(bytes("d\r"))])
    }

    @Test func crModeKeepsLoneLF() {
        var f = LineFramer(terminator: .cr)
        #expect(f.events(bytes("a\r\nb\nc\r\nd\re\r"), cuts: []) ==
                [.frame(bytes("a")), .frame(bytes("b\nc")), .frame(bytes("d")), .frame(bytes("e"))])
    }

    @Test func anyModeAcceptsLoneCRAndLFCR() {
        var f = LineFramer(terminator: .any)
        #expect(f.events(bytes("a\rb\n\rc\r\r\nd"), cuts: []) == [.frame(bytes("a")), .frame(bytes("b")), .frame(bytes("c"))])
        #expect(f.bufferedByteCount == 1)
        #expect(f.events(bytes("\n"), cuts: []) == [.frame(bytes("d"))])
    }

    @Test func emptyLinesAreSkippedSilently() {
        var f = LineFramer()
        #expect(f.events(bytes("\n\n\r\n\r\r\n\n"), cuts: [1, 3, 4]).isEmpty)
    }

    @Test func garbageBytesPassThrough() {
        var f = LineFramer()
        let line: [UInt8] = [0x00, 0xFF, 0xFE, 0x1B, 0x24, 0x00]
        #expect(f.events(line + [0x0A], cuts: [2]) == [.frame(line)])
    }

    @Test(arguments: LineFramer.Terminator.allCases)
    func lengthLimitAndResync(terminator: LineFramer.Terminator) {
        let eol = terminator == .cr ? "\r" : "\n"
        let exact = String(repeating: "a", count: 16)
        let over = String(repeating: "b", count: 17)
        let huge = String(repeating: "c", count: 1000)
        let input = bytes(exact + eol + over + eol + "ok=1" + eol + huge + eol + "ok=2" + eol)
        let expected: [FramerEvent] = [.frame(bytes(exact)), .drop(.tooLong), .frame(bytes("ok=1")), .drop(.tooLong), .frame(bytes("ok=2"))]
        for i in stride(from: 0, through: input.count, by: 7) {
            var f = LineFramer(terminator: terminator, maxFrameLength: 16)
            #expect(f.events(input, cuts: [i]) == expected, "split at \(i)")
        }
        var f = LineFramer(terminator: terminator, maxFrameLength: 16)
        #expect(f.events(input, cuts: Array(1..<input.count)) == expected)
    }

    @Test func crlfLineOfExactlyMaxLengthInLFMode() {
        var f = LineFramer(terminator: .lf, maxFrameLength: 4)
        #expect(f.events(bytes("abcd\r\nabcde\n"), cuts: [2]) == [.frame(bytes("abcd")), .drop(.tooLong)])
    }

    @Test func neverBuffersUnboundedly() {
        var f = LineFramer(maxFrameLength: 512)
        var drops = 0
        let chunk = [UInt8](repeating: 0x41, count: 100)
        for _ in 0..<1000 {
            f.push(chunk, onFrame: { _ in Issue.record("unexpected frame") }, onDrop: { #expect($0 == .tooLong); drops += 1 })
            #expect(f.bufferedByteCount <= 513)
        }
        #expect(drops == 1)      // one over-long line, reported once
        #expect(f.events(bytes("\nnext=1\n"), cuts: []) == [.frame(bytes("next=1"))])
    }

    @Test func resetReportsTruncatedPartialLine() {
        var f = LineFramer()
        #expect(f.reset() == nil)
        #expect(f.events(bytes("a=1\nb=2"), cuts: []) == [.frame(bytes("a=1"))])
        #expect(f.bufferedByteCount == 3)
        #expect(f.reset() == .truncated)
        #expect(f.bufferedByteCount == 0)
        #expect(f.reset() == nil)
        #expect(f.events(bytes("c=3\n"), cuts: []) == [.frame(bytes("c=3"))])
        // Inside an over-long line: already reported as too long, not again as truncated.
        var g = LineFramer(maxFrameLength: 4)
        #expect(g.events(bytes("abcdefgh"), cuts: []) == [.drop(.tooLong)])
        #expect(g.reset() == nil)
        #expect(g.events(bytes("ij\n"), cuts: []) == [.frame(bytes("ij"))])
        // A CR at the end before the reset: the LF after the reconnect does not matter.
        var h = LineFramer()
        #expect(h.events(bytes("x\r"), cuts: []) == [.frame(bytes("x"))])
        #expect(h.reset() == nil)
        #expect(h.events(bytes("\ny\n"), cuts: []) == [.frame(bytes("y"))])
    }

    @Test(arguments: LineFramer.Terminator.allCases)
    func randomStreamsMatchTheReferenceModel(terminator: LineFramer.Terminator) {
        var rng = SplitMix64(seed: 0xB12E)
        let alphabet: [UInt8] = bytes("ab=1,;") + [0x00, 0xFF, 0x0D, 0x0A, 0x0D, 0x0A]
        for round in 0..<300 {
            var input: [UInt8] = []
            for _ in 0..<Int.random(in: 0..<200, using: &rng) {
                if Int.random(in: 0..<40, using: &rng) == 0 {
                    input += [UInt8](repeating: 0x7A, count: Int.random(in: 20..<80, using: &rng))
                } else {
                    input.append(alphabet.randomElement(using: &rng)!)
                }
            }
            input += [0x0A, 0x0D, 0x0A]       // end with terminators for every mode
            let max = Int.random(in: 1..<40, using: &rng)
            var cuts: [Int] = []
            var pos = 0
            while pos < input.count {
                pos += Int.random(in: 1...17, using: &rng)
                cuts.append(min(pos, input.count))
            }
            var f = LineFramer(terminator: terminator, maxFrameLength: max)
            let got = f.events(input, cuts: cuts)
            let expected = referenceEvents(input, terminator: terminator, max: max)
            #expect(got == expected, "round \(round)")
            if got != expected { return }
        }
    }
}
