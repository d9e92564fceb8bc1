"""ik_llama.cpp's IQ4_KS / IQ4_KSS (workbench/families/iqk.py), a plug-in added as one module
and one registry line. No byte oracle exists here (mainline llama.cpp has no such types), so
the tests hold the format to its definition: the layout and sizes in closed form, an
independent numpy decoder of the bytes (written from the layout, not from the kernel) equal to
the codec's dequantization, every IQ4_KSS word of even parity, the IQ4_NL fallback for rows
256 does not divide (its bytes equal to the IQ4_NL codec's), the importance path, non-finite
input refused, and where the errors land on MiniLM's 1536-wide tensors: IQ4_KS at IQ4_XS's
error for 0.02 bpw less, IQ4_KSS between IQ4_XS and Q3_K."""
from __future__ import annotations

import numpy as np
import pytest

from workbench import families
from workbench.codecs import NonFiniteError, codec_for
from workbench.families import iqk
from workbench.formats import GRIDS, FormatError, parse
from workbench.sweep import measure

# IQ4_NL's grid, and the same + 4 (ik_llama.cpp's iq4k_values), from its definition
GRID = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.float32)
WIDE = ["encoder.layer.0.output.dense.weight", "encoder.layer.3.output.dense.weight",
        "encoder.layer.5.output.dense.weight"]


def decode(packed: np.ndarray, shape: tuple[int, int], kss: bool) -> np.ndarray:
    """The layout of the module docstring, in numpy: f32 row scale, then per super-block of 256
    8 block bytes + 128 nibble bytes (IQ4_KS) or 64 uint16 words (IQ4_KSS)."""
    rows, cols = shape
    nsb = cols // 256
    per = 128 if kss else 136
    raw = packed.reshape(rows, 4 + nsb * per)
    d = raw[:, :4].copy().view("<f4")[:, 0]
    y = np.empty(shape, np.float32)
    for r in range(rows):
        for s in range(nsb):
            sb = raw[r, 4 + s * per: 4 + (s + 1) * per]
            if kss:
                words = sb.view("<u2").astype(np.int64).reshape(8, 8)      # [block, k]
                block_bytes = (words & 1) << np.arange(8)
                block_bytes = block_bytes.sum(axis=1)
                g = (words >> 1) & 0x7FFF
                v = g ^ (g << 1)                                            # back to the nibble word
                # word k holds weights 2k, 2k+16, 2k+1, 2k+17 in its four nibbles
                q = np.empty((8, 32), np.int64)
                for k in range(8):
                    for j, w in enumerate((2 * k, 2 * k + 16, 2 * k + 1, 2 * k + 17)):
                        q[:, w] = (v[:, k] >> (4 * j)) & 0xF
            else:
                block_bytes = sb[:8].astype(np.int64)
                nib = sb[8:].reshape(8, 16).astype(np.int64)
                q = np.concatenate([nib & 0xF, nib >> 4], axis=1)
            shift = (block_bytes & 1) * 4
            scale = (block_bytes & 254) - 127
            vals = GRID[q] + shift[:, None]
            y[r, s * 256:(s + 1) * 256] = (d[r] * scale[:, None].astype(np.float32) * vals).reshape(-1)
    return y


def nmse(x, y) -> float:
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    return float(((x64 - y64) ** 2).sum() / (x64 ** 2).sum())


def test_names_layout_and_registry():
    assert families.PLUGINS["iqk"] == "workbench.families.iqk"
    assert [s.name for s in GRIDS["iqk"]()] == ["IQ4_KS", "IQ4_KSS"]
    for name, per, bpw in (("IQ4_KS", 136, 4.25), ("IQ4_KSS", 128, 4.0)):
        s = parse(name)
        assert s.family == "iqk" and s.name == name and parse(s.name) == s
        assert s.bpw() == bpw
        assert s.nbytes((3, 512)) == 3 * (4 + 2 * per)                 # f32 row scale + super-blocks
        assert s.nbytes((3, 384)) == parse("IQ4_NL").nbytes((3, 384))   # the fallback's size
        assert not s.has_fallback or s.plan((3, 384))[0] == "IQ4_NL"
    for bad in ("IQ4_K", "IQ4_KSSS", "iq4_ks"):
        with pytest.raises(FormatError):
            parse(bad)


@pytest.mark.parametrize("name", ["IQ4_KS", "IQ4_KSS"])
def test_bytes_decode_independently_on_real_tensors(minilm_tensors, name):
    kss = name == "IQ4_KSS"
    codec = codec_for(parse(name))
    for t in WIDE:
        x = minilm_tensors[t][:96]                        # 96 rows × 1536: 6 super-blocks per row
        packed = codec.quantize(x)
        assert packed.size == parse(name).nbytes(x.shape)
        y = codec.dequantize(packed, x.shape)
        assert np.array_equal(decode(packed, x.shape, kss), y)
        assert np.isfinite(y).all() and nmse(x, y) < 0.02
        if kss:                                           # every stored nibble word has even parity
            raw = packed.reshape(x.shape[0], -1)[:, 4:].copy().view("<u2").astype(np.int64)
            g = (raw >> 1) & 0x7FFF
            v = g ^ (g << 1)
            parity = np.zeros_like(v)
            for b in range(16):
                parity ^= (v >> b) & 1
            assert not parity.any()
        else:                                             # block scales are odd integers in [-127, 127]
            raw = packed.reshape(x.shape[0], -1)[:, 4:].reshape(x.shape[0], -1, 136)[:, :, :8].astype(int)
            assert ((raw & 254) - 127).min() >= -127 and ((raw & 254) - 127).max() <= 127


