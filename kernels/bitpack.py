"""Bit packing for every family's kernels: the public primitives a new family reuses.

Two bit orders, both padding a stream's last byte with zero bits (``encodings.packed_bytes``
gives the size):

* LSB-first (the uniform grid, ``kernels.uniform``): code i occupies the bits after code i-1,
  starting at bit 0 of the first byte — ``pack_lsb`` / ``unpack_lsb`` over an array of codes.
* MSB-first (bitsandbytes' nibble order: the first code in the high nibble; the codebook family,
  ``kernels.codebook``): a streaming accumulator — ``msb_push`` one code at a time, ``msb_end``
  to pad and flush the last byte, ``msb_pull`` to read one code back.

Multi-byte fields (stored scales, zero-points) are little-endian: ``put_le`` / ``get_le``.
All are Numba functions; the accumulator's (pos, acc, nacc) travel as a tuple, inlined.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def put_le(buf, pos, code, nbytes):
    """Write the low ``nbytes`` bytes of ``code`` little-endian at buf[pos]; returns the next pos."""
    for k in range(nbytes):
        buf[pos + k] = (code >> (8 * k)) & 0xFF
    return pos + nbytes


@njit(cache=True, nogil=True, inline="always")
def get_le(buf, pos, nbytes):
    """The little-endian uint32 of buf[pos:pos+nbytes] (nbytes <= 4)."""
    code = np.uint32(0)
    for k in range(nbytes):
        code |= np.uint32(buf[pos + k]) << np.uint32(8 * k)
    return code


@njit(cache=True, nogil=True)
def pack_lsb(codes, n, bits, buf, pos):
    """codes[:n] (each < 2**bits, bits <= 32) LSB-first into buf from pos; returns the next pos."""
    acc = np.uint64(0)
    nacc = 0
    for i in range(n):
        acc |= np.uint64(codes[i]) << np.uint64(nacc)
        nacc += bits
        while nacc >= 8:
            buf[pos] = np.uint8(acc & np.uint64(0xFF))
            pos += 1
            acc >>= np.uint64(8)
            nacc -= 8
    if nacc > 0:  # a short tail unit may end mid-byte: its bitstream is padded to a byte
        buf[pos] = np.uint8(acc & np.uint64(0xFF))
        pos += 1
    return pos


@njit(cache=True, nogil=True)
def unpack_lsb(buf, pos, n, bits, codes):
    """The n codes ``pack_lsb`` wrote from pos into codes[:n] (int32); returns the next pos."""
    acc = np.uint64(0)
    nacc = 0
    mask = np.uint64((1 << bits) - 1)
    for i in range(n):
        while nacc < bits:
            acc |= np.uint64(buf[pos]) << np.uint64(nacc)
            pos += 1
            nacc += 8
        codes[i] = np.int32(acc & mask)
        acc >>= np.uint64(bits)
        nacc -= bits
    return pos


@njit(cache=True, nogil=True, inline="always")
def msb_push(out, pos, acc, nacc, code, width):
    """Append one ``width``-bit code to the MSB-first stream; flushes whole bytes to out[pos:].
    Start with (pos, np.uint64(0), 0); returns the new (pos, acc, nacc)."""
    acc = (acc << np.uint64(width)) | np.uint64(code)
    nacc += width
    while nacc >= 8:
        nacc -= 8
        out[pos] = (acc >> np.uint64(nacc)) & 0xFF
        pos += 1
    acc &= (np.uint64(1) << np.uint64(nacc)) - np.uint64(1)
    return pos, acc, nacc


@njit(cache=True, nogil=True, inline="always")
def msb_end(out, pos, acc, nacc):
    """Pad the stream's last partial byte with zero bits and write it; returns the next pos."""
    if nacc:
        out[pos] = (acc << np.uint64(8 - nacc)) & 0xFF
        pos += 1
    return pos


@njit(cache=True, nogil=True, inline="always")
def msb_pull(packed, pos, acc, nacc, width):
    """Read the next ``width``-bit code of an MSB-first stream: (code, pos, acc, nacc)."""
    while nacc < width:
        acc = (acc << np.uint64(8)) | np.uint64(packed[pos])
        pos += 1
        nacc += 8
    nacc -= width
    code = (acc >> np.uint64(nacc)) & np.uint64((1 << width) - 1)
    acc &= (np.uint64(1) << np.uint64(nacc)) - np.uint64(1)
    return code, pos, acc, nacc
