import BrumeCore
import Foundation
import Testing
@testable import BrumeBoard

/// Board health read from fake sysfs/procfs trees, with the files as a Raspberry Pi 4 and an
/// x86 box write them.
@Suite struct BoardHealthTests {
    func tree(_ files: [String: String]) throws -> String {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("brume-board-\(UUID().uuidString.prefix(8))").path
        for (path, text) in files {
            let full = root + path
            try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: full, atomically: true, encoding: .utf8)
        }
        return root
    }

    static let pi4: [String: String] = [
        "/sys/class/thermal/thermal_zone0/type": "cpu-thermal\n",
        "/sys/class/thermal/thermal_zone0/temp": "48312\n",
        // Under-voltage now (bit 0), throttled now (bit 2), both also since boot (16, 18).
        "/sys/devices/platform/soc/soc:firmware/get_throttled": "0x50005\n",
        "/proc/diskstats": """
             179       0 mmcblk0 40188 11963 2698746 38440 156872 218125 7283344 2418684 0 352136 2491440 0 0 0 0 11530 34315
             179       1 mmcblk0p1 239 1227 12876 323 2 0 2 10 0 180 334 0 0 0 0 0 0
             179       2 mmcblk0p2 39867 10736 2681630 38072 156870 218125 7283342 2418674 0 352052 2456746 0 0 0 0 0 0
            """,
        "/proc/meminfo": "MemTotal:        3884164 kB\nMemFree:         2811428 kB\nMemAvailable:    3352720 kB\nBuffers:           40620 kB\n",
        "/proc/loadavg": "0.21 0.12 0.09 1/187 1534\n",
        "/proc/uptime": "86411.52 341017.66\n",
    ]

    func value(_ s: [BoardHealth.Sample], _ metric: String) -> Value? { s.first { $0.metric == metric }?.value }

    @Test func aRaspberryPiReportsTemperatureThrottlingDiskMemoryLoadAndUptime() throws {
        let root = try tree(Self.pi4)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let (s, bad) = BoardHealth.read(.init(root: root, dataDir: NSTemporaryDirectory(), disk: "mmcblk0", clock: false))
        #expect(bad.isEmpty)
        #expect(value(s, "soc_temperature") == .number(48.312))
        #expect(value(s, "under_voltage") == .bool(true))
        #expect(value(s, "under_voltage_occurred") == .bool(true))
        #expect(value(s, "frequency_capped") == .bool(false))
        #expect(value(s, "throttled") == .bool(true))
        #expect(value(s, "throttled_occurred") == .bool(true))
        #expect(value(s, "soft_temperature_limit_occurred") == .bool(false))
        #expect(value(s, "disk_written_bytes") == .number(7_283_344 * 512), "sectors written of mmcblk0, 512 bytes each")
        #expect(value(s, "memory_available_bytes") == .number(3_352_720 * 1024))
        #expect(value(s, "memory_total_bytes") == .number(3_884_164 * 1024))
        #expect(value(s, "load1") == .number(0.21))
        #expect(value(s, "uptime_seconds") == .number(86411.52))
        if case .number(let free)? = value(s, "disk_free_bytes") { #expect(free > 0) } else { Issue.record("no disk_free_bytes") }
        #expect(value(s, "clock_synchronised") == nil, "not read under a fake root")
    }

    @Test func anotherBoardsMissingFilesAreAbsentNotErrorsAndGarbageIsCounted() throws {
        let root = try tree([
            "/sys/class/thermal/thermal_zone0/type": "acpitz\n",
            "/sys/class/thermal/thermal_zone0/temp": "27800\n",
            "/sys/class/thermal/thermal_zone1/type": "x86_pkg_temp\n",
            "/sys/class/thermal/thermal_zone1/temp": "not a number\n",
            "/proc/loadavg": "garbage\n",
        ])
        defer { try? FileManager.default.removeItem(atPath: root) }
        let (s, bad) = BoardHealth.read(.init(root: root, dataDir: NSTemporaryDirectory(), disk: nil, clock: false))
        #expect(value(s, "soc_temperature") == .number(27.8), "no cpu/soc zone: zone 0")
        #expect(value(s, "under_voltage") == nil && value(s, "throttled") == nil, "no Pi firmware: no flags")
        #expect(value(s, "memory_available_bytes") == nil && value(s, "uptime_seconds") == nil)
        #expect(bad == ["loadavg"])
        let empty = try tree(["/nothing": ""])
        defer { try? FileManager.default.removeItem(atPath: empty) }
        let (s2, bad2) = BoardHealth.read(.init(root: empty, dataDir: NSTemporaryDirectory(), clock: false))
        #expect(bad2.isEmpty && Set(s2.map(\.metric)) == ["disk_free_bytes", "disk_size_bytes"], "\(s2)")
    }

    @Test func theDiskHoldingTheDataFolderIsFoundByItsNumbers() throws {
        let stats = "   8       0 sda 1 2 3 4 5 6 700 8 9 10 11\n   8       1 sda1 1 2 3 4 5 6 600 8 9 10 11\n"
        #expect(BoardHealth.diskSectorsWritten(stats, .number(8, 1)) == 600)
        #expect(BoardHealth.diskSectorsWritten(stats, .name("sda")) == 700)
        #expect(BoardHealth.diskSectorsWritten(stats, .name("mmcblk0")) == nil)
        // This machine's real /proc/diskstats knows the device of a real folder.
        if let id = DiskID.of("/"), let real = try? String(contentsOfFile: "/proc/diskstats", encoding: .utf8), case .number(let maj, _) = id, maj != 0 {
            #expect(BoardHealth.diskSectorsWritten(real, id) != nil, "\(id)")
        }
    }
}
