#!/usr/bin/env python3
"""Write tests/data/tok/corpus.jsonl: the tokenizer parity corpus.

Deterministic (fixed seed, no input files): rerunning it rewrites the same
bytes. Each line is {"text": "...", "hex": "..."}; hex is the UTF-8 of text,
for readers whose JSON strings stop at U+0000 (cJSON). The strings cover ASCII prose, code,
numbers, whitespace runs, Unicode scripts in NFC and NFD, CJK, emoji (ZWJ,
skin tones, flags), control and rare characters that force byte fallback,
inline special tokens, chat-formatted prompts, and the empty string.
Characters are drawn from blocks stable since Unicode 13 so that every
reference (Rust tokenizers, tokenizers.js, PCRE2, utf8proc) agrees on them;
U+017F and U+212A are left out because case-insensitive contraction
matching ((?i:'s)) folds them differently across regex engines.

usage: python3 scripts/make-tok-corpus.py [OUT]   (default tests/data/tok/corpus.jsonl)
"""
import json
import os
import random
import sys
import unicodedata

SEED = 20240611
rng = random.Random(SEED)

WORDS = """the of and to in is was that for it with as his on be at by had are but from
or have an they which one you were her all she there would their we him been has when
who will more no if out so said what up its about into than them can only other new
some could time these two may then do first any my now such like our over man me even
most made after also did many before must through back years where much your way well
down should because each just those people how too little state good very make world
still own see men work long get here between both life being under never day same
another know while last might us great old year off come since against go came right
used take three model token image vision language server request batch cache kernel
tensor matrix vector attention prefill decode sampling throughput latency memory
""".split()

CODE = [
    "int main(void)\n{\n\tprintf(\"hello, world\\n\");\n\treturn 0;\n}\n",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "for (size_t i = 0; i < n; i++) {\n    sum += a[i] * b[i];\n}",
    "{\"model\": \"llava\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC;",
    "const f = (x) => x ** 2 + 3 * x - 7; // quadratic",
    "#include <stdio.h>\n#define MAX(a, b) ((a) > (b) ? (a) : (b))\n",
    "    if (err != NULL) {\n        return err;\n    }\n",
    "x = [i**2 for i in range(10) if i % 2 == 0]",
    "<div class=\"row\"><span id='x'>&nbsp;</span></div>",
    "git commit -m 'fix: handle \\r\\n line endings' && git push",
    "fn main() { let v: Vec<u32> = (0..10).collect(); println!(\"{:?}\", v); }",
    "$ ls -la /usr/local/bin | grep -E '^-rwx' | wc -l",
    "matrix[i][j] += alpha * x[i] * y[j];\t// rank-1 update",
    "@@ -1,4 +1,5 @@\n-old line\n+new line\n context\n",
    "a_b__c___d, CamelCaseName, snake_case_name, SCREAMING_CASE",
    "http://example.com/path?query=1&x=y#frag and https://a.b/c",
    "email: someone@example.org; phone: +1 (555) 123-4567",
]

SCRIPTS = {
    "latin_accents": "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿĀāĂăĄąĆćĈĉĊċČčĎďĐđĒēĔĕĖėĘęĚěĜĝŁłŃńŒœŚśŠšŸŹźŻżŽž",
    "greek": "αβγδεζηθικλμνξοπρστυφχψωΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩάέήίόύώϊϋΐΰ",
    "cyrillic": "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯіїєґ",
    "arabic": "ابتثجحخدذرزسشصضطظعغفقكلمنهوي،؛؟ًٌٍَُِّْ٠١٢٣٤٥٦٧٨٩",
    "hebrew": "אבגדהוזחטיכלמנסעפצקרשתםןףץ",
    "hindi": "अआइईउऊएऐओऔकखगघङचछजझञटठडढणतथदधनपफबभमयरलवशषसहािीुूेैोौंः्०१२३४५६७८९",
    "thai": "กขฃคฅฆงจฉชซฌญฎฏฐฑฒณดตถทธนบปผฝพฟภมยรลวศษสหฬอฮะัาำิีึืุูเแโใไ่้๊๋",
    "hangul": "가나다라마바사아자차카타파하한국어안녕하세요감사합니다",
    "kana": "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをんアイウエオカキクケコガギグゲゴ",
    "cjk": "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三己老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己",
    "symbols": "§¶†‡•…‰′″‹›«»€£¥¢©®™°±×÷≠≤≥∞∑∏√∫∂∆∇∈∉∩∪⊂⊃⊆⊇¬∧∨⇒⇔←→↑↓↔",
    "fullwidth": "ＡＢＣａｂｃ０１２！？（）［］｛｝　、。・「」『』",
}

