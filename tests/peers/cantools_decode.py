#!/usr/bin/env python3
"""Decodes CAN frames with cantools, an independent DBC implementation, for fieldgate's
cross-check test.

usage: cantools_decode.py FILE.dbc FRAMES.json
FRAMES.json: [{"id": 256, "data": "a00fec10..."}, ...]   (id without the extended flag)
prints JSON: one object per frame, signal name -> physical value (raw numbers, no labels),
or null where cantools refuses the frame.
"""
import json
import sys

import cantools


def main():
    db = cantools.database.load_file(sys.argv[1], strict=False)
    frames = json.load(open(sys.argv[2]))
    out = []
    for f in frames:
        try:
            decoded = db.decode_message(f["id"], bytes.fromhex(f["data"]),
                                        decode_choices=False, scaling=True)
            # repr keeps NaN and infinities (random float bits) representable in JSON
            out.append({k: repr(float(v)) for k, v in decoded.items()})
        except Exception as e:  # noqa: BLE001 - any refusal is reported as null
            out.append(None)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
