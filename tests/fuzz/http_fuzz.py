"""Malformed HTTP against a running vllmd: odd methods and routes, lying
Content-Length, broken chunked bodies, truncated requests, early hang-ups,
and edge-case completions / chat bodies (token-id prompts out of range,
unreachable and undecodable image URLs, many stop strings).

usage: http_fuzz.py PORT SEED N
The server must stay up; the caller checks /health and the sanitizer log.
"""
import random, socket, sys, json
random.seed(int(sys.argv[2])); PORT=int(sys.argv[1])
reqs = [
 b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
 b"DELETE /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n",
 b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n{}",
 b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\nzz\r\n",
 b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{\"pr",
 b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
 b"GARBAGE\r\n\r\n",
 b"GET /v1/models?x=%00%ff HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n\r\n",
]
bodies = [json.dumps({"model":"llava-tiny","prompt":[1,2,3,-5,99999999],"max_tokens":2}),
          json.dumps({"model":"llava-tiny","prompt":[[1,2],[3]],"max_tokens":2}),
          json.dumps({"model":"llava-tiny","prompt":"hi","max_tokens":2,"n":3,"best_of":2,"logprobs":5,"echo":True}),
          json.dumps({"model":"llava-tiny","prompt":"hi","max_tokens":2,"stream":True,"stream_options":{"include_usage":True}}),
          json.dumps({"model":"llava-tiny","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"http://127.0.0.1:1/a.png"}},{"type":"image_url","image_url":{"url":"data:image/png;base64,!!!"}}]}],"max_tokens":2}),
          json.dumps({"model":"llava-tiny","messages":[{"role":"user","content":"x"}],"max_tokens":2,"stop":["a"]*100,"logprobs":True,"top_logprobs":25})]
for i in range(int(sys.argv[3]) if len(sys.argv) > 3 else 300):
    s = socket.create_connection(("127.0.0.1", PORT)); s.settimeout(10)
    r = random.choice(reqs)
    if b"%d" in r:
        b = random.choice(bodies).encode()
        if random.random() < 0.5:
            b = bytearray(b); b[random.randrange(len(b))] = random.randrange(256); b = bytes(b)
        r = (r % len(b)) + b
    if random.random() < 0.2:
        r = r[:random.randrange(len(r))]
    try:
        s.sendall(r)
        if random.random() < 0.2:
            s.close(); continue
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536): pass
    except Exception:
        pass
    s.close()
print("done")