NFD_WORDS = ["café", "naïve", "résumé", "Ångström", "über", "piñata", "façade",
             "crème brûlée", "São Paulo", "Đà Nẵng", "Ελληνικά", "Ёлка", "coöperate"]

EMOJI = [
    "😀", "😂", "🤗", "🚀", "🔥", "❤️", "👍", "👍🏻", "👍🏽", "👍🏿", "👋🏼",
    "👨‍👩‍👧‍👦", "👩‍💻", "🧑🏾‍🚀", "🏳️‍🌈", "👁️‍🗨️", "🇺🇸", "🇯🇵", "🇫🇷", "1️⃣", "#️⃣",
    "☕", "⚡", "✅", "❌", "⭐", "🙏🏽", "🤷‍♀️", "💁🏻‍♂️", "🫠", "🥲",
]

RARE = ["\x01", "\x02", "\x07", "\x08", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f", "\x00",
        "\u0085", "\u00a0", "\u00ad", "\u200b", "\u200c", "\u200d", "\u200e", "\u2028",
        "\u2029", "\u202f", "\u2060", "\u3000", "\ufeff", "\ufffd", "\ue000", "\uf8ff",
        "\U0001d11e", "\U0001f9ff", "\U00020000", "\U0002a6d6", "\U000f0000", "\U0010fffd",
        "\u0301", "\u0308", "\u20dd", "\u1680", "\u180e", "\u061c", "\u00b5", "\u02c6",
        "\u0e3f", "\u16a0", "\u2603", "\u26a1", "\u2f00", "\uabcd", "\ud7a3", "\u4dc0",
        "\U00010348", "\U0001f004"]

SPECIALS = ["<s>", "</s>", "<unk>", "<image>", "<pad>", "<|im_start|>", "<|im_end|>",
            "<|endoftext|>", "<|vision_start|><|image_pad|><|vision_end|>", "<|video_pad|>",
            "<|vision_pad|>", "<|object_ref_start|>", "<|box_end|>", "<tool_call>",
            "</tool_call>", "<think>", "</think>", "<|fim_prefix|>"]
NEAR_SPECIALS = ["<s", "s>", "</ s>", "<|im_start", "im_end|>", "<| im_start |>", "<<s>>",
                 "<image", "<imag>", "< image>", "<|image_pad", "<S>", "<IMAGE>", "<</s>/s>"]

WS = [" ", "  ", "   ", "    ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r", "\r\n\r\n",
      " \n", "\n ", "\t\n", " \t ", "\n\n\n", "        ", " \r\n ", "\u00a0", "\u3000"]


def words(k):
    w = [rng.choice(WORDS) for _ in range(k)]
    if rng.random() < 0.5:
        w[0] = w[0].capitalize()
    return " ".join(w)


def sentence():
    s = words(rng.randint(3, 14))
    p = rng.choice([".", ".", ".", "!", "?", ",", ";", ":", "...", ""])
    return s + p


def contraction():
    base = rng.choice(["it", "he", "she", "we", "they", "you", "I", "don", "can",
                       "won", "that", "John", "IT", "WE", "THEY"])
    suf = rng.choice(["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE",
                      "'Ve", "'LL", "'D", "'M", "'x", "'"])
    return base + suf