def test_errors_land_between_iq4_xs_and_q3_k(minilm_tensors):
    """On the native (1536-wide) tensors: IQ4_KS matches IQ4_XS (within 10 %) at 4.25 vs 4.25 bpw
    + a row scale; IQ4_KSS, 0.25 bpw cheaper, is worse than IQ4_XS but well better than Q3_K."""
    err = {n: [] for n in ("IQ4_KS", "IQ4_KSS", "IQ4_XS", "Q3_K", "Q4_K")}
    for t in WIDE:
        x = minilm_tensors[t]
        for n in err:
            c = codec_for(parse(n))
            err[n].append(nmse(x, c.dequantize(c.quantize(x), x.shape)))
    m = {n: float(np.mean(v)) for n, v in err.items()}
    assert abs(m["IQ4_KS"] / m["IQ4_XS"] - 1) < 0.1, m
    assert m["Q4_K"] < m["IQ4_XS"] < m["IQ4_KSS"] < 0.7 * m["Q3_K"], m


def test_fallback_writes_iq4_nl_bytes(minilm_tensors):
    x = minilm_tensors["encoder.layer.0.attention.self.query.weight"]     # 384 wide
    spec = parse("IQ4_KSS")
    applied, why = spec.plan(x.shape)
    assert applied == "IQ4_NL" and "384" in why and "256" in why
    packed = codec_for(spec).quantize(x)
    nl = codec_for(parse("IQ4_NL"))
    assert np.array_equal(packed, nl.quantize(x))
    row = measure(spec, x)
    assert row["applied_type"] == "IQ4_NL" and "IQ4_NL" in row["fallback_note"]
    assert row["nbytes"] == packed.size and row["bpw"] == 4.5 and row["row_tail"] == 0


@pytest.mark.parametrize("name", ["IQ4_KS", "IQ4_KSS"])
def test_importance_is_used_and_lowers_its_weighted_error(minilm_tensors, name):
    x = minilm_tensors["encoder.layer.2.output.dense.weight"][:64]
    rng = np.random.default_rng(3)
    imp = (rng.random(x.shape[1]) ** 4 * 100).astype(np.float32)          # a few columns matter
    codec = codec_for(parse(name))
    assert codec.uses_importance(x.shape)
    plain = codec.dequantize(codec.quantize(x), x.shape)
    weighted = codec.dequantize(codec.quantize(x, imp), x.shape)
    assert not np.array_equal(plain, weighted)

    def werr(y):
        return float((imp * (x.astype(np.float64) - y) ** 2).sum())
    assert werr(weighted) < werr(plain)
    with pytest.raises(ValueError):
        codec.quantize(x, imp[:100])                                      # wrong length: refused


@pytest.mark.parametrize("name", ["IQ4_KS", "IQ4_KSS"])
def test_edges(name):
    codec = codec_for(parse(name))
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((6, 512)) * 0.02).astype(np.float32)
    x[1] = 0.0                                            # an all-zero row: scale 0, zeros back
    x[2, :32] = 0.0                                       # an all-zero block
    x[3, :64] = np.float32(1e-41)                         # subnormal blocks
    x[4] *= np.float32(1e30)                              # huge
    y = codec.dequantize(codec.quantize(x), x.shape)
    assert np.isfinite(y).all()
    assert not y[1].any()                                 # row scale 0
    # block scales are odd (|l| >= 1) and the grid has no 0: a zero block in a live row decodes
    # to the smallest level, d·1·1, four orders below the row's absmax
    assert 0 < np.abs(y[2, :32]).max() < 1e-3 * np.abs(x[2]).max()
    assert nmse(x[4:5], y[4:5]) < 0.03 and nmse(x[5:], y[5:]) < 0.03
    for bad in (np.nan, np.inf):
        z = x.copy()
        z[0, 7] = bad
        with pytest.raises(NonFiniteError):
            codec.quantize(z)


@pytest.mark.parametrize("name", ["IQ4_KS", "IQ4_KSS"])
def test_a_power_of_two_scales_only_the_row_scale(minilm_tensors, name):
    """x·2^40 (rows past 2^16 are searched as x / 2^k) gives the same codes and block scales as
    x, and row scales exactly 2^40 times larger, with and without an importance vector."""
    x = minilm_tensors["encoder.layer.1.output.dense.weight"][:16]
    imp = np.random.default_rng(2).random(x.shape[1]).astype(np.float32)
    codec = codec_for(parse(name))
    for w in (None, imp):
        a = codec.quantize(x, w).reshape(16, -1)
        b = codec.quantize(x * np.float32(2.0 ** 40), w).reshape(16, -1)
        assert np.array_equal(a[:, 4:], b[:, 4:])
        assert np.array_equal(a[:, :4].copy().view("<f4") * np.float32(2.0 ** 40), b[:, :4].copy().view("<f4"))


def test_the_sweep_help_names_every_grid():
    from workbench.cli import build_parser
    sweep = next(a for a in build_parser()._subparsers._group_actions[0].choices["sweep"]._actions
                 if "--formats" in a.option_strings)
    for grid in GRIDS:
        assert grid in sweep.help, grid


def test_parsing_every_name_loads_no_numba():
    """The dashboard parses every stored name; plug-ins keep Numba out of that path."""
    import subprocess
    import sys
    code = ("import sys; from workbench.formats import GRIDS, parse; "
            "[parse(s.name) for g in ('codebooks', 'iqk', 'ggml') for s in GRIDS[g]()]; "
            "from workbench.views.pareto import kind_of; kind_of('iqk', None, False); "
            "print('numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr
