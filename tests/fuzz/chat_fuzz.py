"""Mutated OpenAI chat/completions requests against a running vllmd.

usage: chat_fuzz.py PORT SEED N
Sends N requests: valid requests with random fields replaced by odd values,
bytes flipped in valid JSON, and mutated /v1/completions bodies. Every answer
must be an HTTP response with status 200, 400, 404 or 413; prints the counts.
"""
import json, random, socket, sys, time, base64
random.seed(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
PORT = int(sys.argv[1])
img = base64.b64encode(open('tests/data/models/images/small.png','rb').read()).decode()
base = {"model": "llava-tiny", "max_tokens": 4, "messages": [{"role": "user", "content": [
    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + img}},
    {"type": "text", "text": "What is this?"}]}]}
vals = [None, True, False, 0, -1, 1e308, -1e308, 2**63, "", "x"*10000, [], {}, [1,2], {"a":1}, "\u0000", "\ud800", 3.5, "data:image/png;base64,AAAA", "http://127.0.0.1:1/x.png", "file:///etc/passwd"]
keys = ["model","max_tokens","temperature","top_p","n","stop","seed","logprobs","top_logprobs","stream","stream_options","messages","presence_penalty","frequency_penalty","max_completion_tokens","min_tokens","ignore_eos","top_k","response_format","tools","echo","prompt","user","logit_bias"]
def mutate(d):
    d = json.loads(json.dumps(d))
    for _ in range(random.randint(1,4)):
        r = random.random()
        if r < 0.4:
            d[random.choice(keys)] = random.choice(vals)
        elif r < 0.6:
            m = d.get("messages")
            if isinstance(m, list) and m and isinstance(m[0], dict):
                good = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + img}}
                m[0][random.choice(["role","content","name"])] = random.choice(vals + [
                    [{"type":"text"}], [{"type":"image_url"}],
                    [{"type":"image_url","image_url":{"url":random.choice(vals)}}],
                    # a bad part after a good image: error paths with buffers held
                    [good, {"type":"text"}], [good, {"text":"x"}], [good, {"type":"audio"}],
                    [{"type":"text","text":"a"}, good, {"type":"image_url"}]])
        elif r < 0.7:
            d.pop(random.choice(list(d.keys())) if d else "x", None)
        else:
            d["max_tokens"] = random.choice([1,2,3,0,-5,100000])
    return d
def send(body, path="/v1/chat/completions"):
    s = socket.create_connection(("127.0.0.1", PORT)); s.settimeout(30)
    req = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
    s.sendall(req)
    out = b""
    try:
        while True:
            c = s.recv(65536)
            if not c: break
            out += c
    except Exception as e:
        return b"EXC " + str(e).encode()
    s.close()
    return out
codes = {}
N = int(sys.argv[3]) if len(sys.argv) > 3 else 300
for i in range(N):
    kind = random.random()
    if kind < 0.7:
        body = json.dumps(mutate(base), allow_nan=True).encode()
    elif kind < 0.85:
        b = bytearray(json.dumps(base).encode())
        for _ in range(random.randint(1,10)):
            b[random.randrange(len(b))] = random.randrange(256)
        body = bytes(b)
    else:
        body = json.dumps(mutate({"model":"llava-tiny","prompt":"hello","max_tokens":3})).encode()
        r = send(body, "/v1/completions")
        codes[r.split(b" ")[1] if r.startswith(b"HTTP") else r[:20]] = codes.get(r.split(b" ")[1] if r.startswith(b"HTTP") else r[:20], 0) + 1
        continue
    r = send(body)
    k = r.split(b" ")[1] if r.startswith(b"HTTP") else r[:20]
    codes[k] = codes.get(k, 0) + 1
print(codes)
bad = {k: v for k, v in codes.items() if k not in (b"200", b"400", b"404", b"413")}
if bad:
    print("unexpected answers:", bad)
    sys.exit(1)
