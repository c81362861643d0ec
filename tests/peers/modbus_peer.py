#!/usr/bin/env python3
"""An independent Modbus peer for fieldgate's tests, built on pymodbus.

It encodes typed values into registers with Python's struct module (not with
fieldgate's codec), so a test that reads them back through fieldgate checks the
decoder against a second implementation.

usage: modbus_peer.py POINTS.json (--tcp PORT | --rtu PTY)
POINTS.json: [{"unit": 1, "table": "hr|ir|co|di", "address": 0, "type": "f32",
               "order": "ABCD", "value": 1.5, "length": 4, "bit": 3}, ...]
Unmapped addresses answer exception 2 (illegal data address).
Prints "ready" on stdout once serving.
"""
import asyncio
import json
import struct
import sys
from collections import defaultdict

from pymodbus.datastore import ModbusDeviceContext, ModbusServerContext, ModbusSparseDataBlock
from pymodbus.server import StartAsyncSerialServer, StartAsyncTcpServer

FORMATS = {"u16": ">H", "i16": ">h", "u32": ">I", "i32": ">i", "f32": ">f",
           "u64": ">Q", "i64": ">q", "f64": ">d"}


def words_of(point):
    t, order = point["type"], point.get("order", "ABCD")
    if t == "string":
        raw = point["value"].encode("ascii").ljust(point["length"] * 2, b"\0")
    else:
        raw = struct.pack(FORMATS[t], point["value"])
    words = [raw[i:i + 2] for i in range(0, len(raw), 2)]
    if order in ("BADC", "DCBA"):
        words = [w[::-1] for w in words]
    if order in ("CDAB", "DCBA") and t != "string":
        words = words[::-1]
    return [int.from_bytes(w, "big") for w in words]


def build(points):
    tables = defaultdict(lambda: defaultdict(dict))
    for p in points:
        table = tables[p["unit"]][p["table"]]
        if p["type"] == "bool":
            table[p["address"]] = 1 if p["value"] else 0
        elif p["type"] == "bit":
            cur = table.get(p["address"], 0)
            mask = 1 << p["bit"]
            table[p["address"]] = (cur | mask) if p["value"] else (cur & ~mask)
        else:
            for i, w in enumerate(words_of(p)):
                table[p["address"] + i] = w
    devices = {}
    for unit, t in tables.items():
        blk = {name: ModbusSparseDataBlock({a: v for a, v in t.get(name, {}).items()} or {65535: 0})
               for name in ("hr", "ir", "co", "di")}
        devices[unit] = ModbusDeviceContext(**blk)
    return ModbusServerContext(devices=devices, single=False)


async def main():
    points = json.load(open(sys.argv[1]))
    context = build(points)
    mode, where = sys.argv[2], sys.argv[3]
    print("ready", flush=True)
    if mode == "--tcp":
        await StartAsyncTcpServer(context=context, address=("127.0.0.1", int(where)))
    else:
        await StartAsyncSerialServer(context=context, port=where, framer="rtu", baudrate=9600)


if __name__ == "__main__":
    asyncio.run(main())
