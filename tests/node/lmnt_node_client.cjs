// Drives the official lmnt-node SDK, unmodified, against the server named by LMNT_BASE_URL
// and prints one JSON object describing what every call returned (tests/test_official_node_sdk.py
// asserts on it).  Every call is bounded: the whole script gives up after 30 s.
'use strict';
const Lmnt = require('lmnt-node').default;

const baseURL = process.env.LMNT_BASE_URL;
const apiKey = process.env.LMNT_API_KEY;
setTimeout(() => { console.error('lmnt_node_client: timed out'); process.exit(3); }, 30000).unref();

async function settle(promise) {
  try {
    return { ok: true, value: await promise };
  } catch (err) {
    return { ok: false, status: err.status ?? null, error: err.error ?? null, name: err.constructor.name, message: String(err.message) };
  }
}

async function session(client, params, script) {
  const s = client.speech.sessions.create(params);
  const acks = {};
  script(s, acks);
  const kinds = [];
  let audio = 0;
  const timestamps = [];
  const errors = [];
  for await (const msg of s) {
    kinds.push(msg.type);
    if (msg.type === 'audio') audio += msg.audio.byteLength;
    else if (msg.type === 'timestamps') timestamps.push(...msg.timestamps);
    else if (msg.type === 'flush_complete' || msg.type === 'reset_complete') kinds.push(`${msg.type}:${msg.nonce}`);
    else if (msg.type === 'error') errors.push(msg.error);
  }
  return { kinds: [...new Set(kinds)], audio, timestamps, errors, acks };
}

async function main() {
  const client = new Lmnt({ apiKey, baseURL, maxRetries: 0, timeout: 10000 });
  const out = {};
  const gen = await settle(client.speech.generate({ text: 'Hello there.', voice: 'ava', format: 'pcm_s16le', sample_rate: 16000 }));
  out.generate = gen.ok ? { ok: true, bytes: (await gen.value.arrayBuffer()).byteLength, type: gen.value.headers.get('content-type') } : gen;
  const mp3 = await settle(client.speech.generate({ text: 'Hello there.', voice: 'ava' }));
  out.generate_mp3 = mp3.ok ? { ok: true, head: Buffer.from(await mp3.value.arrayBuffer()).subarray(0, 2).toString('hex') } : mp3;
  const det = await settle(client.speech.generateDetailed({ text: 'Hello big world.', voice: 'ava', format: 'pcm_s16le', return_timestamps: true }));
  out.generate_detailed = det.ok ? { ok: true, bytes: Buffer.from(det.value.audio, 'base64').length, timestamps: det.value.timestamps } : det;
  out.voices_list = await settle(client.voices.list());
  out.voices_list_starred = await settle(client.voices.list({ starred: 'true' }));
  out.voices_retrieve = await settle(client.voices.retrieve('morgan'));
  out.voices_update = await settle(client.voices.update('morgan', { starred: true, name: 'Morgan (mine)' }));
  out.voices_list_starred_after = await settle(client.voices.list({ starred: 'true' }));
  out.voices_retrieve_missing = await settle(client.voices.retrieve('no-such-voice'));
  out.voices_delete = await settle(client.voices.delete('morgan'));
  const { toFile } = require('lmnt-node');
  out.voices_create = await settle(client.voices.create({ file: await toFile(Buffer.alloc(2000), 'v.wav'), name: 'clone' }));
  out.session = await session(client, { voice: 'ava', format: 'pcm_s16le', sample_rate: 24000, return_timestamps: true }, (s, acks) => {
    s.sendText('Hello world. ');
    acks.flush = s.sendFlush();
    s.sendText('never spoken');
    acks.reset = s.sendReset();
    s.sendText('ok');
    s.sendFinish();
  });
  out.session_bad_voice = await session(client, { voice: 'nobody' }, (s) => { s.sendText('hi'); s.sendFinish(); });
  out.account = await settle(client.accounts.retrieve());
  const bad = new Lmnt({ apiKey: 'wrong-key', baseURL, maxRetries: 0, timeout: 10000 });
  out.wrong_key = await settle(bad.voices.list());
  out.unknown_voice = await settle(client.speech.generate({ text: 'Hi', voice: 'nobody' }));
  process.stdout.write(JSON.stringify(out));
}

main().catch((err) => { console.error(err); process.exit(2); });
