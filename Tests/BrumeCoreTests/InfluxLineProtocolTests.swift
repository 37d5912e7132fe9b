import BrumeCore
import Testing

@Suite struct InfluxLineProtocolTests {
    func line(_ r: Reading, _ m: InfluxLineProtocol.Measurement = .metric) -> String {
        var out: [UInt8] = []
        InfluxLineProtocol.encode([r], gateway: "gw-01", measurement: m, into: &out)
        return String(decoding: out, as: UTF8.self)
    }

    @Test func numbersBooleansAndStrings() {
        #expect(line(Reading(device: "boiler", metric: "temperature", time: 1_764_169_999_000, value: .number(71.5)))
                == "temperature,device=boiler,gw=gw-01 value=71.5 1764169999000\n")
        #expect(line(Reading(device: "valve", metric: "open", time: 5, value: .bool(true))) == "open,device=valve,gw=gw-01 value=true 5\n")
        #expect(line(Reading(device: "d", metric: "state", time: 5, value: .string(#"say "hi"\"#))) == #"state,device=d,gw=gw-01 value="say \"hi\"\\" 5"# + "\n")
        #expect(line(Reading(device: "boiler", metric: "t", time: 1, value: .number(2)), .device) == "boiler,gw=gw-01 t=2 1\n")
        // A field per metric: a string and a number metric of one device do not conflict.
        #expect(line(Reading(device: "boiler", metric: "state x=y", time: 1, value: .string("on")), .device) == "boiler,gw=gw-01 state\\ x\\=y=\"on\" 1\n")
    }

    @Test func specialCharactersAreEscaped() {
        // Commas and spaces in measurements; also equals signs in tag values; newlines cannot appear.
        #expect(line(Reading(device: "a b,c=d", metric: "x y,z", time: 1, value: .number(1)))
                == #"x\ y\,z,device=a\ b\,c\=d,gw=gw-01 value=1 1"# + "\n")
        #expect(line(Reading(device: "l1\nl2", metric: "m", time: 1, value: .number(1))) == #"m,device=l1\ l2,gw=gw-01 value=1 1"# + "\n")
    }
}
