import BrumeTestKit
import Testing
import BrumeCore
import BrumeSerial

private func nmea(_ require: Bool = true) -> FrameDecoder {
    FrameDecoder(format: .nmea(requireChecksum: require), device: "gps")
}

/// The readings of one sentence as metric → value (each metric at most once), and their times.
private func values(_ readings: [Reading]?) -> [String: Value] {
    var d: [String: Value] = [:]
    for r in readings ?? [] {
        #expect(d[r.metric] == nil, "metric \(r.metric) twice")
        d[r.metric] = r.value
    }
    return d
}

private func times(_ readings: [Reading]?) -> Set<Int64> { Set((readings ?? []).map(\.time)) }

/// Sentences of a log file: frames through a `LineFramer` (the RTK log has CRLF line ends),
/// `#` comment lines skipped here, not in the decoder.
private func logSentences(_ name: String) throws -> [[UInt8]] {
    let dir = nmeaDataDirectory()
    try #require(isDirectory(dir), "NMEA test data folder missing: \(dir) (expected Tests/Fixtures/nmea)")
    let data = try #require(readFileBytes(dir + "/" + name), "cannot read \(dir)/\(name)")
    var framer = LineFramer()
    var lines: [[UInt8]] = []
    framer.push(data, onFrame: { lines.append(Array($0)) }, onDrop: { Issue.record("log line dropped: \($0)") })
    #expect(framer.bufferedByteCount == 0)
    return lines.filter { $0.first != UInt8(ascii: "#") }
}

@Suite struct NMEAHandPickedTests {
    // u-blox NEO-M9N log, first epoch (2020-07-11 22:37:45 UTC).

