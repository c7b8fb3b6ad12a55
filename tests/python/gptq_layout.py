"""The GPTQ checkpoint layout in numpy, as GPTQModel and AutoGPTQ store it
(docs/gptq.md), shared by test_gptq.py and test_quantize.py: qweight
[K/8, N] holds the 4-bit codes packed down the input dimension (column k in
bits 4*(k % 8)), qzeros [n_groups, N/8] the zero points packed across the
outputs, scales [n_groups, N] f16, g_idx [K] each column's group; format
"gptq" stores zero - 1, "gptq_v2" the zero itself. At 8 bits a word holds
4 codes: qweight [K/4, N], qzeros [n_groups, N/4]."""

import numpy as np


def pack(codes, zeros, scales, g_idx, v1, bits=4):
    """The stored tensors: qweight [K/per, N], qzeros [n_groups, N/per] as
    int32, per = 32 / bits codes a word."""
    N, K = codes.shape
    per, mask = 32 // bits, np.uint32((1 << bits) - 1)
    qweight = np.zeros((K // per, N), dtype=np.uint32)
    for i in range(per):
        qweight |= codes.T[i::per, :].astype(np.uint32) << np.uint32(bits * i)
    stored = zeros.astype(np.uint32) - np.uint32(1 if v1 else 0)
    qzeros = np.zeros((zeros.shape[0], N // per), dtype=np.uint32)
    for i in range(per):
        qzeros |= (stored[:, i::per] & mask) << np.uint32(bits * i)
    return {"qweight": qweight.view(np.int32), "qzeros": qzeros.view(np.int32),
            "scales": scales, "g_idx": g_idx}


def unpack(qweight, qzeros, v1, bits=4):
    """codes [N, K] and true zeros [n_groups, N] (uint16) of stored tensors."""
    words, zero_words = qweight.view(np.uint32), qzeros.view(np.uint32)
    per, mask = 32 // bits, np.uint32((1 << bits) - 1)
    Kw, N = words.shape
    codes = np.zeros((N, Kw * per), dtype=np.uint16)
    for i in range(per):
        codes[:, i::per] = ((words >> np.uint32(bits * i)) & mask).T
    zeros = np.zeros((zero_words.shape[0], N), dtype=np.uint16)
    for i in range(per):
        zeros[:, i::per] = (zero_words >> np.uint32(bits * i)) & mask
    return codes, zeros + np.uint16(1 if v1 else 0)


def dequantize(codes, zeros, scales, g_idx):
    """W [N, K] = (code - zero) * scale in f32, the group of column k g_idx[k]."""
    z = zeros[g_idx, :].T.astype(np.float32)
    s = scales[g_idx, :].T.astype(np.float32)
    return (codes.astype(np.float32) - z) * s
