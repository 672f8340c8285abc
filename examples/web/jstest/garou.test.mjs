// Tests of garou.js under Node.js, against a real server over WebSocket.
// Run by TestNode (node_test.go: go test -run TestNode in examples/web),
// which starts the server and a proxy the tests can cut, and passes their
// addresses in GAROU_WS, GAROU_PROXY_WS and GAROU_CONTROL.

import { test } from "node:test";
import assert from "node:assert/strict";
import { Client, FrameReader, GarouError, PROTOCOL, encode } from "../static/garou.js";

const { GAROU_WS: WS, GAROU_PROXY_WS: PROXY, GAROU_CONTROL: CONTROL } = process.env;
const server = WS ? {} : { skip: "GAROU_WS is not set: run by go test -run TestNode in examples/web" };
const limit = 15000; // ms, for each test

let serial = 0;
/** uniq is a name (of a user or a room) no other test uses. */
const uniq = (prefix) => `${prefix}-${++serial}`;

/** control steers the proxy: "down" (cut, refuse), "up", "stall". */
async function control(what) {
  const res = await fetch(`${CONTROL}/${what}`, { method: "POST" });
  assert.equal(res.status, 200, `proxy ${what}`);
}

/**
 * proxied is the proxy's URL for a test, which leaves the proxy as it
 * found it: passing, and nothing held back.
 */
function proxied(t) {
  t.after(async () => {
    await control("down");
    await control("up");
  });
  return PROXY;
}

/**
 * client returns a Client of the test, closed when the test ends, whose
 * texts (the "text" events' frames) are in c.texts.
 */
function client(t, url, opts) {
  const c = new Client(url, { keepAlive: 60000, ...opts });
  c.texts = [];
  c.addEventListener("text", (e) => c.texts.push(e.detail));
  t.after(() => c.close());
  return c;
}

/** next resolves with the detail of c's next event of type for which pred holds. */
function next(c, type, pred = () => true, ms = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      c.removeEventListener(type, on);
      reject(new Error(`no "${type}" event in ${ms} ms`));
    }, ms);
    const on = (e) => {
      if (!pred(e.detail)) return;
      clearTimeout(timer);
      c.removeEventListener(type, on);
      resolve(e.detail);
    };
    c.addEventListener(type, on);
  });
}

/** online connects c and resolves once it is welcomed and has joined its rooms. */
async function online(c) {
  const rooms = [...c.rooms.keys()];
  const joined = rooms.map((room) => next(c, "joined", (f) => f.room === room));
  const welcomed = next(c, "state", (d) => d.state === "online");
  c.connect();
  await welcomed;
  await Promise.all(joined);
}

/** textsOf resolves with c's texts of room once it has n of them. */
function textsOf(c, room, n, ms = 10000) {
  const have = () => c.texts.filter((f) => f.room === room);
  if (have().length >= n) return Promise.resolve(have());
  return next(c, "text", () => have().length >= n, ms).then(have);
}

/**
 * tap makes the WebSockets opened from now on record the frames each way:
 * sent (by the client) and received. It returns them, and undoes itself
 * when the test ends.
 */
function tap(t) {
  const sent = [];
  const received = [];
  const Real = globalThis.WebSocket;
  globalThis.WebSocket = class extends Real {
    constructor(...args) {
      super(...args);
      const reader = new FrameReader();
      this.addEventListener("message", (ev) => received.push(...reader.push(new Uint8Array(ev.data))));
    }
    send(bytes) {
      sent.push(...new FrameReader().push(bytes));
      super.send(bytes);
    }
  };
  t.after(() => { globalThis.WebSocket = Real; });
  return { sent, received };
}

