// End-to-end tests of the vllmd daemon, driven by the official OpenAI client.
// Starts vllmd on the tiny LLaVA checkpoint (127.0.0.1, a free port) and a
// local image server on 127.0.0.1; every loop here is bounded and every
// process is stopped at the end.
//   VLLMD=build/vllmd PLUGINS=build/build-plugins node --test tests/e2e/
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const VLLMD = process.env.VLLMD || path.join(root, 'build', 'vllmd');
const PLUGINS = process.env.PLUGINS || path.join(root, 'build', 'build-plugins');
const MODEL = path.join(root, 'tests', 'data', 'models', 'llava-tiny-a');
const TEMPLATE = path.join(root, 'conf', 'template_llava.jinja');
const IMG = fs.readFileSync(path.join(root, 'tests', 'data', 'models', 'images', 'wide.png'));
const IMG2 = fs.readFileSync(path.join(root, 'tests', 'data', 'models', 'images', 'small.png'));
const KEY = 'test-key';

let imgServer, imgBase;
const daemons = [];

function startImageServer() {
  return new Promise((resolve) => {
    const s = http.createServer((req, res) => {
      if (req.url === '/wide.png') { res.writeHead(200, { 'Content-Type': 'image/png' }); res.end(IMG); return; }
      if (req.url === '/small.png') { res.writeHead(200, { 'Content-Type': 'image/png' }); res.end(IMG2); return; }
      if (req.url === '/slow.png') {
        // 30 s: far beyond the daemon's 1 s fetch timeout, so that the test's
        // bound (15 s) separates the two on however slow a machine
        const t = setTimeout(() => { res.writeHead(200); res.end(IMG); }, 30000);
        req.on('close', () => clearTimeout(t));
        return;
      }
      if (req.url === '/text') { res.writeHead(200, { 'Content-Type': 'text/plain' }); res.end('not an image at all'); return; }
      res.writeHead(404); res.end();
    });
    s.listen(0, '127.0.0.1', () => resolve(s));
  });
}

// Start a daemon; resolves with { proc, base, client } once it listens.
function startDaemon(extra, argv) {
  return new Promise((resolve, reject) => {
    const args = argv || ['serve', MODEL, '--plugin-dir', PLUGINS, '--host', '127.0.0.1', '--port', '0',
      '--served-model-name', 'llava-tiny', '--api-key', KEY, '--chat-template', TEMPLATE,
      '--max-model-len', '512', '--image-fetch-timeout', '1', '--device', 'cpu', ...extra];
    const proc = spawn(VLLMD, args, { stdio: ['ignore', 'ignore', 'pipe'], cwd: root });
    let err = '';
    const timer = setTimeout(() => { proc.kill('SIGKILL'); reject(new Error('vllmd did not start: ' + err)); }, 60000);
    proc.stderr.on('data', (d) => {
      err += d.toString();
      const m = err.match(/on http:\/\/[^:]+:(\d+)/);
      if (m && !proc.base) {
        clearTimeout(timer);
        proc.base = `http://127.0.0.1:${m[1]}`;
        const client = new OpenAI({ baseURL: proc.base + '/v1', apiKey: KEY, maxRetries: 0, timeout: 60000 });
        resolve({ proc, base: proc.base, client, log: () => err });
      }
    });
    proc.on('exit', (code) => { clearTimeout(timer); if (!proc.base) reject(new Error(`vllmd exited ${code}: ${err}`)); });
    daemons.push(proc);
  });
}

const userImage = (urls, text = 'What is in the picture?') => [{
  role: 'user',
  content: [...urls.map((u) => ({ type: 'image_url', image_url: { url: u } })), { type: 'text', text }],
}];
const dataUrl = (buf) => 'data:image/png;base64,' + buf.toString('base64');

async function metrics(base) {
  const r = await fetch(base + '/metrics');
  const t = await r.text();
  const num = (name) => Number((t.match(new RegExp('^' + name.replace(/:/g, '\\:') + ' (\\S+)$', 'm')) || [])[1]);
  return { running: num('vllm:num_requests_running'), usage: num('vllm:kv_cache_usage_perc'), text: t };
}