def number():
    kind = rng.randint(0, 9)
    if kind == 0:
        return str(rng.randint(0, 10 ** rng.randint(1, 18)))
    if kind == 1:
        return f"{rng.uniform(-1e6, 1e6):.{rng.randint(0, 8)}f}"
    if kind == 2:
        return f"{rng.randint(1, 999)},{rng.randint(0, 999):03d},{rng.randint(0, 999):03d}"
    if kind == 3:
        return f"{rng.randint(1900, 2100)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if kind == 4:
        return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
    if kind == 5:
        return f"{rng.random():.3e}"
    if kind == 6:
        return f"0x{rng.getrandbits(32):08x}"
    if kind == 7:
        return f"{rng.randint(0, 100)}%"
    if kind == 8:
        return "$" + f"{rng.uniform(0, 10000):.2f}"
    return "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 40)))


def script_text(name):
    pool = SCRIPTS[name]
    out = []
    for _ in range(rng.randint(1, 6)):
        out.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 8))))
    return rng.choice([" ", "", ", ", "。"]).join(out)


def nfd_text():
    w = rng.choice(NFD_WORDS)
    form = rng.choice(["NFC", "NFD", "NFKD", "mixed"])
    if form == "mixed":
        return unicodedata.normalize("NFC", w) + " " + unicodedata.normalize("NFD", w)
    return unicodedata.normalize(form, w)


def emoji_text():
    parts = [rng.choice(EMOJI) for _ in range(rng.randint(1, 5))]
    glue = rng.choice(["", " ", "  ", " and ", "\n"])
    s = glue.join(parts)
    if rng.random() < 0.5:
        s = sentence() + " " + s
    return s


def rare_text():
    s = "".join(rng.choice(RARE) for _ in range(rng.randint(1, 4)))
    if rng.random() < 0.6:
        a, b = words(rng.randint(1, 3)), words(rng.randint(1, 3))
        s = rng.choice([a + s + b, a + " " + s + " " + b, s + a, a + s])
    return s


def ws_text():
    n = rng.randint(1, 6)
    out = []
    for _ in range(n):
        out.append(rng.choice(WS))
        if rng.random() < 0.7:
            out.append(rng.choice([words(rng.randint(1, 3)), number(), rng.choice(CODE)[:20]]))
    return "".join(out)


def special_text():
    parts = []
    for _ in range(rng.randint(1, 5)):
        r = rng.random()
        if r < 0.45:
            parts.append(rng.choice(SPECIALS))
        elif r < 0.6:
            parts.append(rng.choice(NEAR_SPECIALS))
        else:
            parts.append(rng.choice([words(rng.randint(1, 4)), number(), rng.choice(EMOJI),
                                     script_text(rng.choice(list(SCRIPTS)))]))
    glue = rng.choice(["", " ", "\n", "  ", " \n"])
    return glue.join(parts)


def chat_qwen():
    msgs = []
    if rng.random() < 0.5:
        msgs.append(("system", "You are a helpful assistant."))
    for _ in range(rng.randint(1, 3)):
        u = sentence()
        if rng.random() < 0.5:
            u = "<|vision_start|>" + "<|image_pad|>" * rng.randint(1, 4) + "<|vision_end|>" + u
        msgs.append(("user", u))
        msgs.append(("assistant", sentence()))
    s = "".join(f"<|im_start|>{r}\n{c}<|im_end|>\n" for r, c in msgs[:-1])
    return s + "<|im_start|>assistant\n"


def chat_llava():
    q = sentence()
    img = "<image>\n" if rng.random() < 0.8 else ""
    s = f"USER: {img}{q} ASSISTANT:"
    if rng.random() < 0.4:
        s += " " + sentence() + "</s>USER: " + sentence() + " ASSISTANT:"
    return s


def chat_llama():
    return f"<s>[INST] <<SYS>>\n{sentence()}\n<</SYS>>\n\n{sentence()} [/INST] {sentence()} </s>"


def random_mix():
    pools = "".join(SCRIPTS.values()) + "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" \
        + " \t\n\r.,;:!?'\"()[]{}<>/\\|-_=+*&^%$#@~`" + "".join(RARE) + "".join(EMOJI)
    return "".join(rng.choice(pools) for _ in range(rng.randint(1, 60)))