test("connect, join, say and its ack", { ...server, timeout: limit }, async (t) => {
  const room = uniq("room");
  const alice = client(t, WS, { name: uniq("alice"), rooms: [room] });
  const bob = client(t, WS, { name: uniq("bob"), rooms: [room] });
  await online(alice);
  await online(bob);
  assert.equal(alice.state, "online");
  assert.equal(alice.user.name, alice.name);

  const other = uniq("other");
  const joined = await alice.join(other);
  assert.equal(joined.type, "joined");
  assert.equal(joined.room, other);
  assert.ok(alice.rooms.has(other));

  const seen = textsOf(bob, room, 1);
  const ack = await alice.say(room, "hello, bob");
  assert.equal(ack.type, "ack");
  assert.equal(ack.room, room);
  const [text] = await seen;
  assert.equal(text.text, "hello, bob");
  assert.equal(text.from.name, alice.name);
  assert.equal(text.seq, ack.seq);
  assert.equal(text.id, ack.id);
  // The sender gets its own text too, once.
  assert.deepEqual((await textsOf(alice, room, 1)).map((f) => f.seq), [ack.seq]);

  const left = await alice.leave(other);
  assert.equal(left.type, "ack");
  assert.ok(!alice.rooms.has(other));
});

test("resume after a lost connection: since, nothing missed, nothing twice", { ...server, timeout: limit }, async (t) => {
  const room = uniq("room");
  const bob = client(t, WS, { name: uniq("bob"), rooms: [room] });
  await online(bob);
  const { sent, received } = tap(t); // alice's connections
  const alice = client(t, proxied(t), { name: uniq("alice"), rooms: [room] });
  await online(alice);
  const first = await bob.say(room, "t1");
  await textsOf(alice, room, 1);

  // The network fails; bob goes on talking meanwhile.
  const lost = next(alice, "state", (d) => d.state === "reconnecting");
  await control("down");
  await lost;
  await bob.say(room, "t2");
  await bob.say(room, "t3");
  const resumed = next(alice, "state", (d) => d.state === "online");
  await control("up");
  await resumed;

  // The hello resumed the session, the room after the last text seen.
  const hellos = sent.filter((f) => f.type === "hello");
  assert.equal(hellos.length, 2);
  const hello = hellos[1];
  assert.equal(hello.session, received.find((f) => f.type === "welcome").session);
  assert.deepEqual(hello.rooms, [{ room, since: first.seq }]);
  await bob.say(room, "t4");
  const texts = await textsOf(alice, room, 4);
  assert.deepEqual(texts.map((f) => f.text), ["t1", "t2", "t3", "t4"]);
  assert.deepEqual(texts.map((f) => f.seq), [0, 1, 2, 3].map((i) => first.seq + i));
  // The server replayed only what was missed: t1 came once over the wire.
  const afterResume = received.slice(received.findLastIndex((f) => f.type === "welcome"));
  assert.deepEqual(afterResume.filter((f) => f.type === "text").map((f) => f.text), ["t2", "t3", "t4"]);
});

test("a text whose ack was lost is sent again with its key, and said once", { ...server, timeout: limit }, async (t) => {
  const room = uniq("room");
  const bob = client(t, WS, { name: uniq("bob"), rooms: [room] });
  await online(bob);
  const { sent } = tap(t); // alice's connections
  const alice = client(t, proxied(t), { name: uniq("alice"), rooms: [room] });
  await online(alice);

  // What the server sends alice is held back, then lost with the
  // connection: the text is said, its ack never reaches her.
  await control("stall");
  const said = textsOf(bob, room, 1);
  const acked = alice.say(room, "once");
  const [text] = await said;
  const lost = next(alice, "state", (d) => d.state === "reconnecting");
  await control("down");
  await lost;
  await control("up");

  const ack = await acked;
  assert.equal(ack.seq, text.seq);
  assert.equal(ack.id, text.id);
  const tries = sent.filter((f) => f.type === "text");
  assert.equal(tries.length, 2);
  assert.equal(tries[1].key, tries[0].key);
  // Nobody saw it twice: the next text follows it.
  const after = await bob.say(room, "after");
  assert.equal(after.seq, text.seq + 1);
  assert.deepEqual((await textsOf(bob, room, 2)).map((f) => f.text), ["once", "after"]);
  assert.deepEqual((await textsOf(alice, room, 2)).map((f) => f.text), ["once", "after"]);
});

