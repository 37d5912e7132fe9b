import Foundation
import Testing
@testable import BrumeRuntime

@Suite struct StatusPageTests {
    /// The page is edited as status.html and embedded by scripts/embed-status-page.sh: they must not drift.
    @Test func embeddedPageMatchesTheHTMLFile() throws {
        let html = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Sources/BrumeRuntime/API/status.html")
        let text = try String(contentsOf: html, encoding: .utf8)
        #expect(statusPageHTML + "\n" == text || statusPageHTML == text, "run scripts/embed-status-page.sh after editing status.html")
        #expect(!text.contains("http://") && !text.contains("https://"), "self-contained: the Pi may have no internet")
    }
}