// The metrics once nothing runs and no KV block is held, polling for up to
// 60 s (a slow machine may still be finishing aborted work); the last
// reading when that never happens, for the caller's assertions to report.
async function settled(base) {
  let m;
  for (let i = 0; i < 600; i++) {
    m = await metrics(base);
    if (m.running === 0 && m.usage === 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return m;
}

async function expectError(p, status, re) {
  try {
    await p;
  } catch (e) {
    assert.equal(e.status, status, `status ${e.status}: ${e.message}`);
    if (re) assert.match(e.message, re);
    return e;
  }
  assert.fail(`expected HTTP ${status}`);
}

let D2, D1;
before(async () => {
  imgServer = await startImageServer();
  imgBase = `http://127.0.0.1:${imgServer.address().port}`;
  D2 = await startDaemon(['--limit-mm-per-prompt', 'image=2', '--max-request-body-bytes', '1MiB']);
  D1 = await startDaemon(['--limit-mm-per-prompt', 'image=1']);
});

after(async () => {
  for (const p of daemons) if (p.exitCode === null) p.kill('SIGKILL');
  imgServer.close();
});

test('one image by http URL', async () => {
  const r = await D2.client.chat.completions.create({
    model: 'llava-tiny', messages: userImage([imgBase + '/wide.png']), max_tokens: 8, temperature: 0,
  });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 8);
  assert.ok(r.usage.prompt_tokens > 16, 'image rows are counted in the prompt');
});

test('a data URL gives the same answer as the same image by http', async () => {
  const a = await D2.client.chat.completions.create({
    model: 'llava-tiny', messages: userImage([imgBase + '/wide.png']), max_tokens: 6, temperature: 0,
  });
  const b = await D2.client.chat.completions.create({
    model: 'llava-tiny', messages: userImage([dataUrl(IMG)]), max_tokens: 6, temperature: 0,
  });
  assert.equal(b.choices[0].message.content, a.choices[0].message.content);
});

test('images processed on the connection thread give the offline answer (vllmd generate)', async () => {
  // the server decodes and processes images before the engine sees the
  // request; `vllmd generate` does both inside the engine at admission. A
  // template that writes BOS + the content makes both prompts tokenize alike.
  // It is given inline: --chat-template takes a file or the template text.
  const D = await startDaemon(['--chat-template', '{{ bos_token + messages[0]["content"] }}']);
  try {
    const r = await D.client.chat.completions.create({
      model: 'llava-tiny', messages: userImage([imgBase + '/wide.png']), max_tokens: 8, temperature: 0, logprobs: true,
    });
    const line = JSON.stringify({
      prompt: '<image>\nWhat is in the picture?',
      multi_modal_data: { image: path.join(root, 'tests', 'data', 'models', 'images', 'wide.png') },
      sampling_params: { temperature: 0, max_tokens: 8, logprobs: 0 },
    });
    const g = spawnSync(VLLMD, ['generate', '--model', MODEL, '--plugin-dir', PLUGINS, '--max-model-len', '512',
      '--device', 'cpu'], { input: line + '\n', cwd: root, encoding: 'utf8', timeout: 60000 });
    assert.equal(g.status, 0, g.stderr);
    const off = JSON.parse(g.stdout);
    assert.equal(r.usage.prompt_tokens, off.prompt_token_ids.length);
    assert.equal(r.choices[0].message.content, off.outputs[0].text);
    const lp = r.choices[0].logprobs.content.map((c) => c.logprob);
    const offLp = off.outputs[0].logprobs.map((o) => Object.values(o)[0].logprob);
    assert.equal(lp.length, offLp.length);
    for (let i = 0; i < lp.length; i++) assert.ok(Math.abs(lp[i] - offLp[i]) < 1e-4, `token ${i}: ${lp[i]} vs ${offLp[i]}`);
    const m = await metrics(D.base);
    assert.match(m.text, /^vllmd:image_process_seconds_count 1$/m);
  } finally {
    D.proc.kill('SIGTERM');
  }
});

test('two images with limit 2, refused with limit 1', async () => {
  const msgs = userImage([imgBase + '/wide.png', dataUrl(IMG2)], 'Compare them.');
  const r = await D2.client.chat.completions.create({ model: 'llava-tiny', messages: msgs, max_tokens: 4, temperature: 0 });
  assert.equal(r.usage.completion_tokens, 4);
  await expectError(D1.client.chat.completions.create({ model: 'llava-tiny', messages: msgs, max_tokens: 4 }),
    400, /At most 1 image\(s\) may be provided in one request\./);
});

test('streaming equals the whole answer, with usage', async () => {
  const whole = await D2.client.chat.completions.create({
    model: 'llava-tiny', messages: userImage([imgBase + '/wide.png']), max_tokens: 10, temperature: 0,
  });
  const stream = await D2.client.chat.completions.create({
    model: 'llava-tiny', messages: userImage([imgBase + '/wide.png']), max_tokens: 10, temperature: 0,
    stream: true, stream_options: { include_usage: true },
  });
  let text = '', finish = null, usage = null, chunks = 0;
  for await (const c of stream) {
    chunks++;
    if (c.usage) usage = c.usage;
    for (const ch of c.choices) {
      text += ch.delta.content || '';
      if (ch.finish_reason) finish = ch.finish_reason;
    }
  }
  assert.ok(chunks >= 2);
  assert.equal(text, whole.choices[0].message.content);
  assert.equal(finish, 'length');
  assert.equal(usage.completion_tokens, 10);
});

test('completions endpoint', async () => {
  const r = await D2.client.completions.create({ model: 'llava-tiny', prompt: 'USER: Hello\nASSISTANT:', max_tokens: 5, temperature: 0, logprobs: 2 });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices[0].logprobs.tokens.length, 5);
  assert.equal(r.usage.completion_tokens, 5);
});