def long_text():
    parts = []
    while sum(len(p) for p in parts) < rng.randint(1000, 3000):
        parts.append(rng.choice([sentence, ws_text, emoji_text, lambda: rng.choice(CODE),
                                 lambda: script_text(rng.choice(list(SCRIPTS))),
                                 contraction, number])())
    return rng.choice([" ", "\n", ""]).join(parts)


def fixed():
    out = ["", " ", "  ", "\n", "\t", "\r\n", "a", "A", " a", "a ", " a ", "▁", "▁▁", " ▁ ",
           "Hello world", "Hello, world!", " Hello world", "Hello world ", "hello\nworld",
           "USER: <image>\nWhat is shown in this image? ASSISTANT:",
           "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
           "<|vision_start|><|image_pad|><|vision_end|>Describe this image.<|im_end|>\n"
           "<|im_start|>assistant\n",
           "<s>", "</s>", "<s></s>", "<s> </s>", " <s> ", "<image>", "<image><image>",
           "<image> <image>", "a<image>b", "<|im_start|>", "<|im_start|><|im_end|>",
           "I'm sure it's fine, isn't it? We'll see; they'd know. You're right, I've been",
           "IT'S DON'T WE'LL THEY'D YOU'RE I'VE I'M",
           "1234567890", "3.14159265358979", "1,000,000", "  leading", "trailing  ",
           "\n\nleading newlines", "trailing newlines\n\n", "tab\tseparated\tvalues",
           "windows\r\nline\r\nendings\r\n", "mixed \t\n \r\n\t whitespace",
           "e\u0301", "\u00e9", "e\u0301\u0301", "\u1e9b\u0323", "\ufb01", "\u2126", "\u00c5",
           "A\u030a", "\u212b", "\uac00", "\u1100\u1161", "ﾊﾝｶｸ", "①②③", "x²³", "½¼",
           "日本語のテキスト", "中文文本测试", "한국어 텍스트", "Привет, мир!", "Γειά σου Κόσμε",
           "مرحبا بالعالم", "नमस्ते दुनिया", "שלום עולם", "สวัสดีชาวโลก",
           "👨‍👩‍👧‍👦", "👍🏽", "🇺🇸🇯🇵", "🏳️‍🌈", "a😀b", "😀😀😀",
           "\x00", "\x01\x02\x03", "\x7f", "\ufeffBOM", "\ufffd", "\U0010fffd", "\u0085NEL",
           "   ", "\t\t\t", "\n\n\n\n", " \n \n ", "\r", "\r\r\n\n",
           "a" * 200, " " * 64, "ab" * 100, "\n" * 40, "😀" * 30, "的" * 50]
    return out


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "tok", "corpus.jsonl")
    gens = [
        (sentence, 300), (lambda: " ".join(sentence() for _ in range(rng.randint(2, 5))), 100),
        (lambda: rng.choice(CODE), 40), (lambda: rng.choice(CODE) + rng.choice(WS) + sentence(), 60),
        (number, 80), (lambda: words(3) + " " + number() + " " + contraction(), 80),
        (contraction, 40), (ws_text, 200),
        (lambda: rng.choice(WS) + sentence() + rng.choice(WS), 80),
        (lambda: script_text(rng.choice(list(SCRIPTS))), 220), (nfd_text, 60),
        (emoji_text, 120), (rare_text, 150), (special_text, 200), (chat_qwen, 60),
        (chat_llava, 60), (chat_llama, 30), (random_mix, 150), (long_text, 12),
    ]
    lines = fixed()
    for gen, count in gens:
        for _ in range(count):
            lines.append(gen())
    for s in lines:
        assert "\u017f" not in s and "\u212a" not in s
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w", encoding="utf-8", newline="\n") as f:
        for s in lines:
            rec = {"text": s, "hex": s.encode("utf-8").hex()}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print(f"make-tok-corpus: wrote {len(lines)} strings to {out_path}")


if __name__ == "__main__":
    main()