    @Test func ubloxRMCBeforeAnyGGA() {
        var d = nmea()
        let got = decodeOne(&d, "$GNRMC,223745.00,A,3806.62964,N,12237.61382,W,0.040,,110720,,,D,V*0E",
                            receivedAt: epochMillis("2020-07-11T22:37:46Z")).readings
        // 3806.62964,N  → 38 + 6.62964/60  = 38 + 0.110494  = 38.110494
        // 12237.61382,W → -(122 + 37.61382/60) = -(122 + 0.626897) = -122.626897
        // 0.040 kn × 1.852 = 0.07408 km/h; course empty → no reading; status A.
        #expect(values(got) == [
            "latitude": .number(38.110494), "longitude": .number(-122.626897),
            "speed": .number(0.07408), "fix_valid": .bool(true),
        ])
        #expect(times(got) == [epochMillis("2020-07-11T22:37:45Z")])   // date 110720 from the sentence itself
    }

    @Test func ubloxGGA() {
        var d = nmea()
        let got = decodeOne(&d, "$GNGGA,223745.00,3806.62964,N,12237.61382,W,2,12,0.54,83.1,M,-29.5,M,,0000*44",
                            receivedAt: epochMillis("2020-07-11T22:37:46.2Z")).readings
        #expect(values(got) == [
            "latitude": .number(38.110494), "longitude": .number(-122.626897), "altitude": .number(83.1),
            "fix_quality": .number(2), "satellites": .number(12), "hdop": .number(0.54),
        ])
        // No date yet: the date of receivedAt.
        #expect(times(got) == [epochMillis("2020-07-11T22:37:45Z")])
    }

    @Test func trimbleRTKGGAThenRMC() {
        var d = nmea()
        let t = epochMillis("2020-03-18T13:28:20Z")
        let gga = decodeOne(&d, "$GNGGA,132819.60,4134.49795459,N,09345.03431408,W,2,10,0.9,278.161,M,-31.442,M,6.6,0133*6A",
                            receivedAt: t).readings
        // 4134.49795459,N  → 41 + 34.49795459/60 = 41 + 0.57496590983 = 41.5749659 (7 decimals)
        // 09345.03431408,W → -(93 + 45.03431408/60) = -(93 + 0.75057190133) = -93.7505719
        #expect(values(gga) == [
            "latitude": .number(41.5749659), "longitude": .number(-93.7505719), "altitude": .number(278.161),
            "fix_quality": .number(2), "satellites": .number(10), "hdop": .number(0.9),
        ])
        #expect(times(gga) == [epochMillis("2020-03-18T13:28:19.600Z")])
        let rmc = decodeOne(&d, "$GNRMC,132819.60,A,4134.49795459,N,09345.03431408,W,0.148,124.888,180320,11.5985,E,D*3F",
                            receivedAt: t).readings
        // A GGA was seen: no position from RMC. 0.148 kn × 1.852 = 0.274096 km/h.
        #expect(values(rmc) == ["speed": .number(0.274096), "course": .number(124.888), "fix_valid": .bool(true)])
        #expect(times(rmc) == [epochMillis("2020-03-18T13:28:19.600Z")])
    }

    @Test func trimbleRTKFixQuality4() {
        var d = nmea()
        let got = decodeOne(&d, "$GNGGA,133859.80,4134.50180205,N,09345.03586649,W,4,19,0.7,280.827,M,-31.442,M,5.8,0002*6D",
                            receivedAt: epochMillis("2020-03-18T13:39:00Z")).readings
        // 4134.50180205,N  → 41 + 34.50180205/60 = 41 + 0.57503003417 = 41.5750300
        // 09345.03586649,W → -(93 + 45.03586649/60) = -(93 + 0.75059777483) = -93.7505978
        #expect(values(got) == [
            "latitude": .number(41.57503), "longitude": .number(-93.7505978), "altitude": .number(280.827),
            "fix_quality": .number(4), "satellites": .number(19), "hdop": .number(0.7),
        ])
        #expect(times(got) == [epochMillis("2020-03-18T13:38:59.800Z")])
    }

    @Test func gsaFromAMultiConstellationEpoch() {
        var d = nmea()
        for line in ["$GNGSA,A,3,29,20,18,16,51,13,44,26,,,,,0.99,0.54,0.83,1*0E",
                     "$GNGSA,A,3,82,73,74,67,81,83,68,,,,,,0.99,0.54,0.83,2*08"] {
            #expect(values(decodeOne(&d, line).readings) ==
                    ["fix_type": .number(3), "pdop": .number(0.99), "hdop": .number(0.54), "vdop": .number(0.83)])
        }
        #expect(values(decodeOne(&d, nmeaSentence("GPGSA,A,1,,,,,,,,,,,,,,,")).readings) == ["fix_type": .number(1)])
    }

    @Test func gsvFirstSentenceOfEachGroup() {
        var d = nmea()
        let cases: [(String, String?, Double)] = [
            ("$GPGSV,4,1,16,05,01,047,,10,29,224,,13,22,062,23,15,40,094,,1*65", "satellites_in_view.gps", 16),
            ("$GPGSV,4,2,16,16,25,306,30,18,68,358,39,20,63,235,37,21,35,292,,1*6B", nil, 0),
            ("$GLGSV,3,1,10,66,09,027,,67,56,054,40,68,55,168,44,69,08,194,21,1*79", "satellites_in_view.glonass", 10),
            ("$GAGSV,3,1,10,03,44,149,40,05,42,071,39,08,08,190,,09,06,034,,7*74", "satellites_in_view.galileo", 10),
            ("$GBGSV,2,1,07,04,01,262,,07,03,328,,27,78,059,44,28,29,115,34,1*79", "satellites_in_view.beidou", 7),
            ("$GBGSV,2,2,07,30,37,312,36,32,45,196,44,33,20,043,27,1*4D", nil, 0),
            (nmeaSentence("BDGSV,1,1,03,01,40,083,46,02,17,308,41,12,07,344,39"), "satellites_in_view.beidou", 3),
            (nmeaSentence("GQGSV,1,1,01,193,50,100,40"), "satellites_in_view.qzss", 1),
            (nmeaSentence("GNGSV,1,1,00"), "satellites_in_view.gnss", 0),
            (nmeaSentence("GIGSV,1,1,02,01,10,100,20,02,20,200,30"), "satellites_in_view.gi", 2),
        ]
        for (line, metric, count) in cases {
            let got = decodeOne(&d, line).readings
            if let metric {
                #expect(values(got) == [metric: .number(count)], "\(line)")
            } else {
                #expect(got == [], "\(line)")
            }
        }
    }

    @Test func vtgOnlyWithoutRMC() {
        var d = nmea()
        #expect(values(decodeOne(&d, "$GNVTG,,T,,M,0.040,N,0.075,K,D*3E").readings) == ["speed": .number(0.075)])
        #expect(values(decodeOne(&d, nmeaSentence("GPVTG,054.7,T,034.4,M,005.5,N,010.2,K,A")).readings) ==
                ["speed": .number(10.2), "course": .number(54.7)])
        #expect(decodeOne(&d, nmeaSentence("GPVTG,054.7,T,034.4,M,005.5,N,010.2,K,N")).readings == [])
        _ = decodeOne(&d, "$GNRMC,223745.00,A,3806.62964,N,12237.61382,W,0.040,,110720,,,D,V*0E")
        #expect(decodeOne(&d, "$GNVTG,,T,,M,0.040,N,0.075,K,D*3E").readings == [])
    }

    @Test func gllOnlyWithoutGGAAndRMC() {
        var d = nmea()
        let got = decodeOne(&d, "$GNGLL,3806.62964,N,12237.61382,W,223745.00,A,D*6C", receivedAt: epochMillis("2020-07-11T22:37:45.3Z")).readings
        #expect(values(got) == ["latitude": .number(38.110494), "longitude": .number(-122.626897)])
        #expect(times(got) == [epochMillis("2020-07-11T22:37:45Z")])
        #expect(decodeOne(&d, nmeaSentence("GNGLL,3806.62964,N,12237.61382,W,223746.00,V,N")).readings == [])
        var g = nmea()
        _ = decodeOne(&g, "$GNGGA,223745.00,3806.62964,N,12237.61382,W,2,12,0.54,83.1,M,-29.5,M,,0000*44")
        #expect(decodeOne(&g, "$GNGLL,3806.62964,N,12237.61382,W,223745.00,A,D*6C").readings == [])
        var r = nmea()
        _ = decodeOne(&r, "$GNRMC,223745.00,A,3806.62964,N,12237.61382,W,0.040,,110720,,,D,V*0E")
        #expect(decodeOne(&r, "$GNGLL,3806.62964,N,12237.61382,W,223745.00,A,D*6C").readings == [])
    }

    @Test func zdaSetsTheDateAndGivesNoReading() {
        var d = nmea()
        // receivedAt is far from 2020 (a board without RTC at boot): the ZDA date wins.
        #expect(decodeOne(&d, "$GNZDA,223745.00,11,07,2020,00,00*7A", receivedAt: 5_000).readings == [])
        let got = decodeOne(&d, "$GNGGA,223746.00,3806.62966,N,12237.61384,W,2,12,0.56,83.0,M,-29.5,M,,0000*40", receivedAt: 6_000).readings
        #expect(times(got) == [epochMillis("2020-07-11T22:37:46Z")])
        #expect(decodeOne(&d, nmeaSentence("GPZDA,,,,,,")).readings == [])          // no time yet: nothing
        #expect(decodeOne(&d, nmeaSentence("GPZDA,120000.00,30,02,2021,00,00")).reason == .unparsable)
    }

    @Test func fixQualityZeroGivesNoPosition() {
        var d = nmea()
        let got = decodeOne(&d, nmeaSentence("GPGGA,123519.00,4807.038,N,01131.000,E,0,00,99.99,545.4,M,46.9,M,,")).readings
        #expect(values(got) == ["fix_quality": .number(0), "satellites": .number(0), "hdop": .number(99.99)])
        let empty = decodeOne(&d, nmeaSentence("GPGGA,,,,,,0,00,99.99,,,,,,")).readings
        #expect(values(empty) == ["fix_quality": .number(0), "satellites": .number(0), "hdop": .number(99.99)])
        let invalid = decodeOne(&d, nmeaSentence("GPRMC,123519.00,V,,,,,,,230394,003.1,W")).readings
        #expect(values(invalid) == ["fix_valid": .bool(false)])
    }

    @Test func southAndEastHemispheres() {
        var d = nmea()
        // 3351.5200,S → -(33 + 51.52/60) = -(33 + 0.858666…) = -33.8586667; 15112.3000,E → 151 + 12.3/60 = 151.205
        let got = decodeOne(&d, nmeaSentence("GPGGA,010203,3351.5200,S,15112.3000,E,1,05,1.5,58.0,M,,M,,")).readings
        #expect(values(got)["latitude"] == .number(-33.8586667))
        #expect(values(got)["longitude"] == .number(151.205))
    }

    @Test func checksums() {
        var strict = nmea(true)
        var lenient = nmea(false)
        let good = "$GNGSA,A,3,29,20,18,16,51,13,44,26,,,,,0.99,0.54,0.83,1*0E"
        #expect(decodeOne(&strict, good).readings?.count == 4)
        #expect(decodeOne(&strict, nmeaSentence("GPGSA,A,3,,,,,,,,,,,,,1.5,1.0,1.1").lowercasedHex()).readings?.count == 4)
        let bare = "$GNGSA,A,3,29,20,18,16,51,13,44,26,,,,,0.99,0.54,0.83,1"
        #expect(decodeOne(&strict, bare).reason == .badChecksum)
        #expect(decodeOne(&lenient, bare).readings?.count == 4)
        for bad in ["$GNGSA,A,3,29,20,18,16,51,13,44,26,,,,,0.99,0.54,0.83,1*0F",
                    "$GNGSA,A,3,29,20,18,16,51,13,44,26,,,,,0.99,0.54,0.83,1*0",
                    "$GNGSA,A,3,29,20,18,16,51,13,44,26,,,,,0.99,0.54,0.83,1*0EX",
                    "$GNGSA,A,3,29,20,18,16,51,13,44,26,,,,,0.99,0.54,0.83,1*G0",
                    "$GNGSA,A,3,29,20,18,16,51,13,44,26,,,,,0.99,0.54,0.83,1*"] {
            #expect(decodeOne(&strict, bad).reason == .badChecksum, "\(bad)")
            #expect(decodeOne(&lenient, bad).reason == .badChecksum, "\(bad)")
        }
    }

    @Test func unsupportedSentences() {
        var d = nmea()
        for line in ["$GNGST,223745.00,228650,2.5,2.4,126,0.98,1.0,3.1*41", "$GNGBS,223745.00,1.0,1.0,3.1,,,,,,*58",
                     nmeaSentence("GPTXT,01,01,02,ANTSTATUS=OK"), nmeaSentence("PUBX,00,223745.00,3806.62964,N"),
                     nmeaSentence("PGRME,15.0,M,45.0,M,25.0,M"), nmeaSentence("AIVDM,1,1,,A,13aEOK?P00PD2wVMdLDRhgvL289?,0", start: "!"),
                     nmeaSentence("GPHDT,274.07,T")] {
            #expect(decodeOne(&d, line).reason == .unsupported, "\(line)")
        }
    }

    @Test func malformedSentencesAreUnparsable() {
        var d = nmea()
        for body in ["GPGGA,256000.00,,,,,1,05,1.0,1.0,M,,M,,",        // hour 25
                     "GPGGA,120000.00,9100.0000,N,00000.000,E,1,05,1.0,1.0,M,,M,,",   // latitude > 90
                     "GPGGA,120000.00,4807.038,X,01131.000,E,1,05,1.0,1.0,M,,M,,",    // hemisphere
                     "GPGGA,120000.00,4807.038,N,01131.000,E,9,05,1.0,1.0,M,,M,,",    // fix quality 9
                     "GPGGA,120000.00,4860.000,N,01131.000,E,1,05,1.0,1.0,M,,M,,",    // 60 minutes
                     "GPGGA,120000.00,4807.038,N,01131.000,E,1,05,1.0.1,1.0,M,,M,,",  // hdop
                     "GPRMC,120000.00,X,4807.038,N,01131.000,E,0.0,0.0,230394,,",    // status
                     "GPRMC,120000.00,A,4807.038,N,01131.000,E,0.0,0.0,310294,,",    // 31 February
                     "GPGSA,A,4,,,,,,,,,,,,,1.0,1.0,1.0",                             // fix type 4
                     "gpGGA,120000.00,,,,,0,00,,,,,,,", "GPGG,1", "G1GGA,1", ""] {
            #expect(decodeOne(&d, nmeaSentence(body)).reason == .unparsable, "\(body)")
        }
        #expect(decodeOne(&d, "GPGGA,120000.00*33").reason == .unparsable)   // no '$'
        #expect(decodeOne(&d, "$GPGGA,1\u{00}2*" + "00").reason != nil)
        #expect(decodeOne(&d, nmeaSentence("GPGGA,12\u{01}0000.00,,,,,0,00,,,,,,")).reason == .unparsable)
        #expect(decodeOne(&d, " \r").reason == .empty)
    }

    @Test func noiseBeforeTheStartCharacterIsIgnored() {
        var d = nmea()
        let line = "\u{00}\u{7F}xx,*3$GNGSA,A,3,29,20,18,16,51,13,44,26,,,,,0.99,0.54,0.83,1*0E  "
        #expect(decodeOne(&d, line).readings?.count == 4)
    }

    @Test func midnightRolloverWithoutDate() {
        var d = nmea()
        // Just after midnight on the gateway clock, the receiver still says 23:59:59: the day before.
        let a = decodeOne(&d, nmeaSentence("GPGGA,235959.00,,,,,0,00,,,,,,,"), receivedAt: epochMillis("2020-07-12T00:00:01Z")).readings
        #expect(times(a) == [epochMillis("2020-07-11T23:59:59Z")])
        var e = nmea()
        // Just before midnight on the gateway clock (slow clock), the receiver is past midnight: the next day.
        let b = decodeOne(&e, nmeaSentence("GPGGA,000000.20,,,,,0,00,,,,,,,"), receivedAt: epochMillis("2020-07-11T23:59:59.5Z")).readings
        #expect(times(b) == [epochMillis("2020-07-12T00:00:00.200Z")])
    }

    @Test func midnightRolloverWithDate() {
        var d = nmea()
        let rx = epochMillis("2020-07-11T23:59:59Z")
        let rmc = decodeOne(&d, nmeaSentence("GPRMC,235959.00,A,3806.62964,N,12237.61382,W,0.0,,110720,,,A"), receivedAt: rx).readings
        #expect(times(rmc) == [epochMillis("2020-07-11T23:59:59Z")])
        // GGA of the next epoch comes before the next RMC (Trimble order): the date follows midnight.
        let gga = decodeOne(&d, nmeaSentence("GPGGA,000000.00,3806.62964,N,12237.61382,W,1,08,1.0,80.0,M,,M,,"), receivedAt: rx + 1000).readings
        #expect(times(gga) == [epochMillis("2020-07-12T00:00:00Z")])
        let rmc2 = decodeOne(&d, nmeaSentence("GPRMC,000000.00,A,3806.62964,N,12237.61382,W,0.0,,120720,,,A"), receivedAt: rx + 1000).readings
        #expect(times(rmc2) == [epochMillis("2020-07-12T00:00:00Z")])
        let gga2 = decodeOne(&d, nmeaSentence("GPGGA,000001.00,3806.62964,N,12237.61382,W,1,08,1.0,80.0,M,,M,,"), receivedAt: rx + 2000).readings
        #expect(times(gga2) == [epochMillis("2020-07-12T00:00:01Z")])
    }

    @Test func untimedSentencesTakeTheEpochTime() {
        var d = nmea()
        let rx = epochMillis("2020-07-11T22:37:45.4Z")
        _ = decodeOne(&d, "$GNGGA,223745.00,3806.62964,N,12237.61382,W,2,12,0.54,83.1,M,-29.5,M,,0000*44", receivedAt: rx)
        let gsa = decodeOne(&d, "$GNGSA,A,3,29,20,18,16,51,13,44,26,,,,,0.99,0.54,0.83,1*0E", receivedAt: rx + 50).readings
        #expect(times(gsa) == [epochMillis("2020-07-11T22:37:45Z")])
        let late = decodeOne(&d, "$GNGSA,A,3,29,20,18,16,51,13,44,26,,,,,0.99,0.54,0.83,1*0E", receivedAt: rx + 60_000).readings
        #expect(times(late) == [rx + 60_000])
    }

    @Test func resetForgetsSeenSentencesAndDate() {
        var d = nmea()
        _ = decodeOne(&d, "$GNGGA,223745.00,3806.62964,N,12237.61382,W,2,12,0.54,83.1,M,-29.5,M,,0000*44")
        let rmc = "$GNRMC,223745.00,A,3806.62964,N,12237.61382,W,0.040,,110720,,,D,V*0E"
        #expect(values(decodeOne(&d, rmc).readings)["latitude"] == nil)
        d.reset()
        #expect(values(decodeOne(&d, rmc).readings)["latitude"] == .number(38.110494))
        d.reset()
        let gga = decodeOne(&d, nmeaSentence("GPGGA,120000.00,,,,,0,00,,,,,,,"), receivedAt: epochMillis("2021-01-01T12:00:00.5Z")).readings
        #expect(times(gga) == [epochMillis("2021-01-01T12:00:00Z")])
    }
}

