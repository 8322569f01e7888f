"""Finding where a fragmented MP4 stops being complete, without rewriting it.

A killed process or a full disk leaves a segment whose last fragment (moof + mdat) is cut short. Cutting
the file back to the end of the last complete fragment keeps every whole fragment, needs no free space
(unlike a remux), and leaves a file every player opens.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path


def complete_length(path: Path) -> int:
    """Byte length of the longest prefix made of whole boxes, ending after a whole fragment."""
    size = path.stat().st_size
    good = 0
    pending_moof = False
    with path.open("rb") as fh:
        offset = 0
        while offset + 8 <= size:
            fh.seek(offset)
            header = fh.read(16)
            box_size, box_type = struct.unpack(">I4s", header[:8])
            if box_size == 1 and len(header) >= 16:
                box_size = struct.unpack(">Q", header[8:16])[0]
            if box_size < 8 or offset + box_size > size:
                break  # size 0 ("to end of file") or cut short: incomplete
            end = offset + box_size
            if box_type == b"moof":
                pending_moof = True
            elif box_type == b"mdat" and pending_moof:
                pending_moof = False
                good = end
            elif not pending_moof:
                good = end
            offset = end
    return good


def truncate_to_complete(path: Path) -> int:
    """Cut an interrupted segment back to its last complete fragment; returns bytes removed."""
    size = path.stat().st_size
    keep = complete_length(path)
    if keep < size:
        with path.open("r+b") as fh:
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
    return size - keep
