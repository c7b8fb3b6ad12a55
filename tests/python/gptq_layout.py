"""The GPTQ checkpoint layout in numpy, as GPTQModel and AutoGPTQ store it
(docs/gptq.md), shared by test_gptq.py and test_quantize.py: qweight
[K/8, N] holds the 4-bit codes packed down the input dimension (column k in
bits 4*(k % 8)), qzeros [n_groups, N/8] the zero points packed across the
outputs, scales [n_groups, N] f16, g_idx [K] each column's group; format
"gptq" stores zero - 1, "gptq_v2" the zero itself."""

import numpy as np


def pack(codes, zeros, scales, g_idx, v1):
    """The stored tensors: qweight [K/8, N], qzeros [n_groups, N/8] as int32."""
    N, K = codes.shape
    qweight = np.zeros((K // 8, N), dtype=np.uint32)
    for i in range(8):
        qweight |= codes.T[i::8, :].astype(np.uint32) << np.uint32(4 * i)
    stored = zeros.astype(np.uint32) - np.uint32(1 if v1 else 0)
    qzeros = np.zeros((zeros.shape[0], N // 8), dtype=np.uint32)
    for i in range(8):
        qzeros |= (stored[:, i::8] & np.uint32(15)) << np.uint32(4 * i)
    return {"qweight": qweight.view(np.int32), "qzeros": qzeros.view(np.int32),
            "scales": scales, "g_idx": g_idx}


def unpack(qweight, qzeros, v1):
    """codes [N, K] and true zeros [n_groups, N] (uint8) of stored tensors."""
    words, zero_words = qweight.view(np.uint32), qzeros.view(np.uint32)
    K8, N = words.shape
    codes = np.zeros((N, K8 * 8), dtype=np.uint8)
    for i in range(8):
        codes[:, i::8] = ((words >> np.uint32(4 * i)) & np.uint32(15)).T
    zeros = np.zeros((zero_words.shape[0], N), dtype=np.uint8)
    for i in range(8):
        zeros[:, i::8] = (zero_words >> np.uint32(4 * i)) & np.uint32(15)
    return codes, zeros + np.uint8(1 if v1 else 0)


def dequantize(codes, zeros, scales, g_idx):
    """W [N, K] = (code - zero) * scale in f32, the group of column k g_idx[k]."""
    z = zeros[g_idx, :].T.astype(np.float32)
    s = scales[g_idx, :].T.astype(np.float32)
    return (codes.astype(np.float32) - z) * s
