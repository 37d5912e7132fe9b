#!/usr/bin/env python3
"""A Semtech UDP packet forwarder (PROTOCOL.TXT v2) sending LoRaWAN 1.0.x uplinks, for the
end-to-end tests: an implementation independent of Brume's (frames built here with Python's
`cryptography` — AES-CMAC for the MIC, AES-ECB for the FRMPayload keystream — and payloads
encoded by PyPI's `pycayennelpp`).

    lorawan_forwarder.py --port 1700 --eui AA555A0000000001 --frames frames.json

frames.json: a list of
    {"devaddr": "26011BDA", "nwk": "32 hex", "app": "32 hex", "fcnt": 7, "fport": 1,
     "lpp": [["temperature", 1, 22.5], ["humidity", 2, 41.5]]  or  "raw": "hex",
     "rssi": -57, "lsnr": 7.5, "stat": 1, "corrupt_mic": false, "repeat": 1}
Each frame goes in its own PUSH_DATA; a PULL_DATA goes first. Prints a JSON summary: the
acknowledgements received (every PUSH_DATA and PULL_DATA must be acknowledged with its token).
"""
import argparse
import base64
import json
import random
import socket
import sys

from cayennelpp import LppFrame
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def block(first, devaddr_le, fcnt, last):
    return bytes([first, 0, 0, 0, 0, 0]) + devaddr_le + fcnt.to_bytes(4, "little") + bytes([0, last])


def uplink(f):
    devaddr_le = bytes.fromhex(f["devaddr"])[::-1]
    nwk, app = bytes.fromhex(f["nwk"]), bytes.fromhex(f["app"])
    fcnt = f["fcnt"]
    if "lpp" in f:
        frame = LppFrame()
        for kind, channel, value in f["lpp"]:
            if isinstance(value, list):
                getattr(frame, "add_" + kind)(channel, *value)
            else:
                getattr(frame, "add_" + kind)(channel, value)
        clear = bytes(frame)
    else:
        clear = bytes.fromhex(f.get("raw", ""))
    enc = Cipher(algorithms.AES(nwk if f.get("fport", 1) == 0 else app), modes.ECB()).encryptor()
    stream = b"".join(enc.update(block(0x01, devaddr_le, fcnt, i + 1)) for i in range((len(clear) + 15) // 16))
    frm = bytes(a ^ b for a, b in zip(clear, stream))
    msg = bytes([0x80 if f.get("confirmed") else 0x40]) + devaddr_le + bytes([0]) + (fcnt & 0xFFFF).to_bytes(2, "little")
    msg += bytes([f.get("fport", 1)]) + frm
    c = cmac.CMAC(algorithms.AES(nwk))
    c.update(block(0x49, devaddr_le, fcnt, len(msg)) + msg)
    mic = bytearray(c.finalize()[:4])
    if f.get("corrupt_mic"):
        mic[0] ^= 0xFF
    return msg + bytes(mic)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--eui", default="AA555A0000000001")
    ap.add_argument("--frames", help="the JSON list of frames (default: standard input)")
    args = ap.parse_args()
    if args.frames:
        with open(args.frames) as fh:
            frames = json.load(fh)
    else:
        frames = json.load(sys.stdin)
    eui = bytes.fromhex(args.eui)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    acks = {"push": 0, "pull": 0, "missing": 0}

    def exchange(packet, expect_id):
        token = packet[1:3]
        s.sendto(packet, (args.host, args.port))
        try:
            data, _ = s.recvfrom(1024)
        except socket.timeout:
            acks["missing"] += 1
            return
        if len(data) >= 4 and data[0] == 2 and data[1:3] == token and data[3] == expect_id:
            acks["push" if expect_id == 1 else "pull"] += 1
        else:
            acks["missing"] += 1

    exchange(bytes([2]) + random.randbytes(2) + bytes([2]) + eui, 4)
    for f in frames:
        phy = uplink(f)
        rx = {"tmst": random.randrange(1 << 32), "chan": 0, "rfch": 0, "freq": 868.1, "stat": f.get("stat", 1),
              "modu": "LORA", "datr": "SF7BW125", "codr": "4/5", "rssi": f.get("rssi", -60), "lsnr": f.get("lsnr", 7.0),
              "size": len(phy), "data": base64.b64encode(phy).decode()}
        body = json.dumps({"rxpk": [rx]}).encode()
        for _ in range(f.get("repeat", 1)):
            exchange(bytes([2]) + random.randbytes(2) + bytes([0]) + eui + body, 1)
    print(json.dumps(acks))


if __name__ == "__main__":
    main()
