import ArgumentParser

/// firmware-sim: plays the devices around a Brume gateway (and its cloud).
@main
struct FirmwareSim: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "firmware-sim",
        abstract: "Simulated device firmware and test peers for Brume.",
        subcommands: [Sensors.self, LoadGen.self, Cloud.self, Count.self, SerialDevice.self, Actuator.self, ModbusSlave.self, OneWireTree.self, PacketForwarder.self, GPIOPulses.self])
}