test('a slow image server exceeds the fetch timeout; the server stays healthy', async () => {
  const t0 = Date.now();
  await expectError(D2.client.chat.completions.create({
    model: 'llava-tiny', messages: userImage([imgBase + '/slow.png']), max_tokens: 4,
  }), 400, /tim/i);
  assert.ok(Date.now() - t0 < 15000, 'failed before the image arrived');
  const h = await fetch(D2.base + '/health');
  assert.equal(h.status, 200);
  const r = await D2.client.chat.completions.create({ model: 'llava-tiny', messages: userImage([imgBase + '/wide.png']), max_tokens: 2 });
  assert.equal(r.usage.completion_tokens, 2);
});

test('bad requests get OpenAI error JSON', async () => {
  const post = (body, headers = {}) => fetch(D2.base + '/v1/chat/completions', {
    method: 'POST', body, headers: { 'Content-Type': 'application/json', Authorization: 'Bearer ' + KEY, ...headers },
  });
  let r = await post('{"model": "llava-tiny", "messages": [');
  assert.equal(r.status, 400);
  let j = await r.json();
  assert.equal(j.error.code, 400);
  assert.equal(typeof j.error.message, 'string');
  await expectError(D2.client.chat.completions.create({ model: 'llava-tiny', messages: userImage(['data:image/png;base64,@@@notbase64']), max_tokens: 2 }), 400, /base64/);
  await expectError(D2.client.chat.completions.create({ model: 'llava-tiny', messages: userImage([imgBase + '/text']), max_tokens: 2 }), 400);
  await expectError(D2.client.chat.completions.create({ model: 'no-such-model', messages: userImage([imgBase + '/wide.png']), max_tokens: 2 }), 404, /does not exist/);
  const bad = new OpenAI({ baseURL: D2.base + '/v1', apiKey: 'wrong', maxRetries: 0 });
  await expectError(bad.chat.completions.create({ model: 'llava-tiny', messages: userImage([imgBase + '/wide.png']), max_tokens: 2 }), 401);
  r = await fetch(D2.base + '/v1/nothing-here', { headers: { Authorization: 'Bearer ' + KEY } });
  assert.equal(r.status, 404);
  r = await post(JSON.stringify({ model: 'llava-tiny', messages: [{ role: 'user', content: 'x'.repeat(2 << 20) }] }));
  assert.equal(r.status, 413);
  j = await r.json();
  assert.match(j.error.message, /max_request_body_bytes/);
});

test('a client that disconnects mid-stream gets its KV blocks freed', async () => {
  const ctl = new AbortController();
  const stream = await D2.client.chat.completions.create({
    model: 'llava-tiny', messages: userImage([imgBase + '/wide.png']), max_tokens: 400, temperature: 0,
    ignore_eos: true, stream: true,
  }, { signal: ctl.signal });
  let n = 0;
  try {
    for await (const c of stream) { if (++n === 3) ctl.abort(); }
  } catch { /* aborted */ }
  const m = await settled(D2.base);
  assert.equal(m.running, 0);
  assert.equal(m.usage, 0);
});

test('models, version, metrics', async () => {
  const models = await D2.client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), ['llava-tiny']);
  const v = await (await fetch(D2.base + '/version')).json();
  assert.equal(typeof v.version, 'string');
  const m = await metrics(D2.base);
  assert.match(m.text, /vllm:time_to_first_token_seconds_bucket/);
  assert.match(m.text, /vllmd:image_fetch_seconds_count \d+/);
});

