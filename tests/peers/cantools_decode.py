#!/usr/bin/env python3
"""Decodes CAN frames with cantools, an independent DBC implementation, for fieldgate's
cross-check test.

usage: cantools_decode.py FILE.dbc FRAMES.json
FRAMES.json: [{"id": 256, "data": "a00fec10..."}, ...]   (id without the extended flag)
prints JSON: {"frames": [...], "twice": {message: [signal, ...]}}: one object per frame,
signal name -> physical value (raw numbers, no labels), or null where cantools refuses
the frame; and per message the signal names it holds more than once (cantools keeps the
last of them, fieldgate the first: not comparable).

Signals are named as in their SG_ lines, as fieldgate names them: cantools would use a
`SystemSignalLongSymbol` attribute instead, so those attributes are left out.
"""
import collections
import json
import sys

import cantools


def load(path):
    raw = open(path, "rb").read()
    if b'"SystemSignalLongSymbol"' not in raw:
        return cantools.database.load_file(path, strict=False)
    text = raw.decode("cp1252")
    kept = [line for line in text.splitlines(keepends=True)
            if not line.startswith('BA_ "SystemSignalLongSymbol"')]
    return cantools.database.load_string("".join(kept), database_format="dbc", strict=False)


def main():
    db = load(sys.argv[1])
    frames = json.load(open(sys.argv[2]))
    twice = {}
    for m in db.messages:
        counts = collections.Counter(s.name for s in m.signals)
        names = sorted(n for n, c in counts.items() if c > 1)
        if names:
            twice[m.name] = names
    out = []
    for f in frames:
        try:
            decoded = db.decode_message(f["id"], bytes.fromhex(f["data"]),
                                        decode_choices=False, scaling=True)
            # repr keeps NaN and infinities (random float bits) representable in JSON
            out.append({k: repr(float(v)) for k, v in decoded.items()})
        except Exception:  # noqa: BLE001 - any refusal is reported as null
            out.append(None)
    json.dump({"frames": out, "twice": twice}, sys.stdout)


if __name__ == "__main__":
    main()
