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
Each frame goes in its own PUSH_DATA; a PULL_DATA goes first. After each PUSH_DATA the forwarder
listens `--downlink-wait` seconds for PULL_RESP: each downlink is checked like a device would
(MIC with the NwkSKey in the downlink direction, FRMPayload decrypted with the AppSKey) and
confirmed with TX_ACK (`--tx-error` to refuse it). Prints a JSON summary: the acknowledgements
received (every PUSH_DATA and PULL_DATA must be acknowledged with its token), the uplinks' tmst
and the downlinks received.
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


def keystream_crypt(key, devaddr_le, fcnt, data, direction):
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    out = b""
    for i in range((len(data) + 15) // 16):
        out += enc.update(bytes([1, 0, 0, 0, 0, direction]) + devaddr_le + fcnt.to_bytes(4, "little") + bytes([0, i + 1]))
    return bytes(a ^ b for a, b in zip(data, out))


def check_downlink(phy, frames):
    """What a Class A device would make of a downlink: its fields, MIC check, clear payload."""
    out = {"mhdr": phy[0], "ok": False}
    if len(phy) < 12:
        return out
    devaddr_le, fctrl, fcnt = phy[1:5], phy[5], int.from_bytes(phy[6:8], "little")
    msg, mic = phy[:-4], phy[-4:]
    devaddr = devaddr_le[::-1].hex().upper()
    keys = next((f for f in frames if f["devaddr"].upper() == devaddr), None)
    out.update({"devaddr": devaddr, "fcnt": fcnt, "ack": bool(fctrl & 0x20)})
    if keys is None:
        return out
    nwk, app = bytes.fromhex(keys["nwk"]), bytes.fromhex(keys["app"])
    c = cmac.CMAC(algorithms.AES(nwk))
    c.update(bytes([0x49, 0, 0, 0, 0, 1]) + devaddr_le + fcnt.to_bytes(4, "little") + bytes([0, len(msg)]) + msg)
    out["mic_ok"] = c.finalize()[:4] == mic
    opts_len = fctrl & 0x0F
    if len(msg) > 8 + opts_len:
        fport = msg[8 + opts_len]
        out["fport"] = fport
        out["payload"] = keystream_crypt(nwk if fport == 0 else app, devaddr_le, fcnt, msg[9 + opts_len:], 1).hex()
    out["ok"] = out["mic_ok"] and phy[0] == 0x60
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--eui", default="AA555A0000000001")
    ap.add_argument("--frames", help="the JSON list of frames (default: standard input)")
    ap.add_argument("--downlink-wait", type=float, default=0.3, help="seconds to listen for PULL_RESP after each PUSH_DATA")
    ap.add_argument("--tx-error", default="NONE", help="the TX_ACK error to answer (NONE: sent)")
    args = ap.parse_args()
    if args.frames:
        with open(args.frames) as fh:
            frames = json.load(fh)
    else:
        frames = json.load(sys.stdin)
    eui = bytes.fromhex(args.eui)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    acks = {"push": 0, "pull": 0, "missing": 0, "uplinks": [], "downlinks": []}

    def listen_downlinks():
        s.settimeout(args.downlink_wait)
        try:
            while True:
                data, _ = s.recvfrom(4096)
                if len(data) >= 4 and data[3] == 3:
                    txpk = json.loads(data[4:])["txpk"]
                    d = check_downlink(base64.b64decode(txpk["data"]), frames)
                    d.update({k: txpk.get(k) for k in ("tmst", "freq", "datr", "codr", "ipol", "imme", "size")})
                    acks["downlinks"].append(d)
                    s.sendto(bytes([2]) + data[1:3] + bytes([5]) + eui + json.dumps({"txpk_ack": {"error": args.tx_error}}).encode(), (args.host, args.port))
        except socket.timeout:
            pass
        s.settimeout(3)

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
        acks["uplinks"].append({"devaddr": f["devaddr"], "fcnt": f["fcnt"], "tmst": rx["tmst"]})
        for _ in range(f.get("repeat", 1)):
            exchange(bytes([2]) + random.randbytes(2) + bytes([0]) + eui + body, 1)
            listen_downlinks()
    print(json.dumps(acks))


if __name__ == "__main__":
    main()
