// garou.js: a Garou chat client for browsers, over WebTransport (PROTOCOL.md,
// section 1.2) when the browser has it and WebSocket (section 1.1)
// otherwise. One ES module, no dependencies, no build step.
//
//   import { Client } from "./garou.js";
//   const c = new Client("wss://chat.example.com/garou", {
//     name: "alice", rooms: ["lobby"],
//     webTransport: { url: "https://chat.example.com:4434/garou" },  // optional
//   });
//   c.addEventListener("text", (e) => show(e.detail));   // {room, seq, from, text, time}
//   c.connect();
//   await c.say("lobby", "hello");
//
// Events (CustomEvent, the frame or a summary in detail): "state"
// ({state: "connecting" | "online" | "reconnecting" | "closed",
// transport: "webtransport" | "websocket", ...}), "welcome", "joined",
// "text", "direct", "presence", "typing", "gap", "error" (unasked errors),
// "bye", "fallback" ({error}: WebTransport failed to connect, WebSocket is
// tried).
//
// Transports: with the webTransport option, in a browser that has
// WebTransport, each connection is tried over WebTransport first: the
// control stream is a bidirectional stream the client opens, each room's
// frames come on a unidirectional stream the server opens, and typing comes
// as datagrams, as over QUIC. If WebTransport fails to connect, the same
// attempt goes on over WebSocket (the URL given first); once WebSocket has
// worked where WebTransport failed, the client keeps to WebSocket.
//
// Resume: the client keeps its session token, the server's run and each
// room's last sequence number, and after a lost connection (or a close
// code of the reconnect range, 0x100-0x1ff) it reconnects with backoff and
// resumes each room after the last text it received, over either
// transport: nothing is missed, nothing is received twice. Texts sent with
// say() and direct messages carry an idempotency key and are sent again,
// with the same key, after a reconnect if their ack had not come, and
// after a pause when the server answers "unavailable" (servers sharing a
// broker that is out of reach); a direct message received again (same id)
// is dropped.

// ALPN is the protocol version: QUIC's ALPN, and the WebTransport
// protocol a client offers (WT-Available-Protocols).
export const ALPN = "garou/4";

// PROTOCOL is the WebSocket subprotocol: the ALPN "garou/4", with a dot
// for the slash that subprotocols may not hold.
export const PROTOCOL = "garou.4";

const enc = new TextEncoder();
const dec = new TextDecoder("utf-8", { fatal: true });

/** encode returns one frame: a 4-byte big-endian length, then the JSON. */
export function encode(obj) {
  const body = enc.encode(JSON.stringify(obj));
  const f = new Uint8Array(4 + body.length);
  new DataView(f.buffer).setUint32(0, body.length);
  f.set(body, 4);
  return f;
}

/**
 * A FrameReader splits the bytes of binary messages into frames. A frame
 * it cannot take throws from push, and the connection is to be closed: a
 * length of 0 or over max (the client's limit, 1 MiB unless its hello says
 * another max_size: the server sends nothing larger), a body that is not
 * UTF-8, or not one JSON object with a string "type".
 */
export class FrameReader {
  constructor(max = 1 << 20) { this.buf = new Uint8Array(0); this.max = max; }
  /** push adds bytes and returns the frames now complete, parsed. */
  push(bytes) {
    const b = new Uint8Array(this.buf.length + bytes.length);
    b.set(this.buf);
    b.set(bytes, this.buf.length);
    const out = [];
    let off = 0;
    while (b.length - off >= 4) {
      const n = new DataView(b.buffer, b.byteOffset + off).getUint32(0);
      if (n === 0 || n > this.max) throw new Error(`bad frame: length ${n}`);
      if (b.length - off - 4 < n) break;
      const f = JSON.parse(dec.decode(b.subarray(off + 4, off + 4 + n)));
      if (typeof f !== "object" || f === null || Array.isArray(f) || typeof f.type !== "string") {
        throw new Error("bad frame: not an object with a type");
      }
      out.push(f);
      off += 4 + n;
    }
    this.buf = b.slice(off);
    return out;
  }
}

/** GarouError is a refused request: code and text as the server sent them. */
export class GarouError extends Error {
  constructor(code, text) {
    super(`${code}: ${text}`);
    this.code = code;
  }
}