@Suite struct NMEALogTests {
    static let unsupportedKinds: Set<String> = ["GST", "GBS", "TXT"]

    private func check(_ file: String) throws -> [String: Int] {
        let sentences = try logSentences(file)
        #expect(sentences.count > 100)
        var d = nmea()
        var out: [Reading] = []
        var metrics: [String: Int] = [:]
        var checked = 0
        for (i, line) in sentences.enumerated() {
            guard hasValidChecksum(line) else { continue }
            checked += 1
            let kind = String(decoding: line[3..<6], as: UTF8.self)
            let before = out.count
            do throws(FrameError) {
                try d.decode(line, receivedAt: epochMillis("2020-07-11T22:37:46Z") + Int64(i) * 100, into: &out)
                #expect(!Self.unsupportedKinds.contains(kind), "\(file):\(i): \(kind) should be unsupported")
            } catch {
                #expect(error.reason == .unsupported && Self.unsupportedKinds.contains(kind),
                        "\(file):\(i): \(error)")
            }
            for r in out[before...] {
                metrics[r.metric, default: 0] += 1
                #expect(r.device == "gps")
                if case .number(let v) = r.value { #expect(v.isFinite) }
            }
        }
        #expect(checked == sentences.count, "every sentence of the log has a valid checksum")
        return metrics
    }