test("an error reply rejects the request's promise, and the connection stays", { ...server, timeout: limit }, async (t) => {
  const room = uniq("room");
  const alice = client(t, WS, { name: uniq("alice"), rooms: [room] });
  await online(alice);
  const refused = async (promise, code) => {
    await assert.rejects(promise, (err) => {
      assert.ok(err instanceof GarouError, `${err} is a GarouError`);
      assert.equal(err.code, code);
      return true;
    });
  };
  await refused(alice.say(uniq("elsewhere"), "hi"), "not_in_room");
  await refused(alice.say(room, ""), "bad_text");
  await refused(alice.direct(uniq("nobody"), "psst"), "no_such_user");
  await refused(alice.join(" lead"), "bad_room");
  await refused(alice._request({ type: "no such type" }), "unknown_type");
  assert.equal(alice.state, "online");
  const ack = await alice.say(room, "still here");
  assert.equal(ack.room, room);
});

test("a hello refused for good closes the client and rejects what waits", { ...server, timeout: limit }, async (t) => {
  const c = client(t, WS, { name: " leading space" });
  const closed = next(c, "state", (d) => d.state === "closed");
  const bye = next(c, "bye");
  const waiting = c.say("lobby", "never");
  c.connect();
  const state = await closed;
  assert.equal(state.close, 0x200);
  assert.equal((await bye).code, "bad_name");
  await assert.rejects(waiting, (err) => err instanceof GarouError && err.code === "bad_name");
});

test("frames: split anywhere, several per message", () => {
  const frames = [{ type: "welcome", user: { name: "zoë" } }, { type: "text", text: "日本語 ✓" }, { type: "ack", ref: 7 }];
  const wire = Uint8Array.from(frames.flatMap((f) => [...encode(f)]));
  assert.deepEqual(new DataView(wire.buffer).getUint32(0), JSON.stringify(frames[0]).length + 1); // ë is 2 bytes
  for (let cut = 0; cut <= wire.length; cut++) {
    const r = new FrameReader();
    const got = [...r.push(wire.subarray(0, cut)), ...r.push(wire.subarray(cut))];
    assert.deepEqual(got, frames, `cut at ${cut}`);
  }
  const r = new FrameReader();
  const got = [];
  for (const b of wire) got.push(...r.push(Uint8Array.of(b)));
  assert.deepEqual(got, frames);
});

test("frames: bad input throws", () => {
  const frame = (body) => {
    const b = typeof body === "string" ? new TextEncoder().encode(body) : body;
    const f = new Uint8Array(4 + b.length);
    new DataView(f.buffer).setUint32(0, b.length);
    f.set(b, 4);
    return f;
  };
  const bad = {
    "an empty frame": frame(""),
    "a body that is not JSON": frame("{not json"),
    "a body that is not UTF-8": frame(Uint8Array.of(0x7b, 0x22, 0xff, 0x22, 0x7d)),
    "a JSON array": frame(`[{"type":"text"}]`),
    "null": frame("null"),
    "a string": frame(`"text"`),
    "an object without a type": frame(`{"text":"hi"}`),
    "a type that is not a string": frame(`{"type":5}`),
    "two objects": frame(`{"type":"a"}{"type":"b"}`),
  };
  for (const [what, bytes] of Object.entries(bad)) {
    assert.throws(() => new FrameReader().push(bytes), Error, what);
  }
  // A length over the limit throws from its prefix alone, before the body.
  assert.throws(() => new FrameReader().push(Uint8Array.of(0xff, 0xff, 0xff, 0xff)), /length 4294967295/);
  assert.throws(() => new FrameReader(4096).push(Uint8Array.of(0, 0, 0x10, 0x01)), /length 4097/);
  assert.deepEqual(new FrameReader(4096).push(Uint8Array.of(0, 0, 0x10, 0x00)), []); // 4096: waits for the body
  // An incomplete prefix waits.
  assert.deepEqual(new FrameReader().push(Uint8Array.of(0, 0, 0)), []);
});

