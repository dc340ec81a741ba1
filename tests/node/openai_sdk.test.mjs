// seekserve serve against the official OpenAI Node SDK, on the bundled tiny model.
// Run by ctest: node --test openai_sdk.test.mjs (SEEKSERVE_BINARY and SEEKSERVE_MODEL set).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import OpenAI from 'openai';

const binary = process.env.SEEKSERVE_BINARY;
const model = process.env.SEEKSERVE_MODEL;
const servers = [];

async function startServer(extra = []) {
  const proc = spawn(binary, ['serve', '--model', model, '--port', '0', '--threads', '1', '--no-access-log', ...extra], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  servers.push(proc);
  let log = '';
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('server did not start: ' + log)), 20000);
    proc.stderr.on('data', (chunk) => {
      log += chunk;
      const m = log.match(/on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
  });
  return `http://127.0.0.1:${port}/v1`;
}

let client;
before(async () => {
  client = new OpenAI({ baseURL: await startServer(), apiKey: 'unused', maxRetries: 0 });
});
after(() => servers.forEach((p) => p.kill('SIGKILL')));

const messages = [{ role: 'user', content: 'What did the jury say?' }];

test('chat completion with usage', async () => {
  const r = await client.chat.completions.create({ model: 'tiny-deepseek-v3', messages, max_tokens: 20, temperature: 0 });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.ok(r.choices[0].message.content.length > 0);
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
});

test('streamed chat equals the whole answer, with usage last', async () => {
  const whole = await client.chat.completions.create({ model: 'tiny-deepseek-v3', messages, max_tokens: 24, temperature: 0 });
  const stream = await client.chat.completions.create({
    model: 'tiny-deepseek-v3', messages, max_tokens: 24, temperature: 0, stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let usage = null;
  let finish = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.delta?.content ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.equal(text, whole.choices[0].message.content);
  assert.equal(finish, whole.choices[0].finish_reason);
  assert.deepEqual(usage, whole.usage);
});

test('completions: seeds, n, stop and logprobs', async () => {
  const args = { model: 'tiny-deepseek-v3', prompt: 'The jury said', max_tokens: 12, temperature: 1.0, seed: 42, n: 2, logprobs: 2 };
  const a = await client.completions.create(args);
  const b = await client.completions.create(args);
  assert.equal(a.choices.length, 2);
  assert.deepEqual(a.choices.map((c) => c.text), b.choices.map((c) => c.text));
  assert.equal(a.choices[0].logprobs.tokens.length, a.choices[0].logprobs.token_logprobs.length);
  const greedy = await client.completions.create({ model: 'tiny-deepseek-v3', prompt: 'The jury said', max_tokens: 16, temperature: 0 });
  const word = greedy.choices[0].text.trim().split(' ')[1];
  const cut = await client.completions.create({ model: 'tiny-deepseek-v3', prompt: 'The jury said', max_tokens: 16, temperature: 0, stop: [word] });
  assert.equal(cut.choices[0].finish_reason, 'stop');
  assert.ok(!cut.choices[0].text.includes(word));
});

test('models list', async () => {
  const list = await client.models.list();
  assert.equal(list.data[0].id, 'tiny-deepseek-v3');
});

test('SDK error classes for 400 and 404', async () => {
  await assert.rejects(client.chat.completions.create({ model: 'tiny-deepseek-v3', messages, temperature: 7 }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError);
    assert.equal(e.status, 400);
    assert.equal(e.param, 'temperature');
    return true;
  });
  await assert.rejects(client.chat.completions.create({ model: 'no-such-model', messages }), OpenAI.NotFoundError);
});

test('401 without the right key', async () => {
  const base = await startServer(['--api-key', 'sekrit']);
  const bad = new OpenAI({ baseURL: base, apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(bad.models.list(), OpenAI.AuthenticationError);
  const good = new OpenAI({ baseURL: base, apiKey: 'sekrit', maxRetries: 0 });
  assert.equal((await good.models.list()).data.length, 1);
});

test('503 with Retry-After when the queue is full', async () => {
  const base = await startServer(['--max-waiting', '1', '--max-batch', '1']);
  const c = new OpenAI({ baseURL: base, apiKey: 'x', maxRetries: 0 });
  const calls = Array.from({ length: 12 }, () =>
    c.completions.create({ model: 'tiny-deepseek-v3', prompt: 'The jury said', max_tokens: 100, ignore_eos: true }).then(
      (r) => ({ ok: r }),
      (e) => ({ err: e }),
    ));
  const results = await Promise.all(calls);
  const refused = results.filter((r) => r.err);
  assert.ok(refused.length > 0, 'some requests must be refused');
  for (const r of refused) {
    assert.ok(r.err instanceof OpenAI.InternalServerError, String(r.err));
    assert.equal(r.err.status, 503);
    assert.equal(r.err.headers.get('retry-after'), '1');
  }
  for (const r of results.filter((x) => x.ok)) assert.equal(r.ok.usage.completion_tokens, 100);
});

test('aborting a stream mid-way frees the request', async () => {
  const controller = new AbortController();
  const stream = await client.completions.create(
    { model: 'tiny-deepseek-v3', prompt: 'The jury said', max_tokens: 2000, ignore_eos: true, stream: true },
    { signal: controller.signal },
  );
  let chunks = 0;
  try {
    for await (const _ of stream) {
      if (++chunks === 3) controller.abort();
    }
  } catch (e) {
    assert.ok(e instanceof OpenAI.APIUserAbortError || e.name === 'AbortError', String(e));
  }
  assert.ok(chunks < 100, `the stream went on after the abort (${chunks} chunks)`);
  // The server notices the closed connection and frees the sequence.
  const metricsUrl = client.baseURL.replace(/\/v1\/?$/, '') + '/metrics';
  let running = null;
  for (let i = 0; i < 100; i++) {
    const text = await (await fetch(metricsUrl)).text();
    running = text.match(/seekserve_num_requests_running\{model="tiny-deepseek-v3",class="interactive"\} (\d+)/)[1];
    if (running === '0') break;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(running, '0');
  const r = await client.completions.create({ model: 'tiny-deepseek-v3', prompt: 'Hi', max_tokens: 2 });
  assert.equal(r.choices.length, 1);
});
