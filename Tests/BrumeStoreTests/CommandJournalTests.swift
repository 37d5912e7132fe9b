import BrumeCore
import BrumeTestKit
import Foundation
import Logging
import Testing
@testable import BrumeStore

/// The command journal's rules, on real SQLite files: idempotent by id, "sent" is never sent
/// again after a restart, every state change reported once, a corrupt journal moved aside.
@Suite struct CommandJournalTests {
    func journal(_ dir: String, now: Int64 = 1_764_169_999_000) throws -> CommandJournal {
        try CommandJournal(path: "\(dir)/commands.db", logger: Logger(label: "test"), now: { now })
    }

    func cmd(_ id: String, _ v: Value = .number(1)) -> Command { Command(id: id, actuator: "boiler/valve", value: v, expires: nil) }

    @Test func aRepeatedIdRunsNothing() throws {
        let dir = TestKit.tempDir()
        let j = try journal(dir)
        guard case .accepted = try j.accept(cmd("c-1")) else { Issue.record("not accepted"); return }
        try j.transition("c-1", to: .sent)
        try j.transition("c-1", to: .done, detail: "ok")
        #expect(try j.accept(cmd("c-1", .number(2))) == .duplicate(.done))
        #expect(try j.reject(cmd("c-1"), detail: "x") == .duplicate(.done))
        #expect(try j.waiting().isEmpty)
        #expect(try j.record(id: "c-1")?.command.value == .number(1))
    }

    /// The rule that makes "never run twice" hold across crashes and power cuts.
    @Test func aCommandFoundSentAfterARestartIsNeverSentAgain() throws {
        let dir = TestKit.tempDir()
        do {
            let j = try journal(dir)
            _ = try j.accept(cmd("sent-1"))
            _ = try j.accept(cmd("waiting-1"))
            try j.transition("sent-1", to: .sent)
            // The process dies here (the journal is fsynced at every change).
        }
        let j = try journal(dir)
        #expect(try j.failInterrupted() == 1)
        let rec = try #require(try j.record(id: "sent-1"))
        #expect(rec.state == .failed && rec.detail.contains("not resent"))
        #expect(try j.waiting().map(\.command.id) == ["waiting-1"])
        #expect(try j.accept(cmd("sent-1")) == .duplicate(.failed))
    }

    @Test func everyStateIsReportedOnceAndAgainOnRequest() throws {
        let dir = TestKit.tempDir()
        let j = try journal(dir)
        _ = try j.accept(cmd("a"))
        _ = try j.reject(cmd("b"), detail: "unknown actuator")
        #expect(Set(try j.unreported().compactMap(\.id)) == ["a", "b"])
        try j.markReported([("a", .accepted), ("b", .rejected)])
        #expect(try j.unreported().isEmpty)
        try j.transition("a", to: .sent)
        #expect(try j.unreported().map { "\($0.id ?? "")=\($0.state.rawValue)" } == ["a=sent"])
        try j.markReported([("a", .accepted)]) // an acknowledgement of an older state does not hide the new one
        #expect(try j.unreported().map(\.state) == [.sent])
        try j.markReported([("a", .sent)])
        try j.reReport("b")
        #expect(try j.unreported().map(\.id) == ["b"])
    }

    @Test func valuesRoundTrip() throws {
        let dir = TestKit.tempDir()
        let j = try journal(dir)
        let values: [Value] = [.number(-0.5), .number(1e21), .bool(true), .bool(false), .string("close"), .string("1.5"), .string("true"),
                               .string("line\nbreak \"quoted\" ✓")]
        for (i, v) in values.enumerated() { _ = try j.accept(cmd("v-\(i)", v)) }
        for (i, v) in values.enumerated() { #expect(try j.record(id: "v-\(i)")?.command.value == v, "value \(v)") }
    }

    @Test func aCorruptJournalIsMovedAside() throws {
        let dir = TestKit.tempDir()
        try Data(repeating: 0x5A, count: 8192).write(to: URL(fileURLWithPath: "\(dir)/commands.db"))
        let j = try journal(dir)
        #expect(j.recoveredFrom?.contains("commands.db.corrupt-") == true)
        guard case .accepted = try j.accept(cmd("after")) else { Issue.record("not accepted"); return }
    }

    /// Retention: finished commands whose final state the cloud has are forgotten; a command
    /// still waiting, running or not yet reported is kept, whatever its age.
    @Test func pruningForgetsOnlyFinishedReportedCommands() throws {
        let dir = TestKit.tempDir()
        let j = try journal(dir, now: 1_000_000)
        for id in ["done-reported", "done-unreported", "waiting", "sent"] { _ = try j.accept(cmd(id)) }
        try j.transition("done-reported", to: .done)
        try j.transition("done-unreported", to: .done)
        try j.transition("sent", to: .sent)
        try j.markReported([("done-reported", .done)])
        #expect(try j.prune(before: 999_999) == 0, "nothing older than the retention yet")
        #expect(try j.prune(before: 2_000_000) == 1)
        #expect(try j.record(id: "done-reported") == nil)
        for id in ["done-unreported", "waiting", "sent"] { #expect(try j.record(id: id) != nil, "\(id) was forgotten") }
        // Forgotten: the same id is a new command (a replay must have expired by then: signed
        // commands expire within max_lifetime, shorter than the retention).
        guard case .accepted = try j.accept(cmd("done-reported")) else { Issue.record("not accepted as new"); return }
    }
}