export class Client extends EventTarget {
  /**
   * @param {string} url the server's WebSocket URL (ws: or wss:)
   * @param {object} opts name (required), rooms (default ["lobby"]),
   *   token, history (texts to replay on a first join, default 20),
   *   reconnect (default true), keepAlive (ms of silence before a probe,
   *   default 25000), webTransport (default none: WebSocket only): the
   *   WebTransport endpoint, {url, serverCertificateHashes} (the latter as
   *   the WebTransport constructor takes it, for a self-signed
   *   certificate), or a function returning it or a promise of it, called
   *   before each connection (null: WebSocket this time),
   *   connectTimeout (ms WebTransport may take to connect before WebSocket
   *   is tried, default 5000)
   */
  constructor(url, opts) {
    super();
    this.url = url;
    this.name = opts.name;
    this.token = opts.token;
    this.history = opts.history ?? 20;
    this.reconnect = opts.reconnect ?? true;
    this.keepAlive = opts.keepAlive ?? 25000;
    this.webTransport = opts.webTransport;
    this.connectTimeout = opts.connectTimeout ?? 5000;
    this.wtFailed = false; // WebTransport failed where WebSocket worked
    this.transport = undefined; // of the current connection
    this.datagrams = 0; // received, over WebTransport
    this.rooms = new Map(); // room -> {since: number|undefined}
    for (const r of opts.rooms ?? ["lobby"]) this.rooms.set(r, {});
    this.session = undefined;
    this.server = undefined;
    this.user = undefined;
    this.state = "new";
    this.ref = 0;
    this.pending = new Map(); // ref -> {frame, resolve, reject}
    this.keyPrefix = Math.random().toString(36).slice(2, 10);
    this.keys = 0;
    // The IDs of the latest direct messages received (at most 1024): one
    // sent again after a server restart has the same ID, and is dropped.
    this.directs = new Set();
    this.attempt = 0;
    this.link = null; // the connection: see _dialWebSocket
    this.dialing = null;
    this.timer = null;
  }

  /** connect opens the connection, and keeps it open until close(). */
  connect() {
    if (this.state === "closed") return;
    this._setState(this.attempt === 0 ? "connecting" : "reconnecting");
    const token = {};
    this.dialing = token;
    this._dial(token);
  }

  async _dial(token) {
    const live = () => this.dialing === token && this.state !== "closed";
    let wtTried = false;
    if (this.webTransport && !this.wtFailed && typeof WebTransport === "function") {
      let cfg = null;
      try {
        cfg = typeof this.webTransport === "function" ? await this.webTransport() : this.webTransport;
      } catch (err) {
        cfg = null; // the page's server is away: WebSocket fails too, or says more
      }
      if (!live()) return;
      if (cfg) {
        wtTried = true;
        try {
          await this._dialWebTransport(token, cfg);
          return;
        } catch (err) {
          if (!live()) return;
          this._emit("fallback", { error: String(err?.message ?? err) });
        }
      }
    }
    if (live()) this._dialWebSocket(token, wtTried);
  }

  // A link is one connection over either transport: send(bytes),
  // close(), open (whether send may be called), bye (the server's, once
  // read) and finish() (optional: close once what came before the bye is
  // read). Its transport calls _linkOpen once, _linkFrames with the frames
  // it reads, and _linkClosed once, with the close code (-1: lost).
  _dialWebSocket(token, wtTried) {
    const ws = new WebSocket(this.url, PROTOCOL);
    ws.binaryType = "arraybuffer";
    const link = {
      transport: "websocket",
      wtTried,
      bye: null,
      get open() { return ws.readyState === WebSocket.OPEN; },
      send: (bytes) => ws.send(bytes),
      close: () => ws.close(1000),
    };
    this.link = link;
    this.dialing = null;
    const reader = new FrameReader();
    ws.onopen = () => this._linkOpen(link);
    ws.onmessage = (ev) => {
      let frames;
      try {
        frames = reader.push(new Uint8Array(ev.data));
      } catch (err) {
        ws.close(1002, "bad frame");
        return;
      }
      this._linkFrames(link, frames);
    };
    ws.onclose = (ev) => {
      const close = ev.code >= 4000 && ev.code < 5000 ? ev.code - 4000 : -1;
      this._linkClosed(link, close, ev.reason);
    };
  }