test("a bad frame from the server closes the connection with 1002, and the client reconnects", { timeout: limit }, async (t) => {
  // A WebSocket of the test's own, whose server sends a frame that is not
  // JSON once open.
  const Real = globalThis.WebSocket;
  const opened = [];
  globalThis.WebSocket = class extends EventTarget {
    static OPEN = 1;
    constructor(url, protocol) {
      super();
      this.url = url;
      this.protocol = protocol;
      this.readyState = 0;
      this.sent = [];
      opened.push(this);
      queueMicrotask(() => {
        this.readyState = 1;
        this.onopen?.({});
        const body = new TextEncoder().encode("{not json");
        const f = new Uint8Array(4 + body.length);
        new DataView(f.buffer).setUint32(0, body.length);
        f.set(body, 4);
        this.onmessage?.({ data: f.buffer });
      });
    }
    send(bytes) { this.sent.push(bytes); }
    close(code, reason) {
      if (this.readyState === 3) return;
      this.readyState = 3;
      this.closedWith = { code, reason };
      queueMicrotask(() => this.onclose?.({ code: code ?? 1005, reason: reason ?? "" }));
    }
  };
  t.after(() => { globalThis.WebSocket = Real; });
  const c = new Client("ws://test.invalid/garou", { name: "alice" });
  t.after(() => c.close());
  const again = next(c, "state", (d) => d.state === "reconnecting");
  c.connect();
  const state = await again;
  assert.equal(opened[0].protocol, PROTOCOL);
  assert.deepEqual(opened[0].closedWith, { code: 1002, reason: "bad frame" });
  assert.equal(state.close, -1); // lost: reconnect
  assert.equal(new FrameReader().push(new Uint8Array(opened[0].sent[0]))[0].type, "hello");
});

test("an empty gap moves the room's position without an event", { timeout: limit }, async (t) => {
  // A WebSocket of the test's own, whose server welcomes, then sends a
  // text, an empty gap (numbers a broker gave up) and the next text.
  const Real = globalThis.WebSocket;
  const frame = (obj) => {
    const body = new TextEncoder().encode(JSON.stringify(obj));
    const f = new Uint8Array(4 + body.length);
    new DataView(f.buffer).setUint32(0, body.length);
    f.set(body, 4);
    return f.buffer;
  };
  globalThis.WebSocket = class extends EventTarget {
    static OPEN = 1;
    constructor(url, protocol) {
      super();
      this.protocol = protocol;
      this.readyState = 0;
      queueMicrotask(() => {
        this.readyState = 1;
        this.onopen?.({});
        for (const f of [
          { type: "welcome", user: { id: "u1", name: "alice" }, session: "s", server: "e" },
          { type: "joined", room: "lobby", last_seq: 0 },
          { type: "text", room: "lobby", seq: 1, id: "a", text: "one" },
          { type: "gap", room: "lobby", from_seq: 2, to_seq: 3, empty: true },
          { type: "text", room: "lobby", seq: 4, id: "b", text: "four" },
        ]) this.onmessage?.({ data: frame(f) });
      });
    }
    send() {}
    close() {
      if (this.readyState === 3) return;
      this.readyState = 3;
      queueMicrotask(() => this.onclose?.({ code: 1000, reason: "" }));
    }
  };
  t.after(() => { globalThis.WebSocket = Real; });
  const c = new Client("ws://test.invalid/garou", { name: "alice", webTransport: false });
  t.after(() => c.close());
  const gaps = [];
  c.addEventListener("gap", (e) => gaps.push(e.detail));
  const four = next(c, "text", (f) => f.seq === 4);
  c.connect();
  await four;
  assert.deepEqual(gaps, []);
  assert.equal(c.rooms.get("lobby").since, 4);
});