test('SIGTERM drains in-flight requests, then exits 0', async () => {
  const D = await startDaemon([]);
  const p = D.client.chat.completions.create({ model: 'llava-tiny', messages: [{ role: 'user', content: 'Tell a long story.' }], max_tokens: 60, ignore_eos: true });
  // signal only once the request is in the engine, however long that takes
  for (let i = 0; i < 600 && (await metrics(D.base)).running < 1; i++) {
    await new Promise((r) => setTimeout(r, 50));
  }
  const exited = new Promise((r) => D.proc.on('exit', (code) => r(code)));
  D.proc.kill('SIGTERM');
  const r = await p;
  assert.equal(r.usage.completion_tokens, 60);
  assert.equal(await exited, 0);
});

test('conf/phi35.yaml serves the seed\'s two-image chat request (tiny Phi-3.5-V)', async () => {
  const D = await startDaemon(null, ['--config', 'conf/phi35.yaml',
    '--model', path.join(root, 'tests', 'data', 'models', 'phi3v-tiny-a'), '--plugin-dir', PLUGINS,
    '--host', '127.0.0.1', '--port', '0', '--max-model-len', '384', '--device', 'cpu']);
  try {
    const r = await D.client.chat.completions.create({
      model: 'microsoft/Phi-3.5-vision-instruct',
      messages: [{
        role: 'user',
        content: [
          { type: 'text', text: 'What are the animals in these images?' },
          { type: 'image_url', image_url: { url: imgBase + '/wide.png' } },
          { type: 'image_url', image_url: { url: dataUrl(IMG2) } },
        ],
      }],
      max_tokens: 8, temperature: 0,
    });
    assert.equal(r.choices[0].message.role, 'assistant');
    assert.equal(r.usage.completion_tokens <= 8, true);
    assert.ok(r.usage.prompt_tokens > 40, 'both images expanded into the prompt');
    await expectError(D.client.chat.completions.create({
      model: 'microsoft/Phi-3.5-vision-instruct',
      messages: userImage([imgBase + '/wide.png', imgBase + '/wide.png', imgBase + '/small.png']),
      max_tokens: 2,
    }), 400, /At most 2 image\(s\)/);
  } finally {
    D.proc.kill('SIGTERM');
  }
});

test('an overloaded server answers 503 in OpenAI error JSON, then recovers', async () => {
  // one sequence runs and one may wait: of 24 requests of 400 tokens sent at
  // once (about 10 s of work one after another) nearly all find the queue full
  const D = await startDaemon(['--max-num-seqs', '1', '--max-waiting-requests', '1']);
  try {
    const body = (i) => ({ model: 'llava-tiny', messages: [{ role: 'user', content: `Story ${i}` }],
      max_tokens: 400, ignore_eos: true, temperature: 0, stream: i % 4 === 1 });
    const viaClient = async (i) => {
      const r = await D.client.chat.completions.create(body(i));
      if (!body(i).stream) return { status: 200, tokens: r.usage.completion_tokens };
      let finish = null;
      for await (const c of r) for (const ch of c.choices) if (ch.finish_reason) finish = ch.finish_reason;
      return { status: 200, tokens: finish === 'length' ? 400 : -1 };
    };
    const viaFetch = async (i) => {
      const r = await fetch(D.base + '/v1/chat/completions', {
        method: 'POST', body: JSON.stringify({ ...body(i), stream: false }),
        headers: { 'Content-Type': 'application/json', Authorization: 'Bearer ' + KEY },
      });
      const j = await r.json();
      return r.status === 200 ? { status: 200, tokens: j.usage.completion_tokens } : { status: r.status, json: j };
    };
    const results = await Promise.allSettled(Array.from({ length: 24 }, (_, i) => (i % 2 ? viaClient(i) : viaFetch(i))));
    let ok = 0, busy = 0;
    for (const s of results) {
      if (s.status === 'fulfilled' && s.value.status === 200) {
        assert.equal(s.value.tokens, 400);
        ok++;
      } else if (s.status === 'fulfilled') {
        assert.equal(s.value.status, 503);
        assert.deepEqual(Object.keys(s.value.json.error).sort(), ['code', 'message', 'param', 'type']);
        assert.equal(s.value.json.error.code, 503);
        assert.equal(s.value.json.error.type, 'ServiceUnavailableError');
        assert.equal(s.value.json.error.param, null);
        assert.match(s.value.json.error.message, /overloaded/);
        busy++;
      } else {
        assert.equal(s.reason.status, 503, String(s.reason));
        assert.equal(s.reason.type, 'ServiceUnavailableError');
        assert.match(s.reason.message, /overloaded/);
        busy++;
      }
    }
    console.log(`# overload: ${ok} served, ${busy} refused with 503`);
    assert.ok(ok >= 1, 'the first request is served');
    assert.ok(busy >= 1, 'some requests found the queue full');
    // recovered: nothing left in the engine, healthy, serving again
    const m = await settled(D.base);
    assert.equal(m.running, 0);
    assert.equal(m.usage, 0);
    assert.match(m.text, /^vllm:num_requests_waiting 0$/m);
    assert.equal((await fetch(D.base + '/health')).status, 200);
    const rs = await Promise.all([0, 1].map((i) => D.client.chat.completions.create({
      model: 'llava-tiny', messages: userImage([imgBase + '/small.png'], `Again ${i}`), max_tokens: 4,
    })));
    for (const r of rs) assert.equal(r.usage.completion_tokens, 4);
  } finally {
    D.proc.kill('SIGTERM');
  }
});