  // _dialWebTransport resolves once the session is up and its control
  // stream open, and fails if it cannot be (then WebSocket is tried).
  async _dialWebTransport(token, cfg) {
    const opts = { protocols: [ALPN] };
    if (cfg.serverCertificateHashes) opts.serverCertificateHashes = cfg.serverCertificateHashes;
    const wt = new WebTransport(cfg.url, opts);
    // Room streams and datagrams wait for the control stream's first
    // frame (the welcome, or a bye): a client hears of its rooms after
    // its welcome, as over QUIC. The session's end ends the wait.
    let welcomed;
    const welcome = new Promise((resolve) => { welcomed = resolve; });
    let open = false;
    wt.closed.then(
      (info) => {
        welcomed();
        if (open) this._linkClosed(link, link.failed ? -1 : (info?.closeCode ?? -1), info?.reason);
      },
      (err) => {
        welcomed();
        if (open) this._linkClosed(link, -1, err?.message);
      });
    let timer;
    let ctl;
    try {
      await Promise.race([wt.ready, new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error("WebTransport: no connection in time")), this.connectTimeout);
      })]);
      ctl = await wt.createBidirectionalStream();
    } catch (err) {
      try { wt.close(); } catch { /* closed already */ }
      throw err;
    } finally {
      clearTimeout(timer);
    }
    if (this.dialing !== token || this.state === "closed") {
      wt.close();
      return;
    }
    const writer = ctl.writable.getWriter();
    const link = {
      transport: "webtransport",
      bye: null,
      open: true,
      send: (bytes) => { writer.write(bytes).catch(() => {}); },
      close: (code = 0) => {
        link.open = false;
        try { wt.close({ closeCode: code, reason: "" }); } catch { /* closed already */ }
      },
    };
    this.link = link;
    this.dialing = null;
    open = true;
    // A frame that cannot be parsed: the session is closed (0x203,
    // protocol) and counts as lost, as over WebSocket.
    const bad = () => {
      link.failed = true;
      link.close(0x203);
    };
    // On a bye, the room streams (which the server ended before it) are
    // read to their end, for at most 2 s, before the session is closed.
    const rooms = new Set();
    link.finish = async () => {
      let timer;
      await Promise.race([Promise.allSettled([...rooms]),
        new Promise((resolve) => { timer = setTimeout(resolve, 2000); })]);
      clearTimeout(timer);
      link.close();
    };
    const read = async (readable, first) => {
      const r = readable.getReader();
      const frames = new FrameReader();
      if (!first) await welcome;
      try {
        for (;;) {
          const { value, done } = await r.read();
          if (done) return;
          let fs;
          try {
            fs = frames.push(value);
          } catch (err) {
            bad();
            return;
          }
          this._linkFrames(link, fs);
          if (first && fs.length) welcomed();
        }
      } catch (err) {
        // the session ended: wt.closed says how
      }
    };
    read(ctl.readable, true);
    (async () => {
      const streams = wt.incomingUnidirectionalStreams.getReader();
      try {
        for (;;) {
          const { value, done } = await streams.read();
          if (done) return;
          const p = read(value, false);
          rooms.add(p);
          p.finally(() => rooms.delete(p));
        }
      } catch (err) { /* the session ended */ }
    })();
    (async () => {
      const dgrams = wt.datagrams.readable.getReader();
      await welcome;
      try {
        for (;;) {
          const { value, done } = await dgrams.read();
          if (done) return;
          let f;
          try {
            f = JSON.parse(dec.decode(value));
          } catch (err) {
            continue; // a signal that may be lost
          }
          this.datagrams++;
          this._linkFrames(link, [f]);
        }
      } catch (err) { /* the session ended */ }
    })();
    this._linkOpen(link);
  }

  _linkOpen(link) {
    if (this.link !== link) return;
    const rooms = [];
    for (const [room, st] of this.rooms) {
      const spec = { room };
      const since = st.since ?? st.floor;
      if (since !== undefined) spec.since = since;
      else if (this.history > 0) spec.history = this.history;
      rooms.push(spec);
    }
    const hello = { type: "hello", name: this.name, rooms };
    if (this.token) hello.token = this.token;
    if (this.session) { hello.session = this.session; hello.server = this.server; }
    link.send(encode(hello));
    this._touch();
  }

  _linkFrames(link, frames) {
    if (this.link !== link) return;
    this._touch();
    for (const f of frames) {
      if (f.type === "bye") link.bye = f;
      else if (f.type === "welcome") {
        this.transport = link.transport;
        if (link.wtTried) this.wtFailed = true;
      }
      this._frame(f);
    }
    if (link.bye && !link.closing) {
      link.closing = true;
      (link.finish ?? link.close)();
    }
  }

  _linkClosed(link, code, reason) {
    if (this.link !== link) return;
    this.link = null;
    clearTimeout(this.timer);
    const bye = link.bye;
    const close = bye ? (bye.close ?? 0) : code;
    const text = bye?.text ?? reason;
    const again = this.reconnect && this.state !== "closed" &&
      (close === -1 || (close >= 0x100 && close < 0x200));
    if (!again) {
      this._fail(new GarouError(bye?.code ?? "closed", text ?? "closed"));
      this._setState("closed", { close, text });
      return;
    }
    this.attempt++;
    const delay = Math.min(5000, 100 * 2 ** Math.min(this.attempt, 6)) * (0.5 + Math.random() / 2);
    this._setState("reconnecting", { close, text, delay });
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** close says bye and ends the client for good. */
  close() {
    const link = this.link;
    this._setState("closed");
    this.dialing = null;
    clearTimeout(this.timer);
    if (link && link.open) link.send(encode({ type: "bye" }));
    else if (link) link.close();
  }

  /** say sends text to room; it resolves with the ack ({room, seq, id}). */
  say(room, text) {
    return this._request({ type: "text", room, text, key: `${this.keyPrefix}.${++this.keys}` });
  }

  /** direct sends text to the user called to. */
  direct(to, text) {
    return this._request({ type: "direct", to, text, key: `${this.keyPrefix}.${++this.keys}` });
  }

  /** join joins room, replaying its latest texts; resolves with the joined frame. */
  join(room) {
    return this._request({ type: "join", room, history: this.history }).then((f) => {
      if (!this.rooms.has(room)) this.rooms.set(room, {});
      return f;
    });
  }

  /** leave leaves room. */
  leave(room) {
    this.rooms.delete(room);
    return this._request({ type: "leave", room });
  }

  /** typing tells room's members this user is typing (send every 2 s or so). */
  typing(room) {
    if (this.state === "online") this.link.send(encode({ type: "typing", room }));
  }

  /** members resolves with the first page of room's members. */
  members(room) { return this._request({ type: "members", room }); }

  _request(frame) {
    return new Promise((resolve, reject) => {
      frame.ref = ++this.ref;
      this.pending.set(frame.ref, { frame, resolve, reject });
      if (this.state === "online") this.link.send(encode(frame));
    });
  }

  _frame(f) {
    switch (f.type) {
      case "welcome":
        this.user = f.user;
        this.session = f.session;
        this.server = f.server;
        this.attempt = 0;
        this._setState("online", { user: f.user, transport: this.transport });
        this._emit("welcome", f);
        // Requests unanswered, or made while offline: sent now (texts
        // with their key, so that none is said twice).
        for (const p of this.pending.values()) this.link.send(encode(p.frame));
        return;
      case "joined": {
        const st = this.rooms.get(f.room) ?? {};
        this.rooms.set(f.room, st);
        // A first join's replay is of texts up to last_seq: the room's
        // position is its last text received, else last_seq.
        st.floor = f.last_seq ?? 0;
        st.presence = f.presence_seq ?? 0;
        break;
      }
      case "text": {
        const st = this.rooms.get(f.room);
        if (st) {
          if (st.since !== undefined && f.seq <= st.since) return; // seen
          st.since = f.seq;
        }
        break;
      }
      case "gap": {
        const st = this.rooms.get(f.room);
        // A gap of unknown end (the server lost the room's past):
        // continue from the joined's last_seq.
        if (st) st.since = f.to_seq ? Math.max(st.since ?? 0, f.to_seq) : st.floor;
        if (f.empty) return; // numbers without a text: nothing to tell
        break;
      }
      case "direct":
        if (f.id && !f.ref) {
          if (this.directs.has(f.id)) return; // seen
          this.directs.add(f.id);
          if (this.directs.size > 1024) this.directs.delete(this.directs.values().next().value);
        }
        break;
      case "presence": {
        const st = this.rooms.get(f.room);
        if (st && f.changes) {
          // Numbered densely up to presence_seq, unless each change has
          // its own seq (servers sharing presence through a broker).
          const first = f.presence_seq - f.changes.length + 1;
          f.changes = f.changes.filter((c, i) => (c.seq ?? first + i) > (st.presence ?? 0));
        }
        if (st) st.presence = f.presence_seq;
        break;
      }
    }
    if (f.ref) {
      const p = this.pending.get(f.ref);
      if (p && f.type === "error" && f.code === "unavailable" && p.frame.key) {
        // The service cannot keep it for now: the same again, with its
        // key, after a pause (100 ms doubling up to 2 s).
        p.pause = Math.min(Math.max(2 * (p.pause ?? 0), 100), 2000);
        setTimeout(() => {
          if (this.pending.get(f.ref) === p && this.state === "online") this.link.send(encode(p.frame));
        }, p.pause);
        return;
      }
      if (p) {
        this.pending.delete(f.ref);
        if (f.type === "error") p.reject(new GarouError(f.code, f.text));
        else p.resolve(f);
        if (f.type !== "joined") return;
      }
    }
    this._emit(f.type, f);
  }

  // _touch notes that the connection is alive, and arms the keep-alive:
  // after keepAlive ms of silence, a request that changes nothing, whose
  // reply (or the connection's end) says the server is still there.
  _touch() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      if (this.state === "online") this.link.send(encode({ type: "users", cursor: "~" }));
    }, this.keepAlive);
  }

  _fail(err) {
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  _setState(state, detail = {}) {
    if (this.state === "closed" && state !== "closed") return;
    this.state = state;
    this._emit("state", { state, ...detail });
  }

  _emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }
}