    @Test func trimbleRTKLog() throws {
        let m = try check("nmea-rtk.log")
        // 126 GGA + 126 RMC (one RMC comes before the first GGA) — every position exactly once.
        #expect(m["latitude"] == m["fix_quality"])
        #expect(m["speed"] == m["fix_valid"])
        #expect((m["fix_quality"] ?? 0) > 100)
    }

    @Test func ubloxLog() throws {
        let m = try check("ublox-neo-m9n-nmea.log")
        #expect(m["satellites_in_view.gps"] == 61)
        #expect(m["satellites_in_view.glonass"] == 61)
        #expect(m["satellites_in_view.galileo"] == 61)
        #expect(m["satellites_in_view.beidou"] == 61)
        #expect(m["fix_type"] == 244)
        #expect(m["latitude"] == 62)      // 61 GGA + the first RMC, before any GGA
        #expect(m["speed"] == 61)         // from RMC; VTG is shadowed
    }

    @Test func logPositionsAreWhereTheReceiversWere() throws {
        for (file, lat, lon) in [("nmea-rtk.log", 41.575, -93.7505), ("ublox-neo-m9n-nmea.log", 38.1105, -122.6269)] {
            // RMC dates: 2020-03-18 and 2020-07-11 (the RTK log starts with a GGA: the date of
            // receivedAt applies until the first RMC).
            let expectedDay = file.hasPrefix("nmea-rtk") ? epochMillis("2020-03-18T00:00:00Z") : epochMillis("2020-07-11T00:00:00Z")
            var d = nmea()
            var out: [Reading] = []
            for line in try logSentences(file) { try? d.decode(line, receivedAt: expectedDay + 50_000_000, into: &out) }
            for r in out where r.metric == "latitude" || r.metric == "longitude" {
                guard case .number(let v) = r.value else { Issue.record("not a number"); continue }
                #expect(abs(v - (r.metric == "latitude" ? lat : lon)) < 0.001, "\(file) \(r)")
            }
            for r in out { #expect(r.time >= expectedDay && r.time < expectedDay + 86_400_000, "\(file) \(r)") }
        }
    }

    @Test func corruptingOneCharacterGivesBadChecksum() throws {
        var rng = SplitMix64(seed: 183)
        let replacements = Array("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ.,-".utf8)
        var cases = 0
        for file in ["nmea-rtk.log", "ublox-neo-m9n-nmea.log"] {
            for (index, line) in try logSentences(file).enumerated() {
                guard let star = line.lastIndex(of: UInt8(ascii: "*")) else { continue }
                // Every position of the first sentences, one random position of the others.
                let positions = index < 25 ? Array(1..<star) : [Int.random(in: 1..<star, using: &rng)]
                for pos in positions {
                    var bad = line
                    var c = replacements.randomElement(using: &rng)!
                    while c == line[pos] { c = replacements.randomElement(using: &rng)! }
                    bad[pos] = c
                    var d = nmea(false)
                    var out: [Reading] = []
                    do throws(FrameError) {
                        try d.decode(bad, receivedAt: 0, into: &out)
                        Issue.record("corrupted sentence decoded: \(String(decoding: bad, as: UTF8.self))")
                    } catch {
                        #expect(error.reason == .badChecksum, "\(String(decoding: bad, as: UTF8.self)): \(error)")
                    }
                    #expect(out.isEmpty)
                    cases += 1
                }
            }
        }
        #expect(cases > 2000)
    }
}

private extension String {
    /// The same sentence with its checksum in lowercase hex.
    func lowercasedHex() -> String {
        guard let star = lastIndex(of: "*") else { return self }
        return String(self[...star]) + self[index(after: star)...].lowercased()
    }
}
