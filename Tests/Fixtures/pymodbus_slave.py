#!/usr/bin/python3
"""An independent Modbus slave (pymodbus, Debian python3-pymodbus) for Brume's tests.

Serves the same constants as firmware-sim's libmodbus slaves, encoded here with
Python's struct module, so Brume's decoder is checked against a second encoder:

  holding/input 0 uint16 1000+unit, 1 int16 -1234,
  2-3 int32 -123456789 ABCD, 4-5 int32 CDAB, 8-9 float32 3.14159 ABCD, 10-11 CDAB,
  20-23 float64 e ABCD, 50..59 writable; coils 0..31 (i % 2); discrete i % 3 == 0.
  Unknown unit ids get exception 11 (gateway target failed to respond).

usage: pymodbus_slave.py (--tcp HOST:PORT | --rtu DEVICE) --units 1,2
"""
import argparse
import struct

from pymodbus.datastore import ModbusSequentialDataBlock, ModbusServerContext, ModbusSlaveContext
from pymodbus.server import StartSerialServer, StartTcpServer
from pymodbus.transaction import ModbusRtuFramer


def words(fmt, value, swap_words=False):
    raw = struct.pack(">" + fmt, value)
    w = [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]
    return list(reversed(w)) if swap_words else w


def registers(unit):
    r = [0] * 100
    r[0] = 1000 + unit
    r[1] = words("h", -1234)[0]
    r[2:4] = words("i", -123456789)
    r[4:6] = words("i", -123456789, swap_words=True)
    r[8:10] = words("f", 3.14159)
    r[10:12] = words("f", 3.14159, swap_words=True)
    r[20:24] = words("d", 2.718281828459045)
    r[28] = unit
    return r


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tcp")
    p.add_argument("--rtu")
    p.add_argument("--units", default="1")
    a = p.parse_args()
    slaves = {}
    for u in [int(x) for x in a.units.split(",")]:
        slaves[u] = ModbusSlaveContext(
            di=ModbusSequentialDataBlock(0, [1 if i % 3 == 0 else 0 for i in range(32)]),
            co=ModbusSequentialDataBlock(0, [i % 2 for i in range(32)]),
            hr=ModbusSequentialDataBlock(0, registers(u)),
            ir=ModbusSequentialDataBlock(0, registers(u)),
            zero_mode=True)
    context = ModbusServerContext(slaves=slaves, single=False)
    print("pymodbus slave", a.tcp or a.rtu, sorted(slaves), flush=True)
    if a.tcp:
        host, port = a.tcp.rsplit(":", 1)
        StartTcpServer(context=context, address=(host, int(port)))
    else:
        StartSerialServer(context=context, framer=ModbusRtuFramer, port=a.rtu, baudrate=115200, timeout=0.005)


if __name__ == "__main__":
    main()