test('200 concurrent streams complete; then KV is free and RSS is back within 10% of the fresh server', async () => {
  // the server closes connections idle for timeout_keep_alive (5 s), even
  // from a client that would keep them open forever, as this one does; a
  // generous fetch timeout, as a busy machine can stall the image server
  const D = await startDaemon(['--max-num-seqs', '64', '--image-fetch-timeout', '10']);
  const proc = () => fs.readFileSync(`/proc/${D.proc.pid}/status`, 'utf8');
  const rss = () => Number(proc().match(/VmRSS:\s+(\d+)/)[1]);
  const threads = () => Number(proc().match(/Threads:\s+(\d+)/)[1]);
  const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
  const client = new OpenAI({ baseURL: D.base + '/v1', apiKey: KEY, maxRetries: 0, timeout: 60000, httpAgent: agent });
  try {
    // pre-load: the fresh server, as soon as it is healthy (no warm-up)
    assert.equal((await fetch(D.base + '/health')).status, 200);
    const before = rss(), threadsBefore = threads();
    const one = async (i) => {
      const urls = i % 4 === 1 ? [imgBase + '/wide.png'] : i % 4 === 3 ? [i % 8 === 3 ? imgBase + '/small.png' : dataUrl(IMG2)] : null;
      const s = await client.chat.completions.create({
        model: 'llava-tiny', stream: true, stream_options: { include_usage: true },
        max_tokens: 12, temperature: 0.7, seed: i, ignore_eos: true,
        messages: urls ? userImage(urls) : [{ role: 'user', content: `Request ${i}` }],
      });
      let finish = null, usage = null;
      for await (const c of s) {
        if (c.usage) usage = c.usage;
        for (const ch of c.choices) if (ch.finish_reason) finish = ch.finish_reason;
      }
      assert.equal(finish, 'length');
      assert.equal(usage.completion_tokens, 12);
    };
    const t0 = Date.now();
    const res = await Promise.allSettled(Array.from({ length: 200 }, (_, i) => one(i)));
    const failed = res.filter((r) => r.status === 'rejected');
    assert.equal(failed.length, 0, failed.length ? String(failed[0].reason) : '');
    const tLoad = Date.now() - t0;
    const peak = rss(), threadsPeak = threads();
    const m = await settled(D.base);
    assert.equal(m.running, 0);
    assert.equal(m.usage, 0, 'every KV block is free');
    // after the idle connections close the server trims its heap (within
    // about 2 s of going quiet); wait for that, at most 60 s
    const t1 = Date.now();
    let after = rss();
    while (Date.now() - t1 < 60000 && !(threads() <= threadsBefore && after <= before * 1.1)) {
      await new Promise((r) => setTimeout(r, 250));
      after = rss();
    }
    console.log(`# load: 200 streams in ${tLoad} ms; RSS ${before} KiB fresh, ${peak} at the end of the load ` +
      `(${threadsPeak} threads), ${after} KiB ${Date.now() - t1} ms after the drain (${threads()} threads, ` +
      `${threadsBefore} fresh); ${((after / before - 1) * 100).toFixed(1)}%`);
    assert.ok(threads() <= threadsBefore, `connection threads left: ${threads()} > ${threadsBefore}`);
    assert.ok(after <= before * 1.1, `RSS grew from ${before} to ${after} KiB`);
  } finally {
    agent.destroy();
    D.proc.kill('SIGTERM');
  }
});
