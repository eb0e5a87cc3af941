// The LMNT local playground: speaks through the same typed WebSocket API agents use.
//
// Plain browser JavaScript, no build step and no third-party code, so the page works offline
// and what it shows is exactly what a client of this server gets.  Choices worth knowing:
// * the API key lives in the key field and in sessionStorage (this tab only); it goes into the
//   WebSocket init frame and the X-API-Key header, never into a URL;
// * pcm_s16le, pcm_f32le and ulaw are decoded here and played as they arrive; Web Audio cannot
//   decode mp3/webm piece by piece, so for those the page asks for pcm_s16le at the same rate
//   and says so (the snippet keeps the chosen format: the plugin decodes it);
// * time to first audio runs from pressing Speak (connection included) to the first audio
//   byte; the real-time factor is synthesis time (Speak to last byte) over seconds of audio.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY_REQUIRED =
    document.querySelector('meta[name="lmnt-key-required"]').content === "true";
  const OPEN_KEY = "playground"; // any non-empty key opens a server without a key list
  const KEY_STORE = "lmnt-playground-key";
  const VERSION = "1.2"; // typed API; timestamps count from the start of the session
  const STREAM_PATH = "/v1/ai/speech/stream";
  const DECODED = new Set(["pcm_s16le", "pcm_f32le", "ulaw"]);
  const TEXT_PIECE = 4000; // characters per text message
  const STALL_MS = 10_000; // a server silent this long mid-turn is reported, not waited on
  const LEAD = 0.08; // seconds of scheduling slack before the first (or an underrun) chunk
  const LANGUAGES = [
    "auto", "ar", "as", "bn", "cs", "da", "de", "en", "es", "fi", "fr", "hi", "id", "it",
    "ja", "ko", "ml", "mr", "nl", "pl", "pt", "ru", "sk", "sv", "ta", "te", "th", "tr", "uk",
    "ur", "vi", "zh",
  ];

  const ui = {
    text: $("text"), voices: $("voices"), language: $("language"), format: $("format"),
    rate: $("rate"), speed: $("speed"), speedOut: $("speed-out"), formatNote: $("format-note"),
    speak: $("speak"), stop: $("stop"), download: $("download"), error: $("error"),
    ttfa: $("ttfa"), rtf: $("rtf"), duration: $("duration"), status: $("status"),
    words: $("words"), request: $("request"), key: $("key"),
    keyNote: $("key-note"), snippetEnv: $("snippet-env"), snippet: $("snippet"),
    copy: $("copy"),
  };

  let voice = null; // the chosen voice id
  let audioCtx = null;
  let run = null; // the utterance in progress (or the last one, for Download)

  // -- small helpers ------------------------------------------------------------------------

  function setState(state, text) {
    document.body.dataset.state = state;
    ui.status.textContent = text || state;
  }

  function showError(message) {
    ui.error.textContent = message;
    ui.error.hidden = false;
  }

  function clearError() {
    ui.error.textContent = "";
    ui.error.hidden = true;
  }

  function apiKey() {
    const typed = ui.key.value.trim();
    if (typed) return typed;
    return KEY_REQUIRED ? null : OPEN_KEY;
  }

  function wsUrl() {
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + STREAM_PATH;
  }

  function pyString(s) {
    return JSON.stringify(s); // a JSON string literal is a valid Python string literal
  }

  // -- voices -------------------------------------------------------------------------------

  function voiceLanguage(v) {
    if (Array.isArray(v.languages) && v.languages.length) return v.languages.join(", ");
    if (typeof v.language === "string" && v.language) return v.language;
    return "any language";
  }

  function renderVoices(list) {
    ui.voices.replaceChildren();
    if (!list.some((v) => v.id === voice)) voice = list.length ? list[0].id : null;
    for (const v of list) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "voice";
      b.dataset.voice = v.id;
      b.setAttribute("role", "radio");
      b.setAttribute("aria-checked", String(v.id === voice));
      b.title = v.description || v.name || v.id;
      const name = document.createElement("strong");
      name.textContent = v.name || v.id;
      const meta = document.createElement("span");
      meta.className = "meta";
      meta.textContent = `${v.gender || "unknown"} · ${voiceLanguage(v)}`;
      b.append(name, meta);
      // An LMNT name is spoken by another voice: say which, and when it is not the gender
      // the name promises (the server tags it "fallback").
      const tags = Array.isArray(v.tags) ? v.tags : [];
      if (tags[0] === "alias" && typeof tags[1] === "string") {
        const by = document.createElement("span");
        by.className = tags.includes("fallback") ? "meta fallback" : "meta";
        by.textContent = tags.includes("fallback")
          ? `spoken by ${tags[1]}: not the name's gender (none installed)`
          : `spoken by ${tags[1]}`;
        b.append(by);
      }
      b.addEventListener("click", () => {
        voice = v.id;
        for (const other of ui.voices.children) {
          other.setAttribute("aria-checked", String(other === b));
        }
        updateSnippet();
      });
      ui.voices.append(b);
    }
    if (!list.length) ui.voices.innerHTML = '<p class="muted">This server lists no voices.</p>';
    ui.speak.disabled = voice === null;
    updateSnippet();
  }

  async function loadVoices() {
    const key = apiKey();
    ui.speak.disabled = true;
    if (!key) {
      ui.voices.innerHTML =
        '<p class="muted">This server accepts only its own API keys: type one above.</p>';
      ui.key.focus();
      return;
    }
    let response;
    try {
      response = await fetch("/v1/ai/voice/list", { headers: { "X-API-Key": key } });
    } catch (err) {
      showError(`Could not reach the server for the voice list: ${err.message}`);
      return;
    }
    if (response.status === 401 || response.status === 403) {
      ui.voices.innerHTML = '<p class="muted">No voices: the key was refused.</p>';
      showError(`The server refused this API key (HTTP ${response.status}).`);
      return;
    }
    if (!response.ok) {
      showError(`The voice list failed: HTTP ${response.status}.`);
      return;
    }
    let list;
    try {
      list = await response.json();
    } catch {
      list = null;
    }
    if (!Array.isArray(list)) return showError("The voice list is not a JSON array of voices.");
    clearError();
    renderVoices(list);
  }

  // -- audio decoding -----------------------------------------------------------------------

  const ULAW = (() => {
    const table = new Float32Array(256);
    for (let i = 0; i < 256; i++) {
      const u = ~i & 0xff;
      const exponent = (u >> 4) & 7;
      const mantissa = u & 15;
      let sample = (((mantissa << 3) + 0x84) << exponent) - 0x84;
      if (u & 0x80) sample = -sample;
      table[i] = sample / 32768;
    }
    return table;
  })();

  // Turns the byte stream of one format into float samples, carrying partial samples (and a
  // µ-law stream's WAV header) across WebSocket frames.
  class Decoder {
    constructor(format) {
      this.format = format;
      this.width = format === "pcm_f32le" ? 4 : format === "ulaw" ? 1 : 2;
      this.pending = new Uint8Array(0);
      this.header = format === "ulaw"; // the server starts a µ-law stream with a WAV header
    }

    push(bytes) {
      let data = bytes;
      if (this.pending.length) {
        data = new Uint8Array(this.pending.length + bytes.length);
        data.set(this.pending);
        data.set(bytes, this.pending.length);
      }
      if (this.header) {
        const start = wavDataOffset(data);
        if (start === null) {
          this.pending = data;
          return new Float32Array(0);
        }
        data = data.subarray(start);
        this.header = false;
      }
      const usable = data.length - (data.length % this.width);
      this.pending = data.slice(usable);
      const whole = data.slice(0, usable); // a copy: aligned and owned
      if (this.format === "ulaw") return Float32Array.from(whole, (b) => ULAW[b]);
      if (this.format === "pcm_f32le") return new Float32Array(whole.buffer);
      const ints = new Int16Array(whole.buffer);
      return Float32Array.from(ints, (s) => s / 32768);
    }
  }

  // Where the samples of a RIFF/WAVE stream start, or null until the header is complete;
  // 0 when the stream has no RIFF header at all.
  function wavDataOffset(data) {
    if (data.length < 12) return null;
    const tag = String.fromCharCode(...data.subarray(0, 4));
    if (tag !== "RIFF") return 0;
    const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    let at = 12;
    while (at + 8 <= data.length) {
      const id = String.fromCharCode(...data.subarray(at, at + 4));
      if (id === "data") return at + 8;
      at += 8 + view.getUint32(at + 4, true);
    }
    return null;
  }

  function encodeWav(chunks, rate) {
    const total = chunks.reduce((n, c) => n + c.length, 0);
    const out = new DataView(new ArrayBuffer(44 + total * 2));
    const text = (at, s) => [...s].forEach((ch, i) => out.setUint8(at + i, ch.charCodeAt(0)));
    text(0, "RIFF");
    out.setUint32(4, 36 + total * 2, true);
    text(8, "WAVE");
    text(12, "fmt ");
    out.setUint32(16, 16, true);
    out.setUint16(20, 1, true); // PCM
    out.setUint16(22, 1, true); // mono
    out.setUint32(24, rate, true);
    out.setUint32(28, rate * 2, true);
    out.setUint16(32, 2, true);
    out.setUint16(34, 16, true);
    text(36, "data");
    out.setUint32(40, total * 2, true);
    let at = 44;
    for (const chunk of chunks) {
      for (const x of chunk) {
        out.setInt16(at, Math.max(-32768, Math.min(32767, Math.round(x * 32768))), true);
        at += 2;
      }
    }
    return new Blob([out.buffer], { type: "audio/wav" });
  }

  // Text in messages well under the server's frame limit (64 KiB by default), cut at spaces
  // and never inside a surrogate pair: the server joins them back into one text.
  function textPieces(text, size = TEXT_PIECE) {
    const pieces = [];
    let rest = text;
    while (rest.length > size) {
      let cut = rest.lastIndexOf(" ", size);
      if (cut <= 0) cut = size;
      const code = rest.charCodeAt(cut - 1);
      if (code >= 0xd800 && code <= 0xdbff) cut -= 1;
      pieces.push(rest.slice(0, cut));
      rest = rest.slice(cut);
    }
    pieces.push(rest);
    return pieces;
  }

  // -- one utterance ------------------------------------------------------------------------

  class Utterance {
    constructor(settings) {
      this.settings = settings;
      this.rate = settings.sample_rate;
      this.decoder = new Decoder(settings.wire);
      this.chunks = [];
      this.samples = 0;
      this.segments = []; // {stream, ctx, dur}: where each chunk plays on the AudioContext clock
      this.sources = [];
      this.nextTime = 0;
      this.words = []; // {text, start, duration, el}
      this.heard = 0; // words highlighted so far
      this.now = null; // the word being heard, if any
      this.startedAt = performance.now();
      this.firstAudioAt = null;
      this.lastAudioAt = null;
      this.errorShown = false;
      this.finished = false;
      this.closed = false;
      this.halted = false; // stopped by the page: the close that follows is ours
      this.opened = false;
      this.lastHeardFrom = performance.now(); // for the stall watchdog
      this.timer = null;
      this.ws = null;
    }

    start(key, text) {
      const s = this.settings;
      const init = {
        "X-API-Key": key,
        "lmnt-version": VERSION,
        type: "init",
        voice: s.voice,
        language: s.language,
        format: s.wire,
        sample_rate: s.sample_rate,
        return_timestamps: true,
      };
      if (s.speed !== 1) init.speed = s.speed;
      setState("connecting", "connecting");
      const ws = new WebSocket(wsUrl());
      this.ws = ws;
      ws.binaryType = "arraybuffer";
      ws.onopen = () => {
        this.opened = true;
        this.lastHeardFrom = performance.now();
        ws.send(JSON.stringify(init));
        for (const piece of textPieces(text)) ws.send(JSON.stringify({ type: "text", text: piece }));
        ws.send(JSON.stringify({ type: "finish" }));
      };
      ws.onmessage = (ev) => {
        if (run !== this) return;
        this.lastHeardFrom = performance.now();
        if (typeof ev.data === "string") this.onText(ev.data);
        else this.onAudio(new Uint8Array(ev.data));
      };
      ws.onclose = (ev) => this.onClose(ev.code, ev.reason);
      this.timer = setInterval(() => this.tick(), 25);
    }

    onText(data) {
      let msg;
      try {
        msg = JSON.parse(data);
      } catch {
        return this.fail(`The server sent a message that is not JSON: ${data.slice(0, 80)}`);
      }
      if (msg.type === "ready") {
        ui.request.textContent = `request ${msg.request_id || "?"}`;
        setState("streaming", "waiting for audio");
      } else if (msg.type === "timestamps") {
        for (const w of msg.timestamps || []) this.addWord(w);
      } else if (msg.type === "error") {
        const err = msg.error || {};
        const what = err.type ? ` (${err.type})` : "";
        const rid = msg.request_id ? ` (request ${msg.request_id})` : "";
        this.fail(`The server reported an error${what}: ${err.message || "unknown error"}.${rid}`);
      }
    }

    addWord(w) {
      if (!w || typeof w.text !== "string" || !w.text.trim()) return;
      const el = document.createElement("span");
      el.className = "word";
      el.textContent = w.text;
      el.dataset.start = String(w.start);
      if (!this.words.length) ui.words.replaceChildren();
      ui.words.append(el, " ");
      this.words.push({ text: w.text, start: w.start, duration: w.duration, el });
    }

    onAudio(bytes) {
      if (!bytes.length) return;
      const now = performance.now();
      if (this.firstAudioAt === null) {
        this.firstAudioAt = now;
        ui.ttfa.textContent = `${Math.round(now - this.startedAt)} ms`;
        setState("playing", "playing");
      }
      this.lastAudioAt = now;
      const samples = this.decoder.push(bytes);
      if (samples.length) this.play(samples);
    }

    play(samples) {
      const ctx = audioCtx;
      const buffer = ctx.createBuffer(1, samples.length, this.rate);
      buffer.copyToChannel(samples, 0);
      const source = ctx.createBufferSource();
      source.buffer = buffer;
      source.connect(ctx.destination);
      if (this.nextTime < ctx.currentTime + 0.01) this.nextTime = ctx.currentTime + LEAD;
      source.start(this.nextTime);
      const dur = samples.length / this.rate;
      this.segments.push({ stream: this.samples / this.rate, ctx: this.nextTime, dur });
      this.sources.push(source);
      this.nextTime += dur;
      this.chunks.push(samples);
      this.samples += samples.length;
      ui.duration.textContent = `${(this.samples / this.rate).toFixed(2)} s`;
    }

    // Seconds of the stream heard so far, from the AudioContext clock; -1 before the first.
    position() {
      const now = audioCtx.currentTime;
      let pos = -1;
      for (const seg of this.segments) {
        if (seg.ctx > now) break;
        pos = seg.stream + Math.min(now - seg.ctx, seg.dur);
      }
      return pos;
    }

    tick() {
      if (run !== this) return;
      const pos = this.position();
      while (this.heard < this.words.length && this.words[this.heard].start <= pos) {
        const w = this.words[this.heard];
        w.el.classList.add("heard");
        w.el.dataset.heardAt = String(audioCtx.currentTime);
        this.heard += 1;
      }
      const last = this.words[this.heard - 1];
      const now = last && pos < last.start + Math.max(last.duration, 0.12) ? last : null;
      if (now !== this.now) {
        if (this.now) this.now.el.classList.remove("now");
        if (now) now.el.classList.add("now");
        this.now = now;
      }
      if (this.finished && audioCtx.currentTime >= this.nextTime) {
        this.end("done", "done");
      } else if (!this.finished && performance.now() - this.lastHeardFrom > STALL_MS) {
        this.fail(
          `The server sent nothing for ${STALL_MS / 1000} s while audio was owed; ` +
            "gave up on this turn.",
        );
      }
    }

    onClose(code, reason) {
      this.closed = true;
      if (run !== this || this.errorShown || this.halted) return;
      if (code === 1000 && this.lastAudioAt !== null) {
        this.finished = true;
        const seconds = this.samples / this.rate;
        const factor = (this.lastAudioAt - this.startedAt) / 1000 / seconds;
        ui.rtf.textContent = factor.toFixed(3);
        if (factor > 0) {
          const note = document.createElement("small");
          note.textContent = `${(1 / factor).toFixed(0)}× real time`;
          ui.rtf.append(note);
        }
        ui.download.disabled = false;
        setState("playing", "playing");
        return;
      }
      if (code === 1000) {
        return this.fail("The server closed the stream without sending any audio.");
      }
      if (!this.opened) {
        return this.fail(
          `Could not open the WebSocket ${wsUrl()}: the server refused the connection or ` +
            "answered the upgrade with an HTTP error.",
        );
      }
      const why = reason ? `: ${reason}` : "";
      this.fail(`The connection closed unexpectedly (code ${code}${why}).`);
    }

    fail(message) {
      if (this.errorShown) return;
      this.errorShown = true;
      showError(message);
      this.halt();
      setState("error", "error");
      ui.download.disabled = this.samples === 0;
    }

    end(state, text) {
      clearInterval(this.timer);
      for (const w of this.words) w.el.classList.remove("now");
      setState(state, text);
      ui.stop.disabled = true;
    }

    halt() {
      this.halted = true;
      clearInterval(this.timer);
      for (const source of this.sources) {
        try {
          source.stop();
        } catch {
          // a source that never started cannot stop: nothing to do
        }
      }
      if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
      ui.stop.disabled = true;
    }

    wav() {
      return encodeWav(this.chunks, this.rate);
    }
  }

  // -- controls -----------------------------------------------------------------------------

  function settings() {
    const format = ui.format.value;
    return {
      voice,
      language: ui.language.value,
      format,
      wire: DECODED.has(format) ? format : "pcm_s16le",
      sample_rate: Number(ui.rate.value),
      speed: Number(ui.speed.value),
    };
  }

  async function speak() {
    clearError();
    if (run) run.halt();
    run = null;
    const text = ui.text.value.trim();
    if (!text) return showError("Type some text to speak first.");
    const key = apiKey();
    if (!key) return showError("This server needs an API key: type it in the API key box.");
    if (!voice) return showError("No voice is selected.");
    if (!audioCtx) audioCtx = new AudioContext();
    await audioCtx.resume();
    ui.ttfa.textContent = ui.rtf.textContent = ui.duration.textContent = "–";
    ui.request.textContent = "";
    ui.words.replaceChildren();
    ui.download.disabled = true;
    ui.stop.disabled = false;
    run = new Utterance(settings());
    run.start(key, text);
  }

  function stop() {
    if (!run) return;
    run.halt();
    run.end("stopped", "stopped");
    ui.download.disabled = run.samples === 0;
  }

  function download() {
    if (!run || !run.samples) return;
    const url = URL.createObjectURL(run.wav());
    const a = document.createElement("a");
    a.href = url;
    a.download = `lmnt-${run.settings.voice}-${run.rate}.wav`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }

  function updateSnippet() {
    const s = settings();
    const args = [`voice=${pyString(s.voice || "ava")}`, `language=${pyString(s.language)}`];
    args.push(`format=${pyString(s.format)}`, `sample_rate=${s.sample_rate}`);
    args.push(`protocol_version=${pyString(VERSION)}`, "word_timestamps=True");
    const lines = ["from videosdk.plugins.lmnt import LMNTTTS", "", "tts = LMNTTTS("];
    for (const arg of args) lines.push(`    ${arg},`);
    lines.push(")");
    if (s.speed !== 1) {
      lines.push(`# speed ${s.speed}: sent here as LMNT's "speed" init field;`);
      lines.push("# LMNTTTS (like 1.0.30) has no speed keyword.");
    }
    ui.snippet.textContent = lines.join("\n");
    const keyLine = KEY_REQUIRED
      ? "export LMNT_API_KEY=<your key>"
      : "export LMNT_API_KEY=local   # any non-empty key works here";
    ui.snippetEnv.textContent = `export LMNT_WS_URL=${wsUrl()}\n${keyLine}`;
    const note = DECODED.has(s.format)
      ? ""
      : `Web Audio cannot play ${s.format} piece by piece, so the page streams pcm_s16le at ` +
        `${s.sample_rate} Hz for playback. Your agent gets ${s.format}, as the snippet says ` +
        "(the plugin decodes it).";
    ui.formatNote.textContent = note;
    ui.formatNote.hidden = !note;
    ui.speedOut.textContent = `${s.speed.toFixed(2)}×`;
  }

  function useKey() {
    const typed = ui.key.value.trim();
    if (typed) sessionStorage.setItem(KEY_STORE, typed);
    else sessionStorage.removeItem(KEY_STORE);
    clearError();
    loadVoices();
  }

  function init() {
    for (const code of LANGUAGES) {
      const option = document.createElement("option");
      option.value = option.textContent = code;
      ui.language.append(option);
    }
    ui.key.value = sessionStorage.getItem(KEY_STORE) || "";
    if (KEY_REQUIRED) {
      ui.key.placeholder = "this server needs its API key";
      ui.keyNote.prepend("This server accepts only its own keys. ");
    }
    ui.speak.addEventListener("click", speak);
    ui.text.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey) && !ui.speak.disabled) speak();
    });
    ui.stop.addEventListener("click", stop);
    ui.download.addEventListener("click", download);
    $("key-form").addEventListener("submit", (ev) => {
      ev.preventDefault(); // a key never travels in a form submission (or its URL)
      useKey();
    });
    for (const el of [ui.language, ui.format, ui.rate, ui.speed]) {
      el.addEventListener("input", updateSnippet);
    }
    ui.copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(`${ui.snippetEnv.textContent}\n\n${ui.snippet.textContent}`);
        ui.copy.textContent = "Copied";
      } catch {
        ui.copy.textContent = "Select and copy";
      }
      setTimeout(() => (ui.copy.textContent = "Copy"), 1500);
    });
    updateSnippet();
    loadVoices();
  }

  init();
})();
