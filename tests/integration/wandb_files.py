"""What a wandb run logged, read back from its offline `.wandb` file (no wandb server, no network)."""

from __future__ import annotations

import json
import struct
from pathlib import Path


def wandb_records(path: Path):
    """Records of a .wandb file (LevelDB-log framing: 32 KiB blocks, 7-byte record headers, protobuf payloads)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        if (left := 32768 - pos % 32768) < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            break
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            rec = pb.Record()
            rec.ParseFromString(buf)
            buf = b""
            yield rec


def read_run(run_file: Path) -> tuple[str, dict, list[dict]]:
    run_id, config, history = "", {}, []
    for rec in wandb_records(run_file):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            run_id = rec.run.run_id
            config = {item.key: json.loads(item.value_json) for item in rec.run.config.update}
        elif kind == "history":
            history.append(
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in rec.history.item}
            )
    return run_id, config, history
