"""Encode speed: folo's tokenizer vs Hugging Face `tokenizers`, same text.

Builds a ~1 MB mixed-language text (English prose, code, Chinese, Japanese,
Korean, Russian, Arabic, Hindi, emoji, digits; fixed seed), then times:
  - folo: `folo tokenize --file F --stats` (the encode call alone, without
    loading; best of --repeat runs);
  - HF: `Tokenizer.encode(text)` on the same tokenizer.json (best of
    --repeat; one call, which `tokenizers` runs on one thread).
Both must produce the same ids. Prints a table, then one JSON line.

usage: python bench/tokenizer.py [--folo build/folo] [--tokenizer-dir DIR]
                                 [--megabytes 1.0] [--repeat 3] [--seed 1]
"""

import argparse
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time

from tokenizers import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SAMPLES = [
    "The scheduler admits waiting requests while the token budget lasts, then preempts the newest one when blocks run out.",
    "It's not what you'd expect: DON'T assume the cache is warm; we'll measure it.",
    "def attention(q, k, v):\n    scores = q @ k.T / math.sqrt(q.shape[-1])\n    return softmax(scores) @ v\n",
    "for (int i = 0; i < n_tokens; i++) {\n\tlogits[i] = dot(h, w + i * dim, dim);\n}\n",
    "大型语言模型的推理服务需要高效的批处理和显存管理，分页注意力机制显著提高了吞吐量。",
    "今日は東京で機械学習の勉強会があります。トークナイザーの速度を測りましょう！",
    "대규모 언어 모델의 추론 속도는 메모리 대역폭에 의해 제한됩니다.",
    "Быстрая токенизация важна для серверов: каждый запрос начинается с неё.",
    "تعتمد سرعة الخادم على كفاءة تقسيم النص إلى رموز قبل المعالجة.",
    "बड़े भाषा मॉडल के लिए तेज़ टोकनाइज़ेशन बहुत ज़रूरी है।",
    "Results: 12,345 tokens in 0.0421 s (293,230 tok/s) — ratio 1.87x 🚀🔥👍🏽",
    "{\"model\": \"qwen3-0.6b\", \"messages\": [{\"role\": \"user\", \"content\": \"Hi!\"}], \"max_tokens\": 128}",
    "    \n\n\t\t  spaced   out    text   with    runs of     spaces\n\n\n",
    "Ünïcödé façade naïve résumé — “quoted” ‘text’ … and so on.",
]


SCRIPTS = [
    "abcdefghijklmnopqrstuvwxyz",
    "的一是不了人我在有他这为之大来以个中上们到说国和地也子时道出而要于就下得可你年生",
    "あいうえおかきくけこさしすせそたちつてとなにぬねのアイウエオカキクケコ",
    "가나다라마바사아자차카타파하거너더러머버서어저처",
    "абвгдежзийклмнопрстуфхцчшщыэюя",
    "ابتثجحخدذرزسشصضطظعغفقكلمنهوي",
    "कखगघचछजझटठडढणतथदधनपफबभमयरलवशसह",
]


def make_text(n_bytes, seed):
    """Whole sample sentences mixed with sentences of words drawn from a
    Zipf-like distribution over a large invented vocabulary (in seven
    scripts), so that word caches see a realistic share of new words."""
    rng = random.Random(seed)
    vocab = []
    for _ in range(50000):
        letters = rng.choice(SCRIPTS)
        word = "".join(rng.choice(letters) for _ in range(rng.randint(2, 10)))
        vocab.append(word.capitalize() if rng.random() < 0.1 else word)
    zipf = list(itertools.accumulate(1.0 / rank for rank in range(1, len(vocab) + 1)))
    parts, size = [], 0
    while size < n_bytes:
        if rng.random() < 0.3:
            s = rng.choice(SAMPLES)
        else:
            words = rng.choices(vocab, cum_weights=zipf, k=rng.randint(4, 20))
            s = " ".join(words) + rng.choice([".", ",", "!", "?", ":", "\n", "\n\n", " —"])
        if rng.random() < 0.1:
            s = s.upper()
        if rng.random() < 0.2:
            s += " " + str(rng.randrange(10**12))
        parts.append(s)
        size += len(s.encode()) + 1
    return " ".join(parts)


def bench_folo(folo, tokenizer_dir, path, repeat):
    best, ids = None, None
    for _ in range(repeat):
        proc = subprocess.run([folo, "tokenize", "-m", tokenizer_dir, "--file", path, "--stats"],
                              capture_output=True, check=True)
        stats = dict(line.split(": ", 1) for line in proc.stderr.decode().splitlines()
                     if ": " in line)
        seconds = float(stats["encode_s"])
        best = seconds if best is None else min(best, seconds)
        ids = json.loads(proc.stdout)
    return best, ids


def bench_hf(tokenizer_dir, text, repeat):
    tok = Tokenizer.from_file(os.path.join(tokenizer_dir, "tokenizer.json"))
    best, ids = None, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        enc = tok.encode(text)
        seconds = time.perf_counter() - t0
        best = seconds if best is None else min(best, seconds)
        ids = enc.ids
    return best, ids


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folo", default=os.environ.get("FOLO_BIN", os.path.join(ROOT, "build", "folo")))
    ap.add_argument("--tokenizer-dir", default=os.environ.get(
        "FOLO_TOKENIZER_DIR", os.path.join(ROOT, "models", "qwen3-tokenizer")))
    ap.add_argument("--megabytes", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    text = make_text(int(args.megabytes * 1e6), args.seed)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as f:
        f.write(text)
        path = f.name
    try:
        folo_s, folo_ids = bench_folo(args.folo, args.tokenizer_dir, path, args.repeat)
    finally:
        os.unlink(path)
    hf_s, hf_ids = bench_hf(args.tokenizer_dir, text, args.repeat)

    n_tokens = len(hf_ids)
    result = {
        "bench": "tokenizer_encode",
        "text_bytes": len(text.encode()),
        "tokens": n_tokens,
        "ids_equal": folo_ids == hf_ids,
        "folo_encode_s": folo_s,
        "hf_encode_s": hf_s,
        "folo_tokens_per_s": n_tokens / folo_s,
        "hf_tokens_per_s": n_tokens / hf_s,
        "folo_over_hf": hf_s / folo_s,
        "repeat": args.repeat,
    }
    print(f"text: {result['text_bytes']:,} bytes, {n_tokens:,} tokens, ids equal: {result['ids_equal']}")
    print(f"{'tokenizer':<16}{'encode s':>12}{'tokens/s':>14}")
    print(f"{'folo':<16}{folo_s:>12.4f}{result['folo_tokens_per_s']:>14,.0f}")
    print(f"{'HF tokenizers':<16}{hf_s:>12.4f}{result['hf_tokens_per_s']:>14,.0f}")
    print(f"folo / HF speed: {result['folo_over_hf']:.2f}x")
    print(json.dumps(result))
    return 0 if result["ids_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
